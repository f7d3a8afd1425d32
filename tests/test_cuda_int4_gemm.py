"""The W4A16 GEMM (csrc/cuda/int4_gemm.cu) on a GPU, against numpy: Y = X . W^T with W the
documented GPU weight (test_cuda_int4_layout.reference), on odd shapes, every group kind, zero
points and mins, bf16 and fp16, with and without split-K. Skipped, with the reason, where this
build has no CUDA or the machine no GPU.

Tolerance: the kernel multiplies 16-bit values exactly and adds in fp32 in its own order, then
rounds to 16 bits; so |y - x.w| <= one 16-bit ulp of the result (two half-ulps: the rounding, and
slack for landing next to a rounding boundary) + K * 2^-23 * sum |x| |w| (fp32 accumulation)."""

from __future__ import annotations

import numpy as np
import pytest

from llama_local import _core
from test_cuda_int4_layout import HALF, make, reference

INFO = _core.build_info()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not hasattr(_core, "cuda_kernels") or INFO["cuda_devices"] == 0,
                       reason=f"no GPU to run the CUDA kernels: {INFO['cuda_unavailable_reason']}"),
]


def needs_bf16(dtype: str) -> None:
    names = " ".join(INFO["cuda_device_names"])
    if dtype == "bf16" and "(sm_7" in names:
        pytest.skip("bf16 needs sm_80; this GPU runs the fp16 kernels only")


def ulp16(y: np.ndarray, dtype: str) -> np.ndarray:
    digits = 8 if dtype == "bf16" else 11
    _, e = np.frexp(np.maximum(np.abs(y), np.finfo(np.float32).tiny))
    return np.ldexp(1.0, e - digits)


def run(x16: np.ndarray, codes, scales, mins, zero, group, dtype, splits=0, gemm=None) -> np.ndarray:
    """y as float64; gemm: the kernel's runner (the GPU binding, or tests/cuda_emulated.py's)."""
    gemm = gemm or _core.cuda_kernels.int4_gemm
    y = gemm(x16.view(np.uint16), codes, scales, group, mins=mins, zero=zero, dtype=dtype, splits=splits)
    return y.view(HALF[dtype]).astype(np.float64)


def check(M, N, K, group, kind, dtype, splits=0, gemm=None):
    if gemm is None:
        needs_bf16(dtype)
    codes, scales, mins, zero = make(N, K, group, kind, seed=M * 7 + N + K)
    x16 = np.random.default_rng(M + K).standard_normal((M, K)).astype(np.float32).astype(HALF[dtype])
    x = x16.astype(np.float64)
    w = reference(codes, scales, mins, zero, group, dtype)
    want = x @ w.T
    y = run(x16, codes, scales, mins, zero, group, dtype, splits, gemm)
    tol = ulp16(want, dtype) + K * 2.0 ** -23 * (np.abs(x) @ np.abs(w).T)
    bad = np.argwhere(np.abs(y - want) > tol)
    assert bad.size == 0, f"{len(bad)} of {y.size} off, first {bad[0]}: {y[tuple(bad[0])]} vs {want[tuple(bad[0])]}"
    return x16, codes, scales, mins, zero, y


SHAPES = [(1, 67, 100), (1, 4096, 4096), (3, 300, 520), (16, 64, 16), (17, 130, 250), (33, 257, 1000),
          (100, 200, 384)]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["zero8", "min"])
@pytest.mark.parametrize("group", [32, 128, "channel"])
@pytest.mark.parametrize("M,N,K", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_int4_gemm_matches_numpy(M, N, K, group, kind, dtype):
    check(M, N, K, K if group == "channel" else group, kind, dtype)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_split_k_is_deterministic_and_agrees(dtype):
    x16, codes, scales, mins, zero, y3 = check(2, 384, 2048, 64, "zero8", dtype, splits=3)
    again = run(x16, codes, scales, mins, zero, 64, dtype, splits=3)
    assert np.array_equal(again.view(np.uint64), y3.view(np.uint64)), "split-K results vary between runs"
    check(2, 384, 2048, 64, "zero8", dtype, splits=1)
    check(2, 384, 2048, 64, "zero8", dtype, splits=64)  # one stage per split


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="agree on K"):
        _core.cuda_kernels.int4_gemm(np.zeros((1, 32), np.uint16), np.zeros((64, 16), np.uint8),
                                     np.ones((64, 1), np.float32), 16, dtype="fp16")
