"""Converting a llama.cpp GGUF file into a Hugging Face-layout model directory.

    convert_gguf("model.gguf", "model-dir")     # config.json, tokenizer*.json, model.safetensors

Weights are dequantized with the `gguf` package (llama.cpp's own Python reference) and stored as
bfloat16; 1-D norm weights too, so that every tensor of the directory has one dtype, as in Meta's
and Hugging Face's releases. llama.cpp's converter permutes the rows of q_proj and k_proj for its
RoPE layout; that is undone here. One tensor is held at a time. (`LLM("model.gguf")` does not
convert: it reads the file in place, see gguf_weights.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import ml_dtypes
import numpy as np

from ..errors import ModelFormatError
from ..fsutil import atomic_output_dir
from .gguf_file import GGUFFile, _gguf
from .llama_layout import unpermute_qk
from ..progress import byte_progress
from .safetensors_io import LazyTensor, write_checkpoint

DEFAULT_MAX_SHARD_BYTES = 4 * 10**9


def load_tensor(t, heads: int | None, shape: tuple[int, ...], path: Path, dtype=ml_dtypes.bfloat16) -> np.ndarray:
    """One tensor of the plan, dequantized by gguf-py, q/k rows un-permuted, in `dtype`."""
    try:
        w = _gguf().quants.dequantize(t.data, t.tensor_type).reshape(shape)
    except (ValueError, OSError) as e:
        raise ModelFormatError(f"{path}: tensor {t.name!r} cannot be read ({e})") from None
    if heads is not None:
        w = unpermute_qk(w, heads)
    return w.astype(dtype)


def _write_weights(out: Path, plan, path: Path, max_shard_bytes: int, progress: bool) -> None:
    bf16 = np.dtype(ml_dtypes.bfloat16)
    expected = [tuple(int(d) for d in reversed(t.shape)) for _, t, _ in plan]
    sizes = [math.prod(s) * bf16.itemsize for s in expected]
    with byte_progress(progress, sum(sizes), path.name) as advance:
        def lazy(i: int) -> LazyTensor:
            name, t, heads = plan[i]

            def load() -> np.ndarray:
                w = load_tensor(t, heads, expected[i], path)
                advance(sizes[i])
                return w
            return LazyTensor(bf16, expected[i], load)

        write_checkpoint(out, [(plan[i][0], lazy(i)) for i in range(len(plan))], max_shard_bytes)


# ---------------------------------------------------------------------------------------------
# Public API

def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False,
                 progress: bool = True, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write a Hugging Face-layout directory (bf16 safetensors, tokenizer, configs) from a GGUF file.

    Everything is checked before anything is written; the directory appears only when complete.
    An existing `out_dir` is refused unless `force`.
    """
    path = Path(gguf_path)
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists (pass force=True / --force to replace it)")
    f = GGUFFile(path)
    with atomic_output_dir(out, force=force) as tmp:
        f.write_side_files(tmp)
        _write_weights(tmp, f.plan, path, max_shard_bytes, progress)
    return out
