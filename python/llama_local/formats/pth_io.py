"""Reading PyTorch `.pth` checkpoints without torch and without running their pickle's code.

A `torch.save` file is a zip archive: `<name>/data.pkl` is a pickle of the object (for weights,
a dict of tensors) and `<name>/data/<key>` holds each storage's raw bytes. A pickle can name any
Python callable, which is how a malicious checkpoint runs code on load. Here the unpickler knows
a short list of globals — the tensor rebuild functions, the storage and dtype names, and
`collections.OrderedDict` — each mapped to our own harmless stand-in; any other global is
refused with UnsafeCheckpointError before anything is called.

Tensors come back as read-only numpy views of the memory-mapped archive (bf16 and fp8 through
ml_dtypes), with torch's storage offset and strides applied; sizes are checked against the
storage so a corrupt header cannot read outside it.
"""

from __future__ import annotations

import collections
import io
import mmap
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from ..errors import ModelFormatError, UnsafeCheckpointError

# torch.<X>Storage (legacy typed storages, what torch.save writes for common dtypes) → dtype.
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
# torch.<dtype> names as passed to _rebuild_tensor_v3 (UntypedStorage + explicit dtype).
_TORCH_DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}


class _StorageType:
    """Stand-in for a torch storage class: only carries the element dtype (None = untyped bytes)."""

    def __init__(self, name: str, dtype: np.dtype | None):
        self.name, self.dtype = name, dtype


