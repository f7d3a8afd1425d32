"""The CUDA forward pass's small ops (csrc/cuda/small_ops.cu, small_ops_math.h).

On the host: the shared arithmetic (RMSNorm, RoPE, SwiGLU) gives the CPU kernels' results, bit for
bit where no sum is reordered, so the two backends differ by the 16-bit roundings the device adds
and the order of RMSNorm's sum. On a GPU (`-m cuda`, skipped with the reason elsewhere): each op
against numpy, within one 16-bit rounding of the fp32 result (RMSNorm's sum may be added in
another order: a few fp32 ulps, which can move a rounding by one 16-bit ulp at most)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core

DM = _core.device_math
K = _core.kernels
INFO = _core.build_info()
HALF = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16}
needs_gpu = pytest.mark.skipif(not hasattr(_core, "cuda_kernels") or INFO["cuda_devices"] == 0,
                               reason=f"no GPU to run the CUDA kernels: {INFO['cuda_unavailable_reason']}")


# ---- host: the shared formulas are the CPU's

def test_rmsnorm_math_is_the_cpu_kernels():
    # The same formula; the sum of squares is each one's own order (the CPU's two fma chains), so
    # the two may differ by the reordering of an fp32 sum of D positive terms: D 2^-24 relative.
    rng = np.random.default_rng(0)
    D = 2051
    x = rng.standard_normal((5, D), dtype=np.float32) * 3
    w = rng.standard_normal(D, dtype=np.float32)
    got, want = DM.rmsnorm(x, w, 1e-5), K.rmsnorm(x, w, 1e-5, isa="scalar")
    np.testing.assert_allclose(got, want, rtol=D * 2.0 ** -24, atol=0)
    # and with a row whose sum is exact in any order, bit for bit
    x1 = np.full((1, 64), 0.5, np.float32)
    np.testing.assert_array_equal(DM.rmsnorm(x1, w[:64], 1e-5), K.rmsnorm(x1, w[:64], 1e-5, isa="scalar"))


def test_rope_math_is_the_cpu_kernels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 4, 128), dtype=np.float32)
    ang = rng.uniform(-50, 50, (7, 64)).astype(np.float32)
    cos, sin = np.cos(ang), np.sin(ang)
    want = K.rope(x, cos, sin, isa="scalar")
    for h in range(4):
        np.testing.assert_array_equal(DM.rope(np.ascontiguousarray(x[:, h]), cos, sin), want[:, h])


def test_swiglu_math_is_the_cpu_kernels():
    rng = np.random.default_rng(2)
    g = np.concatenate([rng.standard_normal(5000, dtype=np.float32) * 4, np.float32([-100, -88, 0, 88, 100])])
    u = rng.standard_normal(g.size, dtype=np.float32)
    np.testing.assert_array_equal(DM.silu_mul(g, u), K.swiglu(g, u, isa="scalar"))


# ---- GPU

def within_one_rounding(got_bits, want, dtype):
    half = HALF[dtype]
    got = got_bits.view(half).astype(np.float64)
    ulp = np.abs(np.spacing(want.astype(half)).astype(np.float64))
    assert (np.abs(got - want) <= ulp).all(), np.abs(got - want).max()


def needs_bf16(dtype):
    if dtype == "bf16" and "(sm_7" in " ".join(INFO["cuda_device_names"]):
        pytest.skip("bf16 needs sm_80")


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("T,D", [(1, 64), (3, 2048), (5, 4099)])
def test_rmsnorm_on_gpu(T, D, dtype):
    needs_bf16(dtype)
    check_rmsnorm(T, D, dtype, _core.cuda_kernels)


# Each check takes `ops`: the kernels' runners (the GPU bindings, or tests/cuda_emulated.py).

def check_rmsnorm(T, D, dtype, ops):
    rng = np.random.default_rng(T * D)
    x = rng.standard_normal((T, D), dtype=np.float32) * 2
    w = rng.standard_normal(D, dtype=np.float32)
    within_one_rounding(ops.rmsnorm(x, w, 1e-5, dtype=dtype), DM.rmsnorm(x, w, 1e-5), dtype)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("hd,p0", [(64, 0), (128, 37)])
def test_rope_on_gpu(hd, p0, dtype):
    needs_bf16(dtype)
    check_rope(hd, p0, dtype, _core.cuda_kernels)


def check_rope(hd, p0, dtype, ops, **key_heads):
    rng = np.random.default_rng(hd + p0)
    T, H, n_pos = 9, 5, p0 + 20
    x = rng.standard_normal((T, H * hd)).astype(HALF[dtype])
    ang = rng.uniform(-50, 50, (n_pos, hd // 2)).astype(np.float32)
    cos, sin = np.cos(ang), np.sin(ang)
    got = ops.rope(x.view(np.uint16), H, cos, sin, p0, dtype=dtype, **key_heads)
    xs = x.astype(np.float32).reshape(T, H, hd)
    want = K.rope(xs, cos[p0:p0 + T], sin[p0:p0 + T], isa="scalar").reshape(T, H * hd)
    within_one_rounding(got, want, dtype)


@needs_gpu
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_swiglu_residual_and_embed_on_gpu(dtype):
    needs_bf16(dtype)
    check_swiglu_residual_and_embed(dtype, _core.cuda_kernels)


def check_swiglu_residual_and_embed(dtype, ops):
    rng = np.random.default_rng(3)
    half = HALF[dtype]
    gu = (rng.standard_normal((4, 2 * 1001)) * 3).astype(half)
    g, u = gu[:, :1001].astype(np.float32), gu[:, 1001:].astype(np.float32)
    within_one_rounding(ops.swiglu(gu.view(np.uint16), dtype=dtype),
                        DM.silu_mul(g.ravel(), u.ravel()).reshape(4, 1001), dtype)
    x = rng.standard_normal((4, 777), dtype=np.float32)
    y = rng.standard_normal((4, 777)).astype(half)
    got = ops.residual_add(x, y.view(np.uint16), dtype=dtype)
    np.testing.assert_array_equal(got, x + y.astype(np.float32))  # exact: one fp32 add of an exact widening
    table = rng.standard_normal((50, 96)).astype(half)
    tokens = np.array([3, 0, 49, 3], np.int32)
    np.testing.assert_array_equal(ops.embed(table.view(np.uint16), tokens, dtype=dtype),
                                  table[tokens].astype(np.float32))
    with pytest.raises(ValueError):
        ops.embed(table.view(np.uint16), np.array([50], np.int32), dtype=dtype)


@needs_gpu
@pytest.mark.cuda
def test_kv_append_on_gpu():
    check_kv_append(_core.cuda_kernels)


def check_kv_append(ops):
    rng = np.random.default_rng(4)
    T, KH, hd, n_ctx, p0 = 3, 2, 64, 10, 6
    k = rng.integers(0, 1 << 16, (T, KH * hd), dtype=np.uint16)
    v = rng.integers(0, 1 << 16, (T, KH * hd), dtype=np.uint16)
    got = ops.kv_append(k, v, KH, n_ctx, p0)
    want = np.zeros((2, KH, n_ctx, hd), np.uint16)
    want[0, :, p0:p0 + T] = k.reshape(T, KH, hd).transpose(1, 0, 2)
    want[1, :, p0:p0 + T] = v.reshape(T, KH, hd).transpose(1, 0, 2)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        ops.kv_append(k, v, KH, n_ctx, n_ctx - 1)
