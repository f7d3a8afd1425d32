"""GGUF files loaded in place: tiny random models of every block type against transformers
loading the same file, the repacked weights as the model holds them, and bad files.

The tiny models (tiny_models.make_tiny_gguf) are written as llama.cpp's converter writes them (q/k
rows permuted), so that a wrong un-permutation, a wrong block decoder or a wrong embedding lookup
changes the logits; K-quants come from the tests' own quantizer (gguf_quantize).
"""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF")

import llama_local  # noqa: E402
from llama_local.errors import ModelFormatError  # noqa: E402
from llama_local.formats.gguf_weights import GGUFWeights  # noqa: E402

from tiny_models import GGUF_SMALL as SMALL  # noqa: E402
from tiny_models import logits_with_q8_0_activations, make_tiny_gguf  # noqa: E402

Q = gguf.GGMLQuantizationType


def all_layers(layers: int, qtype) -> dict:
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    return {f"model.layers.{i}.{n}.weight": qtype for i in range(layers) for n in names}


# Every block type on the projections (K-quants need rows of 256: hidden and FFN are 256 here),
# with the embedding in another type; tied and untied heads.
CASES = {
    "Q4_0": (Q.Q4_0, Q.Q8_0, False),
    "Q4_1": (Q.Q4_1, Q.Q4_1, True),
    "Q5_0": (Q.Q5_0, Q.F16, False),
    "Q5_1": (Q.Q5_1, Q.Q5_1, True),
    "Q8_0": (Q.Q8_0, Q.Q8_0, True),
    "Q4_K": (Q.Q4_K, Q.Q6_K, False),
    "Q5_K": (Q.Q5_K, Q.Q8_0, False),
    "Q6_K": (Q.Q6_K, Q.Q6_K, True),
    "IQ4_NL": (Q.IQ4_NL, Q.Q4_0, False),
    "IQ4_XS": (Q.IQ4_XS, Q.IQ4_XS, True),
    "F16": (Q.F16, Q.F16, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tiny_model_in_place_matches_transformers(case, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path / "cache"))
    qtype, embed_type, tie = CASES[case]
    types = all_layers(2, qtype) | {"model.embed_tokens.weight": embed_type}
    if not tie:
        types["lm_head.weight"] = qtype
    # Sharper attention than the default init (qk_scale), so that q/k mistakes show in the logits.
    tiny = make_tiny_gguf(tmp_path / f"{case}.gguf", seed=3, tie_word_embeddings=tie, hidden_size=256,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64, intermediate_size=256,
                          num_hidden_layers=2, qk_scale=8, types=types)
    path, state = tiny.path, tiny.weights
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    ids = np.random.default_rng(0).integers(0, c_vocab(state), 48).tolist()
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
    # An f32 KV cache: the F16 case compares fp32 arithmetic with fp32 arithmetic.
    llm = llama_local.LLM(path, n_ctx=64, progress=False, kv_cache="f32")
    formats = dict(llm.model.weight_formats)
    assert {format_name(qtype), format_name(embed_type)} <= set(formats), formats
    got = llm.logits(ids)

    def rel(a):
        return np.linalg.norm(a - want) / np.linalg.norm(want)
    # Decoding token by token: the integer kernels' other path.
    llm.model.reset()
    steps = np.stack([llm.model.forward(np.array([t], dtype=np.int32)) for t in ids])
    if qtype == Q.F16:  # float weights: fp32 activations, only the summation order differs
        assert rel(got) < 1e-4 and rel(steps) < 1e-4, (rel(got), rel(steps))
    else:  # at most twice llama.cpp's error (a wrong block decoder or permutation is O(1))
        llamacpp = rel(logits_with_q8_0_activations(ref, ids))
        assert 0 < llamacpp < 0.2, llamacpp
        assert rel(got) <= 2 * llamacpp and rel(steps) <= 2 * llamacpp, (rel(got), rel(steps), llamacpp)


def c_vocab(state) -> int:
    return state["model.embed_tokens.weight"].shape[0]


def format_name(qtype) -> str:
    """The core's name for a weight format: the GGML type, floats in lower case."""
    return qtype.name.lower() if qtype in (Q.F32, Q.F16, Q.BF16) else qtype.name


def test_weights_are_repacked_once_and_the_file_pages_released(tmp_path):
    path = make_tiny_gguf(tmp_path / "m.gguf", seed=4, tie_word_embeddings=False, hidden_size=256,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64, intermediate_size=256,
                          types=all_layers(2, Q.Q4_K) | {"model.embed_tokens.weight": Q.Q6_K,
                                                         "lm_head.weight": Q.Q6_K}).path
    llm = llama_local.LLM(path, n_ctx=64, progress=False)
    info = llm.info()
    # The core holds each projection once, in its own layout; the untied embedding is looked up
    # from the file as stored.
    w = GGUFWeights(path)
    file_bytes = w.type_bytes()
    assert info["source"] == str(path) and info["source_bytes"] == path.stat().st_size
    assert sum(info["weight_formats"].values()) == info["weight_bytes"]
    assert set(info["weight_formats"]) == {"Q4_K", "Q6_K", "f32"}
    assert info["weight_formats"]["Q4_K"] >= file_bytes["Q4_K"]
    assert info["weight_formats"]["Q4_K"] <= 1.1 * file_bytes["Q4_K"]


# ---------------------------------------------------------------------------------------------
# Bad files

@pytest.fixture()
def small(tmp_path):
    path = make_tiny_gguf(tmp_path / "small.gguf", **SMALL, types={"model.layers.0.mlp.up_proj.weight": Q.Q8_0}).path
    return path, gguf.GGUFReader(path)


def edit_tensor_info(path, reader, tensor_name, part, value, out):
    """A copy of the file with one integer of a tensor's header entry changed."""
    t = next(t for t in reader.tensors if t.name == tensor_name)
    parts = t.field.parts  # name length, name, n_dims, dims, type, offset
    pos = t.field.offset + sum(p.nbytes for p in parts[:part])
    data = bytearray(path.read_bytes())
    size = parts[part].itemsize
    data[pos:pos + size] = int(value).to_bytes(size, "little")
    out.write_bytes(bytes(data))
    return out


def test_truncated_tensor_data_is_named(small, tmp_path):
    path, r = small
    last = max(r.tensors, key=lambda t: t.data_offset)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:int(last.data_offset) + 10])
    with pytest.raises(ModelFormatError, match=rf"cut\.gguf: tensor '{last.name}' .* needs bytes .* but the file has"):
        llama_local.LLM(cut)


