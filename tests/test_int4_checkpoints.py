"""INT4 checkpoints people download: AWQ (AutoAWQ's GEMM packing), GPTQ (AutoGPTQ's v1 and
GPTQModel's v2 zero points, with and without act-order) and compressed-tensors pack-quantized.

The packers here restate each producer's own code (cited at each), not llama_local's reader, and
the reference dequantizations restate the producers' torch code in their dtype (fp16, bf16). The
spec-level tests hold the reader's spec, and the core's own repacked weight, to that reference bit
for bit after rounding to the reference's dtype. The model-level tests write tiny models in each
layout and hold llama_local's logits against transformers running the exactly dequantized weights,
within twice the error of llama.cpp-style int8 activations (the core's integer kernels quantize
activations to int8 blocks).
"""

from __future__ import annotations

import copy
import json
import shutil
import zlib

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llama_local import LLM, ModelFormatError  # noqa: E402
from llama_local._core import kernels  # noqa: E402
from llama_local.formats import int4_checkpoints, quantized_checkpoints  # noqa: E402
from llama_local.formats.safetensors_io import write_safetensors  # noqa: E402
from tiny_models import drop_tensor, logits_with_q8_0_activations, make_tiny_llama  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)  # nibble i of an int32 word: bits 4i..4i+3


def to_torch(a: np.ndarray) -> "torch.Tensor":
    if a.dtype == BF16:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def bits_of(x) -> np.ndarray:
    """The bit patterns of a float tensor or array, to compare values bit for bit (-0.0 included)."""
    if torch.is_tensor(x):
        return x.contiguous().view({2: torch.int16, 4: torch.int32}[x.element_size()]).numpy()
    return np.ascontiguousarray(x).view({2: np.int16, 4: np.int32}[x.dtype.itemsize])


# ---------------------------------------------------------------------------------------------
# Round-to-nearest quantization (what each producer's search starts from; enough for the layout)

class Quantized:
    """u [N, K] codes 0..15, s [N, G] scales in the stored dtype, z [N, G] zero points (the value
    subtracted from u), col_group [K]: w = s[:, col_group] * (u - z[:, col_group])."""

    def __init__(self, u, s, z, col_group):
        self.u, self.s, self.z, self.col_group = u, s, z, col_group

    def exact(self) -> np.ndarray:
        """float32 [N, K]: each element's exact value (exact for fp16/bf16 scales)."""
        s = self.s.astype(np.float32)[:, self.col_group]
        return s * (self.u.astype(np.float32) - self.z[:, self.col_group].astype(np.float32))


def rtn(w: np.ndarray, col_group: np.ndarray, sym: bool, dtype=np.float16, zero_lo: int = 0) -> Quantized:
    """w [N, K] quantized to 4 bits per group of columns (col_group[k] is column k's group)."""
    n, k = w.shape
    ng = int(col_group.max()) + 1
    s = np.zeros((n, ng), dtype)
    z = np.zeros((n, ng), np.int64)
    u = np.zeros((n, k), np.uint8)
    for g in range(ng):
        cols = col_group == g
        block = w[:, cols]
        if sym:   # GPTQ's and compressed-tensors' symmetric range: [-amax, amax] over 15 steps, zero 8
            scale = 2 * np.abs(block).max(1) / 15
        else:
            scale = (block.max(1) - block.min(1)) / 15
        stored = np.maximum(scale, 1e-6).astype(dtype)
        sf = stored.astype(np.float32)
        zero = np.full(n, 8) if sym else np.clip(np.round(-block.min(1) / sf), zero_lo, 15).astype(np.int64)
        u[:, cols] = np.clip(np.round(block / sf[:, None]) + zero[:, None], 0, 15)
        s[:, g], z[:, g] = stored, zero
    return Quantized(u, s, z, col_group)


def by_group(k: int, group: int) -> np.ndarray:
    return np.arange(k) // group