class _Storage:
    """One storage: a flat numpy view of its bytes in the archive."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class _DType:
    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype


class PthFile:
    """An opened torch zip checkpoint; `load()` returns the unpickled object with numpy tensors."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise ModelFormatError(f"{self.path}: no such checkpoint file") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ModelFormatError(f"{self.path}: empty file, not a PyTorch checkpoint")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._size = size
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as e:
            head = self._mm[:2]
            hint = (
                "a legacy (pre-1.6, non-zip) torch checkpoint; re-save it with a recent torch"
                if head == b"\x80\x02" else "truncated or not a PyTorch zip checkpoint"
            )
            raise ModelFormatError(f"{self.path}: {hint} ({e})") from None
        try:
            self._prefix = self._check_layout()
        except BaseException:
            self._zip.close()
            raise
        self._storages: dict[str, _Storage] = {}

    def _check_layout(self) -> str:
        """The archive's record prefix ("<name>/"), after checking what the format requires."""
        names = self._zip.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ModelFormatError(f"{self.path}: expected one data.pkl in the archive, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and self._zip.read(byteorder).strip() not in (b"little", b""):
            raise ModelFormatError(f"{self.path}: big-endian checkpoints are not supported")
        return prefix

    def _entry_view(self, name: str) -> memoryview:
        """Zero-copy bytes of a stored (uncompressed) entry, checked against the file size."""
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise ModelFormatError(f"{self.path}: storage entry {name!r} is missing from the archive") from None
        off = info.header_offset
        if off + 30 > self._size:
            raise ModelFormatError(f"{self.path}: truncated at entry {name!r} (local header past end of file)")
        sig, *_rest = struct.unpack_from("<IHHHHHIIIHH", self._mm, off)
        if sig != 0x04034B50:
            raise ModelFormatError(f"{self.path}: corrupt zip local header for {name!r} at byte {off}")
        name_len, extra_len = struct.unpack_from("<HH", self._mm, off + 26)
        start = off + 30 + name_len + extra_len
        end = start + info.compress_size
        if end > self._size:
            raise ModelFormatError(
                f"{self.path}: truncated: entry {name!r} needs bytes {start}..{end} but the file has {self._size}"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            return memoryview(self._zip.read(name))  # rare: compressed archives cannot be mapped
        return memoryview(self._mm)[start:end]

    def _storage(self, saved_id: Any) -> _Storage:
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] == "storage"):
            raise UnsafeCheckpointError(f"{self.path}: unexpected persistent id {saved_id!r} in data.pkl")
        _, stype, key, _location, numel = saved_id
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise ModelFormatError(f"{self.path}: malformed storage record {saved_id!r}")
        if key not in self._storages:
            raw = self._entry_view(f"{self._prefix}data/{key}")
            dtype = stype.dtype or np.dtype(np.uint8)
            if numel * dtype.itemsize > len(raw):
                raise ModelFormatError(
                    f"{self.path}: storage {key} declares {numel} x {dtype} but has {len(raw)} bytes"
                )
            self._storages[key] = _Storage(key, np.frombuffer(raw, dtype=dtype, count=numel))
        return self._storages[key]

    def _tensor(self, storage: _Storage, offset: int, size, stride, dtype: np.dtype | None = None) -> np.ndarray:
        if not isinstance(storage, _Storage):
            raise ModelFormatError(f"{self.path}: tensor record without a storage")
        data = storage.data
        if dtype is not None and dtype != data.dtype:
            data = data.view(dtype)  # untyped storage (bytes) + explicit dtype
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
            raise ModelFormatError(f"{self.path}: bad tensor geometry size={size} stride={stride} offset={offset}")
        if 0 not in size:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= data.size:
                raise ModelFormatError(
                    f"{self.path}: tensor of size {size} (stride {stride}, offset {offset}) reads past "
                    f"storage {storage.key} of {data.size} elements"
                )
        else:
            return np.zeros(size, dtype=data.dtype)
        item = data.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            data[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
        )

    def _find_class(self, module: str, name: str):
        path = self.path

        def rebuild_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
            return self._tensor(storage, offset, size, stride)

        def rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
            if not isinstance(dtype, _DType):
                raise ModelFormatError(f"{path}: _rebuild_tensor_v3 without a dtype")
            return self._tensor(storage, offset, size, stride, dtype.dtype)

        def rebuild_parameter(data, requires_grad=False, hooks=None):
            return data  # an nn.Parameter is just its tensor here

        if module == "torch._utils":
            table = {
                "_rebuild_tensor_v2": rebuild_v2,
                "_rebuild_tensor": lambda storage, offset, size, stride: self._tensor(storage, offset, size, stride),
                "_rebuild_tensor_v3": rebuild_v3,
                "_rebuild_parameter": rebuild_parameter,
            }
            if name in table:
                return table[name]
        elif module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        elif name == "UntypedStorage" and module in ("torch", "torch.storage"):
            return _StorageType(name, None)
        elif module == "torch" and name in _TORCH_DTYPES:
            return _DType(name, _TORCH_DTYPES[name])
        elif module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: data.pkl asks for the global {module}.{name}, which a weights "
            "file has no need for (only tensor rebuild records and storages are allowed)"
        )

    def load(self) -> Any:
        owner = self

        class _Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                return owner._find_class(module, name)

            def persistent_load(self, saved_id):
                return owner._storage(saved_id)

        try:
            data = self._zip.read(self._prefix + "data.pkl")
        except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as e:
            raise ModelFormatError(f"{self.path}: cannot read data.pkl ({e})") from None
        try:
            return _Unpickler(io.BytesIO(data)).load()
        except (ModelFormatError, UnsafeCheckpointError):
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError) as e:
            raise ModelFormatError(f"{self.path}: corrupt data.pkl ({type(e).__name__}: {e})") from None
        finally:
            # Tensors are views of the memory map, which stays alive with them; the zip handle
            # is no longer needed.
            self._zip.close()


def load_pth(path: str | os.PathLike) -> Any:
    """Load a torch.save'd object (usually a state dict) with tensors as read-only numpy arrays."""
    return PthFile(path).load()


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a checkpoint that must be a flat {name: tensor} dict (e.g. Meta's consolidated.*.pth)."""
    obj = load_pth(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) and len(obj) <= 4:
        obj = obj["model"]  # some training frameworks wrap the weights
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, np.ndarray):
            raise ModelFormatError(f"{path}: entry {k!r} is not a tensor ({type(v).__name__})")
    return dict(obj)
