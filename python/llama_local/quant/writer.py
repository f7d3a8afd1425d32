"""`llama-local quantize`: a checkpoint rewritten in compressed-tensors' format, one tensor at a time.

The decoder layers' linear weights are quantized; embeddings, norms and (unless
--quantize-lm-head) the LM head stay bf16, as llm-compressor leaves them. The output is a Hugging Face directory that vLLM and transformers
(with compressed-tensors installed) load, and so does LLM(). It is written into a temporary
directory renamed at the end: an interrupted run leaves nothing, and the source is only read.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import ml_dtypes
import numpy as np

from ..errors import LlamaLocalError
from ..fsutil import atomic_output_dir
from ..formats.safetensors_io import LazyTensor, write_checkpoint
from . import fp8, int4
from .source import Source, SourceTensor

FORMATS = ("fp8", "int4")
METHODS = ("rtn", "gptq")
DEFAULT_MAX_SHARD_BYTES = 4 * 10**9
# The linear layers llm-compressor's "Linear" target reaches in a Llama decoder (lm_head is ignored).
LINEAR = re.compile(r"^model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight$")
LAYER_PROJ = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.weight$")


def quantization_config(fmt: str, group: int = 128, symmetric: bool = False,
                        dynamic_activations: bool = False, method: str = "rtn", lm_head: bool = False) -> dict:
    """config.json's quantization_config, in compressed-tensors' schema. dynamic_activations
    (fp8 only) makes it llm-compressor's FP8_DYNAMIC: W8A8, each token's activations scaled to
    FP8 at run time by GPU kernels that gain from FP8 products (vLLM on Ada/Hopper); the weights
    are the same, and llama_local's CPU kernels keep fp32 activations either way."""
    activations = None
    if dynamic_activations:
        if fmt != "fp8":
            raise LlamaLocalError("dynamic activation quantization goes with --format fp8 only")
        activations = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "dynamic": True,
                       "group_size": None, "block_structure": None, "observer": None, "actorder": None}
    if fmt == "fp8":
        weights, compression = fp8.weight_config(), "float-quantized"
    elif fmt == "int4":
        weights = int4.weight_config(group, symmetric, actorder="weight" if method == "gptq" else None)
        compression = "pack-quantized"
    else:
        raise LlamaLocalError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
    return {
        "quant_method": "compressed-tensors",
        "format": compression,
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                      "input_activations": activations, "output_activations": None,
                                      "format": compression}},
        "ignore": [] if lm_head else ["lm_head"],
        "kv_cache_scheme": None,
    }


class _Once:
    """One weight's quantization, computed when the first of its output tensors is written and
    dropped after the last (the outputs of a weight are written back to back)."""

    def __init__(self, compute: Callable[[], tuple]):
        self.compute, self.value = compute, None

    def part(self, i: int, last: bool = False, then: Callable = lambda v: v) -> Callable[[], np.ndarray]:
        def produce() -> np.ndarray:
            if self.value is None:
                self.value = self.compute()
            out = then(self.value[i])
            if last:
                self.value = None
            return out
        return produce


