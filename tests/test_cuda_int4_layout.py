"""The INT4 GPU weight layout (csrc/cuda/int4_layout.h) and its load-time repack (int4_repack.cpp),
proven on the host: a matrix is repacked, then read back the way the kernel reads it (each lane's
128-bit load, the kernel's own dequantization and scaling: _core.device_math.int4_fragments), and
each fragment value is put where the PTX ISA says an mma.sync.m16n8k16 B fragment value belongs
(mma_fragment, itself checked against the ISA's figures in test_cuda_device_math.py). The rebuilt
weight must equal, bit for bit, the documented numerics computed here in numpy:
    zero-point formats  w = rn16((u - zero) * rn16(s))
    min formats         w = rn16(u * rn16(s) + rn16(m))
with rn16 one rounding to nearest even in bf16 or fp16."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from llama_local.errors import ModelFormatError

DM = _core.device_math
HALF = {"bf16": ml_dtypes.bfloat16, "fp16": np.float16}
# (lane, value i) -> (k, n) of the m16n8k16 B operand, the hardware's fixed layout.
B_FRAG = DM.mma_fragment("m16n8k16", "b")


def round16(x: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values rounded once, to nearest even, to bf16's 8 or fp16's 11 significant bits
    (with their subnormals), still as float64."""
    digits, min_ulp = (8, -133) if dtype == "bf16" else (11, -24)
    _, e = np.frexp(x)
    q = np.maximum(e - digits, min_ulp)
    return np.ldexp(np.rint(np.ldexp(x, -q)), q)


