"""GGUF -> Hugging Face directory: tokenizer, weights, config and errors.

Two kinds of model: the real SmolLM2-135M-Instruct Q4_1 GGUF (held against transformers loading the
same file), and tiny GGUFs (tiny_models.make_tiny_gguf) written from random HF-layout weights, with
q/k permuted exactly as llama.cpp's converter does, so that the round trip proves the un-permutation.
"""

from __future__ import annotations

import json
import math

import ml_dtypes
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from llama_local import rope  # noqa: E402
from llama_local.formats import gguf_import, llama_layout  # noqa: E402
from llama_local.errors import ModelFormatError  # noqa: E402
from llama_local.formats.gguf_import import convert_gguf  # noqa: E402
from llama_local.formats.gguf_weights import GGUFWeights, side_files_cache_dir, side_files_dir  # noqa: E402
from llama_local.formats.safetensors_io import Checkpoint  # noqa: E402
from tiny_models import GGUF_SMALL as SMALL  # noqa: E402
from tiny_models import byte_vocab, gguf_tensor_name, llamacpp_permute, make_tiny_gguf  # noqa: E402

Q = gguf.GGMLQuantizationType

# ---------------------------------------------------------------------------------------------
# SmolLM2: tokenizer against transformers' GGUF tokenizer

TEXTS = {
    "prose": "The committee postponed its decision until the spring, citing a lack of reliable data "
             "about the river's winter flow; several members, however, argued that waiting would only "
             "make the eventual repairs more expensive.",
    "english": "I can't believe it's already half past nine -- we'll miss the train!",
    "german": "Über den Wolken muss die Freiheit wohl grenzenlos sein. Grüße aus Köln, Straße 7ß.",
    "french": "Où est la bibliothèque ? L'été dernier, nous sommes allés à Besançon en août.",
    "italian": "Perché la città è così affollata? Può darsi che ci sia una festa più tardi.",
    "portuguese": "A ação não foi concluída porque o irmão da Conceição estava em São Paulo.",
    "hindi": "नमस्ते, आप कैसे हैं? मुझे हिंदी में लिखना पसंद है।",
    "spanish": "¿Dónde está el niño? ¡Mañana iremos a la montaña con la señora Núñez!",
    "thai": "สวัสดีครับ วันนี้อากาศดีมาก ผมอยากไปเที่ยวทะเล",
    "python": "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
              "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "emoji": "Family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈, thumbs: 👍🏽, heart: ❤️‍🔥 -- and 🤖!",
    "whitespace": "a\tb\t\tc   d        e\n\nf\r\ng \r\n\r\n  h\u00a0i\u3000j \n",
    "digits": "1 12 123 1234 12345 3.14159 1,000,000 0x1F 2024-07-26 +49 (30) 123-456",
    "specials": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<|endoftext|>x<|im_end|>",
    "edges": "   leading and trailing   ",
    "empty": "",
}


@pytest.fixture(scope="module")
def our_tokenizer(smollm2_dir):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))


@pytest.mark.parametrize("name", list(TEXTS))
def test_smollm2_tokenizer_encodes_like_transformers(name, smollm2_hf_tokenizer, our_tokenizer):
    text = TEXTS[name]
    for special in (True, False):
        want = smollm2_hf_tokenizer(text, add_special_tokens=special)["input_ids"]
        got = our_tokenizer.encode(text, add_special_tokens=special).ids
        assert got == want, f"{name} (add_special_tokens={special})"
    ids = our_tokenizer.encode(text).ids
    assert our_tokenizer.decode(ids, skip_special_tokens=False) == text
    assert our_tokenizer.decode(ids, skip_special_tokens=True) == smollm2_hf_tokenizer.decode(ids, skip_special_tokens=True)


def test_smollm2_tokenizer_sanity(our_tokenizer):
    # Guards against a comparison that passes because both sides are broken the same way.
    assert our_tokenizer.encode("<|im_start|>").ids == [1]
    assert our_tokenizer.encode("<|im_end|>").ids == [2]
    assert our_tokenizer.encode("12345").ids == [our_tokenizer.token_to_id(d) for d in "12345"]
    assert len(our_tokenizer.encode(TEXTS["prose"]).ids) < len(TEXTS["prose"]) / 3


