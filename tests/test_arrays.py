"""A user's array files (jaxdiff.data.arrays): .npy and .npz read as float32 [N, D], and every
kind of bad file named in a one-line error."""

import numpy as np
import pytest

from jaxdiff.data import load_array


def test_array_files(tmp_path):
    data = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "b.npz", x=data, data=data + 1, labels=np.arange(6))
    np.savez(tmp_path / "c.npz", data=data, labels=np.arange(6))
    np.savez_compressed(tmp_path / "d.npz", only=data)
    for name in ("a.npy", "b.npz", "c.npz", "d.npz"):
        loaded = load_array(str(tmp_path / name))
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, data)
    for shape in ((2, 1), (3, 7)):
        np.save(tmp_path / "e.npy", np.ones(shape, np.int64))
        assert load_array(str(tmp_path / "e.npy")).shape == shape


def make_bad_files(tmp_path):
    np.save(tmp_path / "3d.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "1d.npy", np.zeros(5))
    np.save(tmp_path / "one.npy", np.zeros((1, 2)))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan], [1, 2]]))
    np.save(tmp_path / "inf.npy", np.array([[0.0, 1.0], [np.inf, 2]]))
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "complex.npy", np.ones((3, 2), np.complex64))
    np.save(tmp_path / "object.npy", np.array([[1, None], [2, 3]], dtype=object),
            allow_pickle=True)
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    np.savez(tmp_path / "empty.npz")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    return [("missing.npy", "does not exist"), ("3d.npy", "(2, 2, 2)"), ("1d.npy", "[N, D]"),
            ("one.npy", "2 rows"), ("nan.npy", "non-finite"), ("inf.npy", "non-finite"),
            ("text.npy", "non-numeric"), ("complex.npy", "non-numeric"),
            ("object.npy", "cannot be read"), ("two.npz", "'a', 'b'"),
            ("empty.npz", "no arrays"), ("junk.npy", "cannot be read"),
            ("junk.npz", "cannot be read"), ("x.csv", ".npy or .npz")]


def test_bad_array_files_name_the_path(tmp_path):
    for name, needle in make_bad_files(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(ValueError) as error:
            load_array(path)
        message = str(error.value)
        assert f"data.path={path!r}" in message and needle in message, message
        assert "\n" not in message, message
