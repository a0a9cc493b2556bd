"""A user's own point data: a .npy or .npz file holding one array of shape [N, D]."""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

# What np.load raises on a truncated, corrupt or non-NumPy file (or a pickle, which is refused).
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
_NPZ_KEYS = ("x", "data")


def load_array(path: str, field: str = "data.path") -> np.ndarray:
    """Read points of shape [N, D] (N >= 2, D >= 1, all finite, numeric) as float32.

    A .npz file supplies the array named "x", else the one named "data", else its only array.
    Every problem raises a one-line ValueError naming `field` (the config field that gave the
    path) and what is wrong with it.
    """
    where = f"{field}={path!r}"
    if not os.path.exists(path):
        raise ValueError(f"{where} does not exist")
    if not str(path).lower().endswith((".npy", ".npz")):
        raise ValueError(f"{where} is not a .npy or .npz file")
    keys: list[str] = []
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.keys())
                key = _choose_key(keys)
                array = None if key is None else np.asarray(loaded[key])
        else:
            array = np.asarray(loaded)
    except _READ_ERRORS as error:
        reason = " ".join(str(error).split())  # numpy's messages may span lines
        raise ValueError(f"{where} cannot be read as NumPy data ({reason})") from None
    if array is None:
        raise ValueError(f"{where} holds arrays {keys}; name the one to use 'x' or 'data'"
                         if keys else f"{where} holds no arrays")
    return _check(array, where)


def _choose_key(keys: list[str]) -> str | None:
    """The .npz member to use: "x", else "data", else the only one; None when ambiguous."""
    for key in _NPZ_KEYS:
        if key in keys:
            return key
    return keys[0] if len(keys) == 1 else None


def _check(array: np.ndarray, where: str) -> np.ndarray:
    """`array` as float32 after checking dtype, shape and finiteness (in that order)."""
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{where} holds non-numeric data of dtype {array.dtype}; "
                         f"need integers or floats")
    if array.ndim != 2:
        hint = "; reshape 1-D data to [N, 1]" if array.ndim == 1 else ""
        raise ValueError(f"{where} holds an array of shape {array.shape}; expected [N, D]{hint}")
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{where} holds shape {array.shape}; need at least 2 rows and 1 column")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, caught below
        points = array.astype(np.float32)
    if not np.isfinite(points).all():
        count = int((~np.isfinite(points)).sum())
        raise ValueError(f"{where} holds {count} non-finite values (NaN, inf, or beyond "
                         f"float32's range)")
    return points
