"""The torch.save reader: strided tensor views, and refusal of pickles that could run code.

Nothing here needs torch: the files are written by tests/torch_files.py with a stand-in `torch`
module (test_inception.py reads full state_dicts in both formats through the Inception loader).
"""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from jaxdiff.torch_checkpoint import read_torch_state_dict
from torch_files import Storage, Tensor, write_torch_file


def test_reads_strided_tensor_views(tmp_path):
    storage = Storage("s", np.arange(20, dtype=np.float32))
    sd = {"transposed": Tensor(storage, 2, (3, 4), (1, 3)),  # a .t() view of a [4, 3] at 2
          "every_other": Tensor(storage, 1, (5,), (2,)),
          "broadcast": Tensor(storage, 7, (2, 3), (0, 1))}
    path = tmp_path / "views.pth"
    write_torch_file(path, sd)
    got = read_torch_state_dict(str(path))
    np.testing.assert_array_equal(got["transposed"], (np.arange(12) + 2).reshape(4, 3).T)
    np.testing.assert_array_equal(got["every_other"], [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(got["broadcast"], [[7, 8, 9], [7, 8, 9]])
    sd = {"too_long": Tensor(storage, 15, (6,), (1,))}
    write_torch_file(path, sd)
    with pytest.raises(ValueError, match="exceeds"):
        read_torch_state_dict(str(path))


def test_refuses_pickles_with_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="print"):
        read_torch_state_dict(str(path))
