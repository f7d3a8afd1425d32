"""The 16-bit-weight GEMM (csrc/cuda/bf16_gemm.cu): its work split proven on the host through the
functions the kernel calls (bf16_gemm_tiling.h), and on a GPU (`-m cuda`, skipped with the reason
elsewhere) the product against numpy on odd shapes, bf16 and fp16, 16-bit and fp32 outputs, with
and without split-K.

GPU tolerance: the kernel multiplies 16-bit values exactly and adds in fp32 in its own order; so
|y - x.w| <= K 2^-23 sum |x| |w| (fp32 accumulation), plus one 16-bit ulp of the result when the
output is rounded to 16 bits."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core

DM = _core.device_math
INFO = _core.build_info()
HALF = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16}
BLOCK_N, STAGE_K = 128, 32  # bf16_gemm_tiling.h


# ---- host: the work split

def test_each_stage_copy_moves_a_distinct_chunk():
    c = DM.b16_chunks()
    assert len({tuple(x) for x in c.tolist()}) == len(c) == 4 * BLOCK_N
    assert set(c[:, 1].tolist()) == {0, 8, 16, 24} and c[:, 0].max() == BLOCK_N - 1


@pytest.mark.parametrize("m,n,k", [(1, 4096, 4096), (1, 128256, 4096), (7, 100, 33), (33, 257, 2048),
                                   (512, 14336, 4096), (1, 8, 8)])
@pytest.mark.parametrize("sms", [46, 132])
def test_plan_covers_the_product(m, n, k, sms):
    p = DM.bf16_gemm_plan(m, n, k, sms)
    assert p["grid_n"] * BLOCK_N >= n > (p["grid_n"] - 1) * BLOCK_N
    assert p["grid_m"] * 16 * p["m_frags"] >= m > (p["grid_m"] - 1) * 16 * p["m_frags"]
    assert p["k_stages"] * STAGE_K >= k > (p["k_stages"] - 1) * STAGE_K
    ranges = p["stage_ranges"]
    assert ranges[0][0] == 0 and ranges[-1][1] == p["k_stages"] and all(e > b for b, e in ranges)
    blocks = p["grid_n"] * p["grid_m"]
    if p["splits"] > 1:  # gemm_splits' fill_splits: fill two blocks per SM, 8 stages a split, at most 16
        assert (p["splits"] - 1) * blocks < 2 * sms and min(e - b for b, e in ranges) >= 8 and p["splits"] <= 16
    elif blocks < 2 * sms:
        assert p["k_stages"] < 16, "an under-filled GPU with K to split was not split"
    if m > 16:  # the same launch rule as the INT4 GEMM's beyond 16 rows, for the same blocks and depth
        q = DM.int4_gemm_plan(m, 64 * 4 * p["grid_n"], STAGE_K * p["k_stages"], STAGE_K * p["k_stages"], sms)
        assert q["splits"] == p["splits"] and q["m_frags"] == p["m_frags"]


# ---- GPU

gpu_only = pytest.mark.skipif(not hasattr(_core, "cuda_kernels") or INFO["cuda_devices"] == 0,
                              reason=f"no GPU to run the CUDA kernels: {INFO['cuda_unavailable_reason']}")


@pytest.mark.cuda
@gpu_only
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("y_f32", [False, True])
@pytest.mark.parametrize("m,n,k,splits", [(1, 4096, 4096, 0), (1, 300, 1000, 3), (5, 129, 33, 1), (17, 64, 250, 0),
                                          (40, 520, 2048, 2), (128, 1000, 512, 0)])
def test_product_matches_numpy(m, n, k, splits, y_f32, dtype):
    if dtype == "bf16" and "(sm_7" in " ".join(INFO["cuda_device_names"]):
        pytest.skip("bf16 needs sm_80")
    check(m, n, k, splits, y_f32, dtype, _core.cuda_kernels.bf16_gemm)


def check(m, n, k, splits, y_f32, dtype, gemm):
    """gemm: the kernel's runner (the GPU binding, or tests/cuda_emulated.py's)."""
    half = HALF[dtype]
    rng = np.random.default_rng(m * n + k)
    x = rng.standard_normal((m, k)).astype(half)
    w = (rng.standard_normal((n, k)) * 0.05).astype(half)
    got = gemm(x.view(np.uint16), w.view(np.uint16), dtype=dtype, y_f32=y_f32, splits=splits)
    xf, wf = x.astype(np.float64), w.astype(np.float64)
    want = xf @ wf.T
    bound = k * 2.0 ** -23 * (np.abs(xf) @ np.abs(wf).T)
    if not y_f32:
        bound += np.abs(np.spacing(want.astype(half)).astype(np.float64))
    assert (np.abs(got - want) <= bound).all(), np.abs(got - want).max()
