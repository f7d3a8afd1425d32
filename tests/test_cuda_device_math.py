"""The CUDA kernels' shared __host__ __device__ math (csrc/cuda/device_math.h, mma_frag.h), run on
the host through _core.device_math: the same code the kernels run, held to ml_dtypes and numpy here,
on a machine with no GPU."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core

DM = _core.device_math


# ---- number formats

def test_every_e4m3_code_widens_exactly():
    codes = np.arange(256, dtype=np.uint8)
    got = DM.e4m3_to_float(codes)
    want = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan) and nan.sum() == 2  # S.1111.111 only
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # -0.0 included


def test_float_to_e4m3_rounds_as_ml_dtypes():
    rng = np.random.default_rng(0)
    finite = np.arange(256, dtype=np.uint8)
    finite = finite[(finite & 0x7F) != 0x7F].view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    mids = (finite[:, None] + finite[None, :]).ravel() / 2  # midpoints of every pair: the ties
    x = np.concatenate([
        finite, np.nextafter(finite, np.inf), np.nextafter(finite, -np.inf), mids,
        rng.standard_normal(20000).astype(np.float32) * 10.0 ** rng.integers(-4, 3, 20000),
        np.float32(2.0) ** np.arange(-12, -5, dtype=np.float32),  # the subnormal range and its edge
    ]).astype(np.float32)
    x = x[np.abs(x) < 448]
    got = DM.float_to_e4m3(x)
    want = x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(got, want)


def test_float_to_e4m3_saturates_and_keeps_nan():
    x = np.array([448, 449, 464, 1e6, np.inf, -448, -500, -np.inf, np.nan], np.float32)
    got = DM.float_to_e4m3(x)
    assert got[:5].tolist() == [0x7E] * 5 and got[5:8].tolist() == [0xFE] * 3
    assert got[8] & 0x7F == 0x7F


def test_float_to_bf16_rounds_as_ml_dtypes():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 1 << 32, 200000, dtype=np.uint64).astype(np.uint32)
    bits[:1000] = (bits[:1000] & 0xFFFF0000) | 0x8000  # exact ties
    x = bits.view(np.float32)
    x = x[~np.isnan(x)]
    np.testing.assert_array_equal(DM.float_to_bf16(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))
    assert np.isnan(np.array([DM.float_to_bf16(np.float32([np.nan]))[0]], np.uint16).view(ml_dtypes.bfloat16)[0])


def test_int4_dequant_is_scale_times_centered_nibble():
    rng = np.random.default_rng(2)
    q = rng.integers(0, 16, (100, 8)).astype(np.uint32)
    packed = (q << (4 * np.arange(8, dtype=np.uint32))).sum(axis=1).astype(np.uint32)
    for scale, zero in ((0.0123, 8), (-0.5, 3), (1e-4, 0)):
        want = (np.float32(scale) * (q.astype(np.float32) - np.float32(zero))).ravel()
        np.testing.assert_array_equal(DM.int4_dequant(packed, scale, zero), want)


# ---- online softmax: split-KV partials merged on the host against a numpy softmax

def partials(scores: np.ndarray, v: np.ndarray, cuts: list[int]):
    """(m, l, o) of each range [cuts[i], cuts[i + 1]) of key positions, computed directly."""
    m, l, o = [], [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        s = scores[a:b]
        mi = np.float32(s.max()) if b > a and np.isfinite(s).any() else np.float32(-np.inf)
        p = np.exp(s - mi) if np.isfinite(mi) else np.zeros_like(s)
        m.append(mi)
        l.append(p.sum(dtype=np.float32))
        o.append((p[:, None] * v[a:b]).sum(axis=0, dtype=np.float32) if b > a else np.zeros(v.shape[1], np.float32))
    return np.array(m, np.float32), np.array(l, np.float32), np.array(o, np.float32)


@pytest.mark.parametrize("cuts", [[0, 300], [0, 1, 2, 300], [0, 100, 100, 250, 300], [0, 7, 150, 299, 300]], ids=str)
def test_split_kv_partials_merge_into_the_softmax(cuts):
    rng = np.random.default_rng(len(cuts))
    scores = (rng.standard_normal(300) * 4).astype(np.float32)
    scores[rng.random(300) < 0.2] = -np.inf  # masked positions
    v = rng.standard_normal((300, 64)).astype(np.float32)
    m, l, out = DM.softmax_merge(*partials(scores, v, cuts))
    p = np.exp(scores.astype(np.float64) - scores.max())
    want = (p / p.sum()) @ v.astype(np.float64)
    assert m == scores.max()
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5 * np.abs(v).max())


def test_fully_masked_partials_give_zero_not_nan():
    v = np.ones((4, 8), np.float32)
    m, l, out = DM.softmax_merge(*partials(np.full(4, -np.inf, np.float32), v, [0, 2, 4]))
    assert m == -np.inf and l == 0 and np.array_equal(out, np.zeros(8, np.float32))
    # and an empty partial merged with a real one changes nothing
    s = np.array([-np.inf, -np.inf, 1.0, 2.0], np.float32)
    _, _, out = DM.softmax_merge(*partials(s, np.arange(32, dtype=np.float32).reshape(4, 8), [0, 2, 4]))
    p = np.exp(np.array([1.0, 2.0]) - 2.0)
    np.testing.assert_allclose(out, (p / p.sum()) @ np.arange(16, 32).reshape(2, 8), rtol=1e-6)


# ---- mma.sync fragment layouts

SHAPES = {"m16n8k16": 16, "m16n8k32": 32}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_fragment_layout_covers_its_tile_once(shape):
    k = SHAPES[shape]
    for operand, (rows, cols) in {"a": (16, k), "b": (k, 8), "c": (16, 8)}.items():
        f = DM.mma_fragment(shape, operand).reshape(-1, 2)
        assert len(f) == rows * cols, operand
        assert f.min() == 0 and f[:, 0].max() == rows - 1 and f[:, 1].max() == cols - 1, operand
        assert len({tuple(rc) for rc in f}) == rows * cols, f"{operand}: an element held twice"


def spec_table(shape: str, operand: str) -> dict[tuple[int, int], tuple[int, int]]:
    """The PTX ISA's fragment figures, register by register: {(lane, value): (row, col)}. Written
    the way the ISA lays them out (per register: which rows, which columns), not as the header's
    closed forms."""
    out = {}
    for lane in range(32):
        g, t = lane // 4, lane % 4
        if operand == "c":  # c0, c1: row g; c2, c3: row g + 8; columns 2t, 2t + 1
            regs = [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)]
        elif shape == "m16n8k16" and operand == "a":  # a0a1 (g, 2t..), a2a3 (g+8, 2t..), a4a5 (g, 2t+8..), a6a7
            regs = [(r, c + j) for r, c in [(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]
                    for j in range(2)]
        elif shape == "m16n8k16":  # b0b1: k = 2t, 2t + 1; b2b3: k + 8; column g
            regs = [(k + j, g) for k in (2 * t, 2 * t + 8) for j in range(2)]
        elif operand == "a":  # a0..a3 (g, 4t..), a4..a7 (g+8, 4t..), a8..a11 (g, 4t+16..), a12..a15
            regs = [(r, c + j) for r, c in [(g, 4 * t), (g + 8, 4 * t), (g, 4 * t + 16), (g + 8, 4 * t + 16)]
                    for j in range(4)]
        else:  # b0..b3: k = 4t..4t+3; b4..b7: k + 16; column g
            regs = [(k + j, g) for k in (4 * t, 4 * t + 16) for j in range(4)]
        out.update({(lane, i): rc for i, rc in enumerate(regs)})
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("operand", ["a", "b", "c"])
def test_fragment_layouts_match_the_ptx_isa_figures(shape, operand):
    f = DM.mma_fragment(shape, operand)
    got = {(lane, i): tuple(int(v) for v in f[lane, i]) for lane in range(32) for i in range(f.shape[1])}
    assert got == spec_table(shape, operand)


def test_bad_fragment_requests_are_refused():
    with pytest.raises(ValueError, match="m16n8k16 or m16n8k32"):
        DM.mma_fragment("m16n8k8", "a")
    with pytest.raises(ValueError, match="a, b or c"):
        DM.mma_fragment("m16n8k16", "d")
