"""bf16 weights repacked into tiles of column pairs, and their kernels on every ISA path.

fp32-activation paths (every ISA at decode, and prefill without AVX512-BF16) equal a float64 dot
product up to fp32 summation order. The AVX512-BF16 prefill rounds activations to bf16: its error
against the exact product is held to twice torch's own bf16 matmul error.
"""

from __future__ import annotations


import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from tiny_models import assert_kernel_product

K_ = _core.kernels
ISAS = _core.build_info()["isas_supported"]
SHAPES = [(1, 1, 1), (1, 33, 64), (1, 17, 7), (2, 15, 31), (3, 16, 33), (5, 48, 99), (9, 31, 2048), (17, 40, 70),
          (4, 20, 4097)]  # (M, N, K): row tails, K odd and past a tile's 32 columns


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


def bf16_spec(w, **extra):
    return {"format": "float", "data": w, **extra}


def test_repacked_rows_are_bit_exact():
    w = np.random.default_rng(0).standard_normal((37, 101)).astype(ml_dtypes.bfloat16)
    p = K_.Packed(bf16_spec(w))
    assert p.format == "bf16" and p.layout == "bf16"
    assert np.array_equal(p.dequantize(), w.astype(np.float32))


def test_qk_rows_are_unpermuted():
    w = np.random.default_rng(1).standard_normal((32, 40)).astype(ml_dtypes.bfloat16)
    got = K_.Packed(bf16_spec(w, qk_heads=2)).dequantize()
    back = got.reshape(2, 2, 8, 40).swapaxes(1, 2).reshape(32, 40)  # llama.cpp's permutation
    assert np.array_equal(back, w.astype(np.float32))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_product(shape, isa):
    M, N, K = shape
    rng = np.random.default_rng(M * 1000 + N + K)
    w = rng.standard_normal((N, K)).astype(ml_dtypes.bfloat16)
    x = rng.standard_normal((M, K)).astype(np.float32)
    y = K_.Packed(bf16_spec(w)).matmul(x, isa=isa)
    if isa == "avx512bf16" and M > 1:
        pytest.importorskip("torch")
    assert_kernel_product(y, x, w.astype(np.float32), bf16_activations=isa == "avx512bf16" and M > 1)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_threads_split_rows_exactly(isa, n_threads):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((301, 200)).astype(ml_dtypes.bfloat16)
    p = K_.Packed(bf16_spec(w))
    x = rng.standard_normal((6, 200)).astype(np.float32)
    np.testing.assert_array_equal(p.matmul(x, isa=isa, n_threads=1), p.matmul(x, isa=isa, n_threads=n_threads))


def test_accumulate_into(isa):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((20, 64)).astype(ml_dtypes.bfloat16)
    p = K_.Packed(bf16_spec(w))
    x = rng.standard_normal((3, 64)).astype(np.float32)
    base = rng.standard_normal((3, 20)).astype(np.float32)
    np.testing.assert_allclose(p.matmul(x, isa=isa, accumulate_into=base), base + p.matmul(x, isa=isa),
                               rtol=1e-6, atol=1e-6)
