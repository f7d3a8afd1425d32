"""The flash attention kernels (csrc/cuda/flash_attn.cu) on a GPU, against numpy: causal GQA
prefill (odd T, p0 at and off tile edges, head_dim 64 and 128) and flash-decoding (split counts
from 1 to more ranges than tiles, up to 128K positions), bf16 and fp16. Skipped, with the reason,
where this build has no CUDA or the machine no GPU (the schedule itself is proven on the host by
test_cuda_attention_plan.py).

Tolerance (DESIGN.md, flash-attention's rule): the kernel's max error against float64 attention
on the same 16-bit inputs is at most twice that of the textbook 16-bit computation (scores in
fp32, softmax in fp32, P rounded to 16 bits, P V accumulated in fp32, the output rounded)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from test_cuda_attention_plan import attention_reference

INFO = _core.build_info()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not hasattr(_core, "cuda_kernels") or INFO["cuda_devices"] == 0,
                       reason=f"no GPU to run the CUDA kernels: {INFO['cuda_unavailable_reason']}"),
]
HALF = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16}


def needs_bf16(dtype: str) -> None:
    if dtype == "bf16" and "(sm_7" in " ".join(INFO["cuda_device_names"]):
        pytest.skip("bf16 needs sm_80; this GPU runs the fp16 kernels only")


def textbook(q, k, v, p0, n_heads, n_kv_heads, half):
    """Attention as a 16-bit framework computes it: the error the kernel is allowed twice of."""
    T, hd = q.shape[0], q.shape[1] // n_heads
    g = n_heads // n_kv_heads
    out = np.zeros(q.shape, np.float32)
    for h in range(n_heads):
        kh = k[:, (h // g) * hd:(h // g + 1) * hd].astype(np.float32)
        vh = v[:, (h // g) * hd:(h // g + 1) * hd].astype(np.float32)
        s = q[:, h * hd:(h + 1) * hd].astype(np.float32) @ kh.T / np.float32(np.sqrt(hd))
        s[np.arange(p0 + T)[None, :] > p0 + np.arange(T)[:, None]] = -np.inf
        p = np.exp(s - s.max(axis=1, keepdims=True))
        l = p.sum(axis=1, keepdims=True)
        out[:, h * hd:(h + 1) * hd] = (p.astype(half).astype(np.float32) @ vh) / l
    return out.astype(half).astype(np.float64)


def check(T, p0, n_heads, n_kv_heads, hd, dtype, splits=0, seed=0, attention=None):
    """attention: the kernels' runner (the GPU binding, or tests/cuda_emulated.py's)."""
    if attention is None:
        needs_bf16(dtype)
        attention = _core.cuda_kernels.flash_attention
    half = HALF[dtype]
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((T, n_heads * hd)) * 2).astype(half)
    k = rng.standard_normal((p0 + T, n_kv_heads * hd)).astype(half)
    v = rng.standard_normal((p0 + T, n_kv_heads * hd)).astype(half)
    got = attention(q.view(np.uint16), k.view(np.uint16), v.view(np.uint16), p0, n_heads, n_kv_heads, dtype=dtype,
                    splits=splits).view(half).astype(np.float64)
    exact = attention_reference(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), p0, n_heads,
                                n_kv_heads)
    framework = np.abs(textbook(q, k, v, p0, n_heads, n_kv_heads, half) - exact).max()
    err = np.abs(got - exact).max()
    assert np.isfinite(got).all()
    assert err <= 2 * framework + 1e-6, f"error {err:.3g} > 2 x the 16-bit framework's {framework:.3g}"


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("hd", [64, 128])
@pytest.mark.parametrize("T,p0", [(2, 0), (63, 0), (64, 0), (65, 0), (200, 0), (130, 62), (70, 63), (17, 100),
                                  (300, 1000)])
def test_prefill_matches_numpy(T, p0, hd, dtype):
    check(T, p0, 8, 2, hd, dtype)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("n_heads,n_kv_heads", [(4, 4), (32, 8), (16, 1), (24, 8)])
def test_prefill_gqa_groups(n_heads, n_kv_heads, dtype):
    check(100, 30, n_heads, n_kv_heads, 64, dtype)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("hd", [64, 128])
@pytest.mark.parametrize("p0", [0, 15, 63, 64, 1000, 8191])
@pytest.mark.parametrize("splits", [0, 1, 3, 200])
def test_decode_matches_numpy(p0, splits, hd, dtype):
    check(1, p0, 32, 8, hd, dtype, splits=splits)  # 200: more ranges than tiles, most empty


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_decode_at_128k_positions(dtype):
    check(1, 131071, 8, 1, 128, dtype)


def test_bad_arguments_are_refused():
    q = np.zeros((1, 17 * 64), np.uint16)
    kv = np.zeros((1, 64), np.uint16)
    with pytest.raises(RuntimeError, match="16 query heads"):
        _core.cuda_kernels.flash_attention(q, kv, kv, 0, 17, 1)
    with pytest.raises(RuntimeError, match="head_dim"):
        _core.cuda_kernels.flash_attention(np.zeros((2, 96), np.uint16), np.zeros((2, 96), np.uint16),
                                           np.zeros((2, 96), np.uint16), 0, 1, 1)
    with pytest.raises(ValueError):
        _core.cuda_kernels.flash_attention(q, kv[:, :32], kv, 0, 17, 1, dtype="fp8")
