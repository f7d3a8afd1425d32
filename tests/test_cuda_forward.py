"""The forward pass on the GPU (csrc/cuda/llama_cuda.cu, LLM(device="cuda")).

On the host: what each checkpoint weight becomes on the device (csrc/cuda/gpu_weights.cpp): 16-bit
rows that are the CPU weight layer's own dequantization rounded once (so every GGUF type, and
GGUF's q/k permutation undone, carry over), or for 4-bit group-wise and FP8 checkpoints the INT4
or FP8 tiles of exactly their codes and scales; fused Q/K/V and gate/up stacked in order.

On a GPU (`-m cuda`, skipped with the reason elsewhere): logits of tiny models, bf16 and INT4,
against transformers in fp32, held to twice the error of transformers itself in bf16 (the GPU
rounds activations to bf16 between ops as a bf16 framework does); the engine's cache, chunking
and generation behave as on the CPU; and decode steps replayed as CUDA graphs give the logits of
the same kernels launched one by one, bit for bit.
"""

from __future__ import annotations

import gguf
import ml_dtypes
import numpy as np
import pytest

from llama_local import _core
from tiny_models import encode_tensor, llamacpp_permute

DM = _core.device_math
INFO = _core.build_info()


def bf16_bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


# ---- host: the weights on the device

def test_float_weights_become_their_16_bit_rows():
    rng = np.random.default_rng(0)
    w16 = rng.standard_normal((5, 20)).astype(ml_dtypes.bfloat16)
    g = DM.gpu_weight([w16], [5], 20)
    assert not g["int4"] and g["rows"].shape == (5, 24)  # rows padded to 16 bytes with zeros
    np.testing.assert_array_equal(g["rows"][:, :20], w16.view(np.uint16))
    assert (g["rows"][:, 20:] == 0).all()
    w32 = rng.standard_normal((3, 16), dtype=np.float32)
    np.testing.assert_array_equal(DM.gpu_weight([w32], [3], 16)["rows"], bf16_bits(w32))  # one rounding
    np.testing.assert_array_equal(DM.gpu_weight([w32], [3], 16, dtype="fp16")["rows"],
                                  w32.astype(np.float16).view(np.uint16))


def test_fused_parts_stack_in_order():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((r, 32)).astype(ml_dtypes.bfloat16) for r in (8, 4, 4))
    g = DM.gpu_weight([q, k, v], [8, 4, 4], 32)
    np.testing.assert_array_equal(g["rows"], np.concatenate([q, k, v]).view(np.uint16))