def _outputs(name: str, shape: tuple[int, ...], load: Callable[[], np.ndarray], fmt: str,
             group: int, symmetric: bool, quantizer: Callable | None = None, lm_head: bool = False):
    """(name, dtype, shape, produce) for each tensor the output holds in place of source `name`."""
    bf16 = np.dtype(ml_dtypes.bfloat16)
    if not (_quantized(name, lm_head) and len(shape) == 2):
        return [(name, bf16, shape, lambda: load().astype(ml_dtypes.bfloat16))]
    prefix = name[: -len("weight")]
    load = _finite(name, load)
    if fmt == "fp8":
        q = _Once(lambda: fp8.quantize_fp8_channel(load()))
        return [(name, np.dtype(ml_dtypes.float8_e4m3fn), shape, q.part(0)),
                (prefix + "weight_scale", bf16, (shape[0], 1), q.part(1, last=True))]
    # int4: weight_packed, weight_scale, weight_shape (and weight_zero_point)
    n, k = shape
    q = _Once(lambda: quantizer(name, load()) if quantizer else int4.quantize_int4(load(), group, symmetric, name))
    out = [(prefix + "weight_packed", np.dtype(np.int32), (n, -(-k // 8)), q.part(0, then=lambda v: int4.pack_int4(v, 1))),
           (prefix + "weight_scale", bf16, (n, k // group), q.part(1, last=symmetric)),
           (prefix + "weight_shape", np.dtype(np.int64), (2,), lambda: np.array([n, k], dtype=np.int64))]
    if not symmetric:
        out.append((prefix + "weight_zero_point", np.dtype(np.int32), (-(-n // 8), k // group),
                    q.part(2, last=True, then=lambda v: int4.pack_int4(v, 0))))
    return out


def _finite(name: str, load: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """`load`, refusing a weight with NaN or infinite values: no scale represents them, and the
    search for one would quietly write a group of garbage."""
    def checked() -> np.ndarray:
        w = load()
        if not np.isfinite(w).all():
            bad = np.argwhere(~np.isfinite(w))
            raise LlamaLocalError(f"tensor {name!r} holds {len(bad)} NaN or infinite value(s), the first at "
                                  f"{tuple(int(i) for i in bad[0])}; a quantized weight cannot represent them")
        return w
    return checked


def _quantized(name: str, lm_head: bool) -> bool:
    return bool(LINEAR.match(name)) or (lm_head and name == "lm_head.weight")


def _gptq_quantizer(source: Source, text: str, max_tokens: int, group: int, symmetric: bool,
                    on_pass: Callable[[int, int], None] | None):
    """quantizer(name, w) running GPTQ with the engine's Hessians for that weight's layer; a weight
    outside the decoder layers (the LM head, with --quantize-lm-head) has no observed inputs and is
    rounded."""
    from ..llm import LLM
    from . import gptq
    window = 512
    llm = LLM(str(source.path), n_ctx=window, progress=False)
    hessians = gptq.Hessians(llm, gptq.calibration_windows(llm, text, window, max_tokens), on_pass=on_pass)

    def quantize_weight(name: str, w: np.ndarray):
        match = LAYER_PROJ.match(name)
        if match is None:
            return int4.quantize_int4(w, group, symmetric, name)
        layer, proj = match.groups()
        return gptq.gptq_int4(w, hessians.get(int(layer), gptq.INPUT_OF[proj]), group, symmetric, name)
    return quantize_weight


def quantize(src: str | os.PathLike, dst: str | os.PathLike, fmt: str = "fp8", force: bool = False,
             progress: Callable[[int, int], None] | None = None,
             max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, group_size: int = 128,
             symmetric: bool = False, dynamic_activations: bool = False, method: str = "rtn",
             calibration: str | None = None, calibration_tokens: int = 4096,
             on_calibration: Callable[[int, int], None] | None = None, quantize_lm_head: bool = False) -> Path:
    """Write `dst`, a compressed-tensors checkpoint of `src` in `fmt`. progress(done, total) is
    called with source tensors done. method "gptq" (int4 only) calibrates on the text
    `calibration` (its first calibration_tokens tokens) through the engine; on_calibration(done,
    total) reports its passes over the layers. quantize_lm_head quantizes the LM head too (by
    rounding), as llama.cpp's quantized files do; a model whose head is its embedding table
    (tie_word_embeddings) gets a quantized copy as lm_head, and the embeddings stay bf16."""
    if fmt not in FORMATS:
        raise LlamaLocalError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
    if method not in METHODS:
        raise LlamaLocalError(f"unknown method {method!r} (expected {', '.join(METHODS)})")
    qconfig = quantization_config(fmt, group_size, symmetric, dynamic_activations, method,
                                  quantize_lm_head)  # refuses bad combinations
    if method == "gptq" and (fmt != "int4" or not calibration):
        raise LlamaLocalError("--method gptq goes with --format int4 and a --calibration text")
    if method == "gptq" and calibration_tokens < 16:
        raise LlamaLocalError(f"--calibration-tokens {calibration_tokens}: GPTQ needs a few hundred at least")
    source = Source(str(src))
    dst = Path(dst).expanduser()
    if dst.resolve() == source.path.resolve():
        raise LlamaLocalError(f"{dst}: the output would replace the source")
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} already exists (pass --force to replace it)")
    tensors = list(source.tensors())
    if not any(LINEAR.match(t.name) for t in tensors):
        raise LlamaLocalError(f"{source.path}: no Llama decoder linear weights to quantize")
    untie = quantize_lm_head and not any(t.name == "lm_head.weight" for t in tensors)
    if untie:
        embed = next((t for t in tensors if t.name == "model.embed_tokens.weight"), None)
        if embed is None:
            raise LlamaLocalError(f"{source.path}: no lm_head.weight and no model.embed_tokens.weight to quantize "
                                  "as the LM head")
        tensors.append(SourceTensor("lm_head.weight", embed.shape, embed.load))
    if fmt == "int4":  # refuse before writing anything
        if group_size not in int4.GROUP_SIZES:
            raise LlamaLocalError(f"--group-size {group_size}: expected one of "
                                  f"{', '.join(map(str, int4.GROUP_SIZES))}")
        for t in tensors:
            if _quantized(t.name, quantize_lm_head) and t.shape[1] % group_size:
                fits = [g for g in int4.GROUP_SIZES if t.shape[1] % g == 0]
                raise LlamaLocalError(f"tensor {t.name!r}: its input dimension {t.shape[1]} is not a multiple "
                                      f"of --group-size {group_size}" +
                                      (f" (try {' or '.join(map(str, fits))})" if fits else ""))
    quantizer = None
    if method == "gptq":
        quantizer = _gptq_quantizer(source, calibration, calibration_tokens, group_size, symmetric, on_calibration)
    outputs = [o for t in tensors
               for o in _outputs(t.name, t.shape, t.load, fmt, group_size, symmetric, quantizer, quantize_lm_head)]
    done = [0]
    n_src = len(tensors)

    def lazy(i: int) -> LazyTensor:
        name, dtype, shape, produce = outputs[i]

        def load():
            arr = produce()
            if name.endswith(".weight") or name.endswith(".weight_packed"):
                done[0] += 1
                if progress:
                    progress(done[0], n_src)
            return arr
        return LazyTensor(dtype, shape, load)

    with atomic_output_dir(dst, force=force) as tmp:
        source.write_side_files(tmp)
        config = json.loads((tmp / "config.json").read_text())
        config["quantization_config"] = qconfig
        if untie:
            config["tie_word_embeddings"] = False
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_checkpoint(tmp, [(outputs[i][0], lazy(i)) for i in range(len(outputs))], max_shard_bytes)
    return dst
