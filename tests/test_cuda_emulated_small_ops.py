"""The forward pass's small ops, small_ops.cu's own kernels, run on the host (tests/cuda_emulated.py)
through the GPU tests' own checks (test_cuda_small_ops.py): the row loops' indexing (RoPE's pairs
and its query and key heads in one qkv row, the KV cache's [head][position] layout, SwiGLU's
gate | up halves), the block reduction of RMSNorm with a block's threads at real barriers, and
one rounding to 16 bits, against numpy on a machine without a GPU."""

from __future__ import annotations

import pytest

import cuda_emulated as E
from test_cuda_small_ops import check_kv_append, check_rmsnorm, check_rope, check_swiglu_residual_and_embed

pytestmark = pytest.mark.skipif(E.CXX is None, reason="no C++ compiler to build the kernels' host emulation")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("T,D", [(1, 64), (3, 2048), (2, 4099)])
def test_rmsnorm(T, D, dtype):
    check_rmsnorm(T, D, dtype, E)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("hd,p0,key_heads", [(64, 0, 0), (128, 37, 2), (64, 5, 1)])
def test_rope(hd, p0, key_heads, dtype):
    # key_heads: the last heads of the row go through the kernel's key-head pointer, as in the forward
    check_rope(hd, p0, dtype, E, key_heads=key_heads)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_swiglu_residual_and_embed(dtype):
    check_swiglu_residual_and_embed(dtype, E)


def test_kv_append():
    check_kv_append(E)


def test_the_emulation_catches_rope_at_the_wrong_positions(tmp_path):
    # every row's cosines taken at the chunk's first position (the sines still right)
    cuda = E.broken_copy(tmp_path, "small_ops_kernels.cuh", "const float* c = cos + int64_t(p0 + t) * half;",
                         "const float* c = cos + int64_t(p0) * half;")
    with pytest.raises(AssertionError):
        check_rope(64, 5, "fp16", E.SmallOps(cuda), key_heads=1)
