"""A GGUF file loaded in place: its weights stay in the memory-mapped file, quantized as they are,
and the core repacks each one once into its kernels' layout (then drops the mapped pages).

    w = GGUFWeights("model.gguf")   # checked; config, tensor plan
    side = side_files_dir(w)        # config.json + tokenizer files, cached (kilobytes to a few MiB)
    core_tensors = w.core_tensors() # the specs the core's Model takes

No converted copy of the weights is ever written: what the cache directory gets is the small
tokenizer and config files derived from the file's metadata, so that tokenizer loading is fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from . import conversion_cache
from ..fsutil import atomic_output_dir
from .gguf_file import GGUFFile

# Bump when the side files derived from a GGUF change, so that stale cached copies are not reused.
SIDE_FILES_VERSION = 1

_FLOAT_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16)}


class GGUFWeights(GGUFFile):
    def core_tensors(self) -> dict[str, Any]:
        """HF name -> what the core's Model takes: float arrays (views of the file) or block specs.

        Every view is of a read-only file mapping, so the core may drop its pages once it holds its
        own repacked copy ("releasable")."""
        out: dict[str, Any] = {}
        for name, t, heads in self.plan:
            raw = self.tensor_bytes(t)
            shape = [int(d) for d in reversed(t.shape)]  # GGUF lists the row length first
            kind = t.tensor_type.name
            if kind in _FLOAT_DTYPES:
                arr = raw.view(_FLOAT_DTYPES[kind]).reshape(shape)
                out[name] = arr if heads is None else {"format": "float", "data": arr, "qk_heads": heads,
                                                      "releasable": True}
            else:
                spec = {"format": "gguf", "ggml_type": int(t.tensor_type), "data": raw, "shape": shape,
                        "releasable": True}
                if heads is not None:
                    spec["qk_heads"] = heads
                out[name] = spec
        return out

    def nbytes(self) -> int:
        """Bytes of the file."""
        return self.path.stat().st_size

    def type_bytes(self) -> dict[str, int]:
        """Bytes of tensor data per GGML type in the file."""
        out: dict[str, int] = {}
        for _, t, _ in self.plan:
            out[t.tensor_type.name] = out.get(t.tensor_type.name, 0) + int(t.n_bytes)
        return out


def side_files_dir(weights: GGUFFile) -> Path:
    """The cached directory of config.json and tokenizer files for this GGUF, written on first use."""
    def write(src: Path, dst: Path) -> None:
        with atomic_output_dir(dst) as tmp:
            weights.write_side_files(tmp)
        release_freed_memory()

    return conversion_cache.ensure_converted("gguf-meta", weights.path, SIDE_FILES_VERSION, write)


def side_files_cache_dir(gguf_path: str | os.PathLike) -> Path:
    """Where side_files_dir keeps them (see conversion_cache)."""
    return conversion_cache.cache_dir("gguf-meta", gguf_path, SIDE_FILES_VERSION)


def release_freed_memory() -> None:
    """Hands the heap that building a tokenizer freed back to the OS (glibc keeps it otherwise),
    so that it does not add to the peak of the weights loaded next (~2 MiB for SmolLM2's 49K
    vocabulary, measured on the first load's peak RSS). A no-op where there is no malloc_trim."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
