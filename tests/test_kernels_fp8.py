"""FP8 E4M3 weights with per-row or per-block scales, repacked into tiles, on every ISA path.

The repacked weights equal scale * float(e4m3 code) bit for bit (ml_dtypes' float8_e4m3fn is the
oracle for the codes, every non-NaN code included); the kernels keep fp32 activations, so the
product equals a float64 dot product up to fp32 summation order.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from llama_local.errors import ModelFormatError

K_ = _core.kernels
ISAS = _core.build_info()["isas_supported"]


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


def fp8_weight(rng, rows: int, cols: int, block: int):
    """(spec, float32 reference): random codes (no NaN: quantizers never write it), random scales."""
    codes = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] ^= 1
    nb = -(-cols // block) if block else 1
    scales = (rng.random((rows, nb)) * 0.02 + 1e-3).astype(np.float32)
    w = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32) * np.repeat(scales, block or cols, axis=1)[:, :cols]
    return {"format": "fp8", "data": codes, "scales": scales, "block": block}, w


def test_every_code_widens_exactly():
    codes = np.arange(256, dtype=np.uint8)
    codes = codes[(codes & 0x7F) != 0x7F].reshape(2, -1)  # 254 codes: subnormals, zeros, extremes
    spec = {"format": "fp8", "data": codes, "scales": np.ones(2, np.float32)}
    got = K_.Packed(spec).dequantize()
    want = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("block", [0, 32, 128])
@pytest.mark.parametrize("rows,cols", [(1, 1), (17, 100), (33, 300)])
def test_repacked_weights_are_exact(rows, cols, block):
    spec, w = fp8_weight(np.random.default_rng(rows + cols + block), rows, cols, block)
    spec_f8 = dict(spec, data=spec["data"].view(ml_dtypes.float8_e4m3fn))  # float8 arrays work too
    for s in (spec, spec_f8):
        assert np.array_equal(K_.Packed(s).dequantize().view(np.uint32), w.view(np.uint32))


def test_qk_rows_are_unpermuted():
    spec, w = fp8_weight(np.random.default_rng(1), 32, 48, 0)
    got = K_.Packed(dict(spec, qk_heads=2)).dequantize()
    assert np.array_equal(got.reshape(2, 2, 8, 48).swapaxes(1, 2).reshape(32, 48), w)


@pytest.mark.parametrize("shape", [(1, 1, 1, 0), (1, 33, 64, 0), (2, 15, 31, 32), (5, 48, 300, 128),
                                   (9, 31, 2048, 128), (17, 20, 7, 0)], ids=str)
def test_product(shape, isa):
    M, N, K, block = shape
    rng = np.random.default_rng(M * 1000 + N + K)
    spec, w = fp8_weight(rng, N, K, block)
    x = rng.standard_normal((M, K)).astype(np.float32)
    y = K_.Packed(spec).matmul(x, isa=isa)
    w64 = w.astype(np.float64)
    terms = np.abs(x.astype(np.float64)) @ np.abs(w64).T
    np.testing.assert_allclose(y, x.astype(np.float64) @ w64.T, rtol=0, atol=1e-6 * math.sqrt(K) * terms.max())


@pytest.mark.parametrize("n_threads", [2, 3])
def test_threads_split_rows_exactly(isa, n_threads):
    rng = np.random.default_rng(2)
    spec, _ = fp8_weight(rng, 301, 200, 64)
    p = K_.Packed(spec)
    x = rng.standard_normal((6, 200)).astype(np.float32)
    np.testing.assert_array_equal(p.matmul(x, isa=isa, n_threads=1), p.matmul(x, isa=isa, n_threads=n_threads))


def test_bad_scales_are_refused():
    spec, _ = fp8_weight(np.random.default_rng(3), 4, 64, 32)
    with pytest.raises(ModelFormatError, match=r"FP8 scales must be float32 \[4, 2\]"):
        K_.Packed(dict(spec, scales=np.ones((4, 3), np.float32)))
    with pytest.raises(ModelFormatError, match=r"FP8 scales must be float32 \[4\]"):
        K_.Packed(dict(spec, block=0, scales=np.ones((4, 2), np.float32)))
