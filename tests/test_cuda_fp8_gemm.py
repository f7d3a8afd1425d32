"""The FP8 GEMM (csrc/cuda/fp8_gemm.cu) on a GPU, against numpy: Y = X . W^T with W E4M3 codes and fp32
scales per column or per block of k (as the CPU format holds them), on odd shapes, both paths (W8A8
on the e4m3 mma with per-token activation quantization on the device; W8A16 in bf16 and fp16, also
with signed integer codes, GGUF Q8_0's and Q6_K's, and codes with mins, Q5_K's), with and without
split-K. Skipped, with the reason, where
this build has no CUDA or the machine no GPU (the layout, the quantization and the plan are proven
on the host by test_cuda_fp8_layout.py).

Tolerances:
- DESIGN.md's rule for low-precision kernels: the kernel's max error against float64 on the same
  inputs (x as given, w = code * scale exactly) is at most twice that of the textbook computation
  in the same precision (numpy: activations quantized per token (W8A8) or as given (W8A16),
  float32 products summed in float32 per scale block, scaled, rounded to the output type).
- W8A16, per element: the bf16 / fp16 mma multiplies exact values and adds in fp32 in its own
  order, so the kernel is off the exact product by at most one ulp of the output type plus
  K * 2^-23 * sum |x| |w|.
- W8A8 has no such per-element bound: Ada's and Hopper's e4m3 mma aligns its products and keeps
  its accumulator in 22 bits (the kernel promotes to fp32 every 128 k). Instead, on small integers
  (products and partial sums that 22 bits hold exactly) both paths must be exact: Y equals the
  exact product, scaled and rounded as the kernel documents, bit for bit. And the device's
  activation quantization is the host's, bit for bit.

"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from test_cuda_fp8_layout import E4M3, HALF, quantize_reference, random_codes

INFO = _core.build_info()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not hasattr(_core, "cuda_kernels") or INFO["cuda_devices"] == 0,
                       reason=f"no GPU to run the CUDA kernels: {INFO['cuda_unavailable_reason']}"),
]
DM = _core.device_math


def device_sm() -> int:
    name = INFO["cuda_device_names"][0]
    return int(name[name.rindex("(sm_") + 4:name.rindex(")")])


def needs(path: str, dtype: str) -> None:
    if path == "w8a8" and device_sm() < 89:
        pytest.skip("the e4m3 mma needs sm_89; this GPU runs the W8A16 path only")
    if dtype == "bf16" and device_sm() < 80:
        pytest.skip("bf16 needs sm_80; this GPU runs the fp16 kernels only")


def ulp16(y: np.ndarray, dtype: str) -> np.ndarray:
    digits = 8 if dtype == "bf16" else 11
    _, e = np.frexp(np.maximum(np.abs(y), np.finfo(np.float32).tiny))
    return np.ldexp(1.0, e - digits)


def make(N, K, block, seed):
    """Codes over the whole E4M3 range and scales like a quantizer's (absmax / 448 per row and block)."""
    rng = np.random.default_rng(seed)
    nb = 1 if block <= 0 or block >= K else -(-K // block)
    codes = random_codes(rng, (N, K))
    scales = (rng.uniform(0.5, 2.0, (N, nb)) / 448).astype(np.float32)
    return codes, scales


def col_scales(scales: np.ndarray, K: int, block: int) -> np.ndarray:
    """[N, K]: each weight element's scale."""
    nb = scales.shape[1]
    return scales[:, np.arange(K) // block] if nb > 1 else np.repeat(scales, K, axis=1)


def code_values(codes: np.ndarray, int8: bool) -> np.ndarray:
    """What the codes stand for (before scaling): E4M3 values, or signed integers."""
    return codes.view(np.int8).astype(np.float64) if int8 else codes.view(E4M3).astype(np.float64)


def textbook(a: np.ndarray, codes, scales, block, row_scale, out, int8=False, lows=None) -> np.ndarray:
    """fp32 products and sums per scale block, scaled per column, then per row (W8A8's activation
    scale; ones for W8A16), rounded to the output type: what a framework computes. With mins
    (lows), the weights dequantized to fp32 (scale u + min) and multiplied as they are."""
    K = a.shape[1]
    w = code_values(codes, int8).astype(np.float32)
    if lows is not None:
        w = w * col_scales(scales, K, block) + col_scales(lows, K, block)
        return (a.astype(np.float32) @ w.T).astype(out).astype(np.float64)
    bs = K if scales.shape[1] == 1 else block
    y = np.zeros((a.shape[0], codes.shape[0]), np.float32)
    for b in range(scales.shape[1]):
        part = a[:, b * bs:(b + 1) * bs].astype(np.float32) @ w[:, b * bs:(b + 1) * bs].T
        y += part * scales[:, b][None, :]
    return (y * row_scale[:, None]).astype(out).astype(np.float64)


def check(M, N, K, block, path, dtype, splits=0, seed=0, ub=None, int8=False, mins=False, gemm=None):
    """gemm: the kernel's runner (the GPU binding, or tests/cuda_emulated.py's)."""
    if gemm is None:
        needs(path, dtype)
    gemm = gemm or _core.cuda_kernels.fp8_gemm
    half = HALF[dtype]
    codes, scales = make(N, K, block, seed=M * 7 + N + K)
    lows = None
    if int8:  # every byte a code, scales like a Q8_0 quantizer's (absmax / 127)
        scales = scales * np.float32(448 / 127)
    if mins:  # 5-bit codes with a min per block, like a Q5_1 quantizer's: w = scale u + min
        rng = np.random.default_rng(M + N + K)
        codes = rng.integers(0, 32, (N, K)).astype(np.uint8)
        scales = scales * np.float32(127 / 31)
        lows = (-16 * scales * rng.uniform(0.5, 1.5, scales.shape)).astype(np.float32)
    x16 = (np.random.default_rng(seed + M + K).standard_normal((M, K)) * 2).astype(np.float32).astype(half)
    x = x16.astype(np.float64)
    bk = block if block > 0 else K
    w = code_values(codes, int8) * col_scales(scales, K, bk)
    w_size = np.abs(w)  # what the kernel's sums are made of: scale u and, with mins, the min
    if mins:
        w = w + col_scales(lows.astype(np.float64), K, bk)
        w_size = w_size + np.abs(col_scales(lows.astype(np.float64), K, bk))
    exact = x @ w.T
    y = gemm(x16.view(np.uint16), codes, scales, block, path=path, dtype=dtype, splits=splits, ub=ub, int8=int8,
             mins=lows).view(half).astype(np.float64)
    assert np.isfinite(y).all()
    if path == "w8a8":
        qa, sa = quantize_reference(x16.astype(np.float32), np.inf if ub is None else ub)
        tb = textbook(qa.view(E4M3).astype(np.float32), codes, scales, block, sa, half)
    else:
        tb = textbook(x16.astype(np.float32), codes, scales, block, np.ones(M, np.float32), half, int8, lows)
    framework = np.abs(tb - exact).max()
    err = np.abs(y - exact).max()
    assert err <= 2 * framework + 1e-6, f"error {err:.3g} > 2 x the textbook's {framework:.3g}"
    if path == "w8a16":
        tol = ulp16(exact, dtype) + K * 2.0 ** -23 * (np.abs(x) @ w_size.T)
        bad = np.argwhere(np.abs(y - exact) > tol)
        assert bad.size == 0, f"{len(bad)} of {y.size} off, first {bad[0]}: {y[tuple(bad[0])]} vs {exact[tuple(bad[0])]}"
    return x16, codes, scales, y


SHAPES = [(1, 67, 100), (1, 4096, 4096), (3, 300, 520), (16, 64, 32), (17, 130, 250), (33, 257, 1000),
          (100, 200, 384)]
PATHS = [("w8a8", "bf16"), ("w8a16", "bf16"), ("w8a16", "fp16")]


@pytest.mark.parametrize("path,dtype", PATHS, ids=[f"{p}-{d}" for p, d in PATHS])
@pytest.mark.parametrize("block", [0, 128, 32])
@pytest.mark.parametrize("M,N,K", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_fp8_gemm_matches_numpy(M, N, K, block, path, dtype):
    check(M, N, K, block, path, dtype)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("block", [0, 32, 16])
@pytest.mark.parametrize("M,N,K", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_integer_codes_match_numpy(M, N, K, block, dtype):
    # GGUF Q8_0 / Q5_0 (blocks of 32) and Q6_K (16: each k16 step scaled by its own block) on the
    # W8A16 path: the same tiles holding signed integer codes.
    if block == 16 and K % 32:
        pytest.skip("blocks of 16 need K a multiple of 32 (whole tiles)")
    check(M, N, K, block, "w8a16", dtype, int8=True)
    if M > 16:
        check(M, N, K, block, "w8a16", dtype, splits=2, int8=True)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("block", [32, 64])
@pytest.mark.parametrize("M,N,K", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_integer_codes_with_mins_match_numpy(M, N, K, block, dtype):
    # GGUF Q5_K / Q5_1 (w = scale u + min per 32 columns): the mins times each row's activation sum
    # over the block, which the kernel takes from one more mma against ones, added where it folds.
    if K <= block:
        pytest.skip("mins need more than one block per row")
    check(M, N, K, block, "w8a16", dtype, int8=True, mins=True)
    if M > 16:
        check(M, N, K, block, "w8a16", dtype, splits=2, int8=True, mins=True)
    if (M, N, K) == (3, 300, 520):
        check(M, N, K, block, "w8a16", dtype, splits=5, int8=True, mins=True)  # splits that cut blocks


@pytest.mark.parametrize("path,dtype", PATHS, ids=[f"{p}-{d}" for p, d in PATHS])
@pytest.mark.parametrize("block", [0, 128])
def test_split_k_is_deterministic_and_agrees(path, dtype, block):
    x16, codes, scales, y3 = check(2, 384, 2048, block, path, dtype, splits=3)
    again = _core.cuda_kernels.fp8_gemm(x16.view(np.uint16), codes, scales, block, path=path, dtype=dtype, splits=3)
    assert np.array_equal(again.view(HALF[dtype]).astype(np.float64), y3), "split-K results vary between runs"
    check(2, 384, 2048, block, path, dtype, splits=1)
    check(2, 384, 2048, block, path, dtype, splits=64)  # one tile per split
    check(2, 384, 2048, block, path, dtype, splits=5)   # splits that cut scale blocks


@pytest.mark.parametrize("path,dtype", PATHS, ids=[f"{p}-{d}" for p, d in PATHS])
@pytest.mark.parametrize("block", [0, 32])
@pytest.mark.parametrize("splits", [0, 2])
def test_small_integer_products_are_exact(path, dtype, block, splits):
    check_exact(path, dtype, block, splits)


def check_exact(path, dtype, block, splits, gemm=None, ub=None):
    """Small integers, whose products and sums both paths hold exactly: Y bit for bit (W8A8's
    codes 112 x, or with a bound ub = 2 224 x saturating at 448)."""
    if gemm is None:
        needs(path, dtype)
    gemm = gemm or _core.cuda_kernels.fp8_gemm
    rng = np.random.default_rng(7)
    M, N, K = 20, 130, 90
    half = HALF[dtype]
    x = rng.choice([-4, -2, -1, 0, 1, 2, 4], (M, K)).astype(np.float64)
    x[:, 0] = rng.choice([-4, 4], M)  # absmax 4: W8A8's codes are then exactly 112 x
    w = rng.choice([-8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8], (N, K)).astype(np.float64)
    nb = 1 if block == 0 else -(-K // block)
    scales = np.ldexp(1.0, -rng.integers(4, 8, (N, nb))).astype(np.float32)  # exact products
    codes = w.astype(np.float32).astype(E4M3).view(np.uint8)
    ws = w * col_scales(scales.astype(np.float64), K, block or K)
    y = gemm(x.astype(half).view(np.uint16), codes, scales, block, path=path, dtype=dtype, splits=splits,
             ub=ub).view(np.uint16)
    if path == "w8a8":
        qa, sa = quantize_reference(x.astype(np.float32), np.inf if ub is None else ub)
        a = qa.view(E4M3).astype(np.float64)
        assert np.array_equal(a, 112 * x if ub is None else np.clip(224 * x, -448, 448))
        # 22 bits hold every partial sum (multiples of 16 below 2^18) and every aligned product
        assert (np.abs(a) @ np.abs(w).T).max() < 2 ** 18
        total = a @ ws.T  # exact, and exact in float32
        want = (total.astype(np.float32) * sa[:, None]).astype(half)  # the kernel's last two roundings
    else:
        want = (x @ ws.T).astype(np.float32).astype(half)  # exact, rounded once
    assert np.array_equal(y, want.view(np.uint16)), f"{(y != want.view(np.uint16)).sum()} of {y.size} differ"


def test_w8a8_with_an_activation_bound():
    check(5, 130, 300, 0, "w8a8", "bf16", ub=0.5)  # Meta's activation_scale_ub: saturating codes
    check_exact("w8a8", "bf16", 32, 2, ub=2.0)  # bit for bit: the check above passes with ub ignored too


@pytest.mark.parametrize("K", [1, 31, 100, 5000])
def test_device_quantization_is_the_hosts(K):
    needs("w8a8", "bf16")
    rng = np.random.default_rng(K)
    x = (rng.standard_normal((6, K)) * [[1], [0], [1e-37], [1e4], [3], [0.1]]).astype(np.float32)
    x16 = x.astype(ml_dtypes.bfloat16)
    for ub in (None, 0.25):
        codes, scales = _core.cuda_kernels.fp8_quantize(x16.view(np.uint16), ub=ub)
        want_codes, want_scales = DM.fp8_quantize_rows(x16.astype(np.float32), ub=ub)
        assert np.array_equal(scales.view(np.uint32), want_scales.view(np.uint32))
        assert np.array_equal(codes, want_codes)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="agree on K"):
        _core.cuda_kernels.fp8_gemm(np.zeros((1, 32), np.uint16), np.zeros((64, 64), np.uint8),
                                    np.ones((64, 1), np.float32))
    with pytest.raises(ValueError, match="W8A8 takes bf16"):
        _core.cuda_kernels.fp8_gemm(np.zeros((1, 64), np.uint16), np.zeros((64, 64), np.uint8),
                                    np.ones((64, 1), np.float32), dtype="fp16")
    if device_sm() >= 89:
        with pytest.raises(RuntimeError, match="integer codes take the W8A16 path"):
            _core.cuda_kernels.fp8_gemm(np.zeros((1, 64), np.uint16), np.zeros((64, 64), np.uint8),
                                        np.ones((64, 1), np.float32), path="w8a8", int8=True)