def act_order(k: int, group: int, rng) -> np.ndarray:
    """GPTQ's desc_act group map: columns quantized in a permuted order, `group` at a time, so
    g_idx[perm[i]] = i // group."""
    perm = rng.permutation(k)
    g = np.empty(k, np.int64)
    g[perm] = np.arange(k) // group
    return g


# ---------------------------------------------------------------------------------------------
# Packers, each restating its producer

def pack_words(values: np.ndarray) -> np.ndarray:
    """uint [..., 8W] nibbles -> int32 [..., W], value 8j + i in bits 4i.. of word j."""
    v = values.astype(np.uint32).reshape(*values.shape[:-1], -1, 8)
    return (v << (4 * np.arange(8, dtype=np.uint32))).sum(-1, dtype=np.uint32).view(np.int32)


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ gemm.py's order_map


def awq_pack(q: Quantized, prefix: str) -> dict:
    """AutoAWQ awq/modules/linear/gemm.py WQLinear_GEMM.from_linear: intweight [K, N] packed along N,
    word col's nibble i = intweight[:, col * 8 + order_map[i]]; zeros [K/g, N] the same way."""
    iw, zeros = q.u.T, q.z.T
    k, n = iw.shape
    order = (np.arange(n // 8)[:, None] * 8 + np.array(AWQ_ORDER)).reshape(-1)
    return {prefix + "qweight": pack_words(iw[:, order]), prefix + "qzeros": pack_words(zeros[:, order]),
            prefix + "scales": np.ascontiguousarray(q.s.T)}


def gptq_pack(q: Quantized, prefix: str, v1: bool = True) -> dict:
    """AutoGPTQ qlinear_cuda.py QuantLinear.pack: intweight [K, N] packed along K (qweight[row]
    |= intweight[8 row + j] << 4j); zeros [G, N] minus 1 (v1), packed along N. The & 15 keeps a
    stored -1 inside its nibble (GPTQModel's v2 -> v1 conversion does the same); "gptq_v2" stores z."""
    iw = q.u.T
    k, n = iw.shape
    qweight = pack_words(np.ascontiguousarray(iw.reshape(k // 8, 8, n).transpose(0, 2, 1))).reshape(k // 8, n)
    stored = (q.z.T - 1) & 15 if v1 else q.z.T
    return {prefix + "qweight": qweight, prefix + "qzeros": pack_words(stored),
            prefix + "scales": np.ascontiguousarray(q.s.T), prefix + "g_idx": q.col_group.astype(np.int32)}


def ct_pack(q: Quantized, prefix: str, sym: bool) -> dict:
    """compressed-tensors pack_quantized.py pack_to_int32: signed q + 8 packed along K
    (value[:, 8j + i] << 4i); an asymmetric zero point, signed + 8, packed along N (packed_dim 0)."""
    n, k = q.u.shape
    out = {prefix + "weight_packed": pack_words(q.u), prefix + "weight_scale": q.s,
           prefix + "weight_shape": np.array([n, k], np.int64)}
    if not sym:  # our z is the stored zero point: w = s * ((u - 8) - (z - 8))
        out[prefix + "weight_zero_point"] = np.ascontiguousarray(pack_words(np.ascontiguousarray(q.z.T)).T)
    return out


# ---------------------------------------------------------------------------------------------
# The producers' dequantization, restated in torch in the producer's dtype

def unpack_torch(words: "torch.Tensor") -> "torch.Tensor":
    """int32 [R, W] -> [R, 8W], (words >> shifts) & 15, as all three producers unpack."""
    return ((words[:, :, None] >> SHIFTS) & 15).reshape(words.shape[0], -1)


def awq_reference(t: dict, prefix: str, group: int) -> "torch.Tensor":
    """AutoAWQ packing_utils.dequantize_gemm: unpack, undo the order (AWQ_REVERSE_ORDER), then
    (iweight - izeros) * scales in fp16. Returns [N, K]."""
    qw, qz, scales = (to_torch(t[prefix + p]) for p in ("qweight", "qzeros", "scales"))
    iweight, izeros = unpack_torch(qw).to(torch.int8), unpack_torch(qz).to(torch.int8)
    reverse = torch.arange(iweight.shape[1]).view(-1, 8)[:, [0, 4, 1, 5, 2, 6, 3, 7]].reshape(-1)
    iweight, izeros = iweight[:, reverse], izeros[:, reverse]
    w = (iweight - izeros.repeat_interleave(group, 0)) * scales.repeat_interleave(group, 0)
    return w.T


def gptq_reference(t: dict, prefix: str, v1: bool = True) -> "torch.Tensor":
    """AutoGPTQ qlinear_cuda.py forward (torch path): zeros = nibble (+ 1 for v1), weight unpacked
    along K, scales[g_idx] * (weight - zeros[g_idx]) in fp16. Returns [N, K]."""
    qw, qz, scales, g_idx = (to_torch(t[prefix + p]) for p in ("qweight", "qzeros", "scales", "g_idx"))
    zeros = unpack_torch(qz).to(torch.int8) + (1 if v1 else 0)
    weight = ((qw[:, None, :] >> SHIFTS[None, :, None]) & 15).to(torch.int8).reshape(-1, qw.shape[1])
    g = g_idx.long()
    return (scales[g] * (weight - zeros[g])).T


def ct_reference(t: dict, prefix: str, sym: bool) -> "torch.Tensor":
    """compressed-tensors unpack_from_int32 (nibble - 8, signed) and forward.py _dequantize:
    (x_q.to(scale dtype) - zp) * scale, per group of columns. Returns [N, K]."""
    n, k = (int(v) for v in t[prefix + "weight_shape"])
    scale = to_torch(t[prefix + "weight_scale"])
    x_q = (unpack_torch(to_torch(t[prefix + "weight_packed"]))[:, :k] - 8).to(torch.int8)
    group = k // scale.shape[1]
    x = x_q.to(scale.dtype)
    if not sym:
        zp = (unpack_torch(to_torch(t[prefix + "weight_zero_point"]).T.contiguous())[:, :n].T - 8).to(torch.int8)
        x = x - zp.to(scale.dtype).repeat_interleave(group, 1)
    return x * scale.repeat_interleave(group, 1)


# ---------------------------------------------------------------------------------------------
# Checkpoints

class MemCheckpoint:
    """A checkpoint's interface over a dict of arrays."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def keys(self):
        return list(self.tensors)

    def __contains__(self, name):
        return name in self.tensors

    def info(self, name):
        return self.tensors[name].dtype, self.tensors[name].shape

    def tensor(self, name):
        return self.tensors[name]


def awq_config(group: int) -> dict:
    return {"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm", "zero_point": True,
            "modules_to_not_convert": None}


def gptq_config(group: int, sym: bool, desc_act: bool = False, fmt: str = "gptq") -> dict:
    return {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": desc_act, "sym": sym,
            "static_groups": False, "true_sequential": True, "damp_percent": 0.01, "checkpoint_format": fmt,
            "pack_dtype": "int32"}


def ct_config(strategy: str, sym: bool, group: int | None = None) -> dict:
    weights = {"num_bits": 4, "type": "int", "symmetric": sym, "strategy": strategy, "group_size": group,
               "dynamic": False, "actorder": None, "observer": "minmax"}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "ignore": ["lm_head"], "kv_cache_scheme": None,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                          "output_activations": None, "format": "pack-quantized"}}}


# name: (config, quantize(w, rng) -> Quantized, pack(Quantized, prefix) -> tensors, reference dequant)
def case(name: str):
    kind, *rest = name.split("-")
    if kind == "awq":
        g = int(rest[0][1:])
        return (awq_config(g), lambda w, rng: rtn(w, by_group(w.shape[1], g), sym=False),
                awq_pack, lambda t, p: awq_reference(t, p, g))
    if kind in ("gptq", "gptq2"):
        sym, g = rest[0] == "sym", -1 if rest[1] == "channel" else int(rest[1][1:])
        desc = "actorder" in rest
        v1 = kind == "gptq"
        groups = (lambda k, rng: act_order(k, g, rng)) if desc else (lambda k, rng: by_group(k, g if g > 0 else k))
        return (gptq_config(g, sym, desc, "gptq" if v1 else "gptq_v2"),
                lambda w, rng: rtn(w, groups(w.shape[1], rng), sym=sym),
                lambda q, p: gptq_pack(q, p, v1), lambda t, p: gptq_reference(t, p, v1))
    sym, strategy = rest[0] == "sym", rest[1]
    g = int(strategy[1:]) if strategy.startswith("g") else None
    dtype = {"bf16": BF16, "fp16": np.float16, "fp32": np.float32}[rest[2]]
    return (ct_config("group" if g else "channel", sym, g),
            lambda w, rng: rtn(w, by_group(w.shape[1], g or w.shape[1]), sym=sym, dtype=dtype),
            lambda q, p: ct_pack(q, p, sym), lambda t, p: ct_reference(t, p, sym))


# ---------------------------------------------------------------------------------------------
# Spec level: the reader's spec (and the core's repacked weight) against the producer's dequant

def spec_weight(spec: dict) -> np.ndarray:
    """float32 [N, K] as the spec defines it: s * (u - zero), s * u + m, or the float data."""
    if spec["format"] == "float":
        return spec["data"]
    u = spec["codes"].astype(np.float32)
    k = u.shape[1]
    s = np.repeat(spec["scales"], spec["group"], axis=1)[:, :k]
    if spec["mins"] is not None:
        return s * u + np.repeat(spec["mins"], spec["group"], axis=1)[:, :k]
    return s * (u - np.float32(spec["zero"]))


SPEC_CASES = ["awq-g128", "awq-g32", "awq-g64",
              "gptq-sym-g128", "gptq-asym-g64", "gptq-asym-g128-actorder", "gptq-sym-channel", "gptq2-asym-g128",
              "gptq-asym-g256", "ct-sym-g32-bf16", "ct-sym-g128-fp16", "ct-asym-g64-bf16", "ct-sym-channel-bf16",
              "ct-asym-channel-fp16", "ct-sym-g128-fp32", "ct-asym-g32-fp32"]


@pytest.mark.parametrize("name", SPEC_CASES)
def test_spec_equals_the_producers_dequantization_bit_for_bit(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    qconfig, quantize, pack, reference = case(name)
    n, k = 96, 512
    w = (rng.standard_normal((n, k)) * rng.uniform(0.005, 0.05, (n, 1))).astype(np.float32)
    q = quantize(w, rng)
    if name.startswith(("awq", "ct-asym-g32")):  # every zero point, 0 and 15 included
        q.z[:] = rng.integers(0, 16, q.z.shape)
    if name == "gptq-asym-g64":  # v1 stores z - 1 in a nibble: its zero points run 1..16
        q.z[:] = rng.integers(1, 17, q.z.shape)
    tensors = pack(q, "m.") | {"norm.weight": np.ones(k, np.float32)}
    specs = quantized_checkpoints.core_tensors(MemCheckpoint(tensors), qconfig, "test")
    assert set(specs) == {"m.weight", "norm.weight"}
    spec = specs["m.weight"]
    ref = reference(tensors, "m.")
    assert tuple(ref.shape) == (n, k)
    got = spec_weight(spec)
    assert got.dtype == np.float32
    # Rounded to the producer's dtype, the spec's fp32 weight is the producer's dequantization.
    assert np.array_equal(bits_of(torch.from_numpy(got).to(ref.dtype)), bits_of(ref))
    if ref.dtype != torch.float32:  # and, for fp16/bf16 scales, it is the exact product itself
        assert np.array_equal(bits_of(got), bits_of(q.exact()))
    # The core's repacked weight is the spec's, bit for bit.
    core = kernels.Packed({key: v for key, v in spec.items() if key != "releasable"}).dequantize()
    assert np.array_equal(bits_of(core), bits_of(got))
    if "actorder" in name:
        assert spec["format"] == "float"
    else:
        assert spec["format"] == "int" and spec["group"] in (32, 64, 128)
        assert spec["bits"] == (8 if name == "ct-asym-g32-fp32" else 4)
        assert (spec["mins"] is None) == ("-sym-" in name or "ct-asym-g32-fp32" == name)


def test_awq_nibble_order_is_autoawqs_not_sequential():
    """AutoAWQ interleaves: nibble i of a word holds column AWQ_ORDER[i]. One nonzero code per
    column shows where each column's code lands."""
    u = np.zeros((8, 128), np.uint8)
    u[np.arange(8), 0] = np.arange(1, 9)            # column c (an output row of W) holds c + 1
    q = Quantized(u, np.ones((8, 1), np.float16), np.zeros((8, 1), np.int64), by_group(128, 128))
    t = awq_pack(q, "m.")
    assert [(int(t["m.qweight"][0, 0]) >> (4 * i)) & 15 for i in range(8)] == [1, 3, 5, 7, 2, 4, 6, 8]
    spec = int4_checkpoints.core_tensors(MemCheckpoint(t), awq_config(128), "test")["m.weight"]
    assert np.array_equal(spec["codes"], u)


def test_compressed_tensors_own_compressor_is_the_oracle():
    """compressed-tensors' own PackedQuantizationCompressor packs the checkpoint and decompresses
    the reference; the reader's spec, rounded to bf16, equals its decompression bit for bit."""
    pytest.importorskip("compressed_tensors.compressors.pack_quantized.base")  # 0.20's layout of the package
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    rng = np.random.default_rng(5)
    n, k, g = 64, 256, 64
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    for sym in (True, False):
        q = rtn(w, by_group(k, g), sym=sym, dtype=BF16)
        args = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=g, symmetric=sym)
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        # The weight on the grid of our codes, so that its quantizer picks them: w / s = u - z exactly.
        state = {"weight": torch.from_numpy(q.exact()), "weight_scale": to_torch(q.s)}
        if not sym:
            state["weight_zero_point"] = torch.from_numpy(q.z - 8).to(torch.int8)
        packed = PackedQuantizationCompressor.compress(state, scheme)
        tensors = {"m." + key: (v.view(torch.int16).numpy().view(BF16) if v.dtype == torch.bfloat16 else v.numpy())
                   for key, v in packed.items()}
        ours = ct_pack(q, "m.", sym)
        assert np.array_equal(tensors["m.weight_packed"], ours["m.weight_packed"])  # our packer is theirs
        if not sym:
            assert np.array_equal(tensors["m.weight_zero_point"], ours["m.weight_zero_point"])
        ref = PackedQuantizationCompressor.decompress(packed, scheme)["weight"]
        specs = quantized_checkpoints.core_tensors(MemCheckpoint(tensors), ct_config("group", sym, g), "test")
        spec = specs["m.weight"]
        got = torch.from_numpy(spec_weight(spec)).to(ref.dtype)
        assert np.array_equal(bits_of(got), bits_of(ref))


def test_compressed_tensors_config_groups_pick_each_modules_scheme():
    """Mixed schemes (llm-compressor recipes target modules by regex): each module is read with
    its own config group's arguments; a packed module no group targets is refused."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
    attn, mlp = rtn(w, by_group(256, 128), sym=True, dtype=BF16), rtn(w, by_group(256, 64), sym=False, dtype=BF16)
    tensors = (ct_pack(attn, "model.layers.0.self_attn.q_proj.", sym=True)
               | ct_pack(mlp, "model.layers.0.mlp.up_proj.", sym=False))
    qconfig = ct_config("group", True, 128)
    qconfig["config_groups"]["group_1"] = copy.deepcopy(qconfig["config_groups"]["group_0"])
    qconfig["config_groups"]["group_0"]["targets"] = ["re:.*self_attn.*"]
    qconfig["config_groups"]["group_1"]["targets"] = ["re:.*mlp.*"]
    qconfig["config_groups"]["group_1"]["weights"] |= {"symmetric": False, "group_size": 64}
    specs = quantized_checkpoints.core_tensors(MemCheckpoint(tensors), qconfig, "cfg.json")
    for name, q in (("model.layers.0.self_attn.q_proj.weight", attn), ("model.layers.0.mlp.up_proj.weight", mlp)):
        assert np.array_equal(bits_of(spec_weight(specs[name])), bits_of(q.exact())), name
    qconfig["config_groups"]["group_1"]["targets"] = ["re:.*down_proj$"]
    with pytest.raises(ModelFormatError, match="'model.layers.0.mlp.up_proj' is packed but no compressed-tensors "
                                               "config group targets it"):
        quantized_checkpoints.core_tensors(MemCheckpoint(tensors), qconfig, "cfg.json")


# ---------------------------------------------------------------------------------------------
# Model level: llama_local against transformers on the exactly dequantized weights

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("int4-src")
    # Rows of 256 and 512: every group size (32..128) divides them.
    model = make_tiny_llama(d, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=64, seed=1)
    return d, model


def write_int4_model(src, dst, model, name: str, act_order_layers=(0,)):
    """The tiny model at `src` as an INT4 checkpoint in layout `name` at `dst`; returns the
    reference model (transformers, fp32) holding the exactly dequantized weights, and the names
    of the Linear modules the core holds as integers. With act-order GPTQ, only `act_order_layers`
    get a permuted g_idx (loaded as float32), the others a trivial one, so that both kinds of layer
    are in one model."""
    qconfig, quantize, pack, _ = case(name)
    dst.mkdir()
    shutil.copy(src / "tokenizer.json", dst / "tokenizer.json")
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = qconfig
    (dst / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(11)
    tensors, ref_state, linears = {}, {}, []
    for tname, p in model.state_dict().items():
        w = p.detach().numpy().astype(np.float32)
        if tname.endswith("proj.weight"):
            module = tname[: -len(".weight")]
            layer = int(module.split(".")[2])
            q = quantize(w, rng)
            if "actorder" in name and layer not in act_order_layers:
                q = rtn(w, by_group(w.shape[1], qconfig["group_size"]), sym=qconfig["sym"])
            tensors.update(pack(q, module + "."))
            ref_state[tname] = torch.from_numpy(q.exact())
            if not ("actorder" in name and layer in act_order_layers):
                linears.append(module)
        else:
            tensors[tname] = w
    write_safetensors(dst / "model.safetensors", tensors)
    ref = copy.deepcopy(model)
    ref.load_state_dict(ref_state, strict=False)
    return ref.eval(), linears


MODEL_CASES = ["awq-g128", "awq-g32", "gptq-sym-g128", "gptq-sym-g64-actorder", "gptq-asym-g128", "gptq2-asym-g64",
               "ct-sym-g32-bf16", "ct-sym-g128-fp16", "ct-asym-g64-bf16", "ct-sym-channel-bf16"]


@pytest.mark.parametrize("name", MODEL_CASES)
def test_int4_checkpoint_matches_its_dequantized_weights(tiny, tmp_path, name):
    src, model = tiny
    ref_model, linears = write_int4_model(src, tmp_path / "int4", model, name)
    ids = np.random.default_rng(7).integers(0, model.config.vocab_size, 48).tolist()
    with torch.no_grad():
        want = ref_model(torch.tensor([ids])).logits[0].numpy()

    def rel(a):
        return float(np.linalg.norm(a - want) / np.linalg.norm(want))

    if "actorder" in name:  # layer 0's 7 linears, 589824 weights: 4 bytes each instead of 0.5 + scales
        with pytest.warns(UserWarning, match=r"7 GPTQ layers .*act-order g_idx.*float32 weights, 1\.9 MiB more"):
            llm = LLM(tmp_path / "int4", n_ctx=64, progress=False)
    else:
        llm = LLM(tmp_path / "int4", n_ctx=64, progress=False)
    formats = dict(llm.model.weight_formats)
    group = next(t for t in name.split("-")[1:] if t == "channel" or t[1:].isdigit())
    assert f"int4 {'g128' if group == 'channel' else group}" in formats, formats
    floats = sum(p.numel() for n, p in model.state_dict().items() if not n.endswith("proj.weight")) * 4
    assert formats["f32"] == floats + (589824 * 4 if "actorder" in name else 0), formats
    got = llm.logits(ids)
    llm.model.reset()  # decoding token by token: the integer kernels' other path
    steps = np.stack([llm.model.forward(np.array([t], dtype=np.int32)) for t in ids])
    llamacpp = rel(logits_with_q8_0_activations(ref_model, ids, only=set(linears)))
    assert 0 < llamacpp < 0.2, llamacpp
    assert rel(got) <= 2 * llamacpp and rel(steps) <= 2 * llamacpp, (rel(got), rel(steps), llamacpp)
    # Not just close to the original weights: the INT4 model is a different model.
    with torch.no_grad():
        orig = model(torch.tensor([ids])).logits[0].numpy()
    assert rel(orig) > 2 * llamacpp, (rel(orig), llamacpp)


def test_act_order_layers_are_float32_and_the_rest_int4(tiny, tmp_path):
    src, model = tiny
    write_int4_model(src, tmp_path / "m", model, "gptq-asym-g128-actorder", act_order_layers=(1,))
    from llama_local.formats.safetensors_io import Checkpoint
    with pytest.warns(UserWarning, match="7 GPTQ layers"):
        specs = quantized_checkpoints.core_tensors(Checkpoint(tmp_path / "m"),
                                                   gptq_config(128, sym=False, desc_act=True), "m")
    for name, spec in specs.items():
        if name.endswith("proj.weight"):
            want = "float" if name.startswith("model.layers.1.") else "int"
            assert spec["format"] == want, (name, spec["format"])
            if want == "float":
                assert spec["data"].dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Refusals

def small_checkpoint(name: str, drop=(), edit=None):
    """A one-layer checkpoint in layout `name` (module 'm'), with tensors dropped or edited."""
    qconfig, quantize, pack, _ = case(name)
    rng = np.random.default_rng(0)
    q = quantize((rng.standard_normal((64, 256)) * 0.02).astype(np.float32), rng)
    t = {key: v for key, v in pack(q, "m.").items() if key not in drop}
    if edit:
        t.update(edit(t))
    return MemCheckpoint(t), qconfig


@pytest.mark.parametrize("name, qconfig_edit, why", [
    ("gptq-sym-g128", {"bits": 3}, "GPTQ checkpoints with 3-bit weights"),
    ("gptq-sym-g128", {"bits": 8}, "GPTQ checkpoints with 8-bit weights"),
    ("gptq-sym-g128", {"checkpoint_format": "marlin"}, "checkpoint_format 'marlin'"),
    ("awq-g128", {"bits": 8}, "AWQ checkpoints with 8-bit weights"),
    ("awq-g128", {"version": "gemv"}, "AWQ version 'gemv'"),
    ("awq-g128", {"group_size": 0}, "group_size must be a positive integer"),
    ("ct-sym-g32-bf16", {"config_groups": {"g": {"weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}}},
     "8-bit int weights"),
    ("ct-sym-g32-bf16", {"config_groups": {"g": {"weights": {"num_bits": 4, "type": "int", "strategy": "tensor"}}}},
     "strategy 'tensor'"),
    ("ct-sym-g32-bf16", {"format": "marlin-24"}, "compressed-tensors format 'marlin-24'"),
    ("ct-sym-g32-bf16", {"quant_method": "bitsandbytes"}, "quant_method 'bitsandbytes'"),
])
def test_unsupported_configs_are_refused_naming_them(name, qconfig_edit, why):
    ckpt, qconfig = small_checkpoint(name)
    with pytest.raises(ModelFormatError, match=why):
        quantized_checkpoints.core_tensors(ckpt, qconfig | qconfig_edit, "cfg.json")


@pytest.mark.parametrize("name, drop, edit, why", [
    ("gptq-sym-g128", ["m.scales"], None, "'m.qweight' has no 'm.scales'"),
    ("awq-g128", ["m.qzeros"], None, "'m.qweight' has no 'm.qzeros'"),
    ("ct-sym-g32-bf16", ["m.weight_shape"], None, "'m.weight_packed' has no 'm.weight_shape'"),
    ("ct-asym-g64-bf16", ["m.weight_zero_point"], None, "asymmetric but has no 'm.weight_zero_point'"),
    ("gptq-sym-g128", ["m.qweight"], None, r"a GPTQ checkpoint, but no tensor ends in '\.qweight'"),
    ("gptq-sym-g128", [], lambda t: {"n.qzeros": t["m.qzeros"]}, "tensor 'n.qzeros' has no 'n.qweight'"),
    ("gptq-sym-g128", [], lambda t: {"m.scales": t["m.scales"][:1]}, r"'m.scales': expected shape \[2, 64\]"),
    ("awq-g128", [], lambda t: {"m.qzeros": t["m.qzeros"].astype(np.int64)}, "'m.qzeros': expected packed int32"),
    ("gptq-sym-g128", [], lambda t: {"m.g_idx": t["m.g_idx"] + 5}, r"group indices must lie in \[0, 2\)"),
    ("ct-sym-g32-bf16", [], lambda t: {"m.weight_shape": np.array([64, 300])}, "does not hold a"),
    ("ct-sym-g32-bf16", [], lambda t: {"m.weight_zero_point": np.ones((64, 8), np.int8)},
     "'m.weight_zero_point' is not zero"),
    ("ct-sym-g32-bf16", [], lambda t: {"m.weight": np.zeros((64, 256), np.float32)}, "both a packed weight"),
])
def test_bad_tensors_are_refused_naming_them(name, drop, edit, why):
    ckpt, qconfig = small_checkpoint(name, drop, edit)
    with pytest.raises(ModelFormatError, match=why):
        quantized_checkpoints.core_tensors(ckpt, qconfig, "cfg.json")


@pytest.mark.parametrize("group", [16, 48])
def test_group_sizes_the_int4_format_cannot_hold_are_refused(group):
    rng = np.random.default_rng(0)
    q = rtn((rng.standard_normal((64, 192)) * 0.02).astype(np.float32), by_group(192, group), sym=True)
    ckpt = MemCheckpoint(gptq_pack(q, "m."))
    with pytest.raises(ModelFormatError, match="'m.weight': its groups of input columns are not multiples of 32"):
        quantized_checkpoints.core_tensors(ckpt, gptq_config(group, sym=True), "cfg.json")


def test_symmetric_zero_points_stored_as_zeros_are_accepted():
    """Some compressed-tensors versions still write a symmetric scheme's (all-zero) zero point."""
    zeros = np.zeros((64, 8), np.int8)
    ckpt, qconfig = small_checkpoint("ct-sym-g32-bf16", edit=lambda t: {"m.weight_zero_point": zeros})
    spec = quantized_checkpoints.core_tensors(ckpt, qconfig, "cfg.json")["m.weight"]
    assert spec["zero"] == 8 and spec["mins"] is None


def test_a_broken_checkpoint_is_refused_at_load_naming_the_file(tiny, tmp_path):
    src, model = tiny
    d = tmp_path / "m"
    write_int4_model(src, d, model, "awq-g128")
    drop_tensor(d / "model.safetensors", "model.layers.1.mlp.down_proj.scales")
    with pytest.raises(ModelFormatError, match=r"config\.json: 'model\.layers\.1\.mlp\.down_proj\.qweight' has no "
                                               r"'model\.layers\.1\.mlp\.down_proj\.scales'"):
        LLM(d, n_ctx=64, progress=False)
