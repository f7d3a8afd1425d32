"""Memory plans from config.json alone: what a model needs in each weight format, whether it fits
this machine, and for one that does not, how many GPUs vLLM would spread it over.

Bytes per format follow what the formats store (llm-compressor's conventions for the quantized
ones: the embeddings, norms and LM head stay bf16):
- bf16: 2 bytes per parameter;
- fp8 (W8A16, per-channel): 1 byte per linear weight plus one bf16 scale per output row;
- int4 (W4A16, group 128): half a byte per linear weight plus one bf16 scale per 128 weights.
llama_local's own KV cache holds 2 (K and V) x layers x kv_heads x head_dim values per position, in
the dtype chosen with kv_cache (KV_CACHE_BYTES: f16 by default; q8_0 is llama.cpp's, 32 int8 codes
and one fp16 scale per block). vLLM's is bf16 and takes what is left of 90% of each GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import ModelConfig

FORMATS = ("bf16", "fp8", "int4")
INT4_GROUP = 128
VLLM_GPU_UTILIZATION = 0.9   # vLLM's default --gpu-memory-utilization
GPUS_PER_NODE = 8
RUNTIME_OVERHEAD = 1.10      # scratch buffers, tokenizer, Python: ~10% over weights + KV cache
# Bytes per cached value of each KV cache dtype (LLM(kv_cache=...), --kv-cache); the first is the default.
KV_CACHE_BYTES = {"f16": 2, "bf16": 2, "q8_0": 34 / 32, "f32": 4}
KV_CACHE_TYPES = tuple(KV_CACHE_BYTES)


@dataclass
class FormatPlan:
    format: str
    weight_bytes: int
    kv_bytes: int            # llama_local's cache for n_ctx positions, in the plan's kv_cache dtype
    total_bytes: int         # what llama_local would need on this machine
    fits: bool
    vllm_tp: int | None      # tensor-parallel size that serves it on GPUs of gpu_bytes, None if > 16
    vllm_kv_bytes: int       # vLLM's bf16 KV cache for one sequence of n_ctx


def linear_rows(c: ModelConfig) -> int:
    """Output rows of those linear weights (one per-channel scale each)."""
    d, hd = c.hidden_size, c.head_dim
    per_layer = hd * (c.num_attention_heads + 2 * c.num_key_value_heads) + d + 2 * c.intermediate_size + d
    return c.num_hidden_layers * per_layer


def weight_bytes(c: ModelConfig, fmt: str) -> int:
    total, lin = c.n_params(), c.linear_params()
    rest = total - lin                      # embeddings, norms, LM head: bf16 in every format
    if fmt == "bf16":
        return 2 * total
    if fmt == "fp8":
        return lin + 2 * linear_rows(c) + 2 * rest
    if fmt == "int4":
        return lin // 2 + 2 * (lin // INT4_GROUP) + 2 * rest
    raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")


def check_kv_cache(kv_cache: str) -> str:
    if kv_cache not in KV_CACHE_TYPES:
        raise ValueError(f"unknown KV cache dtype {kv_cache!r} (expected one of {', '.join(KV_CACHE_TYPES)})")
    return kv_cache


def kv_bytes(c: ModelConfig, n_ctx: int, kv_cache: str = "f16") -> int:
    """Bytes of the K and V caches at n_ctx positions (each a row of kv_heads x head_dim values; K is
    kept in blocks of 16 positions, so its positions round up to a multiple of 16)."""
    row = c.num_key_value_heads * c.head_dim
    row_bytes = int(row * KV_CACHE_BYTES[check_kv_cache(kv_cache)])
    return c.num_hidden_layers * row_bytes * (n_ctx + -(-n_ctx // 16) * 16)


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def vllm_tp(c: ModelConfig, weights: int, n_ctx: int, gpu_bytes: int) -> int | None:
    """The smallest tensor-parallel size (1, 2, 4, 8, 16) whose per-GPU share of the weights plus
    one sequence's bf16 KV cache fits vLLM's budget, and that divides the attention heads."""
    for tp in (1, 2, 4, 8, 16):
        if c.num_attention_heads % min(tp, GPUS_PER_NODE):  # past one node: pipeline stages
            continue
        per_gpu = weights / tp + kv_bytes(c, n_ctx, "bf16") / tp
        if per_gpu <= VLLM_GPU_UTILIZATION * gpu_bytes * 0.95:  # ~5% for activations and CUDA graphs
            return tp
    return None


def plan(c: ModelConfig, n_ctx: int, gpu_bytes: int, machine_bytes: int | None = None,
         kv_cache: str = "f16") -> list[FormatPlan]:
    if not isinstance(n_ctx, int) or n_ctx <= 0:
        raise ValueError(f"n_ctx must be a positive integer, got {n_ctx!r}")
    machine = machine_memory() if machine_bytes is None else machine_bytes
    rows = []
    kv = kv_bytes(c, n_ctx, kv_cache)
    for fmt in FORMATS:
        w = weight_bytes(c, fmt)
        total = int((w + kv) * RUNTIME_OVERHEAD)
        rows.append(FormatPlan(fmt, w, kv, total, machine > 0 and total <= machine,
                               vllm_tp(c, w, n_ctx, gpu_bytes), kv_bytes(c, n_ctx, "bf16")))
    return rows


def vllm_command(source: str, fmt: str, tp: int, n_ctx: int, already_fp8: bool = False) -> str:
    """The `vllm serve` line for a format: bf16 as stored; fp8 quantized by vLLM as it loads
    (or already FP8, e.g. Meta's FP8 release); int4 from the compressed-tensors W4A16 checkpoint
    that `llama-local quantize` writes first (it streams one tensor at a time, so a machine far
    smaller than the model can write it)."""
    nodes = -(-tp // GPUS_PER_NODE)
    target = source if fmt != "int4" else int4_output(source)
    extra = " --quantization fp8" if fmt == "fp8" and not already_fp8 else ""
    cmd = f"vllm serve {target}{extra} --tensor-parallel-size {min(tp, GPUS_PER_NODE)} --max-model-len {n_ctx}"
    if nodes > 1:
        cmd += f" --pipeline-parallel-size {nodes}"
    if fmt == "int4":
        cmd = f"llama-local quantize {source} {target} --format int4 --group-size {INT4_GROUP} && {cmd}"
    return cmd


def int4_output(source: str) -> str:
    return source.rstrip("/").rsplit("/", 1)[-1] + "-int4-g128"
