"""FP8 E4M3 weights with per-row or per-block scales, repacked into tiles, on every ISA path.

The repacked weights equal scale * float(e4m3 code) bit for bit (ml_dtypes' float8_e4m3fn is the
oracle for the codes, every non-NaN code included). The kernels keep fp32 activations, so the
product equals a float64 dot product up to fp32 summation order, except the AVX512-BF16 prefill
(FP8_BF16_MIN_ROWS rows or more), which rounds activations to bf16 as the BF16 prefill does: its
error against the exact product is held to twice torch's own bf16 matmul error.
"""

from __future__ import annotations


import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from llama_local.errors import ModelFormatError
from tiny_models import assert_kernel_product

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


def test_every_code_reaches_each_kernel_exactly(isa):
    """One-hot activations read each weight back alone: every code, scaled, through the decode and
    (8 rows) prefill kernels and, with 254 rows, the bf16 expansion."""
    codes = np.arange(256, dtype=np.uint8)
    codes = codes[(codes & 0x7F) != 0x7F]
    rows = np.stack([np.roll(codes, 7 * r) for r in range(17)])  # 17 rows: a partial tile too
    scales = np.linspace(0.5, 3.0, 17).astype(np.float32)
    p = K_.Packed({"format": "fp8", "data": rows, "scales": scales})
    want = (rows.view(ml_dtypes.float8_e4m3fn).astype(np.float32) * scales[:, None]).T
    eye = np.eye(254, dtype=np.float32)
    got = np.concatenate([p.matmul(eye[i:i + 8], isa=isa) for i in range(0, 254, 8)])
    assert np.array_equal(got, want)
    assert np.array_equal(p.matmul(eye[:1], isa=isa), want[:1])
    assert np.array_equal(p.matmul(eye, isa=isa), want)


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


BF16_ROWS = K_.FP8_BF16_MIN_ROWS


@pytest.mark.parametrize("shape", [(1, 1, 1, 0), (1, 33, 64, 0), (2, 15, 31, 32), (5, 48, 300, 128),
                                   (9, 31, 2048, 128), (BF16_ROWS - 1, 20, 7, 0), (BF16_ROWS, 20, 7, 0),
                                   (BF16_ROWS + 1, 33, 301, 0), (BF16_ROWS + 3, 47, 300, 64),
                                   (BF16_ROWS + 5, 31, 2049, 128), (40, 16, 96, 32), (BF16_ROWS, 20, 100, 33)],
                         ids=str)
def test_product(shape, isa):
    M, N, K, block = shape
    rng = np.random.default_rng(M * 1000 + N + K)
    spec, w = fp8_weight(rng, N, K, block)
    x = rng.standard_normal((M, K)).astype(np.float32)
    y = K_.Packed(spec).matmul(x, isa=isa)
    pairs_fit = block == 0 or block >= K or block % 2 == 0  # else a column pair would span two scales
    bf16 = isa == "avx512bf16" and M >= BF16_ROWS and pairs_fit
    if bf16:
        pytest.importorskip("torch")
    assert_kernel_product(y, x, w, bf16_activations=bf16)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_threads_split_rows_exactly(isa, n_threads):
    rng = np.random.default_rng(2)
    spec, _ = fp8_weight(rng, 301, 200, 64)
    p = K_.Packed(spec)
    for m in (6, BF16_ROWS + 2):
        x = rng.standard_normal((m, 200)).astype(np.float32)
        np.testing.assert_array_equal(p.matmul(x, isa=isa, n_threads=1), p.matmul(x, isa=isa, n_threads=n_threads))


def test_accumulate_into(isa):
    rng = np.random.default_rng(4)
    spec, _ = fp8_weight(rng, 37, 130, 64)
    p = K_.Packed(spec)
    for m in (3, BF16_ROWS + 1):
        x = rng.standard_normal((m, 130)).astype(np.float32)
        base = rng.standard_normal((m, 37)).astype(np.float32)
        np.testing.assert_allclose(p.matmul(x, isa=isa, accumulate_into=base.copy()), base + p.matmul(x, isa=isa),
                                   rtol=1e-6, atol=1e-6)


def test_bad_scales_are_refused():
    spec, _ = fp8_weight(np.random.default_rng(3), 4, 64, 32)
    with pytest.raises(ModelFormatError, match=r"FP8 scales must be float32 \[4, 2\]"):
        K_.Packed(dict(spec, scales=np.ones((4, 3), np.float32)))
    with pytest.raises(ModelFormatError, match=r"FP8 scales must be float32 \[4\]"):
        K_.Packed(dict(spec, block=0, scales=np.ones((4, 2), np.float32)))
