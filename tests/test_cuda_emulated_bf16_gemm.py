"""The 16-bit-weight GEMM's own block code run on the host (tests/cuda_emulated.py), through the
GPU test's own check: the same inputs, numpy reference and tolerance as test_cuda_bf16_gemm.py
(odd shapes, bf16 and fp16, 16-bit and fp32 outputs, split-K), on a machine without a GPU, with
its cp.async pipeline emulated (copies landing late into shared memory that starts as NaN) and
its global reads bounded."""

from __future__ import annotations

from functools import partial

import pytest

import cuda_emulated as E
from test_cuda_bf16_gemm import check

pytestmark = pytest.mark.skipif(E.CXX is None, reason="no C++ compiler to build the kernels' host emulation")

# (m, n, k, splits, y_f32, dtype): N and K off the 128-row and 32-column tiles, M from 1 to 3
# fragments, one split and several.
CASES = [(1, 300, 1000, 3, False, "bf16"), (5, 129, 33, 1, True, "fp16"), (17, 64, 250, 0, False, "fp16"),
         (40, 520, 200, 2, True, "bf16"), (49, 130, 64, 0, False, "bf16"), (1, 8, 8, 0, True, "fp16")]


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{m}x{n}x{k}-s{s}-{'f32' if f else d}"
                                                      for m, n, k, s, f, d in CASES])
def test_bf16_gemm_block_code_matches_numpy(i):
    check(*CASES[i], E.nth(E.bf16_gemm, i))


def test_the_emulation_catches_a_stage_read_before_it_lands(tmp_path):
    cuda = E.broken_copy(tmp_path, "copy_pipeline.cuh", "copy_wait<kStages - 2>();", "copy_wait<kStages - 1>();")
    with pytest.raises((AssertionError, E.EmulationError)):  # NaN read, or the last stage never waited for
        check(17, 64, 250, 0, False, "fp16", partial(E.bf16_gemm, copies="at-wait", cuda_dir=cuda))