def int_spec(rng, rows, cols, group=32, zero=8):
    return {"format": "int", "bits": 4, "group": group, "zero": zero,
            "codes": rng.integers(0, 16, (rows, cols), dtype=np.uint8),
            "scales": (rng.uniform(0.5, 1.5, (rows, -(-cols // group))) * 0.01).astype(np.float32)}


def test_int4_checkpoints_keep_their_codes_and_scales():
    rng = np.random.default_rng(2)
    parts = [int_spec(rng, 64, 96), int_spec(rng, 32, 96)]
    g = DM.gpu_weight(parts, [64, 32], 96)
    assert g["int4"] and g["format"] == "int4 g32"
    want = DM.int4_repack(np.concatenate([p["codes"] for p in parts]), np.concatenate([p["scales"] for p in parts]),
                          32, zero=8)
    np.testing.assert_array_equal(g["q"], want["q"].ravel())
    np.testing.assert_array_equal(g["scales"], want["scales"].ravel())
    # parts that do not share a group size fall back to 16-bit rows, each the CPU's dequantization
    mixed = [int_spec(rng, 16, 64, group=32), int_spec(rng, 16, 64, group=64)]
    g = DM.gpu_weight(mixed, [16, 16], 64)
    assert not g["int4"] and g["format"].startswith("bf16 (from int4")
    want = np.concatenate([_core.kernels.Packed(p).dequantize() for p in mixed])
    np.testing.assert_array_equal(g["rows"], bf16_bits(want))


def fp8_spec(rng, rows, cols, block=0):
    codes = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x38  # no NaN codes
    blocks = 1 if block <= 0 else -(-cols // block)
    return {"format": "fp8", "data": codes, "block": block,
            "scales": rng.uniform(0.001, 0.01, (rows, blocks)).astype(np.float32)}


@pytest.mark.parametrize("block", [0, 128])
def test_fp8_checkpoints_keep_their_codes_and_scales(block):
    rng = np.random.default_rng(5)
    parts = [fp8_spec(rng, 64, 256, block), fp8_spec(rng, 32, 256, block)]
    g = DM.gpu_weight(parts, [64, 32], 256)
    assert g["fp8"] and not g["int4"]
    want = DM.fp8_repack(np.concatenate([p["data"] for p in parts]), np.concatenate([p["scales"] for p in parts]),
                         block)
    np.testing.assert_array_equal(g["q"], want["q"].ravel())
    np.testing.assert_array_equal(g["scales"], want["scales"].ravel())
    # a block the FP8 layout cannot hold (not whole 32-column steps): 16-bit rows of the CPU's weights
    odd = fp8_spec(rng, 16, 256, 48)
    g = DM.gpu_weight([odd], [16], 256)
    assert not g["fp8"] and not g["int4"]
    np.testing.assert_array_equal(g["rows"], bf16_bits(_core.kernels.Packed(odd).dequantize()))


def gpu_int4_weight(g, n, k, group, dtype="bf16"):
    """The weight [n, k] the INT4 kernel reads from gpu_weight's buffers (its own fragment path)."""
    from test_cuda_int4_layout import rebuild
    frags = DM.int4_fragments(g["q"], g["scales"], g["mins"], n, k, group, g["zero"], dtype)
    return rebuild(frags, dtype)[:n, :k]


def test_gguf_q4_0_stays_int4_with_its_exact_codes_and_scales():
    # Q4_0 (llama.cpp's block: fp16 d, then 16 bytes, low nibbles are columns 0-15, high 16-31;
    # w = d (q - 8)) kept as INT4 codes with zero 8 and the block's d as the group's scale.
    from test_cuda_int4_layout import reference
    rng = np.random.default_rng(7)
    heads, hd, cols = 2, 16, 128
    w = rng.standard_normal((heads * hd, cols)).astype(np.float32) * 0.1
    raw = encode_tensor(llamacpp_permute(w, heads), gguf.GGMLQuantizationType.Q4_0)
    spec = {"format": "gguf", "ggml_type": int(gguf.GGMLQuantizationType.Q4_0), "data": raw,
            "shape": [heads * hd, cols], "qk_heads": heads}
    g = DM.gpu_weight([spec], [heads * hd], cols)
    assert g["int4"] and g["format"] == "int4 g32 (from Q4_0)" and g["zero"] == 8
    blocks = raw.reshape(heads * hd, cols // 32, 18)
    d = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    nib = blocks[..., 2:]
    q = np.concatenate([nib & 15, nib >> 4], axis=-1).reshape(heads * hd, cols)
    order = np.argsort(llamacpp_permute(np.arange(heads * hd)[:, None], heads)[:, 0])  # the rows, un-permuted
    want = reference(q[order], d[order], None, 8, 32, "bf16")
    np.testing.assert_array_equal(gpu_int4_weight(g, heads * hd, cols, 32), want)


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q4_1])
def test_gguf_4_bit_k_quants_stay_int4_within_their_scales_rounding(qtype):
    # Q4_K / Q4_1: w = s u + m per group of 32, s and m formed as the CPU forms them; on the device s and
    # m are bf16, so each weight is the CPU's within |u| ulp(s) / 2 + ulp(m) / 2, then one bf16 rounding.
    rng = np.random.default_rng(8)
    rows, cols = 48, 256
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.1
    spec = {"format": "gguf", "ggml_type": int(qtype), "data": encode_tensor(w, qtype), "shape": [rows, cols]}
    g = DM.gpu_weight([spec], [rows], cols)
    assert g["int4"] and g["mins"] is not None and g["format"] == f"int4 g32 (from {qtype.name})"
    got = gpu_int4_weight(g, rows, cols, 32)
    cpu = _core.kernels.Packed(spec).dequantize().astype(np.float64)
    ulp = lambda x: np.abs(np.spacing(np.abs(x).astype(ml_dtypes.bfloat16)).astype(np.float64))  # noqa: E731
    amax = np.abs(cpu).reshape(rows, -1, 32).max(axis=-1, keepdims=True)  # |s u| and |m| are at most ~this
    bound = (16 * ulp(amax) + ulp(amax)).repeat(32, axis=-1).reshape(rows, cols) + ulp(cpu)
    assert (np.abs(got - cpu) <= bound).all(), np.abs(got - cpu).max()
    assert np.abs(got - cpu).max() > 0  # bf16 scales do round: the bound is doing work


def gguf_blocks_8_bit(raw: np.ndarray, rows: int, cols: int, qtype) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's Q8_0 / Q5_0 blocks of 32 parsed here: (signed codes [rows, cols], d [rows, cols / 32])."""
    size = {gguf.GGMLQuantizationType.Q8_0: 34, gguf.GGMLQuantizationType.Q5_0: 22}[qtype]
    b = raw.reshape(rows, cols // 32, size)
    d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.Q8_0:
        return b[..., 2:].copy().view(np.int8).reshape(rows, cols), d
    qh = b[..., 2:6].copy().view(np.uint32)[..., 0]  # bit j: the fifth bit of code j
    ql = b[..., 6:]                                  # low nibbles: codes 0-15, high: 16-31
    lo = np.concatenate([ql & 15, ql >> 4], axis=-1).astype(np.int32)
    hi = (qh[..., None] >> np.arange(32)) & 1
    return (lo | hi << 4).reshape(rows, cols) - 16, d


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q5_0])
def test_gguf_q8_0_and_q5_0_stay_8_bit_integer_codes_with_their_block_scales(qtype):
    # Kept in the 8-bit GEMM's tiles as llama.cpp's own signed codes (un-permuted rows) with each
    # block's d as its scale: read back through the kernel's fragment path, they are the file's.
    from test_cuda_fp8_layout import half_rebuild
    rng = np.random.default_rng(9)
    heads, hd, cols = 2, 48, 96  # 96 rows: a partial 64-row slab
    rows = heads * hd
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.1
    raw = encode_tensor(llamacpp_permute(w, heads), qtype)
    spec = {"format": "gguf", "ggml_type": int(qtype), "data": raw, "shape": [rows, cols], "qk_heads": heads}
    g = DM.gpu_weight([spec], [rows], cols)
    assert g["fp8"] and g["int8"] and g["format"] == f"int8 g32 (from {qtype.name})"
    codes, d = gguf_blocks_8_bit(raw, rows, cols, qtype)
    order = np.argsort(llamacpp_permute(np.arange(rows)[:, None], heads)[:, 0])  # the rows, un-permuted
    codes, d = codes[order], d[order]
    q = g["q"].reshape(-(-rows // 64), cols // 32, 4, 32, 4)
    got = half_rebuild(DM.fp8_fragments(q, rows, cols, 32, "bf16", int8=True), "bf16")[:rows, :cols]
    np.testing.assert_array_equal(got.astype(np.float32), codes)
    want = DM.fp8_repack(codes.astype(np.int8).view(np.uint8), d, 32, int8=True)
    np.testing.assert_array_equal(g["scales"], want["scales"].ravel())
    # each weight the kernel forms, code x scale in fp32, is the CPU's dequantization exactly
    np.testing.assert_array_equal(codes * np.repeat(d, 32, axis=1), _core.kernels.Packed(spec).dequantize())


def gguf_spec(rng, qtype, heads=2, hd=16, cols=256):
    """A permuted q/k-like GGUF tensor (llama.cpp's row order) and the weight it came from."""
    w = rng.standard_normal((heads * hd, cols)).astype(np.float32) * 0.1
    return {"format": "gguf", "ggml_type": int(qtype), "data": encode_tensor(llamacpp_permute(w, heads), qtype),
            "shape": [heads * hd, cols], "qk_heads": heads}, w


def integer_codes(qtype, seed: int, group: int, dtype: str = "bf16"):
    """A permuted GGUF tensor of qtype [96, 512] on the GPU: (gpu_weight, its codes [96, 512] read
    back through the kernel's fragment path, the spec, the weight it came from)."""
    from test_cuda_fp8_layout import half_rebuild
    rows, cols = 96, 512
    spec, w = gguf_spec(np.random.default_rng(seed), qtype, heads=2, hd=48, cols=cols)
    g = DM.gpu_weight([spec], [rows], cols)
    assert g["fp8"] and g["int8"] and g["format"] == f"int8 g{group} (from {qtype.name})"
    q = g["q"].reshape(-(-rows // 64), cols // 32, 4, 32, 4)
    codes = half_rebuild(DM.fp8_fragments(q, rows, cols, group, dtype, int8=True), dtype)[:rows, :cols]
    return g, codes.astype(np.float32), spec, w


def column_scales(g, n: int, k: int, block: int, key: str = "scales") -> np.ndarray:
    """[n, blocks]: the scale (or min) each column's accumulators take, read from gpu_weight's 8-bit
    tiles the way the kernel's lanes read them (fp8_lane_scales; C's columns 2 (lane % 4) + j of
    sub-tile s)."""
    c = DM.mma_fragment("m16n8k16", "c")
    lanes = DM.fp8_lane_scales(g[key], n, k, block, int8=g["int8"])  # [nt, blocks, 32, 16]
    nt = lanes.shape[0]
    out = np.zeros((nt * 64, lanes.shape[1]), np.float32)
    for ln in range(4):
        for s in range(8):
            for j in range(2):
                out[np.arange(nt) * 64 + 8 * s + c[ln, j, 1]] = lanes[:, :, ln, 2 * s + j]
    return out[:n]


def test_gguf_q6_k_stays_8_bit_codes_in_blocks_of_16():
    # Q6_K (w = d sc q per 16 columns, q in [-32, 31]) as signed codes with one scale per 16
    # columns: code x scale, through the kernel's own read paths, is the CPU's dequantization
    # exactly (each scale is d x sc, an exact float32, as the CPU forms it).
    g, codes, spec, _ = integer_codes(gguf.GGMLQuantizationType.Q6_K, 10, 16, "fp16")
    assert codes.min() >= -32 and codes.max() <= 31
    kernel_w = codes * np.repeat(column_scales(g, 96, 512, 16), 16, axis=1)
    np.testing.assert_array_equal(kernel_w, _core.kernels.Packed(spec).dequantize())


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.Q5_K, gguf.GGMLQuantizationType.Q5_1])
def test_gguf_5_bit_codes_with_mins_stay_8_bit_codes_with_their_scales_and_mins(qtype):
    # Q5_K / Q5_1 (w = s u + m per 32 columns, u in [0, 31]): the codes with each block's scale and
    # min as the CPU forms them, in fp32; read back the way the kernel reads them, code x scale +
    # min is the CPU's dequantization (the kernel adds min x the block's activation sum instead).
    g, codes, spec, w = integer_codes(qtype, 11, 32)
    assert g["mins"] is not None
    assert codes.min() >= 0 and codes.max() <= 31 and len(np.unique(codes)) > 16  # five bits in use
    scale = np.repeat(column_scales(g, 96, 512, 32), 32, axis=1)
    low = np.repeat(column_scales(g, 96, 512, 32, "mins"), 32, axis=1)
    cpu = _core.kernels.Packed(spec).dequantize()
    np.testing.assert_array_equal(codes * scale + low, cpu)
    assert np.abs(cpu - w).max() < 0.02  # the permutation is undone: rows back in the checkpoint's order


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.IQ4_NL, gguf.GGMLQuantizationType.IQ4_XS])
def test_gguf_code_book_types_stay_8_bit_codes_of_the_book_values(qtype):
    # IQ4_NL / IQ4_XS: each 4-bit index stands for a value of IQ4_NL's book (-127 .. 113), an 8-bit
    # integer code; with each block's scale (d, or d (ls - 32)) they are the CPU's dequantization.
    from gguf_quantize import IQ4_NL_VALUES
    g, codes, spec, w = integer_codes(qtype, 12, 32, "fp16")
    assert g["mins"] is None
    assert set(np.unique(codes)) == set(IQ4_NL_VALUES)  # the book's values, every one of them in use
    cpu = _core.kernels.Packed(spec).dequantize()
    np.testing.assert_array_equal(codes * np.repeat(column_scales(g, 96, 512, 32), 32, axis=1), cpu)
    assert np.abs(cpu - w).max() < 0.05  # the permutation is undone: rows back in the checkpoint's order


def test_gguf_parts_of_different_types_are_the_cpu_dequantization_rounded_with_q_k_unpermuted():
    # q and k of two types, as one product (gpu_weight): they share no integer form, so 16-bit rows
    rng = np.random.default_rng(3)
    (q, wq), (k, wk) = gguf_spec(rng, gguf.GGMLQuantizationType.Q4_0), gguf_spec(rng, gguf.GGMLQuantizationType.Q8_0)
    cpu = np.concatenate([_core.kernels.Packed(s).dequantize() for s in (q, k)])  # held to gguf-py's elsewhere
    g = DM.gpu_weight([q, k], [32, 32], 256)
    assert g["format"] == "bf16 (from Q4_0, Q8_0)"
    np.testing.assert_array_equal(g["rows"], bf16_bits(cpu))
    assert np.abs(cpu - np.concatenate([wq, wk])).max() < 0.05  # rows back in the checkpoint's order


def same_weight(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a["format"] == b["format"]
    for key, v in a.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, b[key], err_msg=key)
        else:
            assert v == b[key], key


def test_fused_parts_of_different_forms_keep_each_form_as_pieces():
    # What the engine runs (gpu_weight_pieces): a Q4_K_M file's q, k (Q4_K) and v (Q6_K) are an INT4
    # product of q and k stacked and an INT8 one of v, not 16-bit rows of all three; each piece is
    # what its parts alone become, in row order.
    rng = np.random.default_rng(4)
    Q = gguf.GGMLQuantizationType
    q, k, v = (gguf_spec(rng, t)[0] for t in (Q.Q4_K, Q.Q4_K, Q.Q6_K))
    pieces = DM.gpu_weight_pieces([q, k, v], [32, 32, 32], 256)
    assert [p["format"] for p in pieces] == ["int4 g32 (from Q4_K)", "int8 g16 (from Q6_K)"]
    assert [p["out"] for p in pieces] == [64, 32]
    same_weight(pieces[0], DM.gpu_weight([q, k], [32, 32], 256))
    same_weight(pieces[1], DM.gpu_weight([v], [32], 256))
    # parts that stack are one piece, gpu_weight's; neighbours without a quantized form share rows
    same_weight(DM.gpu_weight_pieces([q, k], [32, 32], 256)[0], DM.gpu_weight([q, k], [32, 32], 256))
    odd = fp8_spec(rng, 16, 256, 48)  # a block the FP8 tiles cannot hold
    flat = rng.standard_normal((16, 256)).astype(ml_dtypes.bfloat16)
    pieces = DM.gpu_weight_pieces([odd, flat, q], [16, 16, 32], 256)
    assert [p["format"] for p in pieces] == ["bf16 (from fp8_e4m3, bf16)", "int4 g32 (from Q4_K)"]
    same_weight(pieces[0], DM.gpu_weight([odd, flat], [16, 16], 256))


# ---- GPU

gpu = pytest.mark.skipif(not (hasattr(_core, "CudaModel") and INFO["cuda_devices"] > 0),
                         reason=f"no GPU for the CUDA forward pass: {INFO['cuda_unavailable_reason']}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tiny_models import make_tiny_llama
    d = tmp_path_factory.mktemp("tiny_cuda")
    model = make_tiny_llama(d, dtype="bfloat16", head_dim=64, hidden_size=256, intermediate_size=512,
                            num_attention_heads=8, num_key_value_heads=2, vocab_size=512)
    return d, model, torch


def transformers_logits(model, ids, torch, dtype):
    m = model.to(dtype)
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].float().numpy()


def as_close_as_transformers(llm, ref_model, ids, torch, step_at=60) -> None:
    """llm's logits over ids, and a decode step (a graph replay on the GPU) at position step_at,
    within twice transformers-bf16's error against transformers in fp32, both on ref_model."""
    ref = transformers_logits(ref_model, ids, torch, torch.float32)
    framework = np.abs(transformers_logits(ref_model, ids, torch, torch.bfloat16) - ref).max()
    got = llm.logits(ids)
    assert np.abs(got - ref).max() <= 2 * framework, (np.abs(got - ref).max(), framework)
    llm.reset()
    llm.model.forward(np.asarray(ids[:step_at], np.int32))
    step = llm.model.forward(np.asarray([ids[step_at]], np.int32))
    assert np.abs(step - ref[step_at]).max() <= 2 * framework, (np.abs(step - ref[step_at]).max(), framework)


@pytest.mark.cuda
@gpu
def test_bf16_model_matches_transformers(tiny):
    from llama_local import LLM
    d, model, torch = tiny
    ids = list(np.random.default_rng(4).integers(0, 512, 200))
    ref = transformers_logits(model, ids, torch, torch.float32)
    framework = np.abs(transformers_logits(model, ids, torch, torch.bfloat16) - ref).max()
    llm = LLM(d, device="cuda", n_ctx=256, n_batch=64)  # 200 tokens in 4 chunks
    assert llm.device == "cuda" and llm.info()["isa"].startswith("cuda")
    got = llm.logits(ids)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= 2 * framework, (np.abs(got - ref).max(), framework)
    # decode one token at a time from the cache agrees with the batched pass
    llm.reset()
    llm.model.forward(np.asarray(ids[:100], np.int32))
    step = llm.model.forward(np.asarray([ids[100]], np.int32))
    np.testing.assert_allclose(step, got[100], atol=2 * framework)


@pytest.mark.cuda
@gpu
def test_greedy_generation_on_the_gpu(tiny):
    greedy_tokens_are_transformers_greedy_choices("cuda", tiny)


def greedy_tokens_are_transformers_greedy_choices(device, tiny):
    """Each token greedy generation on `device` picks is, by transformers in fp32 on what came
    before, the best token or short of it by at most two logits' allowed error (each within twice
    transformers-bf16's, as the logits tests hold them). Not the same tokens as another engine: a
    near tie may break either way, and a flip changes every later token."""
    from llama_local import LLM
    d, model, torch = tiny
    prompt = [1, 2, 3, 4, 5]
    tokens = [c.token_id for c in LLM(d, device=device, n_ctx=64).generate(prompt, max_tokens=8, temperature=0)]
    assert len(tokens) == 8
    ref = transformers_logits(model, prompt + tokens, torch, torch.float32)
    framework = np.abs(transformers_logits(model, prompt + tokens, torch, torch.bfloat16) - ref).max()
    chosen = ref[len(prompt) - 1:-1]
    short = chosen.max(-1) - chosen[np.arange(len(tokens)), tokens]
    assert (short <= 2 * 2 * framework).all(), (short, framework)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("fmt", ["int4", "fp8"])
def test_quantized_models_on_the_gpu_follow_the_cpu(tiny, fmt, tmp_path):
    # The same compressed-tensors checkpoint on both engines: the GPU keeps its INT4 / FP8 codes,
    # and differs from the CPU by its 16-bit activations, as a bf16 framework would.
    from llama_local import LLM
    from llama_local.quant.writer import quantize
    d, model, torch = tiny
    q = quantize(d, tmp_path / fmt, fmt=fmt, group_size=64)
    ids = list(np.random.default_rng(6).integers(0, 512, 100))
    ref = transformers_logits(model, ids, torch, torch.float32)
    framework = np.abs(transformers_logits(model, ids, torch, torch.bfloat16) - ref).max()
    gpu_llm = LLM(q, device="cuda", n_ctx=128)
    assert any(f.startswith(fmt) for f, _ in gpu_llm.model.weight_formats), gpu_llm.model.weight_formats
    got, cpu = gpu_llm.logits(ids), LLM(q, n_ctx=128).logits(ids)
    assert np.abs(got - cpu).max() <= 2 * framework, (np.abs(got - cpu).max(), framework)


@pytest.mark.cuda
@gpu
def test_decode_graphs_replay_the_kernel_launches_exactly(tiny, monkeypatch):
    # A decode step replayed as a CUDA graph gives the logits of the same kernels launched one by
    # one, bit for bit: every kernel reads the position from device memory, so one graph serves
    # every position with the same flash-decode split count, and a new count gets a new graph.
    # 440 prompt tokens then 24 steps cross a change of count (at 449 positions with 2 KV heads).
    from llama_local import LLM
    d, model, torch = tiny
    rng = np.random.default_rng(8)
    prompt = rng.integers(0, 512, 440).astype(np.int32)
    steps = rng.integers(0, 512, 24).astype(np.int32)

    def run(graphs: str):
        monkeypatch.setenv("LLAMA_LOCAL_CUDA_GRAPHS", graphs)
        llm = LLM(d, device="cuda", n_ctx=512, n_batch=128)
        out = [llm.model.forward(prompt)]
        out += [llm.model.forward(steps[i:i + 1]) for i in range(len(steps))]
        assert llm.model.decode_graph_error == "" and llm.info()["cuda_graph_error"] is None
        return np.stack(out), llm.model.decode_graphs

    launched, none = run("0")
    graphed, captured = run("1")
    assert none == 0
    sms = _core.cuda_kernels.device_spec()["sms"]
    counts = {DM.fa_num_splits(len(prompt) + i + 1, 2, sms) for i in range(len(steps))}
    assert captured == len(counts) >= 2, (captured, counts)
    np.testing.assert_array_equal(graphed, launched)
    # and the graph steps are as close to transformers in fp32 as transformers in bf16 is, twice over
    ids = list(np.concatenate([prompt, steps]))
    ref = transformers_logits(model, ids, torch, torch.float32)[len(prompt):]
    framework = np.abs(transformers_logits(model, ids, torch, torch.bfloat16)[len(prompt):] - ref).max()
    assert np.abs(graphed[1:] - ref).max() <= 2 * framework, (np.abs(graphed[1:] - ref).max(), framework)


def fake_fp8_activations(model, torch):
    """transformers with each quantized Linear's input rounded per token to E4M3, as FP8_DYNAMIC
    prescribes and the GPU's W8A8 path does (scale = max(|x|, 2^-126 * 448) / 448, codes x / scale
    rounded to nearest even), computed in fp32 whatever the model's dtype."""
    def hook(_module, args):
        x = args[0].float()
        s = (x.abs().amax(-1, keepdim=True) / 448.0).clamp(min=2.0 ** -126)
        return ((x / s).to(torch.float8_e4m3fn).float() * s).to(args[0].dtype),
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name.endswith("_proj"):
            m.register_forward_pre_hook(hook)
    return model


@pytest.mark.cuda
@gpu
def test_w8a8_fp8_model_runs_on_fp8_tensor_cores_as_transformers_would(tiny, tmp_path):
    # An FP8_DYNAMIC checkpoint (weights and each token's activations FP8): on sm_89+ its GEMMs
    # quantize their input per token and multiply on e4m3 mma. The reference is transformers with
    # the checkpoint's dequantized weights and the same activation rounding, in fp32; the GPU stays
    # within twice that reference's own error in bf16. Below sm_89 the model takes W8A16.
    import copy

    from llama_local import LLM
    from llama_local.formats.safetensors_io import Checkpoint
    from llama_local.quant.writer import quantize
    d, model, torch = tiny
    q = quantize(d, tmp_path / "w8a8", fmt="fp8", dynamic_activations=True)
    llm = LLM(q, device="cuda", n_ctx=128)
    w8a8 = tuple(_core.cuda_kernels.device_spec()["compute_capability"]) >= (8, 9)
    paths = {f.rsplit(", ", 1)[-1] for f, _ in llm.model.weight_formats if f.startswith("fp8")}
    assert paths == ({"W8A8"} if w8a8 else {"W8A16"}), llm.model.weight_formats
    ckpt = Checkpoint(q)
    state = {n[: -len("_scale")]: torch.from_numpy(ckpt.tensor(n[: -len("_scale")]).astype(np.float32)
                                                   * ckpt.tensor(n).astype(np.float32))
             for n in ckpt.keys() if n.endswith(".weight_scale")}
    ref_model = copy.deepcopy(model).float()
    ref_model.load_state_dict(state, strict=False)
    if w8a8:
        fake_fp8_activations(ref_model, torch)
    as_close_as_transformers(llm, ref_model, list(np.random.default_rng(9).integers(0, 512, 100)), torch)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("qtype,group", [(gguf.GGMLQuantizationType.Q8_0, 32), (gguf.GGMLQuantizationType.Q6_K, 16),
                                         (gguf.GGMLQuantizationType.Q5_K, 32), (gguf.GGMLQuantizationType.Q5_1, 32),
                                         (gguf.GGMLQuantizationType.IQ4_XS, 32)])
def test_an_8_bit_gguf_keeps_its_codes_on_the_gpu_as_transformers_would(tmp_path, qtype, group):
    # llama.cpp's Q8_0 / Q6_K / Q5_K / Q5_1 / IQ4_XS file: every projection stays integer codes with
    # block scales (and mins) on the GPU (the 8-bit GEMM's integer path, bf16 activations).
    types = {f"model.layers.{i}.{p}.weight": qtype for i in range(2) for p in PROJECTIONS}
    gguf_on_the_gpu_as_transformers_would(tmp_path, types, [f"int8 g{group} (from {qtype.name})"])


PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def gguf_reference_model(tiny, torch):
    """transformers' LlamaForCausalLM in fp32 holding what the tiny GGUF file holds: each tensor
    read back from the file, dequantized by gguf-py, and q/k rows put back in Hugging Face order."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny_models import gguf_tensor_name
    c = {k: v for k, v in tiny.config.items() if not (k == "rope_scaling" and v is None)}
    stored = {t.name: t for t in gguf.GGUFReader(str(tiny.path)).tensors}
    state = {}
    for name, original in tiny.weights.items():
        t = stored[gguf_tensor_name(name, c["num_hidden_layers"])]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(original.shape)
        heads = {"q_proj": c["num_attention_heads"], "k_proj": c["num_key_value_heads"]}.get(name.split(".")[-2])
        if heads:  # llamacpp_permute undone: [heads, 2, rows/2] <- [heads, rows/2, 2]
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(original.shape)
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    model = LlamaForCausalLM(LlamaConfig(**c)).eval()
    model.load_state_dict(state, strict=not c["tie_word_embeddings"])
    return model


def gguf_on_the_gpu_as_transformers_would(tmp_path, types: dict, formats: list[str]) -> None:
    """A tiny GGUF of these projection types: on the GPU its weights take `formats` (and no GGUF
    type falls back to 16-bit rows), and its logits are as close to transformers in fp32 on the
    file's dequantized weights as transformers in bf16 is, twice over (a greedy comparison with
    the CPU's int8 activations flips on near ties, and a flip changes every later token)."""
    torch = pytest.importorskip("torch")
    from llama_local import LLM
    from tiny_models import make_tiny_gguf
    tiny = make_tiny_gguf(tmp_path / "m.gguf", types=types, intermediate_size=256)  # K-quants: rows of 256
    llm = LLM(tiny.path, device="cuda", n_ctx=128)
    got = dict(llm.model.weight_formats)
    assert set(formats) <= set(got) and not any(f.startswith(("bf16 (from Q", "bf16 (from IQ")) for f in got), got
    ids = list(np.random.default_rng(7).integers(0, tiny.config["vocab_size"], 100))
    as_close_as_transformers(llm, gguf_reference_model(tiny, torch), ids, torch)


@pytest.mark.cuda
@gpu
def test_a_q4_k_m_gguf_runs_each_projection_in_its_own_form(tmp_path):
    # llama.cpp's Q4_K_M mix: Q4_K, with v_proj and down_proj Q6_K in some layers (here in layer 1):
    # layer 1's fused Q/K/V runs as an INT4 piece (q, k) and an INT8 piece (v) writing their columns
    # side by side, where one 16-bit product of all three would take twice the bytes of each.
    Q = gguf.GGMLQuantizationType
    types = {f"model.layers.{i}.{p}.weight": Q.Q4_K for i in range(2) for p in PROJECTIONS}
    types |= {"model.layers.1.self_attn.v_proj.weight": Q.Q6_K, "model.layers.1.mlp.down_proj.weight": Q.Q6_K}
    gguf_on_the_gpu_as_transformers_would(tmp_path, types, ["int4 g32 (from Q4_K)", "int8 g16 (from Q6_K)"])
