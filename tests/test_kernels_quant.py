"""The integer weight layer: repacking and the kernels, for every source format, on every ISA path.

- Repacked weights dequantize bit for bit to the source's own dequantization (gguf-py for GGUF
  blocks, the canonical formula for group-wise integers), odd row counts included.
- Activations are quantized identically on every ISA (int8 blocks, llama.cpp's Q8_0 rounding, and
  the residual plane on the blocks with the largest scales).
- Each kernel equals float64 arithmetic on the same quantized operands up to fp32 summation order,
  and its error against the exact fp32 product is at most 2x llama.cpp's (whose activations are
  Q8_0 blocks) on activations with outlier channels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from llama_local import _core  # noqa: E402
from llama_local.errors import ModelFormatError  # noqa: E402
from llama_local.formats.gguf_file import SUPPORTED_TYPES  # noqa: E402

K_ = _core.kernels
ISAS = _core.build_info()["isas_supported"]
Q = gguf.GGMLQuantizationType
BLOCK_TYPES = [Q[name] for name in SUPPORTED_TYPES if name not in ("F32", "F16", "BF16")]

# Byte offsets of each block type's fp16 fields (d, and m / dmin): random bytes there could be
# inf or nan, which no real file holds.
F16_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0], Q.Q2_K: [80, 82],
              Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208], Q.IQ4_NL: [0], Q.IQ4_XS: [0]}


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


def random_blocks(qtype, rows: int, cols: int, rng) -> np.ndarray:
    """Valid blocks of `qtype` with every code random: [rows, bytes per row] uint8."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = rows * cols // block
    raw = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off:off + 2] = (rng.standard_normal(n) * 0.01).astype(np.float16).view(np.uint8).reshape(n, 2)
    return raw.reshape(rows, -1)


def gguf_spec(qtype, raw: np.ndarray, cols: int, **extra) -> dict:
    return {"format": "gguf", "ggml_type": int(qtype), "data": raw, "shape": [raw.shape[0], cols], **extra}


