"""How the W4A16 GEMM (csrc/cuda/int4_gemm.cu) cuts its work, proven on the host through the
functions the kernel itself calls (csrc/cuda/int4_gemm_tiling.h, via _core.device_math): its
split-K ranges partition K, and its plan covers every output with the occupancy its register
budget was built for. (Its ldmatrix addresses are mma_frag.h's, tested in
test_cuda_attention_plan.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from llama_local import _core

DM = _core.device_math


@pytest.mark.parametrize("k_stages", [0, 1, 5, 8, 64, 129])
def test_splitk_ranges_partition_the_stages(k_stages):
    for splits in range(1, 18):
        ranges = [DM.splitk_range(k_stages, splits, s) for s in range(splits)]
        assert ranges[0][0] == 0 and ranges[-1][1] == k_stages
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), "not contiguous"
        sizes = [e - b for b, e in ranges]
        assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1, sizes
    with pytest.raises(ValueError):
        DM.splitk_range(8, 2, 2)


@pytest.mark.parametrize("m,n,k,group", [(1, 4096, 4096, 128), (1, 14336, 4096, 32), (1, 4096, 14336, 128),
                                         (8, 1024, 1000, 64), (17, 67, 100, 100), (33, 257, 2048, 128),
                                         (512, 4096, 4096, 128), (1, 64, 16, 16)])
@pytest.mark.parametrize("sms", [46, 132])
def test_plan_covers_the_product(m, n, k, group, sms):
    p = DM.int4_gemm_plan(m, n, k, group, sms)
    assert p["grid_n"] * 4 * 64 >= n > (p["grid_n"] - 1) * 4 * 64
    assert p["grid_m"] * 16 * p["m_frags"] >= m > (p["grid_m"] - 1) * 16 * p["m_frags"]
    assert p["k_stages"] * 32 >= k > (p["k_stages"] - 1) * 32
    ranges = p["stage_ranges"]
    assert len(ranges) == p["splits"] and ranges[0][0] == 0 and ranges[-1][1] == p["k_stages"]
    assert all(e > b for b, e in ranges), "an empty split"
    blocks = p["grid_n"] * p["grid_m"]
    # up to 16 rows (decode): split while blocks are short of four per SM, down to 2 stages (64 k) a
    # split, at most 64 splits; beyond: two per SM, 8 stages (256 k) a split, at most 16
    per_sm, min_stages, most = (4, 2, 64) if m <= 16 else (2, 8, 16)
    if p["splits"] > 1:
        assert (p["splits"] - 1) * blocks < per_sm * sms and p["splits"] <= most
        assert min(e - b for b, e in ranges) >= min_stages
    elif blocks < per_sm * sms:
        assert p["k_stages"] < 2 * min_stages, "an under-filled GPU with K to split was not split"
    # m_frags follows M; the register budget is 65536 / (128 threads x min_blocks) per thread
    assert p["m_frags"] == (1 if m <= 16 else 2 if m <= 32 else 3)
    assert p["min_blocks"] == (4 if p["m_frags"] <= 2 else 3)


def test_decode_is_split_to_fill_the_gpu():
    # Llama 3 8B's q projection at batch 1: 16 blocks alone would leave most of 132 SMs idle; 33
    # splits of 3 or 4 stages make 528 blocks, four per SM. At 17 rows the same product takes 16
    # splits of 8 stages (two blocks per SM would want 17).
    p = DM.int4_gemm_plan(1, 4096, 4096, 128, 132)
    assert p["grid_n"] == 16 and p["splits"] == 33 and p["k_stages"] == 128
    assert np.diff([b for b, _ in p["stage_ranges"]] + [128]).tolist() == [4] * 29 + [3] * 4
    p = DM.int4_gemm_plan(17, 4096, 4096, 128, 132)
    assert p["splits"] == 16
    assert np.diff([b for b, _ in p["stage_ranges"]]).tolist() == [8] * 15
