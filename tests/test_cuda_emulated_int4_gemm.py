"""The W4A16 GEMM's own block code run on the host (tests/cuda_emulated.py), through the GPU
tests' own checks: the same inputs, numpy references and tolerances as test_cuda_int4_gemm.py,
on a machine without a GPU. What this proves beyond the host tests of the index math: the
kernels' pipelines (every stage waited for before it is read, every buffer free before it is
refilled, as the emulated cp.async lands late and shared memory starts as NaN), their bounds on
odd shapes (no global read outside the buffers), and that the instructions' operands, placed
where mma_frag.h says, give the product under the PTX ISA's fragment layouts. What it cannot:
the hardware's timing, its fp32 accumulation order, and the compiler's device code (the static
checks and the GPU suite cover those)."""

from __future__ import annotations

import re
import pytest

import cuda_emulated as E
from test_cuda_int4_gemm import check as int4_check

pytestmark = pytest.mark.skipif(E.CXX is None, reason="no C++ compiler to build the kernels' host emulation")

SHAPES = [(1, 67, 100), (3, 300, 520), (16, 64, 16), (17, 130, 250), (33, 257, 600), (49, 200, 384)]
# every shape x group, with zero points and with mins, each kind in bf16 on half the shapes and in
# fp16 on the other half
INT4_CASES = [(shape, group, kind, ("bf16", "fp16")[(i + (kind == "min")) % 2]) for i, shape in enumerate(SHAPES)
              for group in (32, 128, "channel") for kind in ("zero8", "min")]


@pytest.mark.parametrize("i", range(len(INT4_CASES)),
                         ids=[f"{m}x{n}x{k}-{g}-{kind}-{d}" for (m, n, k), g, kind, d in INT4_CASES])
def test_int4_gemm_block_code_matches_numpy(i):
    (M, N, K), group, kind, dtype = INT4_CASES[i]
    int4_check(M, N, K, K if group == "channel" else group, kind, dtype, gemm=E.nth(E.int4_gemm, i))


@pytest.mark.parametrize("splits", [2, 3, 64])
def test_int4_gemm_split_k(splits):
    # 64 is more splits than the 32 stages of K = 2048: one stage each, as the plan clamps
    for dtype in ("bf16", "fp16"):
        int4_check(2, 384, 2048, 64, "zero8", dtype, splits=splits, gemm=E.nth(E.int4_gemm, splits))


@pytest.mark.parametrize("bug", ["wait one stage short", "no barrier before the refill", "ldmatrix rows swapped"])
def test_the_emulation_catches_a_broken_kernel(tmp_path, bug):
    # Each bug is one a kernel could plausibly ship with; the checks above must fail on it.
    # (the first two in the cp.async pipeline the GEMMs share)
    if bug == "wait one stage short":
        cuda = E.broken_copy(tmp_path, "copy_pipeline.cuh", "copy_wait<kStages - 2>();", "copy_wait<kStages - 1>();")
    elif bug == "no barrier before the refill":
        cuda = E.broken_copy(tmp_path, "copy_pipeline.cuh", "        __syncthreads();  // the stage", "        // the stage")
    else:  # A's k halves swapped
        a_row = re.search(r"FragCoord a_row\(int lane\) \{ return FragCoord\{([^}]*)\}",
                          (E.CUDA_DIR / "mma_frag.h").read_text())
        rows, cols = a_row.group(1).split(", ")
        broken = a_row.group(0).replace(a_row.group(1), f"{rows}, {cols} ^ 8")
        cuda = E.broken_copy(tmp_path, "mma_frag.h", a_row.group(0), broken)
    noticed = E.copies_failing(lambda i: int4_check(17, 130, 250, 32, "zero8", "bf16",
                                                    gemm=E.nth(E.int4_gemm, i, cuda_dir=cuda)))
    assert noticed > 0, f"the emulation did not notice: {bug}"