def int_spec(rng, rows: int, cols: int, bits: int, group: int, with_min: bool) -> tuple[dict, np.ndarray]:
    """A canonical group-wise integer weight and its float32 dequantization (the reference)."""
    ng = -(-cols // group)
    codes = rng.integers(0, 1 << bits, (rows, cols), dtype=np.uint8)
    scales = (rng.random((rows, ng)) * 0.02 + 0.001).astype(np.float32)
    spec = {"format": "int", "codes": codes, "scales": scales, "bits": bits, "group": group}
    s = np.repeat(scales, group, axis=1)[:, :cols]
    if with_min:
        mins = (rng.standard_normal((rows, ng)) * 0.05).astype(np.float32)
        spec["mins"] = mins
        w = s * codes.astype(np.float32) + np.repeat(mins, group, axis=1)[:, :cols]
    else:
        spec["zero"] = 1 << (bits - 1)
        w = s * (codes.astype(np.int32) - (1 << (bits - 1))).astype(np.float32)
    return spec, w.astype(np.float32)


INT_FORMATS = [(bits, group, with_min) for bits in (4, 8) for group in (32, 64, 128) for with_min in (False, True)]


def test_every_gguf_type_the_python_side_accepts_has_a_core_layout():
    rng = np.random.default_rng(0)
    for qtype in BLOCK_TYPES:
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        K_.Packed(gguf_spec(qtype, random_blocks(qtype, 1, block, rng), block))  # no error
    with pytest.raises(ModelFormatError, match="GGML type 16"):  # IQ2_XXS: no layout
        K_.Packed(gguf_spec(Q.IQ2_XXS, random_blocks_any(Q.IQ2_XXS, 1, 256, rng), 256))


def random_blocks_any(qtype, rows, cols, rng):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return rng.integers(0, 256, (rows, cols // block * size), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Repacking is exact

@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("rows", [1, 15, 17, 37])
def test_gguf_blocks_dequantize_exactly_like_gguf_py(qtype, rows, isa):
    rng = np.random.default_rng(rows)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    cols = block * (3 if block == 32 else 2)  # an odd number of 32-blocks: a half-filled last unit
    raw = random_blocks(qtype, rows, cols, rng)
    want = gguf.quants.dequantize(raw, qtype).reshape(rows, cols).astype(np.float32)
    got = K_.Packed(gguf_spec(qtype, raw, cols)).dequantize(isa=isa)
    assert got.dtype == np.float32 and got.shape == (rows, cols)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def llamacpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`, as written there."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
def test_qk_rows_are_unpermuted_during_the_repack(qtype):
    rng = np.random.default_rng(1)
    heads, head_dim, cols = 3, 16, gguf.GGML_QUANT_SIZES[qtype][0]
    raw = random_blocks(qtype, heads * head_dim, cols, rng)
    stored = gguf.quants.dequantize(raw, qtype).reshape(heads * head_dim, cols)
    got = K_.Packed(gguf_spec(qtype, raw, cols, qk_heads=heads)).dequantize()
    assert np.array_equal(llamacpp_permute(got, heads), stored)  # permuting back gives the file's rows
    assert not np.array_equal(got, stored)


@pytest.mark.parametrize("bits,group,with_min", INT_FORMATS)
@pytest.mark.parametrize("cols", [32, 100, 256, 300])
def test_int_weights_dequantize_exactly(bits, group, with_min, cols):
    rng = np.random.default_rng(cols + bits)
    spec, want = int_spec(rng, 19, cols, bits, group, with_min)
    got = K_.Packed(spec).dequantize()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_float_rows_are_unpermuted_into_an_owned_copy():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 8)).astype(np.float16)
    got = K_.Packed({"format": "float", "data": w, "qk_heads": 2}).dequantize()
    assert np.array_equal(llamacpp_permute(got, 2), w.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Activations

def activations(rng, M: int, K: int) -> np.ndarray:
    """Gaussian activations with a few outlier channels, as transformers' hidden states have."""
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[:, rng.choice(K, size=max(1, K // 64), replace=False)] *= 30
    return x


def numpy_q8(x: np.ndarray):
    """llama.cpp's Q8_0 activations, in float32 as ggml computes them: (codes, scales)."""
    M, K = x.shape
    Kp = -(-K // 256) * 256
    xb = np.zeros((M, Kp), np.float32)
    xb[:, :K] = x
    xb = xb.reshape(M, -1, 32)
    d = np.abs(xb).max(-1) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    return np.rint(xb * inv[..., None]).astype(np.int8).reshape(M, Kp), d


@pytest.mark.parametrize("shape", [(1, 32), (3, 100), (9, 576), (17, 2048), (8, 8200)], ids=str)
def test_quantized_activations_are_llamacpp_q8_0_plus_residuals(shape, isa):
    M, K = shape
    rng = np.random.default_rng(K)
    x = activations(rng, M, K)
    a = K_.quantize_acts(x, isa=isa)
    q, d = numpy_q8(x)
    assert np.array_equal(a["q"], q) and np.array_equal(a["d"].view(np.uint32), d.view(np.uint32))
    nb = -(-K // 32)
    flags = np.unpackbits(a["flags"].view(np.uint8), axis=1, bitorder="little")[:, :a["d"].shape[1]].astype(bool)
    for g0 in range(0, M, 8):  # a group of 8 rows shares its residual blocks: ceil(nb / 8) of them
        group = flags[g0:g0 + 8]
        assert (group == group[0]).all() and group[0].sum() == -(-nb // 8)
        # ... those with the group's largest block scales
        top = d[g0:g0 + 8].max(0)
        assert top[group[0]].min() >= top[~group[0]].max()
    # The residual plane holds the rounding error in steps of d / 256, nothing elsewhere.
    xb = np.zeros_like(a["q"], dtype=np.float32)
    xb[:, :K] = x
    dd = np.repeat(d, 32, axis=1)
    d2 = dd * np.float32(1 / 256)
    inv2 = np.divide(np.float32(1), d2, out=np.zeros_like(d2), where=d2 != 0)
    rq = np.clip(np.rint((xb - dd * a["q"]) * inv2), -127, 127)
    rq = np.where(np.repeat(flags, 32, axis=1) & (dd != 0), rq, 0)
    assert np.array_equal(a["r"], rq.astype(np.int8))
    # The half-block sums are those of the quantized values; the integer ones are the codes' sums,
    # (sum << 8) + residual sum in residual blocks.
    xhat = dd.astype(np.float64) * a["q"] + dd.astype(np.float64) / 256 * a["r"]
    np.testing.assert_allclose(a["s"], xhat.reshape(M, -1, 16).sum(-1), rtol=1e-5, atol=1e-6 * np.abs(x).max())
    half = np.repeat(flags, 2, axis=1)
    qs = a["q"].astype(np.int64).reshape(M, -1, 16).sum(-1)
    rs = a["r"].astype(np.int64).reshape(M, -1, 16).sum(-1)
    assert np.array_equal(a["isum"], np.where(half, (qs << 8) + rs, qs))


def test_quantized_activations_are_identical_on_every_isa():
    x = activations(np.random.default_rng(3), 11, 1000)
    base = K_.quantize_acts(x, isa="scalar")
    for isa in ISAS:
        got = K_.quantize_acts(x, isa=isa)
        for key in base:
            assert np.array_equal(got[key], base[key]), (isa, key)


# ---------------------------------------------------------------------------------------------
# Products

def dequantized_acts(x: np.ndarray) -> np.ndarray:
    """The activations as the kernels see them: codes times scale plus the residual, float64."""
    a = K_.quantize_acts(x, isa="scalar")
    dd = np.repeat(a["d"].astype(np.float64), 32, axis=1)
    return (dd * a["q"] + dd / 256 * a["r"])[:, :x.shape[1]]


def check_product(packed, w: np.ndarray, x: np.ndarray, isa: str) -> np.ndarray:
    """The product equals float64 arithmetic on the quantized operands up to fp32 summation
    order; over enough outputs to judge (an error is a sum of random roundings, and our codes are
    llama.cpp's outside the residual blocks), it errs against the exact product at most twice as
    much as llama.cpp's Q8_0 activations would."""
    y = packed.matmul(x, isa=isa)
    w64 = w.astype(np.float64)
    xhat = dequantized_acts(x)
    same_operands = xhat @ w64.T
    terms = np.abs(xhat) @ np.abs(w64).T
    nb = -(-x.shape[1] // 32)
    np.testing.assert_allclose(y, same_operands, rtol=0, atol=1e-6 * math.sqrt(nb) * terms.max() + 1e-30)
    exact = x.astype(np.float64) @ w64.T
    q, d = numpy_q8(x)
    llamacpp = (np.repeat(d.astype(np.float64), 32, axis=1) * q)[:, :x.shape[1]] @ w64.T
    if y.size >= 64:
        ours_err, lc_err = np.linalg.norm(y - exact), np.linalg.norm(llamacpp - exact)
        assert ours_err <= 2 * lc_err, (ours_err, lc_err)
    return y


# (M, N). Batches of 32 rows or more take the prefill kernel (quant_prefill_impl.h: codes expanded
# once per tile); 45 rows leave a partial micro-tile, odd N a partial tile and register group.
PRODUCT_SHAPES = [(1, 1), (1, 33), (2, 15), (3, 16), (8, 17), (9, 33), (17, 5), (1, 160), (16, 64),
                  (32, 16), (45, 33), (40, 70)]


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("mn", PRODUCT_SHAPES, ids=str)
def test_gguf_product(qtype, mn, isa):
    M, N = mn
    rng = np.random.default_rng(M * 100 + N)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    K = block * (3 if block == 32 else 2)
    raw = random_blocks(qtype, N, K, rng)
    w = gguf.quants.dequantize(raw, qtype).reshape(N, K)
    check_product(K_.Packed(gguf_spec(qtype, raw, K)), w, activations(rng, M, K), isa)


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.IQ4_NL, Q.Q5_1, Q.Q2_K], ids=lambda q: q.name)
def test_prefill_and_decode_kernels_agree(qtype, isa):
    # Activations are quantized per group of 8 rows, so 8-row calls (the decode kernel) see the
    # very codes a 48-row call (the prefill kernel) does: only fp32 summation order may differ.
    rng = np.random.default_rng(int(qtype))
    K = 768
    raw = random_blocks(qtype, 50, K, rng)
    p = K_.Packed(gguf_spec(qtype, raw, K))
    x = activations(rng, 48, K)
    many = p.matmul(x, isa=isa)
    few = np.concatenate([p.matmul(x[i:i + 8], isa=isa) for i in range(0, 48, 8)])
    np.testing.assert_allclose(many, few, rtol=2e-5, atol=2e-5 * np.abs(few).max())
    base = rng.standard_normal(many.shape).astype(np.float32)
    np.testing.assert_allclose(p.matmul(x, isa=isa, accumulate_into=base.copy()), base + many, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("bits,group,with_min", INT_FORMATS)
@pytest.mark.parametrize("mnk", [(1, 17, 100), (5, 16, 300), (9, 31, 1000), (33, 31, 1000)], ids=str)
def test_int_product(bits, group, with_min, mnk, isa):
    M, N, K = mnk  # K not a multiple of the group
    rng = np.random.default_rng(M + N + K + bits + group)
    spec, w = int_spec(rng, N, K, bits, group, with_min)
    check_product(K_.Packed(spec), w, activations(rng, M, K), isa)


def test_product_at_model_scale(isa):
    # Llama-shaped: many tiles, K past several super-blocks, residual blocks in the middle.
    rng = np.random.default_rng(4)
    raw = random_blocks(Q.Q4_K, 200, 2048, rng)
    w = gguf.quants.dequantize(raw, Q.Q4_K).reshape(200, 2048)
    check_product(K_.Packed(gguf_spec(Q.Q4_K, raw, 2048)), w, activations(rng, 12, 2048), isa)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_threads_split_rows_exactly(isa, n_threads):
    rng = np.random.default_rng(5)
    raw = random_blocks(Q.Q6_K, 301, 512, rng)
    p = K_.Packed(gguf_spec(Q.Q6_K, raw, 512), n_threads=n_threads)
    x = activations(rng, 10, 512)
    np.testing.assert_array_equal(p.matmul(x, isa=isa, n_threads=1), p.matmul(x, isa=isa, n_threads=n_threads))


def test_accumulate_into(isa):
    rng = np.random.default_rng(6)
    raw = random_blocks(Q.Q8_0, 20, 64, rng)
    p = K_.Packed(gguf_spec(Q.Q8_0, raw, 64))
    x = activations(rng, 3, 64)
    base = rng.standard_normal((3, 20)).astype(np.float32)
    np.testing.assert_allclose(p.matmul(x, isa=isa, accumulate_into=base), base + p.matmul(x, isa=isa),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows", [13, 40])
def test_isa_paths_agree_with_the_scalar_reference(rows):
    rng = np.random.default_rng(7)
    x = activations(rng, rows, 768)
    for qtype in BLOCK_TYPES:
        raw = random_blocks(qtype, 40, 768, rng)
        p = K_.Packed(gguf_spec(qtype, raw, 768))
        ref = p.matmul(x, isa="scalar")
        for isa_ in ISAS:
            np.testing.assert_allclose(p.matmul(x, isa=isa_), ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max(),
                                       err_msg=f"{qtype.name} {isa_}")


# ---------------------------------------------------------------------------------------------
# Bad specs

def test_bad_specs_are_refused_naming_the_tensor():
    rng = np.random.default_rng(8)
    raw = random_blocks(Q.Q4_0, 4, 64, rng)
    with pytest.raises(ModelFormatError, match=r"'w' \(Q4_0 \[4, 32\]\) has 144 bytes of data, but its type and shape need 72"):
        K_.Packed(gguf_spec(Q.Q4_0, raw, 64) | {"shape": [4, 32]})
    with pytest.raises(ModelFormatError, match="rows of 40 elements, not a multiple of its block size 32"):
        K_.Packed(gguf_spec(Q.Q4_0, raw, 40))
    spec, _ = int_spec(rng, 3, 64, 4, 32, False)
    spec["codes"][1, 5] = 16
    with pytest.raises(ModelFormatError, match="code 16 at element 69 does not fit 4 bits"):
        K_.Packed(spec)
    spec, _ = int_spec(rng, 3, 64, 4, 32, False)
    with pytest.raises(ModelFormatError, match="group size 16 is not supported"):
        K_.Packed(spec | {"group": 16, "scales": np.ones((3, 4), np.float32)})
    with pytest.raises(ModelFormatError, match=r"scales must be float32 \[3, 2\]"):
        K_.Packed(spec | {"scales": np.ones((3, 3), np.float32)})
    with pytest.raises(ModelFormatError, match="unknown spec format 'awq'"):
        K_.Packed({"format": "awq"})
