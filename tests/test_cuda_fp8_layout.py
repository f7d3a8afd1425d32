"""The FP8 GPU weight layout (csrc/cuda/fp8_layout.h), its load-time repack (fp8_repack.cpp) and
the W8A8 activation quantization, proven on the host through the functions the kernels call
(_core.device_math):
- a weight is repacked, then read back the way each kernel path reads it (a lane's 128-bit loads,
  its e4m3 B fragments or its codes expanded to bf16 / fp16) and put where the PTX ISA says each
  fragment value belongs (mma_fragment, checked against the ISA in test_cuda_device_math.py):
  the original codes come back bit for bit, and the expanded values equal ml_dtypes'
  float8_e4m3fn -> bfloat16 / float16;
- the quantization of activation rows equals numpy + ml_dtypes (x / (absmax / 448), ties to
  even, saturating), stored in the slot order that makes an emulated m16n8k32 tile product,
  with A from ldmatrix and B from the fragments, equal the product in the original k order;
- the scales each lane reads are those of the columns its accumulators hold;
- INT8 codes in the same layout read back as the signed integers they are."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from llama_local.errors import ModelFormatError
from test_cuda_int4_layout import place_once

DM = _core.device_math
E4M3 = ml_dtypes.float8_e4m3fn
HALF = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16}
B16 = DM.mma_fragment("m16n8k16", "b")  # [32, 4, (k, n)]
B32 = DM.mma_fragment("m16n8k32", "b")  # [32, 8, (slot, n)]
A32 = DM.mma_fragment("m16n8k32", "a")  # [32, 16, (row, slot)]
C = DM.mma_fragment("m16n8k16", "c")    # [32, 4, (row, col)]
K_OF_SLOT = DM.fp8_k_of_slot()


def random_codes(rng, shape) -> np.ndarray:
    """E4M3 codes over the whole range (subnormals and -0 included), never NaN (0x7F, 0xFF)."""
    c = rng.integers(0, 256, shape, dtype=np.uint8)
    return np.where((c & 0x7F) == 0x7F, c ^ 0x01, c).astype(np.uint8)


def test_one_k_order_feeds_both_mmas():
    # Byte j of B register r of the e4m3 mma sits at the slot the hardware pairs with A's slot of
    # the same number; the same byte, expanded, is value j of the bf16 mma's step r. Both must be
    # the same real k and column, or W8A8 and W8A16 could not share the layout.
    assert sorted(K_OF_SLOT.tolist()) == list(range(32))
    assert (K_OF_SLOT[:16] < 16).all(), "a slot leaves its 16-k half"
    for lane in range(32):
        for i in range(8):
            slot, n = B32[lane, i]
            k16, n16 = B16[lane, i % 4]
            assert (K_OF_SLOT[slot], n) == (k16 + 16 * (i // 4), n16), (lane, i)


def test_ldmatrix_of_code_rows_is_the_e4m3_a_fragment():
    # The kernel loads A (16 rows x 32 codes) with ldmatrix.x4 over 16-bit pairs of codes at
    # ldm::a_row's addresses: register j's half h holds bytes 2 col + (0, 1) of a row; byte b of
    # register j must be A value 4 j + b of the m16n8k32 fragment.
    ldm = DM.ldmatrix_x4("a")  # [32, 4 registers, 2 halves, (row, col)]
    for lane in range(32):
        for j in range(4):
            for b in range(4):
                row, col = ldm[lane, j, b // 2]
                assert (row, 2 * col + b % 2) == tuple(A32[lane, 4 * j + b]), (lane, j, b)


def e4m3_rebuild(frags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n_tiles * 64, k_tiles * 32] codes from the e4m3 fragments [nt, kt, 32, 8, 2], in slot
    order (as the mma sees them) and in real k order, asserting each is delivered exactly once."""
    nt, kt = frags.shape[:2]
    vals = frags.view(np.uint8).reshape(nt, kt, 32, 8, 8)  # byte 4 r + j: value 4 r + j of B
    slot, n_in = B32[..., 0], B32[..., 1]  # [32, 8]
    rows = np.arange(nt)[:, None, None, None, None] * 64 + np.arange(8)[None, None, None, :, None] * 8 + n_in[:, None, :]
    cols = np.arange(kt)[None, :, None, None, None] * 32 + slot[:, None, :]
    by_slot = place_once(rows, cols, vals, (nt * 64, kt * 32), "a code")
    real = np.empty_like(by_slot)
    cols32 = np.arange(kt * 32)
    real[:, (cols32 // 32) * 32 + K_OF_SLOT[cols32 % 32]] = by_slot
    return by_slot, real


def half_rebuild(frags: np.ndarray, dtype: str) -> np.ndarray:
    """[n_tiles * 64, k_tiles * 32] 16-bit values from the expanded fragments [nt, kt, 32, 8, 2
    steps, 2 registers]: register j's half h of step r is value 2 j + h of the k16 step."""
    nt, kt = frags.shape[:2]
    halves = np.stack([frags & 0xFFFF, frags >> 16], axis=-1).astype(np.uint16).reshape(nt, kt, 32, 8, 2, 4)
    k_in, n_in = B16[..., 0], B16[..., 1]  # [32, 4]
    rows = (np.arange(nt)[:, None, None, None, None, None] * 64 + np.arange(8)[None, None, None, :, None, None] * 8
            + n_in[:, None, None, :])
    cols = (np.arange(kt)[None, :, None, None, None, None] * 32 + np.arange(2)[None, None, None, None, :, None] * 16
            + k_in[:, None, None, :])
    return place_once(rows, cols, halves, (nt * 64, kt * 32), "a value").view(HALF[dtype])


SHAPES = [(1, 32), (3, 33), (64, 64), (67, 100), (130, 250), (200, 512)]


@pytest.mark.parametrize("N,K", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def test_the_kernels_read_back_the_codes(N, K):
    codes = random_codes(np.random.default_rng(N * 1000 + K), (N, K))
    p = DM.fp8_repack(codes, np.ones((N, 1), np.float32), 0, name="blk.0.w")
    assert p["q"].shape == (-(-N // 64), -(-K // 32), 4, 32, 4)
    _, real = e4m3_rebuild(DM.fp8_fragments(p["q"], N, K, 0, "e4m3"))
    assert np.array_equal(real[:N, :K], codes), "W8A8 reads other codes"
    assert (real[N:] == 0).all() and (real[:, K:] == 0).all(), "padding is not +0"
    for dtype in ("bf16", "fp16"):
        got = half_rebuild(DM.fp8_fragments(p["q"], N, K, 0, dtype), dtype)
        want = codes.view(E4M3).astype(HALF[dtype])
        assert np.array_equal(got[:N, :K].view(np.uint16), want.view(np.uint16)), f"W8A16 {dtype} expansion"
        assert (got.view(np.uint16)[N:] == 0).all() and (got.view(np.uint16)[:, K:] == 0).all()


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_every_code_expands_exactly(dtype):
    # All 254 non-NaN codes, each in every byte position of a lane's words.
    ok = np.array([c for c in range(256) if c & 0x7F != 0x7F], np.uint8)
    codes = np.resize(ok, (64, 32 * 16)).reshape(64, -1)
    p = DM.fp8_repack(codes, np.ones(64, np.float32), 0)
    got = half_rebuild(DM.fp8_fragments(p["q"], 64, codes.shape[1], 0, dtype), dtype)
    assert np.array_equal(got.view(np.uint16), codes.view(E4M3).astype(HALF[dtype]).view(np.uint16))


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_every_integer_code_expands_exactly_in_the_same_layout(dtype):
    # INT8 codes (GGUF Q8_0 / Q5_0) share the layout: the same bytes in the same places, each read
    # back as the signed integer it is, all 256 in every byte position of a lane's words, on odd
    # shapes too; and the W8A8 fragments refuse integer codes.
    for n, k in [(64, 32 * 16), (67, 100)]:
        codes = np.resize(np.arange(-128, 128, dtype=np.int8), (n, k))
        codes = np.roll(codes, np.arange(n) % 7, axis=1)  # shifts each row: every byte position
        p = DM.fp8_repack(codes.view(np.uint8), np.ones(n, np.float32), 0, int8=True)
        got = half_rebuild(DM.fp8_fragments(p["q"], n, k, 0, dtype, int8=True), dtype)
        assert np.array_equal(got[:n, :k].view(np.uint16), codes.astype(HALF[dtype]).view(np.uint16))
        assert (got.view(np.uint16)[n:] == 0).all() and (got.view(np.uint16)[:, k:] == 0).all()
    with pytest.raises(ValueError, match="integer codes"):
        DM.fp8_fragments(p["q"], n, k, 0, "e4m3", int8=True)


def quantize_reference(x: np.ndarray, ub: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """compressed-tensors' dynamic per-token FP8 in numpy: scale = absmax / 448 (clamped to ub
    first, floored at 2^-126), codes = e4m3(clip(x / scale, -448, 448)), natural k order."""
    absmax = np.minimum(np.abs(x).max(axis=1), np.float32(ub)).astype(np.float32)
    s = np.maximum(absmax / np.float32(448), np.float32(2.0 ** -126)).astype(np.float32)
    q = np.clip(x / s[:, None], -448, 448).astype(E4M3)
    return q.view(np.uint8), s


def slot_order(codes: np.ndarray) -> np.ndarray:
    M, K = codes.shape
    ldq = -(-K // 32) * 32
    padded = np.zeros((M, ldq), np.uint8)
    padded[:, :K] = codes
    cols = np.arange(ldq)
    return padded[:, (cols // 32) * 32 + K_OF_SLOT[cols % 32]]


def quant_rows() -> np.ndarray:
    rng = np.random.default_rng(5)
    rows = [rng.standard_normal(70) * 3, np.zeros(70), rng.standard_normal(70) * 1e-37,
            np.r_[448.0, -448.0, 0.0, -0.0, rng.standard_normal(66)]]
    # Ties: with absmax 448 the scale is 1 and x / s = x, here exactly halfway between two codes
    # (normal and subnormal), both directions of "to even".
    ties = np.array([448.0, 1.0625, 1.1875, -1.0625, 3 * 2.0 ** -10, 5 * 2.0 ** -10, 17.0, 19.0, 2.0 ** -10])
    rows.append(np.resize(ties, 70))
    x = np.stack(rows).astype(np.float32)
    return x.astype(ml_dtypes.bfloat16).astype(np.float32)  # the kernel's inputs are bf16


@pytest.mark.parametrize("ub", [np.inf, 1.0])
def test_activation_quantization_is_numpys(ub):
    x = quant_rows()
    codes, scales = DM.fp8_quantize_rows(x, ub=None if ub == np.inf else ub)
    want_codes, want_scales = quantize_reference(x, ub)
    assert np.array_equal(scales.view(np.uint32), want_scales.view(np.uint32))
    assert np.array_equal(codes, slot_order(want_codes)), "codes differ from ml_dtypes' or sit at other slots"
    assert not np.isnan(codes.view(E4M3).astype(np.float32)).any() and np.isfinite(scales).all()
    if ub == 1.0:  # the clamp saturates: codes at +-448, never NaN
        assert (np.abs(codes.view(E4M3).astype(np.float32)) == 448).sum() > 10
    else:
        assert (codes[1] == 0).all() and scales[1] == 2.0 ** -126  # the zero row
        # the ties really are ties, resolved to even (the mantissa's last bit 0)
        got = want_codes[4, 1:9].view(E4M3).astype(np.float32).tolist()
        assert got == [1.0, 1.25, -1.0, 2.0 ** -8, 2.0 ** -8, 16.0, 20.0, 0.0]


def test_w8a8_tile_product_equals_the_natural_order_product():
    # One m16n8k32 product per (row tile, sub-tile, k tile), assembled as the hardware does from
    # the lanes' registers: A from ldmatrix of the slot-ordered codes, B from the fragments.
    rng = np.random.default_rng(11)
    M, N, K = 16, 64, 96
    x = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
    stored, sa = DM.fp8_quantize_rows(x)
    w = random_codes(rng, (N, K))
    p = DM.fp8_repack(w, np.ones(N, np.float32), 0)
    w_slots, _ = e4m3_rebuild(DM.fp8_fragments(p["q"], N, K, 0, "e4m3"))
    a_vals = stored.view(E4M3).astype(np.float64)
    b_vals = w_slots.view(E4M3).astype(np.float64)
    got = a_vals @ b_vals.T  # exact in float64: products of 4-bit significands, under 2^53
    qa, _ = quantize_reference(x)
    want = qa.view(E4M3).astype(np.float64) @ w.view(E4M3).astype(np.float64).T
    assert np.array_equal(got, want)
    assert np.array_equal(sa, quantize_reference(x)[1])


@pytest.mark.parametrize("block,int8,mins", [(0, False, False), (32, False, False), (128, False, False),
                                             (16, True, False), (32, True, True), (64, True, True)])
def test_each_lane_reads_its_accumulators_scales(block, int8, mins):
    # (blocks of 16: integer codes, two blocks a tile; k16 step r of tile kt takes block 2 kt + r,
    # the kernel's fold offset, whose codes test_the_kernels_read_back_the_codes places there.
    # Mins, of integer codes in blocks of whole tiles, take the scales' places in their own array.)
    N, K = 130, 256
    rng = np.random.default_rng(3)
    nb = 1 if block == 0 else K // block
    scales = rng.standard_normal((N, nb)).astype(np.float32)
    given = {"mins": rng.standard_normal((N, nb)).astype(np.float32)} if mins else {}
    p = DM.fp8_repack(random_codes(rng, (N, K)), scales, block, int8=int8, **given)
    assert p["blocks"] == nb and p["tiles_per_block"] == (K // 32 if block == 0 else max(block // 32, 1))
    assert (p["mins"] is None) == (not mins)
    for got, want in [(p["scales"], scales)] + ([(p["mins"], given["mins"])] if mins else []):
        lane = DM.fp8_lane_scales(got, N, K, block, int8=int8)  # [nt, blocks, 32, 16]
        padded = np.zeros((p["n_tiles"] * 64, nb), np.float32)
        padded[:N] = want
        for ln in range(32):
            for s in range(8):
                for i in range(4):  # accumulator i of sub-tile s holds column 8 s + C[ln, i, 1]
                    col = np.arange(p["n_tiles"]) * 64 + 8 * s + C[ln, i, 1]
                    assert np.array_equal(lane[:, :, ln, 2 * s + i % 2], padded[col]), (ln, s, i)


@pytest.mark.parametrize("sms", [46, 132])
def test_blocks_of_16_fold_every_step_of_integer_codes(sms):
    # Integer codes in 16-column blocks (GGUF Q6_K): the folding kernels (2 A fragments at most),
    # each split's tiles all folded, each step with its own block; E4M3 codes and W8A8 refuse them.
    for m, n, k in [(1, 4096, 4096), (40, 257, 2048), (512, 4096, 14336)]:
        p = DM.fp8_gemm_plan(m, n, k, 16, sms, "w8a16", int8=True)
        assert p["step_blocks"] and p["m_frags"] == min(1 if m <= 16 else 2, 2)
        assert [f for fs in p["folds"] for f in fs] == list(range(p["k_stages"]))
        assert 2 * p["k_stages"] == k // 16  # blocks 2 kt and 2 kt + 1 exist for every tile
    assert not DM.fp8_gemm_plan(1, 64, 64, 32, sms, "w8a16", int8=True)["step_blocks"]
    with pytest.raises(ModelFormatError, match="not a multiple of 32"):
        DM.fp8_gemm_plan(1, 64, 64, 16, sms, "w8a16")
    with pytest.raises(ModelFormatError, match="not a multiple of 32"):
        DM.fp8_gemm_plan(1, 64, 80, 16, sms, "w8a16", int8=True)  # a tile would hold a block and a half
    with pytest.raises(ValueError, match="W8A16 path"):
        DM.fp8_gemm_plan(1, 64, 64, 16, sms, "w8a8", int8=True)


@pytest.mark.parametrize("m,n,k,block", [(1, 4096, 4096, 0), (1, 4096, 4096, 128), (1, 14336, 4096, 128),
                                         (5, 300, 1000, 0), (20, 257, 2048, 128), (40, 257, 2048, 128),
                                         (40, 257, 2048, 0), (512, 4096, 4096, 128), (1, 64, 32, 0),
                                         (3, 100, 3000, 256)])
@pytest.mark.parametrize("sms", [46, 132])
@pytest.mark.parametrize("path", ["w8a8", "w8a16"])
def test_plan_covers_the_product_and_scales_each_tile_once(m, n, k, block, sms, path):
    p = DM.fp8_gemm_plan(m, n, k, block, sms, path)
    assert p["grid_n"] * 4 * 64 >= n > (p["grid_n"] - 1) * 4 * 64
    assert p["grid_m"] * 16 * p["m_frags"] >= m > (p["grid_m"] - 1) * 16 * p["m_frags"]
    assert p["k_stages"] * 32 >= k > (p["k_stages"] - 1) * 32
    ranges = p["stage_ranges"]
    assert ranges[0][0] == 0 and ranges[-1][1] == p["k_stages"] and all(e > b for b, e in ranges)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    blocked = 0 < block < k
    folding = blocked or path == "w8a8"  # the kernels with a second set of accumulators
    assert p["m_frags"] == min(1 if m <= 16 else 2 if m <= 32 else 3, 2 if folding else 3)
    # Between two folds (and from a split's start to its first) every tile is in one k-block, and
    # each split ends on a fold: every partial sum meets its own block's scale exactly once. W8A8
    # folds at least every 4 tiles: its e4m3 mma keeps partial sums in 22 bits.
    tiles_per_block = block // 32 if blocked else p["k_stages"]
    for (b, e), folds in zip(ranges, p["folds"]):
        if not folding:
            assert folds == [], "a per-column W8A16 product has nothing to fold"
            continue
        assert folds and folds[-1] == e - 1
        start = b
        for f in folds:
            assert start // tiles_per_block == f // tiles_per_block, (start, f)
            assert f - start < (4 if path == "w8a8" else tiles_per_block), (start, f)
            start = f + 1
        ends = [t for t in range(b, e) if (t + 1) % tiles_per_block == 0]
        assert set(ends) <= set(folds), "a block end without a fold"


def test_bad_weights_are_refused_naming_the_tensor():
    ones = np.ones((64, 1), np.float32)
    nan = np.zeros((64, 64), np.uint8)
    nan[3, 5] = 0xFF
    with pytest.raises(ModelFormatError, match=r"'blk.3.w'.*\[3, 5\] is NaN"):
        DM.fp8_repack(nan, ones, 0, name="blk.3.w")
    with pytest.raises(ModelFormatError, match="not a multiple of 32"):
        DM.fp8_repack(np.zeros((64, 128), np.uint8), np.ones((64, 3), np.float32), 48)
    with pytest.raises(ModelFormatError, match="not finite"):
        DM.fp8_repack(np.zeros((64, 64), np.uint8), np.full((64, 1), np.inf, np.float32), 0)
    with pytest.raises(ModelFormatError, match=r"float32 \[64, 2\]"):
        DM.fp8_repack(np.zeros((64, 64), np.uint8), ones, 32)
    # mins: integer codes only, in blocks of whole tiles shorter than the row, finite, one per block
    codes, two = np.zeros((64, 64), np.uint8), np.ones((64, 2), np.float32)
    for block, int8, mins in [(32, False, two), (0, True, ones), (64, True, ones)]:
        with pytest.raises(ModelFormatError, match="'blk.4.w': mins are taken only with integer codes"):
            DM.fp8_repack(codes, two if block == 32 else ones, block, name="blk.4.w", int8=int8, mins=mins)
    with pytest.raises(ModelFormatError, match="mins are taken only"):
        DM.fp8_repack(codes, np.ones((64, 4), np.float32), 16, int8=True, mins=np.ones((64, 4), np.float32))
    with pytest.raises(ModelFormatError, match=r"FP8 min \[2, 1\] = nan is not finite"):
        bad = two.copy()
        bad[2, 1] = np.nan
        DM.fp8_repack(codes, two, 32, int8=True, mins=bad)
    with pytest.raises(ModelFormatError, match=r"FP8 mins must be float32 \[64, 2\]"):
        DM.fp8_repack(codes, two, 32, int8=True, mins=ones)
