"""The CUDA flash attention's index math, proven on the host through the functions the kernels
call (csrc/cuda/mma_frag.h's ldmatrix addressing, csrc/cuda/attention_plan.h, via
_core.device_math): fragments come out of shared memory where mma.sync wants them, the scores'
C fragments are the next product's A fragments, the swizzle is a permutation, the decode splits
partition the positions, and the whole schedule (which tiles each block visits, where it masks,
how decode splits and merges) computes causal GQA attention exactly as numpy does."""

from __future__ import annotations

import numpy as np
import pytest

from llama_local import _core

DM = _core.device_math
Q_ROWS, KV_TILE = 64, 64  # attention_plan.h: kFaQRows, kFaKvTile


# ---- fragments

@pytest.mark.parametrize("layout", ["a", "b_nk", "b_kn"])
def test_ldmatrix_addresses_deliver_the_mma_fragments(layout):
    # ldmatrix.x4 over the addresses the kernels give (emulated by the instruction's rule) must
    # hand each lane exactly the elements mma.sync's fragment layout assigns it.
    got = DM.ldmatrix_x4(layout)  # [lane, register, half] -> (row, col) of the stored tile
    if layout == "a":  # A [16 rows, k16]: register r holds values 2r, 2r + 1
        frag = DM.mma_fragment("m16n8k16", "a")
        want = frag.reshape(32, 4, 2, 2)
    else:  # registers 0, 1: B of n 0-7; 2, 3: B of n 8-15 (values 2 (r % 2), + 1)
        frag = DM.mma_fragment("m16n8k16", "b")  # (k, n)
        want = np.empty((32, 4, 2, 2), np.int32)
        for r in range(4):
            kn = frag[:, 2 * (r % 2):2 * (r % 2) + 2].copy()
            kn[..., 1] += 8 * (r // 2)
            want[:, r] = kn if layout == "b_kn" else kn[..., ::-1]  # b_nk stores [n][k]
    np.testing.assert_array_equal(got, want)
    # 16-byte row addresses: the elements a lane's register gets are two neighbours in one row
    assert (got[:, :, 1, 0] == got[:, :, 0, 0]).all() == (layout != "b_kn")


def test_score_fragments_are_the_next_products_a_fragment():
    # P (two n8 C tiles side by side) reused as the A operand of P V without moving data.
    a = DM.mma_fragment("m16n8k16", "a")
    c = DM.mma_fragment("m16n8k16", "c")
    c_to_a = DM.c_to_a()
    for lane in range(32):
        for i in range(8):
            tile, value = c_to_a[i]
            row, col = c[lane, value]
            assert (row, col + 8 * tile) == tuple(a[lane, i]), (lane, i)


@pytest.mark.parametrize("cols", [64, 128])
def test_shared_memory_swizzle_is_a_permutation_without_bank_conflicts(cols):
    off = DM.fa_smem_offsets(KV_TILE, cols)
    assert sorted(off.ravel().tolist()) == list(range(KV_TILE * cols))
    # every 16-byte chunk stays whole and aligned (cp.async, ldmatrix)
    chunks = off.reshape(KV_TILE, cols // 8, 8)
    assert (chunks % 8 == np.arange(8)).all() and (chunks[..., 0] % 8 == 0).all()
    # an ldmatrix phase reads one chunk of 8 consecutive rows: 8 distinct 16-byte bank groups
    banks = (chunks[..., 0] * 2 // 16) % 8  # 32 banks of 4 bytes = 8 groups of 16 bytes
    for r0 in range(0, KV_TILE, 8):
        for c in range(cols // 8):
            assert len(set(banks[r0:r0 + 8, c].tolist())) == 8, (r0, c)


# ---- decode splits

@pytest.mark.parametrize("n_pos", [1, 63, 64, 65, 1000, 4096, 131072])
def test_decode_splits_partition_the_positions_in_whole_tiles(n_pos):
    for n_splits in (1, 2, 3, 7, 64):
        r = DM.fa_split(n_pos, n_splits)
        assert r[0, 0] == 0 and r[-1, 1] == n_pos
        assert (r[1:, 0] == r[:-1, 1]).all() and (r[:, 1] >= r[:, 0]).all()
        inner = r[:-1, 1][r[:-1, 1] < n_pos]
        assert (inner % KV_TILE == 0).all(), "a split boundary cuts a tile"
        tiles = np.ceil(np.diff(r, axis=1).ravel() / KV_TILE)
        assert tiles.max() - tiles.min() <= 1, tiles  # as even as whole tiles allow


def test_decode_split_count_fills_the_gpu_without_tiny_splits():
    assert DM.fa_num_splits(131072, 8, 132) == 33  # 264 blocks for 132 SMs
    assert DM.fa_num_splits(640, 8, 132) == 2      # 10 tiles: splits of 4 tiles at least
    assert DM.fa_num_splits(1, 8, 132) == 1
    assert DM.fa_num_splits(131072, 1, 132) == 64  # at most the merge kernel's partials
    for n_pos in (1, 100, 1000, 10000, 131072):
        for kv in (1, 2, 8):
            s = DM.fa_num_splits(n_pos, kv, 108)
            lengths = np.diff(DM.fa_split(n_pos, s), axis=1).ravel()
            assert 1 <= s <= 64 and s * kv <= 2 * 108 + kv
            assert s == 1 or (lengths[:-1] >= 4 * KV_TILE).all(), (n_pos, kv, lengths)


# ---- the whole schedule against numpy

def attention_reference(q, k, v, p0, n_heads, n_kv_heads):
    T, hd = q.shape[0], q.shape[1] // n_heads
    g = n_heads // n_kv_heads
    out = np.zeros((T, n_heads * hd))
    for h in range(n_heads):
        kh = k[:, (h // g) * hd:(h // g + 1) * hd].astype(np.float64)
        vh = v[:, (h // g) * hd:(h // g + 1) * hd].astype(np.float64)
        s = q[:, h * hd:(h + 1) * hd].astype(np.float64) @ kh.T / np.sqrt(hd)
        s[np.arange(p0 + T)[None, :] > p0 + np.arange(T)[:, None]] = -np.inf
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h * hd:(h + 1) * hd] = (p / p.sum(axis=1, keepdims=True)) @ vh
    return out


def case(T, p0, n_heads, n_kv_heads, hd, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((T, n_heads * hd), dtype=np.float32) * 2  # sharp enough that a position's
    k = rng.standard_normal((p0 + T, n_kv_heads * hd), dtype=np.float32)  # weight shows
    v = rng.standard_normal((p0 + T, n_kv_heads * hd), dtype=np.float32)
    return q, k, v


# p0 + q0 one or two short of a tile's end puts a tile's last position just past a block's first
# row: the edge of fa_tile_unmasked.
@pytest.mark.parametrize("T,p0", [(2, 0), (63, 0), (64, 0), (65, 0), (130, 0), (64, 64), (17, 100), (100, 37),
                                  (3, 500), (130, 62), (70, 63), (66, 126)])
@pytest.mark.parametrize("n_heads,n_kv_heads,hd", [(4, 4, 64), (8, 2, 64), (8, 1, 128), (6, 2, 128)])
def test_prefill_schedule_is_causal_gqa_attention(T, p0, n_heads, n_kv_heads, hd):
    q, k, v = case(T, p0, n_heads, n_kv_heads, hd)
    got = DM.flash_attention(q, k, v, p0, n_heads, n_kv_heads)
    np.testing.assert_allclose(got, attention_reference(q, k, v, p0, n_heads, n_kv_heads), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("p0", [0, 15, 16, 63, 64, 200, 1023, 4000])
@pytest.mark.parametrize("splits", [0, 1, 3, 40])
def test_decode_schedule_splits_and_merges_exactly(p0, splits):
    q, k, v = case(1, p0, 8, 2, 64, seed=p0)
    got = DM.flash_attention(q, k, v, p0, 8, 2, splits=splits, n_sms=4)
    np.testing.assert_allclose(got, attention_reference(q, k, v, p0, 8, 2), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("p0", [5, 62, 63])
def test_the_mask_reaches_every_position_past_the_diagonal(p0):
    # A value that would dominate any row that saw it, at the positions a row must not see.
    T, hd = 130, 64
    q, k, v = case(T, p0, 2, 1, hd)
    for t in (0, 1, 63, 64, 65, 127, 128):
        kk, vv = k.copy(), v.copy()
        kk[p0 + t + 1:] = q[t, :hd] * 50  # huge scores for row t, if it looked ahead
        vv[p0 + t + 1:] = 1e3
        got = DM.flash_attention(q, kk, vv, p0, 2, 1)
        want = attention_reference(q, kk, vv, p0, 2, 1)
        np.testing.assert_allclose(got[t], want[t], rtol=2e-5, atol=2e-5)
        assert np.abs(got[t]).max() < 10


def test_bad_shapes_are_refused():
    q, k, v = case(4, 2, 4, 2, 64)
    with pytest.raises(ValueError):
        DM.flash_attention(q, k[:-1], v, 2, 4, 2)
    with pytest.raises(ValueError):
        DM.flash_attention(q, k, v, 2, 4, 3)
    with pytest.raises(ValueError):
        DM.ldmatrix_x4("c")
