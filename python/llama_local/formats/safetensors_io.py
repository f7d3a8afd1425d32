"""Safetensors reading (zero-copy, memory-mapped, every header field checked) and writing.

Our own reader rather than the `safetensors` package because the engine needs numpy views of the
mapped file for every dtype (bf16 and fp8 included) without a copy, and because a bad header must
become a ModelFormatError that names the file and tensor before anything is allocated.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

from ..errors import ModelFormatError

# safetensors dtype name <-> numpy dtype
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "U16": np.dtype(np.uint16),
    "U32": np.dtype(np.uint32),
    "U64": np.dtype(np.uint64),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in DTYPES.items()}

MAX_HEADER_BYTES = 100 * 1024 * 1024


def dtype_name(dtype: np.dtype) -> str:
    try:
        return _NAMES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"dtype {dtype} has no safetensors name") from None


class SafetensorsFile:
    """One .safetensors file mapped read-only; `tensor(name)` is a view into the mapping."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"{self.path}: no such safetensors file")
        size = self.path.stat().st_size
        if size < 8:
            raise ModelFormatError(f"{self.path}: truncated safetensors file ({size} bytes, no header)")
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ModelFormatError(
                    f"{self.path}: header length {n} runs past the end of the file ({size} bytes)")
            raw = f.read(n)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"{self.path}: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise ModelFormatError(f"{self.path}: header is not a JSON object")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        data_len = size - self._data_start
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            self._entries[name] = self._check_entry(name, info, data_len)
        self._mmap: mmap.mmap | None = None
        self._size = size

    def _check_entry(self, name, info, data_len):
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(info, dict):
            raise ModelFormatError(f"{where}: header entry is not an object")
        dt = DTYPES.get(info.get("dtype"))
        if dt is None:
            raise ModelFormatError(f"{where}: unknown dtype {info.get('dtype')!r}")
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ModelFormatError(f"{where}: bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs) or not 0 <= offs[0] <= offs[1]):
            raise ModelFormatError(f"{where}: bad data_offsets {offs!r}")
        if offs[1] > data_len:
            raise ModelFormatError(
                f"{where}: data_offsets {offs} run past the end of the file "
                f"(data section is {data_len} bytes; file truncated?)")
        nbytes = math.prod(shape) * dt.itemsize
        if offs[1] - offs[0] != nbytes:
            raise ModelFormatError(
                f"{where}: {offs[1] - offs[0]} bytes stored but dtype {info['dtype']} "
                f"shape {shape} needs {nbytes}")
        return dt, tuple(shape), offs[0], offs[1]

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def info(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        dt, shape, _, _ = self._entries[name]
        return dt, shape

    def tensor(self, name: str) -> np.ndarray:
        """A read-only numpy view of the tensor in the mapped file (no copy)."""
        if name not in self._entries:
            raise ModelFormatError(f"{self.path}: no tensor named {name!r}")
        dt, shape, b, e = self._entries[name]
        if self._mmap is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        count = (e - b) // dt.itemsize
        return np.frombuffer(self._mmap, dtype=dt, count=count,
                             offset=self._data_start + b).reshape(shape)


class Checkpoint:
    """All tensors of a model directory: one model.safetensors or shards listed in an index."""

    def __init__(self, directory: str | os.PathLike):
        d = Path(directory)
        index = d / "model.safetensors.index.json"
        self.files: list[SafetensorsFile] = []
        self._where: dict[str, SafetensorsFile] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ModelFormatError(f"{index}: not a safetensors index ({e})") from None
            by_file: dict[str, SafetensorsFile] = {}
            for name, fname in weight_map.items():
                if fname not in by_file:
                    by_file[fname] = SafetensorsFile(d / fname)
                    self.files.append(by_file[fname])
                if name not in by_file[fname]:
                    raise ModelFormatError(f"{index}: lists {name!r} in {fname}, which lacks it")
                self._where[name] = by_file[fname]
        else:
            shards = sorted(d.glob("*.safetensors"))
            if not shards:
                raise ModelFormatError(f"{d}: no *.safetensors file and no model.safetensors.index.json")
            for p in shards:
                f = SafetensorsFile(p)
                self.files.append(f)
                for name in f.keys():
                    self._where[name] = f

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def info(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        return self._file(name).info(name)

    def tensor(self, name: str) -> np.ndarray:
        return self._file(name).tensor(name)

    def nbytes(self) -> int:
        """Bytes of the checkpoint's files."""
        return sum(f.path.stat().st_size for f in self.files)

    def core_tensors(self) -> dict[str, dict]:
        """Every tensor as the core's Model takes it: views of the mapped files, which the core uses
        in place or, once it has repacked a weight (bf16 into tiles), releases ("releasable")."""
        return {name: {"format": "float", "data": self.tensor(name), "releasable": True} for name in self.keys()}

    def _file(self, name: str) -> SafetensorsFile:
        try:
            return self._where[name]
        except KeyError:
            raise ModelFormatError(f"checkpoint has no tensor named {name!r}") from None


@dataclass
class LazyTensor:
    """A tensor to be written whose data is produced only when its turn comes (bounded memory)."""
    dtype: np.dtype
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]


def write_safetensors(path: str | os.PathLike,
                      tensors: Mapping[str, np.ndarray | LazyTensor] | Iterable[tuple[str, np.ndarray | LazyTensor]],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write a .safetensors file through a temporary file renamed at the end.

    Values may be LazyTensors, so a converter holds one tensor in memory at a time.
    """
    path = Path(path)
    items = list(tensors.items() if isinstance(tensors, Mapping) else tensors)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, t in items:
        dt = np.dtype(t.dtype)
        shape = tuple(int(s) for s in t.shape)
        nbytes = math.prod(shape) * dt.itemsize
        header[name] = {"dtype": dtype_name(dt), "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name, t in items:
                arr = t.load() if isinstance(t, LazyTensor) else t
                arr = np.ascontiguousarray(arr)
                want = header[name]
                if list(arr.shape) != want["shape"] or dtype_name(arr.dtype) != want["dtype"]:
                    raise ValueError(f"tensor {name!r}: produced {arr.dtype}{list(arr.shape)}, "
                                     f"declared {want['dtype']}{want['shape']}")
                f.write(memoryview(arr.reshape(-1).view(np.uint8)))
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_checkpoint(out_dir: str | os.PathLike, tensors: list[tuple[str, LazyTensor]], max_shard_bytes: int) -> None:
    """model.safetensors, or shards of at most max_shard_bytes (a bigger tensor gets its own) with
    model.safetensors.index.json, as transformers writes them. Tensors are produced one at a time."""
    out = Path(out_dir)
    sizes = [math.prod(t.shape) * np.dtype(t.dtype).itemsize for _, t in tensors]
    groups: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(sizes):
        if groups[-1] and total + n > max_shard_bytes:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    names = (["model.safetensors"] if len(groups) == 1 else
             [f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" for k in range(len(groups))])
    for fname, group in zip(names, groups):
        write_safetensors(out / fname, [tensors[i] for i in group], metadata={"format": "pt"})
    if len(groups) > 1:
        index = {"metadata": {"total_size": sum(sizes)},
                 "weight_map": {tensors[i][0]: names[k] for k, g in enumerate(groups) for i in g}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

