"""Read a PyTorch state dict saved in torch's legacy (pre-1.6, not zip) format with numpy.

The file is five pickles in a row: a magic number, the protocol version, system info,
the state dict (tensors refer to storages by key), the storage keys; then each storage's
raw bytes, preceded by its element count. The unpickler accepts only what a state dict
holds (tensor rebuilds, storage types, OrderedDict) and refuses every other class, so
the file cannot run code. torch is not needed.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}


class _Storage:
    def __init__(self, kind: str, numel: int) -> None:
        self.kind, self.numel, self.data = kind, numel, np.zeros(0)


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def numpy(self) -> np.ndarray:
        data = self.storage.data
        if not self.size:
            return data[self.offset].copy()
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or min(self.stride) < 0 or last >= len(data):
            raise pickle.UnpicklingError(f"a tensor of size {self.size} outside its storage")
        strides = [s * data.itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(data[self.offset :], self.size, strides)
        return view.copy()


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _Tensor:
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Only what a legacy state dict holds: tensors, storages, an OrderedDict."""

    def __init__(self, handle: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        _typename, kind, key, _location, numel, _view = pid
        if kind not in STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unknown storage type {kind!r}")
        return self.storages.setdefault(key, _Storage(kind, int(numel)))


def _header(handle: BinaryIO) -> None:
    """Check the magic number and protocol version; skip the system info."""
    try:
        magic = _plain(handle)
    except (pickle.UnpicklingError, EOFError):
        magic = None
    if magic != MAGIC_NUMBER:
        raise pickle.UnpicklingError("not a legacy torch save (zip-format files are not read)")
    if _plain(handle) != PROTOCOL_VERSION:
        raise pickle.UnpicklingError("a legacy torch save of another protocol version")
    _plain(handle)


def _plain(handle: BinaryIO) -> Any:
    """One pickle of plain values (numbers, strings, dicts): no class is accepted."""
    return _StateDictUnpickler(handle, {}).load()


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """{name: array} of every tensor of a legacy-format torch state dict, in file order."""
    with path.open("rb") as handle:
        _header(handle)
        storages: dict[str, _Storage] = {}
        state = _StateDictUnpickler(handle, storages).load()
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{path} holds a {type(state).__name__}, not a dict")
        for key in _plain(handle):
            storage = storages[key]
            dtype = np.dtype(STORAGE_DTYPES[storage.kind])
            (count,) = struct.unpack("<q", handle.read(8))
            if count != storage.numel:
                raise pickle.UnpicklingError(
                    f"storage {key}: {count} elements, not {storage.numel}"
                )
            raw = handle.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise pickle.UnpicklingError(f"{path} ends inside storage {key}")
            storage.data = np.frombuffer(raw, dtype=dtype)
    return {k: v.numpy() for k, v in state.items() if isinstance(v, _Tensor)}
