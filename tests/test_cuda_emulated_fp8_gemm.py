"""The FP8 GEMM's own block code run on the host (tests/cuda_emulated.py), through the GPU tests'
own checks: the same inputs, numpy references and tolerances as test_cuda_fp8_gemm.py, on a
machine without a GPU. Every kernel instance fp8_gemm_dispatch can pick runs here (activations x
codes x how the scales fold x A fragments), on odd shapes, with and without split-K, and W8A8's
activations are quantized by the quantization kernel's own block code. What this proves beyond
the host tests of the index math: the pipeline (every tile waited for before it is read, every
buffer free before it is refilled, as the emulated cp.async lands late and shared memory starts
as NaN), the bounds on odd shapes (no global read outside the buffers), the folds of the partial
sums (block scales, k16-step scales, mins), and that the operands, placed where mma_frag.h and
fp8_layout.h say, give the product under the PTX ISA's fragment layouts. What it cannot: the
hardware's timing, the e4m3 mma's 22-bit accumulator, and the compiler's device code (the static
checks and the GPU suite cover those)."""

from __future__ import annotations

import numpy as np
import pytest

import cuda_emulated as E
from test_cuda_fp8_gemm import check as fp8_check
from test_cuda_fp8_gemm import check_exact

pytestmark = pytest.mark.skipif(E.CXX is None, reason="no C++ compiler to build the kernels' host emulation")

# (M, N, K): M picks the A fragments (1, 3: one; 17: two; 33: three, two where the kernel folds);
# N and K are not whole tiles, but for blocks of 16 (K a multiple of 32). LONG: W8A8's rows of
# more than 128 16-code chunks, one per thread and round again.
ONE, TWO, THREE, LONG = (1, 67, 100), (17, 130, 250), (33, 190, 600), (1, 67, 2100)
ONE_B, ONE_S, TWO_S = (3, 300, 520), (3, 300, 512), (17, 100, 256)
# (shape, block, path, dtype, codes): codes "e4m3", "int8", or "mins" (integer codes with mins).
W8A8 = [(shape, block, "w8a8", "bf16", "e4m3") for shape, block in [(ONE, 0), (TWO, 128), (THREE, 32), (LONG, 0)]]
W8A16 = [(shape, block, "w8a16", dtype, codes) for dtype in ("bf16", "fp16") for shape, block, codes in [
    (ONE, 0, "e4m3"), (TWO, 0, "e4m3"), (THREE, 0, "e4m3"),  # per column: kNoFold, 1 to 3 fragments
    (ONE_B, 32, "e4m3"), (TWO, 128, "e4m3"),                  # kFoldTiles
    (ONE_B, 0, "int8"), (TWO, 0, "int8"), (THREE, 0, "int8"),
    (ONE, 32, "int8"), (THREE, 64, "int8"),
    (ONE_S, 16, "int8"), (TWO_S, 16, "int8"),                 # kFoldSteps
    (ONE, 32, "mins"), (THREE, 64, "mins"),                   # kFoldMins
]]
CASES = W8A8 + W8A16


@pytest.mark.parametrize("i", range(len(CASES)),
                         ids=[f"{m}x{n}x{k}-b{b}-{p}-{d}-{c}" for (m, n, k), b, p, d, c in CASES])
def test_fp8_gemm_block_code_matches_numpy(i):
    (M, N, K), block, path, dtype, codes = CASES[i]
    fp8_check(M, N, K, block, path, dtype, int8=codes != "e4m3", mins=codes == "mins", gemm=E.nth(E.fp8_gemm, i))


SPLITS = [("w8a8", "bf16", 0, 3), ("w8a8", "bf16", 128, 7), ("w8a16", "bf16", 32, 20), ("w8a16", "fp16", 128, 7)]


@pytest.mark.parametrize("path,dtype,block,splits", SPLITS, ids=[f"{p}-{d}-b{b}-s{s}" for p, d, b, s in SPLITS])
def test_fp8_gemm_split_k(path, dtype, block, splits):
    # K = 640 is 20 tiles: 20 splits hold one each, 7 cut the blocks of 128 (4 tiles) anywhere
    fp8_check(2, 200, 640, block, path, dtype, splits=splits, gemm=E.nth(E.fp8_gemm, splits))
    if path == "w8a16":  # and the integer kernels that fold at blocks, or add mins there
        fp8_check(2, 200, 640, block, path, dtype, splits=splits, int8=True, mins=True,
                  gemm=E.nth(E.fp8_gemm, splits + 1))


def test_w8a8_with_an_activation_bound():
    fp8_check(5, 130, 300, 0, "w8a8", "bf16", ub=0.5, gemm=E.nth(E.fp8_gemm, 0))  # saturating codes
    # bit for bit: the check above passes with ub ignored too
    check_exact("w8a8", "bf16", 32, 2, ub=2.0, gemm=E.nth(E.fp8_gemm, 1))


EXACT = [("w8a8", "bf16", 0, 0), ("w8a8", "bf16", 32, 2), ("w8a16", "bf16", 32, 0), ("w8a16", "fp16", 0, 2)]


@pytest.mark.parametrize("path,dtype,block,splits", EXACT, ids=[f"{p}-{d}-b{b}-s{s}" for p, d, b, s in EXACT])
def test_small_integer_products_are_exact(path, dtype, block, splits):
    # bit for bit: W8A8's codes, row scales and folds are the host's, exactly
    check_exact(path, dtype, block, splits, gemm=E.nth(E.fp8_gemm, block + splits))


def test_bad_input_is_refused_as_the_binding_refuses_it():
    x, codes, scales = np.zeros((1, 64), np.uint16), np.zeros((64, 64), np.uint8), np.ones((64, 1), np.float32)
    with pytest.raises(ValueError, match="agree on K"):
        E.fp8_gemm(x[:, :32], codes, scales)
    with pytest.raises(ValueError, match="W8A8 takes bf16"):
        E.fp8_gemm(x, codes, scales, dtype="fp16")
    with pytest.raises(RuntimeError, match="integer codes take the W8A16 path"):
        E.fp8_gemm(x, codes, scales, path="w8a8", int8=True)
    with pytest.raises(RuntimeError, match="not a multiple of 32"):  # (16 is for integer codes)
        E.fp8_gemm(x, codes, np.ones((64, 4), np.float32), block=16)


# Bugs a kernel could plausibly ship with; the checks above must fail on each.
BUGS = {
    "wait one group short": ("copy_pipeline.cuh", "copy_wait<kStages - 2>();", "copy_wait<kStages - 1>();"),
    "mins fold keeps the row sums": (
        "fp8_gemm_block.cuh", "for (int f = 0; f < kMFrags; ++f) xsum[f][0] = xsum[f][1] = xsum[f][2] = xsum[f][3] = 0.0f;",
        "{}"),
    # (reads X's row padding only, never read on a GPU's promise: NaN in the driver)
    "X's tail read whole": ("fp8_gemm_block.cuh", "bytes = left <= 0 ? 0 : left >= 8 ? 16 : int(left) * 2;",
                            "bytes = left <= 0 ? 0 : 16;"),
}


@pytest.mark.parametrize("bug", BUGS)
def test_the_emulation_catches_a_broken_kernel(tmp_path, bug):
    cuda = E.broken_copy(tmp_path, *BUGS[bug])
    noticed = E.copies_failing(lambda i: fp8_check(17, 130, 100, 32, "w8a16", "bf16", int8=True, mins=True,
                                                   gemm=E.nth(E.fp8_gemm, i, cuda_dir=cuda)))
    assert noticed > 0, f"the emulation did not notice: {bug}"