def test_smollm2_directory_loads_in_transformers_tokenizer(smollm2_dir, smollm2_hf_tokenizer):
    transformers = pytest.importorskip("transformers")
    ours = transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))
    for text in TEXTS.values():
        assert ours(text)["input_ids"] == smollm2_hf_tokenizer(text)["input_ids"]
    assert ours.chat_template == smollm2_hf_tokenizer.chat_template
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")


def test_smollm2_side_files(smollm2_dir):
    tok_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tok_config["add_bos_token"] is False and tok_config["add_eos_token"] is False
    assert tok_config["chat_template"].startswith("{% for message in messages %}")
    assert tok_config["model_max_length"] == 8192
    gen = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 1, "eos_token_id": 2}


# ---------------------------------------------------------------------------------------------
# SmolLM2: config and tensors against transformers' GGUF loader

def test_smollm2_config_loads_in_transformers(smollm2_dir):
    transformers = pytest.importorskip("transformers")
    c = transformers.LlamaConfig.from_pretrained(str(smollm2_dir))
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (576, 1536, 30)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert (c.vocab_size, c.max_position_embeddings, c.tie_word_embeddings) == (49152, 8192, True)
    assert c.rms_norm_eps == 1e-5
    theta = getattr(c, "rope_parameters", None) or {"rope_theta": c.rope_theta}
    assert theta["rope_theta"] == 100000.0
    assert (c.bos_token_id, c.eos_token_id) == (1, 2)


def test_smollm2_tensors_equal_transformers_gguf_loader(smollm2_hf_model, smollm2_dir):
    import torch
    ref = smollm2_hf_model.state_dict()
    ours = Checkpoint(smollm2_dir)
    assert set(ours.keys()) == set(ref) - {"lm_head.weight"}  # tied: lm_head is the embedding
    for name in ours.keys():
        got = ours.tensor(name)
        assert got.dtype == ml_dtypes.bfloat16, name
        want = ref[name].to(torch.bfloat16).view(torch.int16).numpy()
        assert got.shape == want.shape, name
        assert np.array_equal(got.view(np.int16), want), name  # bit-exact after rounding to bf16


# ---------------------------------------------------------------------------------------------
# Tiny GGUFs (tiny_models.make_tiny_gguf)

N_TOKENS = len(byte_vocab()[0])


def bf16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16)


