"""The flash attention kernels' own block code (prefill; decode, its split partials and their
merge) run on the host (tests/cuda_emulated.py), through the GPU tests' own check: the same
inputs, float64 reference and "twice the 16-bit framework's error" tolerance as
test_cuda_flash_attention.py, on a machine without a GPU. Beyond the host run of the schedule
(test_cuda_attention_plan.py), this runs the kernels' cp.async waits and barriers (copies may
land late into shared memory), their masks and tile bounds (cache rows past the positions in
use hold NaN here, so reading one shows), and P re-used as the A fragment of P V under the PTX
ISA's layouts. The hardware's timing, exp and accumulation order are the GPU suite's to check."""

from __future__ import annotations

import pytest

import cuda_emulated as E
from test_cuda_flash_attention import check

pytestmark = pytest.mark.skipif(E.CXX is None, reason="no C++ compiler to build the kernels' host emulation")

# (T, p0, n_heads, n_kv_heads, head_dim, dtype, splits): prefill with T and p0 at and off the
# 64-row tiles, decode with the split count chosen, one range, ranges cutting tiles, and more
# ranges than tiles (most of them empty); GQA groups of 1, 4 and 16 query heads.
CASES = [
    (2, 0, 8, 2, 64, "bf16", 0),
    (65, 0, 8, 2, 128, "fp16", 0),
    (130, 62, 8, 2, 64, "bf16", 0),
    (70, 63, 4, 4, 64, "fp16", 0),
    (17, 100, 8, 2, 128, "bf16", 0),
    (40, 24, 16, 1, 64, "fp16", 0),
    (1, 0, 16, 4, 64, "bf16", 0),
    (1, 64, 16, 4, 128, "fp16", 1),
    (1, 300, 16, 4, 64, "fp16", 0),
    (1, 1000, 8, 2, 128, "bf16", 3),
    (1, 15, 16, 1, 64, "bf16", 7),
]


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"T{c[0]}-p{c[1]}-{c[2]}x{c[3]}-hd{c[4]}-{c[5]}-s{c[6]}"
                                                      for c in CASES])
def test_flash_attention_block_code_matches_numpy(i):
    T, p0, H, KH, hd, dtype, splits = CASES[i]
    check(T, p0, H, KH, hd, dtype, splits=splits, attention=E.nth(E.flash_attention, i))


BUGS = {
    "prefill reads K before it lands": ("flash_attn_block.cuh", "copy_wait<1>();  // K has landed", "copy_wait<2>();  //"),
    "V's ldmatrix rows swapped": (
        "mma_frag.h", "b_kn_row(int lane) { return FragCoord{(lane & 7) + 8 * ((lane >> 3) & 1), 8 * (lane >> 4)}; }",
        "b_kn_row(int lane) { return FragCoord{(lane & 7) + 8 * (lane >> 4), 8 * ((lane >> 3) & 1)}; }"),
}


@pytest.mark.parametrize("bug", BUGS)
def test_the_emulation_catches_a_broken_kernel(tmp_path, bug):
    cuda = E.broken_copy(tmp_path, *BUGS[bug])
    noticed = E.copies_failing(
        lambda i: check(17, 100, 8, 2, 64, "bf16", attention=E.nth(E.flash_attention, i, cuda_dir=cuda)))
    assert noticed > 0, f"the emulation did not notice: {bug}"
