"""Every CPU kernel on every ISA path this machine has, against numpy (float64 references).

Shapes include tails: K not a multiple of any vector width, N = 1, 2, 3, M not a multiple of
any tile height.
"""

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core

K_ = _core.kernels
ISAS = _core.build_info()["isas_supported"]
WEIGHT_DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16]

MATMUL_SHAPES = [  # (M, K, N)
    (1, 1, 1), (1, 7, 3), (1, 37, 2), (1, 64, 50), (1, 1000, 49), (2, 17, 1), (3, 33, 5),
    (4, 16, 6), (5, 100, 13), (7, 129, 25), (9, 64, 97), (26, 37, 13), (33, 257, 11),
    (6, 4100, 7),  # K past one cache block (KC = 2048): partial sums accumulate across blocks
]


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


def test_scalar_is_always_available():
    assert "scalar" in ISAS


@pytest.mark.parametrize("wdtype", WEIGHT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", MATMUL_SHAPES, ids=str)
def test_matmul(isa, wdtype, shape):
    M, Kd, N = shape
    r = rng(M * 1000 + Kd)
    x = r.standard_normal((M, Kd)).astype(np.float32)
    w = r.standard_normal((N, Kd)).astype(wdtype)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    y = K_.matmul(x, w, isa=isa)
    # Only the summation order differs from the reference: fp32 rounding over K terms.
    tol = 1e-6 * np.sqrt(Kd) * np.abs(x).max() * np.abs(w.astype(np.float64)).max() * 4
    np.testing.assert_allclose(y, ref, rtol=0, atol=tol)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_matmul_threads_split_rows_exactly(isa, n_threads):
    r = rng(7)
    x = r.standard_normal((5, 300)).astype(np.float32)
    w = r.standard_normal((1003, 300)).astype(ml_dtypes.bfloat16)
    one = K_.matmul(x, w, isa=isa, n_threads=1)
    many = K_.matmul(x, w, isa=isa, n_threads=n_threads)
    np.testing.assert_array_equal(one, many)  # each output element computed the same way


def test_matmul_accumulate(isa):
    r = rng(8)
    x = r.standard_normal((3, 70)).astype(np.float32)
    w = r.standard_normal((9, 70)).astype(np.float32)
    base = r.standard_normal((3, 9)).astype(np.float32)
    y = K_.matmul(x, w, isa=isa, accumulate_into=base)
    np.testing.assert_allclose(y, base + x.astype(np.float64) @ w.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n", [1, 5, 16, 31, 64, 100, 2048])
def test_rmsnorm(isa, n):
    r = rng(n)
    x = (r.standard_normal((3, n)) * 3).astype(np.float32)
    w = r.uniform(0.5, 1.5, n).astype(np.float32)
    eps = 1e-5
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + eps) * w
    np.testing.assert_allclose(K_.rmsnorm(x, w, eps, isa=isa), ref, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("hd", [2, 6, 32, 40, 64, 128, 130])
def test_rope(isa, hd):
    r = rng(hd)
    T, H = 5, 3
    x = r.standard_normal((T, H, hd)).astype(np.float32)
    ang = r.uniform(-10, 10, (T, hd // 2))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    x64 = x.astype(np.float64)
    a, b = x64[..., :hd // 2], x64[..., hd // 2:]
    c, s = cos[:, None, :].astype(np.float64), sin[:, None, :].astype(np.float64)
    ref = np.concatenate([a * c - b * s, a * s + b * c], -1)  # transformers' rotate_half
    np.testing.assert_allclose(K_.rope(x, cos, sin, isa=isa), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 7, 8, 16, 33, 1000])
def test_swiglu(isa, n):
    r = rng(n)
    g = (r.standard_normal(n) * 6).astype(np.float32)
    g[0] = -100.0 if n > 1 else g[0]  # exp overflow region: silu(-100) is -0, not NaN
    u = r.standard_normal(n).astype(np.float32)
    g64 = g.astype(np.float64)
    ref = g64 / (1 + np.exp(-g64)) * u
    np.testing.assert_allclose(K_.swiglu(g, u, isa=isa), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 2, 64), (3, 17, 64), (7, 300, 128), (32, 33, 64), (5, 9, 40),
                                   (2, 5, 7), (13, 1, 16)], ids=str)
def test_gemm_nn_with_strided_rows(isa, shape):
    # P . V as attention uses it: V's rows are strided (one head's slice of the KV cache rows).
    M, K, N = shape
    r = rng(M + K + N)
    a = r.standard_normal((M, K)).astype(np.float32)
    cache = r.standard_normal((K, 3 * N + 5)).astype(np.float32)
    b = cache[:, N + 2:2 * N + 2]
    ref = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(K_.gemm_nn(a, b, isa=isa), ref, rtol=1e-5, atol=1e-5 * np.sqrt(K))


@pytest.mark.parametrize("wdtype", WEIGHT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(1, 64, 7), (4, 64, 33), (9, 37, 20), (2, 2100, 3)], ids=str)
def test_matmul_with_strided_weight_rows(isa, wdtype, shape):
    # The KV cache as W (scores = Q K^T): rows ldw elements apart, only K of them used.
    M, Kd, N = shape
    r = rng(M * Kd + N)
    x = r.standard_normal((M, Kd)).astype(np.float32)
    big = r.standard_normal((N, 2 * Kd + 3)).astype(wdtype)
    w = big[:, Kd + 1:2 * Kd + 1]
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_allclose(K_.matmul(x, w, isa=isa), ref, rtol=1e-5, atol=1e-5 * np.sqrt(Kd))


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 100, 4099])
def test_softmax(isa, n):
    s = (rng(n).standard_normal(n) * 20).astype(np.float32)
    scale = 0.125
    z = s.astype(np.float64) * scale
    ref = np.exp(z - z.max())
    ref /= ref.sum()
    got = K_.softmax(s, scale, isa=isa)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    assert abs(got.sum() - 1) < 1e-5


@pytest.mark.parametrize("wdtype", WEIGHT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_to_f32(isa, wdtype):
    vals = rng(3).standard_normal(53).astype(wdtype)
    np.testing.assert_array_equal(K_.to_f32(vals, isa=isa), vals.astype(np.float32))


def test_fp16_widening_is_exact_for_every_code(isa):
    codes = np.arange(65536, dtype=np.uint16)
    finite = np.isfinite(codes.view(np.float16))
    h = codes.view(np.float16)
    got = K_.to_f32(h, isa=isa)
    np.testing.assert_array_equal(got[finite], h[finite].astype(np.float32))
    assert np.isnan(got[~finite & np.isnan(h)]).all()


def test_unknown_or_unsupported_isa_is_refused():
    with pytest.raises(ValueError, match="unknown ISA"):
        K_.matmul(np.ones((1, 4), np.float32), np.ones((1, 4), np.float32), isa="sse9")


def test_isa_override_env(isa):
    code = "from llama_local import _core; print(_core.default_isa())"
    env = dict(os.environ, LLAMA_LOCAL_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == isa


def test_bad_isa_env_is_a_clear_error():
    code = "from llama_local import _core; _core.default_isa()"
    env = dict(os.environ, LLAMA_LOCAL_ISA="neon9")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown ISA 'neon9'" in out.stderr