MIXED_TYPES = {"model.embed_tokens.weight": Q.Q8_0, "model.layers.0.self_attn.q_proj.weight": Q.Q8_0,
               "model.layers.0.self_attn.k_proj.weight": Q.Q4_0, "model.layers.1.self_attn.q_proj.weight": Q.F16,
               "model.layers.1.mlp.up_proj.weight": Q.Q4_0, "model.layers.0.mlp.down_proj.weight": Q.F16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama with mixed tensor types (path, config, original HF weights)."""
    return make_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", types=MIXED_TYPES)


def test_tensor_names_are_gguf_pys(tiny):
    # llama_layout's table against gguf-py's own name map, both ways.
    assert tiny.config["tie_word_embeddings"] is False  # so lm_head.weight is among the names
    for name in tiny.weights:
        want = gguf_tensor_name(name, tiny.config["num_hidden_layers"])
        assert llama_layout.gguf_name(name) == want, name
        assert llama_layout.hf_name(want) == name, want
    assert llama_layout.GGUF_ROPE_FREQS == gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
    assert llama_layout.hf_name("blk.0.attn_q.bias") is None and llama_layout.hf_name("blk.0.ssm_a.weight") is None
    with pytest.raises(ValueError, match="rotary_emb"):
        llama_layout.gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq")


@pytest.mark.parametrize("heads", [1, 2, 8])
def test_qk_permutation_is_llamacpps(heads):
    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    permuted = llamacpp_permute(w, heads)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(llama_layout.permute_qk(w, heads), permuted)
    np.testing.assert_array_equal(llama_layout.unpermute_qk(permuted, heads), w)


def test_tiny_round_trip_recovers_hf_weights(tiny, tmp_path):
    path, state = tiny.path, tiny.weights
    out = convert_gguf(path, tmp_path / "out", progress=True)  # the progress bar runs too
    ck = Checkpoint(out)
    assert set(ck.keys()) == set(state)
    for name, original in state.items():
        got = ck.tensor(name)
        assert got.dtype == ml_dtypes.bfloat16 and got.shape == original.shape, name
        qtype = MIXED_TYPES.get(name, Q.F32)
        if qtype == Q.F32:
            want = bf16(original)
        elif qtype == Q.F16:
            want = bf16(original.astype(np.float16))
        else:
            # Exactly llama.cpp's dequantization of the quantized original, and close to the original.
            want = bf16(gguf.quants.dequantize(gguf.quants.quantize(original, qtype), qtype))
            step = np.abs(original).max() / (127 if qtype == Q.Q8_0 else 7)
            assert np.abs(got.astype(np.float32) - original).max() <= step, name
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), name


def test_tiny_matches_transformers_gguf_loader(tiny, tmp_path):
    # Independent check that the test's permutation is llama.cpp's: transformers undoes it its own way.
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF")
    path = tiny.path
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            dtype=torch.float32).state_dict()
    ck = Checkpoint(convert_gguf(path, tmp_path / "out", progress=False))
    for name in ("model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                 "model.layers.1.self_attn.k_proj.weight"):
        want = ref[name].to(torch.bfloat16).view(torch.int16).numpy()
        assert np.array_equal(ck.tensor(name).view(np.int16), want), name


def test_tiny_config_and_tokenizer(tiny, tmp_path):
    transformers = pytest.importorskip("transformers")
    path = tiny.path
    out = convert_gguf(path, tmp_path / "out", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"] is None and cfg["tie_word_embeddings"] is False
    assert cfg["vocab_size"] == N_TOKENS
    hf = transformers.LlamaConfig.from_pretrained(str(out))
    assert (hf.hidden_size, hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == (256, 2, 1, 128)
    # Llama 3-style vocabulary: BOS added, special tokens whole, the llama-bpe regex applied.
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in ("the thing<|eos|>", " the 12345 x\n\n\ty", "<|bos|>thé"):
        for special in (True, False):
            assert ours(text, add_special_tokens=special)["input_ids"] == \
                ref(text, add_special_tokens=special)["input_ids"], (text, special)
    assert ours("x")["input_ids"][0] == N_TOKENS - 2


def test_sentencepiece_vocabulary_encodes_like_transformers(tmp_path):
    """A Llama 2-style ("llama") vocabulary: merges rebuilt from scores, byte fallback, BOS added."""
    transformers = pytest.importorskip("transformers")
    from llama_local.tokenizer.gguf_vocab import build_tokenizer

    pieces = ["▁", "t", "h", "e", "▁t", "he", "▁the", "▁a", "a", "n", "d", "▁an", "▁and", "o", "r",
              "l", "w", "▁w", "or", "ld", "▁wor", "▁world", "<tag>"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * (len(pieces) - 1) + [4]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    w = gguf.GGUFWriter(str(tmp_path / "spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="spm.gguf")
    ours = build_tokenizer("llama", None, tokens, types, None, scores, {"bos": 1, "eos": 2, "unk": 0},
                           add_bos=True, add_eos=False, add_space_prefix=None, where="spm.gguf")
    for text in ("the world and an", " the  world\n", "héllo wörld 😀", "<tag>the<s>", ""):
        assert ours.encode(text).ids == ref(text)["input_ids"], text
        assert ours.decode(ours.encode(text).ids) == ref.decode(ref(text)["input_ids"], skip_special_tokens=True)
    assert ours.encode("the").ids == [1, tokens.index("▁the")]


@pytest.mark.parametrize("factor", [8.0, 32.0])
def test_llama3_rope_scaling_recovered_from_rope_freqs(factor, tmp_path):
    table = rope.llama3_factors(500000.0, 128, factor, 1.0, 4.0, 8192)
    assert (table == 1).sum() == 29 and (table == factor).sum() == 29  # Meta's 29 / 29 / 6 split
    path = make_tiny_gguf(tmp_path / "l31.gguf", num_hidden_layers=1, tie_word_embeddings=True,
                          head_dim=128, rope_theta=500000.0, rope_factors=table).path
    cfg = json.loads((convert_gguf(path, tmp_path / "out", progress=False) / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert cfg["tie_word_embeddings"] is True


def convert_hf_to_gguf_rope_factors(hparams: dict, rope_scaling: dict):
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.generate_extra_tensors` (rope_type llama3), as written there."""
    import torch
    base = hparams.get("rope_theta", 10000.0)
    if (dim := hparams.get("head_dim")) is None:
        dim = hparams["hidden_size"] // hparams["num_attention_heads"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = rope_scaling.get("factor", 8.0)
    low_freq_factor = rope_scaling.get("low_freq_factor", 1.0)
    high_freq_factor = rope_scaling.get("high_freq_factor", 4.0)
    old_context_len = hparams.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(rope_factors, dtype=torch.float32).numpy()


@pytest.mark.parametrize("theta, head_dim, factor", [(500000.0, 128, 8.0), (500000.0, 64, 32.0), (10000.0, 32, 8.0)])
def test_rope_table_is_llamacpps(theta, head_dim, factor):
    pytest.importorskip("torch")
    want = convert_hf_to_gguf_rope_factors({"rope_theta": theta, "head_dim": head_dim}, {"factor": factor})
    got = rope.llama3_factors(theta, head_dim, factor, 1.0, 4.0, 8192)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)  # torch's and numpy's float32 pow may differ by an ulp