def test_lying_tensor_offsets_are_named(small, tmp_path):
    path, r = small
    base = int(r.tensors[0].data_offset - r.data_offset)
    name = r.tensors[1].name
    bad = edit_tensor_info(path, r, name, 5, base + 32, tmp_path / "overlap.gguf")
    with pytest.raises(ModelFormatError, match=rf"tensors '{r.tensors[0].name}' .* and '{name}' .* overlap"):
        llama_local.LLM(bad)
    bad = edit_tensor_info(path, r, name, 5, 10**9, tmp_path / "far.gguf")
    with pytest.raises(ModelFormatError, match=rf"tensor '{name}' .* needs bytes 100000\d+"):
        llama_local.LLM(bad)
    bad = edit_tensor_info(path, r, name, 5, base + 3, tmp_path / "odd.gguf")
    with pytest.raises(ModelFormatError, match=rf"tensor '{name}' has data offset \d+, not a multiple of the file's alignment 32"):
        llama_local.LLM(bad)


def test_row_length_not_a_multiple_of_the_block_is_named(small, tmp_path):
    path, r = small
    bad = edit_tensor_info(path, r, "blk.0.ffn_up.weight", 3, 48, tmp_path / "rows.gguf")  # Q8_0: 32 per block
    with pytest.raises(ModelFormatError, match=r"'blk\.0\.ffn_up\.weight' of type Q8_0 has rows of 48 elements, "
                                               r"not a multiple of its block size 32"):
        llama_local.LLM(bad)


def test_unsupported_and_unknown_types_are_named(small, tmp_path):
    path, r = small
    bad = edit_tensor_info(path, r, "blk.0.ffn_up.weight", 4, 77, tmp_path / "unknown.gguf")
    with pytest.raises(ModelFormatError, match=r"'blk\.0\.ffn_up\.weight' has unknown GGML type 77"):
        llama_local.LLM(bad)
    iq2 = make_tiny_gguf(tmp_path / "iq2.gguf", **{**SMALL, "hidden_size": 256, "intermediate_size": 256},
                         types={"model.layers.0.mlp.down_proj.weight": Q.IQ2_XXS}).path
    with pytest.raises(ModelFormatError, match=r"'blk\.0\.ffn_down\.weight' has type IQ2_XXS"):
        llama_local.LLM(iq2)
