"""Reading a ``torch.save``-d state_dict without torch: ``read_torch_state_dict``.

Both of torch's formats are read: the zip archive (torch >= 1.6: ``data.pkl`` plus one raw file
per storage under ``data/``) and the legacy stream (magic number, protocol version, system info,
the pickle, the list of storage keys, then each storage's element count and raw bytes). The
pickle is read with an unpickler that allows only the few globals a state_dict refers to
(``OrderedDict`` and torch's tensor-rebuild functions), so an untrusted file cannot run code;
storages become NumPy arrays, and each tensor a strided view of its storage copied into its own
array. Used for pytorch-fid's Inception weights (``jaxdiff.metrics.inception``); any other
PyTorch checkpoint of plain tensors reads the same way. Needs only NumPy (and ml_dtypes, a JAX
dependency, for bfloat16).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """Stands in for a torch.<Name>Storage class referenced by a pickle."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])

    def __repr__(self):
        return f"torch.{self.name}"


class _LazyTensor:
    """A tensor view (storage key, offset, size, stride) made into an array once data is read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


class _StorageRef:
    def __init__(self, key: str, dtype: np.dtype, numel: int, view=None):
        self.key, self.dtype, self.numel, self.view = key, dtype, int(numel), view


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_unused):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a torch.save object graph, allowing only the few globals a state_dict uses."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, legacy: bool):
        super().__init__(file)
        self._legacy = legacy
        self.storages: dict[str, _StorageRef] = {}  # every storage the pickle refers to

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unsupported global {module}.{name} in a torch file "
                                     "(only plain state_dicts of tensors can be read)")

    def persistent_load(self, pid):
        pid = tuple(pid)
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        # zip format: ('storage', storage_type, key, location, numel)
        # legacy format: (..., numel, view_metadata), view_metadata None or (view_key, offset, size)
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        view = pid[5] if self._legacy and len(pid) > 5 else None
        ref = _StorageRef(str(key), storage_type.dtype, numel, view)
        self.storages.setdefault(ref.key, ref)
        return ref


def _materialize(obj, storages: dict[str, np.ndarray]):
    if isinstance(obj, _LazyTensor):
        ref = obj.storage
        flat = storages[ref.key]
        if ref.view is not None:
            _view_key, view_offset, view_size = ref.view
            flat = flat[int(view_offset):int(view_offset) + int(view_size)]
        if any(s == 0 for s in obj.size):
            return np.zeros(obj.size, flat.dtype)
        last = obj.offset + sum((s - 1) * st for s, st in zip(obj.size, obj.stride))
        if obj.offset < 0 or min(obj.stride, default=0) < 0 or last >= flat.shape[0]:
            raise ValueError(f"tensor view (offset {obj.offset}, size {obj.size}, stride "
                             f"{obj.stride}) exceeds its storage of {flat.shape[0]} elements")
        base = flat[obj.offset:]
        view = np.lib.stride_tricks.as_strided(
            base, shape=obj.size, strides=tuple(st * flat.itemsize for st in obj.stride),
            writeable=False)
        return np.array(view)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v, storages)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, storages) for v in obj)
    return obj


def _storage_array(raw: bytes, ref: _StorageRef, byteorder: str) -> np.ndarray:
    dtype = ref.dtype.newbyteorder("<" if byteorder == "little" else ">")
    need = ref.numel * dtype.itemsize
    if len(raw) < need:
        raise ValueError(f"storage {ref.key!r} holds {len(raw)} bytes, expected {need}")
    return np.frombuffer(raw, dtype=dtype, count=ref.numel).astype(ref.dtype.newbyteorder("="))


def _read_zip(path: str):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pkl:
            raise ValueError(f"{path}: zip file without data.pkl, not a torch.save file")
        prefix = min(pkl, key=len)[: -len("data.pkl")]  # "archive/" or "<file stem>/"
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
        unpickler = _TorchUnpickler(io.BytesIO(zf.read(prefix + "data.pkl")), legacy=False)
        obj = unpickler.load()
        storages = {}
        for key, ref in unpickler.storages.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise ValueError(f"{path}: storage {entry!r} is missing")
            storages[key] = _storage_array(zf.read(entry), ref, byteorder)
    return _materialize(obj, storages)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a torch file header")


def _read_legacy(path: str):
    with open(path, "rb") as f:
        data = f.read()
    stream = io.BytesIO(data)
    try:
        magic = _PlainUnpickler(stream).load()
    except Exception as err:  # noqa: BLE001 - anything unreadable is "not a torch file"
        raise ValueError(f"{path}: neither a zip nor a legacy torch.save file") from err
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path}: neither a zip nor a legacy torch.save file")
    _PlainUnpickler(stream).load()  # serialization protocol version (1001)
    sys_info = _PlainUnpickler(stream).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian legacy torch files are not supported")
    unpickler = _TorchUnpickler(stream, legacy=True)
    obj = unpickler.load()
    keys = _PlainUnpickler(stream).load()
    refs = unpickler.storages
    storages = {}
    for key in keys:  # each: int64 little-endian element count, then the raw elements
        key = str(key)
        (numel,) = struct.unpack("<q", stream.read(8))
        ref = refs.get(key)
        dtype = ref.dtype if ref is not None else np.dtype(np.uint8)
        raw = stream.read(numel * dtype.itemsize)
        if ref is not None:
            storages[key] = _storage_array(raw, _StorageRef(key, dtype, numel), "little")
    missing = [k for k in refs if k not in storages]
    if missing:
        raise ValueError(f"{path}: storage {missing[0]!r} is missing")
    return _materialize(obj, storages)


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a torch.save-d state_dict (zip or legacy format) as {name: np.ndarray}, no torch.

    Only tensors, (Ordered)dicts, lists and plain values are accepted; any other global in the
    pickle is refused, so an untrusted file cannot run code.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # as torch.load decides; legacy files are pickles
    obj = _read_zip(path) if is_zip else _read_legacy(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj)}")
    return obj