def test_rope_freqs_that_are_not_llama3_are_refused(tmp_path):
    table = np.linspace(1, 8, 128 // 2, dtype=np.float32)
    path = make_tiny_gguf(tmp_path / "odd.gguf", num_hidden_layers=1, tie_word_embeddings=True, head_dim=128,
                          rope_factors=table).path
    with pytest.raises(ModelFormatError, match="rope_freqs"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_linear_rope_scaling_metadata(tmp_path):
    path = make_tiny_gguf(tmp_path / "lin.gguf", num_hidden_layers=1, tie_word_embeddings=True,
                          extra_kv={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0}).path
    cfg = json.loads((convert_gguf(path, tmp_path / "out", progress=False) / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}


def test_end_of_turn_ids_join_eos(tmp_path):
    # Llama 3 instruct GGUFs keep <|eot_id|> / <|eom_id|> under their own keys; generation must stop on them.
    eos = N_TOKENS - 1
    path = make_tiny_gguf(tmp_path / "eot.gguf", **SMALL,
                          extra_kv={"tokenizer.ggml.eot_token_id": 5, "tokenizer.ggml.eom_token_id": eos}).path
    out = convert_gguf(path, tmp_path / "out", progress=False)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [eos, 5]
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == [eos, 5]


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    path = make_tiny_gguf(tmp_path / "pre.gguf", **SMALL, pre="mystery-bpe").path
    with pytest.raises(ModelFormatError, match="tokenizer.ggml.pre 'mystery-bpe'"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_sharded_output(tiny, tmp_path):
    path, state = tiny.path, tiny.weights
    whole = Checkpoint(convert_gguf(path, tmp_path / "one", progress=False))
    out = convert_gguf(path, tmp_path / "many", progress=False, max_shard_bytes=200_000)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(math.prod(a.shape) * 2 for a in state.values())
    many = Checkpoint(out)
    for name in state:
        assert np.array_equal(many.tensor(name).view(np.uint16), whole.tensor(name).view(np.uint16))


# ---------------------------------------------------------------------------------------------
# Errors and atomicity

@pytest.fixture()
def small(tmp_path):
    return make_tiny_gguf(tmp_path / "small.gguf", **SMALL)


def test_other_architecture_is_refused(tmp_path):
    path = make_tiny_gguf(tmp_path / "mamba.gguf", **SMALL, arch="mamba").path
    with pytest.raises(ModelFormatError, match=r"mamba.gguf.*'mamba'"):
        convert_gguf(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_truncated_gguf_is_refused(small, tmp_path):
    path = small.path
    data = path.read_bytes()
    # Inside the magic, after the fixed header, inside the metadata, inside the tensor data, and
    # inside the last tensor (16 KiB of float32, so no alignment padding follows it to cut instead).
    for n in (3, 24, 200, len(data) // 2, len(data) - 100):
        cut = tmp_path / f"cut{n}.gguf"
        cut.write_bytes(data[:n])
        with pytest.raises(ModelFormatError, match=f"cut{n}.gguf"):
            convert_gguf(cut, tmp_path / f"out{n}", progress=False)
        assert not (tmp_path / f"out{n}").exists()


def test_corrupt_header_is_refused(small, tmp_path):
    path = small.path
    data = bytearray(path.read_bytes())
    data[16:24] = (2**40).to_bytes(8, "little")  # kv_count far beyond what the file holds
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="bad.gguf"):
        convert_gguf(bad, tmp_path / "out", progress=False)
    (tmp_path / "text.gguf").write_text("not a gguf at all")
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        convert_gguf(tmp_path / "text.gguf", tmp_path / "out", progress=False)


def test_unsupported_tensor_type_is_refused(tmp_path):
    path = make_tiny_gguf(tmp_path / "iq2.gguf", **{**SMALL, "hidden_size": 256, "intermediate_size": 256},
                          types={"model.layers.0.mlp.up_proj.weight": Q.IQ2_XXS}).path
    with pytest.raises(ModelFormatError, match=r"blk\.0\.ffn_up\.weight.*IQ2_XXS"):
        convert_gguf(path, tmp_path / "out", progress=False)
    with pytest.raises(ModelFormatError, match=r"blk\.0\.ffn_up\.weight.*IQ2_XXS"):
        GGUFWeights(path)


def test_missing_metadata_key_is_named(tmp_path):
    path = make_tiny_gguf(tmp_path / "nokey.gguf", **SMALL, drop_keys={"llama.feed_forward_length"}).path
    with pytest.raises(ModelFormatError, match="llama.feed_forward_length"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_metadata_contradicting_tensors_is_refused(tmp_path):
    path = make_tiny_gguf(tmp_path / "wrong.gguf", **SMALL, header={"intermediate_size": 32}).path
    with pytest.raises(ModelFormatError, match=r"ffn_gate.*shape \[64, 64\].*expected \[32, 64\]"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_existing_out_dir_needs_force(small, tmp_path):
    path = small.path
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="force"):
        convert_gguf(path, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    convert_gguf(path, out, force=True, progress=False)
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()


def test_interrupted_conversion_leaves_nothing(small, tmp_path, monkeypatch):
    path = small.path
    real_load, calls = gguf_import.load_tensor, []

    def load_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_load(*args)

    monkeypatch.setattr(gguf_import, "load_tensor", load_then_interrupt)
    out = tmp_path / "conv" / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(path, out, progress=False)
    assert len(calls) == 3
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no .partial directory or file left behind


# ---------------------------------------------------------------------------------------------
# The side-file cache behind LLM("x.gguf"): config and tokenizer only, never weights

def test_cache_dir_follows_file_identity(small, tmp_path, monkeypatch):
    path = small.path
    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path / "cache"))
    d = side_files_cache_dir(path)
    assert d.parent == tmp_path / "cache" / "gguf-meta" and d.name.startswith("small-")
    assert side_files_cache_dir(path) == d
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size; a different last MiB (and mtime)
    path.write_bytes(bytes(data))
    assert side_files_cache_dir(path) != d


def test_side_files_written_once_without_weights(small, tmp_path, monkeypatch):
    path = small.path
    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path / "cache"))
    d = side_files_cache_dir(path)
    stale = d.parent / f".{d.name}.partial-killed"  # what a SIGKILLed run leaves
    stale.mkdir(parents=True)
    w = GGUFWeights(path)
    calls = []
    real = w.write_side_files
    monkeypatch.setattr(w, "write_side_files", lambda *a: calls.append(1) or real(*a))
    assert side_files_dir(w) == d
    assert side_files_dir(w) == d
    assert len(calls) == 1 and not stale.exists()
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "generation_config.json",
                                                    "tokenizer.json", "tokenizer_config.json"]


def test_long_string_arrays_are_read_from_the_mapping(tmp_path):
    # Vocabulary-sized string arrays stay in the mapped file (formats/gguf_reader.py: MappedStrings)
    # and read back as the strings written; each is still checked when the file is opened.
    import gguf

    from llama_local.formats.gguf_reader import GGUFFormatError, GGUFHeader, MappedStrings

    words = [f"w{i}\u00e9" * (i % 5) for i in range(5000)]
    path = tmp_path / "strings.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("test.words", words)
    w.add_array("test.few", words[:3])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    fields = GGUFHeader(path).fields
    many = fields["test.words"]
    assert isinstance(many, MappedStrings) and fields["test.few"] == words[:3]
    assert len(many) == 5000 and list(many) == words
    assert (many[0], many[4999], many[-1], many[10:13]) == (words[0], words[4999], words[-1], words[10:13])
    with pytest.raises(IndexError):
        many[5000]
    # One string that is not UTF-8 is refused at open, naming its index.
    raw = bytearray(path.read_bytes())
    at = raw.index("w4321\u00e9".encode())
    raw[at] = 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(GGUFFormatError, match=r"test\.words.*\[4321\].*not UTF-8"):
        GGUFHeader(path)
