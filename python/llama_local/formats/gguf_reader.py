"""A lean reader of GGUF headers: metadata as plain Python values, tensor infos, and zero-copy views
of tensor data in a read-only memory map.

gguf-py's GGUFReader keeps a numpy object for every element of every metadata array; for a
Llama 3 vocabulary (128K tokens, 280K merges) that is over half a gigabyte before a single weight
is touched. This reader keeps what the model needs: strings as Python strings, numeric arrays as
numpy arrays. Every read is bounds-checked, so a truncated or corrupt header raises
GGUFFormatError naming the byte offset, never an IndexError or a huge allocation.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3, little-endian).
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types: id -> (struct format, numpy dtype); 8 = string, 9 = array.
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
            10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64)}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(ValueError):
    """The file is not a well-formed GGUF file; the message names where."""


@dataclass
class TensorInfo:
    name: str
    tensor_type: Any          # gguf.GGMLQuantizationType
    shape: tuple[int, ...]    # GGUF order: ne0 (the row length) first
    data_offset: int          # absolute, in the file
    n_bytes: int
    _reader: "GGUFHeader"

    @property
    def data(self) -> np.ndarray:
        """The tensor's bytes (floats as their dtype), a read-only view of the mapped file, in
        gguf-py's shapes: [rows, row bytes] for block types, numpy order for floats."""
        return self._reader.tensor_data(self)


class _Cursor:
    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFFormatError(f"{what} at byte {self.pos} runs past the end of the file ({self.size} bytes)")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFFormatError(f"{what} at byte {self.pos - n} is not UTF-8 ({e})") from None


# String arrays at least this long are kept mapped (MappedStrings) rather than as Python lists.
_LAZY_STRINGS = 4096


class MappedStrings(Sequence):
    """A GGUF string array read from the mapped file on access: item k is the UTF-8 string whose
    8-byte length field starts at bounds[k] and which ends at bounds[k + 1]. Checked at parse."""

    def __init__(self, buf, bounds: np.ndarray):
        self._buf, self._bounds = buf, bounds

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        n = len(self)
        if not -n <= k < n:
            raise IndexError(k)
        k %= n
        return bytes(self._buf[int(self._bounds[k]) + 8:int(self._bounds[k + 1])]).decode("utf-8")

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]


