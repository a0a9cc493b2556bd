"""Writes small torch.save-format files without torch, for the loader tests.

A stand-in `torch` module exists only while a file is written, so the pickles refer to
torch._utils._rebuild_tensor_v2 and torch.<Name>Storage exactly as real torch files do.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np


@contextlib.contextmanager
def _fake_torch():
    """Modules `torch` and `torch._utils` with just the names a state_dict pickle refers to."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used to be pickled by reference")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                         collections.OrderedDict())


def contiguous(storage, shape, offset=0):
    strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    return Tensor(storage, offset, shape, strides)


def write_torch_file(path, state_dict, fmt="zip", prefix="archive"):
    """torch.save(state_dict) of Tensor values, in the zip (>= 1.6) or legacy format."""
    storages = {}
    for tensor in state_dict.values():
        storages[tensor.storage.key] = tensor.storage
    with _fake_torch() as torch:
        def storage_type(storage):
            return torch.LongStorage if storage.array.dtype == np.int64 else torch.FloatStorage

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if not isinstance(obj, Storage):
                    return None
                pid = ("storage", storage_type(obj), obj.key, "cpu", obj.array.size)
                return pid if fmt == "zip" else pid + (None,)

        body = io.BytesIO()
        Pickler(body, protocol=2).dump(collections.OrderedDict(state_dict))
    raw = {key: storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes()
           for key, storage in storages.items()}
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{prefix}/data.pkl", body.getvalue())
            zf.writestr(f"{prefix}/byteorder", "little")
            for key, data in raw.items():
                zf.writestr(f"{prefix}/data/{key}", data)
            zf.writestr(f"{prefix}/version", "3\n")
    else:
        with open(path, "wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001,
                           {"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, f, protocol=2)
            f.write(body.getvalue())
            keys = sorted(raw)
            pickle.dump(keys, f, protocol=2)
            for key in keys:
                f.write(struct.pack("<q", storages[key].array.size) + raw[key])


def write_arrays(path, arrays, fmt="zip"):
    """torch.save of a flat {name: float32 / int64 np.ndarray} state_dict (one storage each)."""
    state = {}
    for index, (name, value) in enumerate(arrays.items()):
        value = np.asarray(value)
        value = value if value.dtype == np.int64 else value.astype(np.float32)
        state[name] = contiguous(Storage(str(index), value), list(value.shape))
    write_torch_file(path, state, fmt=fmt)