def as16(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> the 16-bit type's values (one rounding), as float64."""
    return x.astype(np.float32).astype(HALF[dtype]).astype(np.float64)


def reference(codes, scales, mins, zero, group, dtype) -> np.ndarray:
    """The documented GPU weight [N, K] as float64 values of the 16-bit type."""
    K = codes.shape[1]
    col_group = np.arange(K) // group if group < K else np.zeros(K, int)
    s = as16(scales, dtype)[:, col_group]
    u = codes.astype(np.float64)
    if mins is None:
        return round16((u - zero) * s, dtype)  # the product is exact in float64
    return round16(u * s + as16(mins, dtype)[:, col_group], dtype)  # exact for these magnitudes


def place_once(rows, cols, vals: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    """vals put at (rows, cols) of a zero array of `shape` (the indices broadcast against vals),
    asserting that every position gets exactly one value: no lane misses or repeats an element."""
    rows, cols = np.broadcast_arrays(rows, cols, vals)[:2]
    hits = np.zeros(shape, np.int64)
    np.add.at(hits, (rows.ravel(), cols.ravel()), 1)
    assert (hits == 1).all(), f"{what} is delivered by no lane or by two"
    out = np.zeros(shape, vals.dtype)
    out[rows.ravel(), cols.ravel()] = vals.ravel()
    return out


def rebuild(frags: np.ndarray, dtype: str) -> np.ndarray:
    """The padded weight [n_tiles * 64, k_tiles * 16] from every lane's fragments of every tile,
    placed by the mma's B layout; asserts that each element is delivered exactly once."""
    nt, kt = frags.shape[:2]
    halves = np.stack([frags & 0xFFFF, frags >> 16], axis=-1).astype(np.uint16)  # [.., sub, reg, half]
    vals = halves.reshape(nt, kt, 32, 8, 4)  # value i = 2 * reg + half: b0 b1 | b2 b3
    k_in, n_in = B_FRAG[..., 0], B_FRAG[..., 1]  # [32, 4]
    rows = (np.arange(nt)[:, None, None, None, None] * 64 + np.arange(8)[None, None, None, :, None] * 8
            + n_in[None, None, :, None, :])
    cols = np.arange(kt)[None, :, None, None, None] * 16 + k_in[None, None, :, None, :]
    out = place_once(rows, cols, vals, (nt * 64, kt * 16), "a weight element")
    return out.view(HALF[dtype]).astype(np.float64)


def make(N, K, group, kind, seed):
    rng = np.random.default_rng(seed)
    ng = 1 if group >= K else -(-K // group)
    codes = rng.integers(0, 16, (N, K), dtype=np.uint8)
    scales = (rng.uniform(0.002, 0.05, (N, ng)) * rng.choice([-1, 1], (N, ng))).astype(np.float32)
    mins = (-scales * rng.uniform(0, 12, (N, ng))).astype(np.float32) if kind == "min" else None
    zero = {"zero8": 8, "zero3": 3, "min": 0}[kind]
    return codes, scales, mins, zero


def repack_and_read(codes, scales, mins, zero, group, dtype):
    N, K = codes.shape
    packed = DM.int4_repack(codes, scales, group, mins=mins, zero=zero, dtype=dtype, name="blk.0.w")
    frags = DM.int4_fragments(packed["q"], packed["scales"], packed["mins"], N, K, group, zero, dtype)
    return packed, rebuild(frags, dtype)


SHAPES = [(1, 16), (3, 33), (64, 128), (67, 100), (130, 250), (200, 512)]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["zero8", "zero3", "min"])
@pytest.mark.parametrize("group", [32, 64, 128, "channel"])
@pytest.mark.parametrize("N,K", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def test_the_kernels_read_back_is_the_documented_weight(N, K, group, kind, dtype):
    group = K if group == "channel" else group
    codes, scales, mins, zero = make(N, K, group, kind, seed=N * 1000 + K)
    packed, w = repack_and_read(codes, scales, mins, zero, group, dtype)
    want = reference(codes, scales, mins, zero, group, dtype)
    got = w[:N, :K]
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} wrong, first at {bad[0]}: {got[tuple(bad[0])]} != {want[tuple(bad[0])]}"
    # Padding: rows past N are 0; columns past K are 0, or the group's min for min formats.
    assert (w[N:] == 0).all()
    tail = w[:N, K:]
    if mins is None:
        assert (tail == 0).all()
    else:
        last = as16(mins, dtype)[:, -1:]
        assert (tail == np.broadcast_to(last, tail.shape)).all()
    assert packed["q"].shape == (-(-N // 64), -(-K // 16), 32, 4)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_dequantization_is_exactly_u_minus_zero(dtype):
    # Every code under every zero point, scale 1: the magic-number steps leave u - zero exactly.
    codes = np.tile(np.arange(16, dtype=np.uint8), (64, 4))
    for zero in range(16):
        _, w = repack_and_read(codes, np.ones((64, 1), np.float32), None, zero, 64, dtype)
        assert np.array_equal(w, codes.astype(np.float64) - zero), zero


def test_fp16_rounding_reaches_the_subnormals():
    # fp16 products below 2^-14 round to multiples of 2^-24, as rn16 says (bf16 has fp32's range).
    codes = np.tile(np.arange(16, dtype=np.uint8), (64, 2))
    scales = np.full((64, 1), 3.1e-7, np.float32)
    _, w = repack_and_read(codes, scales, None, 8, 32, "fp16")
    want = reference(codes, scales, None, 8, 32, "fp16")
    assert np.array_equal(w, want) and (np.abs(want) < 2.0 ** -14).all() and np.unique(want).size == 16


def test_tile_coordinates_are_a_bijection():
    c = DM.int4_tile_coords().reshape(-1, 2)
    assert len(c) == 16 * 64
    assert c[:, 0].min() == 0 and c[:, 0].max() == 15 and c[:, 1].min() == 0 and c[:, 1].max() == 63
    assert len({tuple(x) for x in c}) == 16 * 64


def test_lane_reads_only_its_own_columns():
    # A lane's load holds the columns the mma gives that lane (n % 8 == lane / 4) and the k rows
    # of its thread-in-quad: the layout needs no data exchange between lanes.
    c = DM.int4_tile_coords()
    lanes = np.arange(32)[:, None, None]
    assert (c[..., 1] % 8 == lanes // 4).all()
    assert ((c[..., 0] % 8) // 2 == lanes % 4).all()


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_scales_are_permuted_per_lane_quad(dtype):
    # [slab, group, 8 q + s] holds column slab * 64 + 8 s + q: quad q's eight scales in one 16 bytes.
    N, K, group = 150, 256, 64
    codes, scales, mins, _ = make(N, K, group, "min", seed=5)
    packed = DM.int4_repack(codes, scales, group, mins=mins, dtype=dtype)
    for key, src in (("scales", scales), ("mins", mins)):
        p = packed[key].reshape(3, 4, 8, 8)  # [slab, group, q, s]
        cols = np.arange(3)[:, None, None] * 64 + np.arange(8)[None, None, :] * 8 + np.arange(8)[None, :, None]
        full = np.zeros((192, 4), np.uint16)
        full[:N] = src.astype(HALF[dtype]).view(np.uint16)
        assert np.array_equal(p, full[cols].transpose(0, 3, 1, 2)), key


def test_a_corrupted_layout_is_caught():
    # The read-back has teeth: nibbles 1 and 4 of every word swapped (a plausible slip in the
    # nibble order) or one lane's words rotated give a different weight.
    codes, scales, mins, zero = make(64, 64, 32, "zero8", seed=9)
    packed = DM.int4_repack(codes, scales, 32, zero=zero)
    want = reference(codes, scales, mins, zero, 32, "bf16")
    q = packed["q"]
    swapped = (q & ~np.uint32(0xF00F0)) | ((q >> 12) & 0xF0) | ((q & 0xF0) << 12)
    rotated = q.copy()
    rotated[0, 0, 5] = np.roll(rotated[0, 0, 5], 1)
    for bad in (swapped, rotated):
        frags = DM.int4_fragments(bad, packed["scales"], None, 64, 64, 32, zero, "bf16")
        assert not np.array_equal(rebuild(frags, "bf16"), want)


def test_bad_inputs_are_refused_with_the_tensor_name():
    codes = np.zeros((4, 64), np.uint8)
    ones = np.ones((4, 2), np.float32)
    bad = codes.copy()
    bad[2, 17] = 16
    cases = [
        (dict(codes=bad, scales=ones, group=32), r"'t'.*code 16 at \[2, 17\]"),
        (dict(codes=codes, scales=np.ones((4, 3), np.float32), group=32), r"'t'.*scales must be float32 \[4, 2\]"),
        (dict(codes=codes, scales=ones, group=32, mins=np.ones((3, 2), np.float32)), r"'t'.*mins must be"),
        (dict(codes=codes, scales=ones, group=40), r"'t'.*group size 40"),
        (dict(codes=codes, scales=ones, group=32, zero=16), r"'t'.*zero point 16"),
        (dict(codes=codes, scales=ones, group=32, zero=8, mins=ones), r"'t'.*either mins or a zero"),
        (dict(codes=codes, scales=ones * 1e5, group=32, dtype="fp16"), r"'t'.*scale \[0, 0\].*float16"),
        (dict(codes=codes, scales=np.where(ones > 0, np.nan, 0).astype(np.float32), group=32), r"'t'.*not finite"),
        (dict(codes=codes[0], scales=ones, group=32), r"'t'.*uint8 \[N, K\]"),
        (dict(codes=np.zeros((0, 64), np.uint8), scales=np.ones((0, 2), np.float32), group=32), r"'t'.*empty"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ModelFormatError, match=match):
            DM.int4_repack(name="t", **kwargs)
    with pytest.raises(ValueError, match="bf16 or fp16"):
        DM.int4_repack(codes, ones, 32, dtype="fp32")
    good = DM.int4_repack(codes, ones, 32)
    with pytest.raises(ValueError, match="do not match"):
        DM.int4_fragments(good["q"][:, :1], good["scales"], None, 4, 64, 32, 0, "bf16")