class GGUFHeader:
    """The header of a GGUF file: `fields` (key -> value), `tensors` (TensorInfo, file order)."""

    def __init__(self, path: str | Path):
        import gguf
        self.path = Path(path)
        with open(self.path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise GGUFFormatError("empty file")
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        c = _Cursor(self._mmap, size)
        c.need(4, "magic")
        if bytes(self._mmap[:4]) != GGUF_MAGIC:
            raise GGUFFormatError("no GGUF magic at byte 0")
        c.pos = 4
        self.version = c.unpack("<I", "version")
        if self.version not in (2, 3):
            raise GGUFFormatError(f"GGUF version {self.version} is not supported (2 or 3)")
        n_tensors = c.unpack("<Q", "tensor count")
        n_kv = c.unpack("<Q", "metadata count")
        # Each entry takes at least 8 bytes: counts past what the file could hold are lies.
        if n_tensors > size // 8 or n_kv > size // 8:
            raise GGUFFormatError(f"header claims {n_tensors} tensors and {n_kv} metadata entries, "
                                  f"more than {size} bytes can hold")
        self.fields: dict[str, Any] = {}
        for i in range(n_kv):
            key = c.string(f"metadata key #{i}")
            vtype = c.unpack("<I", f"type of metadata {key!r}")
            self.fields[key] = self._value(c, vtype, f"metadata {key!r}")
        alignment = self.fields.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"general.alignment {alignment!r} is not a power of two")
        self.alignment = alignment
        infos = []
        for i in range(n_tensors):
            name = c.string(f"name of tensor #{i}")
            n_dims = c.unpack("<I", f"tensor {name!r}: dimension count")
            if not 1 <= n_dims <= 4:
                raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions")
            dims = tuple(c.unpack("<Q", f"tensor {name!r}: shape") for _ in range(n_dims))
            raw_type = c.unpack("<I", f"tensor {name!r}: type")
            offset = c.unpack("<Q", f"tensor {name!r}: offset")
            infos.append((name, dims, raw_type, offset))
        self.data_start = -(-c.pos // alignment) * alignment
        self.tensors = self._tensor_infos(infos, gguf)

    def _value(self, c: _Cursor, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALARS:
            return c.unpack(_SCALARS[vtype][0], what)
        if vtype == _STRING:
            return c.string(what)
        if vtype != _ARRAY or depth > 0:
            raise GGUFFormatError(f"{what} has unknown value type {vtype}")
        etype = c.unpack("<I", f"{what}: element type")
        n = c.unpack("<Q", f"{what}: length")
        if etype in _SCALARS:
            dt = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
            c.need(n * dt.itemsize, what)
            arr = np.frombuffer(self._mmap, dtype=dt, count=n, offset=c.pos).copy()
            c.pos += n * dt.itemsize
            return arr
        if etype == _STRING:
            if n > (c.size - c.pos) // 8:
                raise GGUFFormatError(f"{what}: {n} strings cannot fit in the rest of the file")
            if n < _LAZY_STRINGS:
                return [c.string(f"{what}[{k}]") for k in range(n)]
            # A vocabulary (tokens, merges): every string is checked now but kept as offsets into
            # the mapped file, decoded when read. As Python strings a 49K-token vocabulary and its
            # merges hold ~8 MiB for the life of the model, and only a first load reads them.
            bounds = np.empty(n + 1, np.int64)  # bounds[k]: where string k's length field starts
            for k in range(n):
                bounds[k] = c.pos
                c.string(f"{what}[{k}]")
            bounds[n] = c.pos
            return MappedStrings(self._mmap, bounds)
        raise GGUFFormatError(f"{what}: arrays of type {etype} are not supported")

    def _tensor_infos(self, infos, gguf) -> list[TensorInfo]:
        """Every tensor's type known, its rows whole blocks, its bytes inside the file, aligned,
        and apart from the others' -- checked before any view of its data is made."""
        known = {int(t): t for t in gguf.GGMLQuantizationType}
        out, seen = [], set()
        for name, dims, raw_type, offset in infos:
            if name in seen:
                raise GGUFFormatError(f"tensor {name!r} appears twice")
            seen.add(name)
            ggml_type = known.get(raw_type)
            if ggml_type is None or ggml_type not in gguf.GGML_QUANT_SIZES:
                raise GGUFFormatError(f"tensor {name!r} has unknown GGML type {raw_type}")
            block, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
            if min(dims) <= 0:
                raise GGUFFormatError(f"tensor {name!r} has shape {list(dims)}")
            if dims[0] % block:
                raise GGUFFormatError(f"tensor {name!r} of type {ggml_type.name} has rows of {dims[0]} "
                                      f"elements, not a multiple of its block size {block}")
            if offset % self.alignment:
                raise GGUFFormatError(f"tensor {name!r} has data offset {offset}, not a multiple of the "
                                      f"file's alignment {self.alignment}")
            n_bytes = math.prod(dims) // block * type_size
            begin = self.data_start + offset
            if begin + n_bytes > self.size:
                raise GGUFFormatError(f"tensor {name!r} ({ggml_type.name} {list(dims)}) needs bytes "
                                      f"{begin}..{begin + n_bytes} but the file has {self.size} bytes (truncated?)")
            out.append(TensorInfo(name, ggml_type, dims, begin, n_bytes, self))
        spans = sorted((t.data_offset, t.data_offset + t.n_bytes, t.name) for t in out)
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise GGUFFormatError(f"tensors {n0!r} (bytes {b0}..{e0}) and {n1!r} (bytes {b1}..{e1}) overlap")
        return out

    def tensor_bytes(self, t: TensorInfo) -> np.ndarray:
        """The raw bytes of a tensor: a read-only uint8 view of the mapped file."""
        return np.frombuffer(self._mmap, dtype=np.uint8, count=t.n_bytes, offset=t.data_offset)

    def tensor_data(self, t: TensorInfo) -> np.ndarray:
        import gguf
        raw = self.tensor_bytes(t)
        rows = tuple(int(d) for d in reversed(t.shape))
        if t.tensor_type.name in _PLAIN_DTYPES:
            return raw.view(np.dtype(_PLAIN_DTYPES[t.tensor_type.name]).newbyteorder("<")).reshape(rows)
        return raw.reshape(gguf.quant_shape_to_byte_shape(rows, t.tensor_type))


# Tensor types gguf-py hands out as typed arrays (the rest as raw bytes).
_PLAIN_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                 "I32": np.int32, "I64": np.int64}
