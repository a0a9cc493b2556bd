"""A user's own point data: a .npy or .npz file holding one array of shape [N, D]."""

from __future__ import annotations

import os
import zipfile

import numpy as np


def load_array(path: str) -> np.ndarray:
    """Read [N, D] float32 points (N >= 2, D >= 1, finite) from `path`.

    An .npz file must hold a single array, or one named "x" or "data".
    Every problem raises a ValueError naming data.path and what is wrong.
    """
    where = f"data.path={path!r}"
    if not os.path.exists(path):
        raise ValueError(f"{where} does not exist")
    if not path.endswith((".npy", ".npz")):
        raise ValueError(f"{where} is not a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                loaded = _pick(loaded, where)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if str(error).startswith(where):
            raise
        raise ValueError(f"{where} cannot be read as NumPy data ({error})") from None
    return _check(np.asarray(loaded), where)


def _pick(archive, where: str) -> np.ndarray:
    keys = list(archive.keys())
    for key in ("x", "data"):
        if key in keys:
            return archive[key]
    if len(keys) == 1:
        return archive[keys[0]]
    raise ValueError(f"{where} holds arrays {keys}; name the one to use 'x' or 'data'")


def _check(array: np.ndarray, where: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{where} holds non-numeric data of dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{where} holds an array of shape {array.shape}; expected [N, D]")
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{where} holds shape {array.shape}; need at least 2 rows and 1 column")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{where} holds {int((~np.isfinite(array)).sum())} non-finite values")
    return array
