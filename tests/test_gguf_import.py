"""GGUF -> Hugging Face directory: tokenizer, weights, config and errors.

Two kinds of model: the real SmolLM2-135M-Instruct Q4_1 GGUF (held against transformers loading the
same file), and tiny GGUFs written here with gguf.GGUFWriter from random HF-layout weights, with q/k
permuted exactly as llama.cpp's converter does, so that the round trip proves the un-permutation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from llama_local.formats import gguf_file, gguf_import, gguf_weights  # noqa: E402
from llama_local.errors import ModelFormatError  # noqa: E402
from llama_local.formats.gguf_import import convert_gguf  # noqa: E402
from llama_local.formats.gguf_weights import GGUFWeights, side_files_cache_dir, side_files_dir  # noqa: E402
from llama_local.formats.safetensors_io import Checkpoint  # noqa: E402

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
# Tiny GGUFs written here

TINY = dict(hidden=256, heads=2, kv_heads=1, head_dim=128, ffn=96, layers=2, ctx=4096, theta=500000.0)


def _byte_vocab() -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE vocabulary: the 256 byte symbols, two merges, BOS/EOS control tokens."""
    from llama_local.tokenizer.byte_level import bytes_to_unicode
    tokens = list(bytes_to_unicode().values()) + ["Ġt", "Ġth", "<|bos|>", "<|eos|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    return tokens, types, ["Ġ t", "Ġt h"]


def llamacpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`, as written there."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_hf_llama(seed=0, tie=False, **cfg) -> tuple[dict, dict[str, np.ndarray]]:
    c = {**TINY, **cfg}
    rng = np.random.default_rng(seed)
    vocab = len(_byte_vocab()[0])
    h, hd, q, kv = c["hidden"], c["head_dim"], c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"]
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    if not tie:
        shapes["lm_head.weight"] = (vocab, h)
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (c["ffn"], h), p + "mlp.up_proj.weight": (c["ffn"], h),
                       p + "mlp.down_proj.weight": (h, c["ffn"])})
    state = {k: (rng.standard_normal(s) * (0.02 if len(s) == 2 else 0.1) + (1.0 if len(s) == 1 else 0))
             .astype(np.float32) for k, s in shapes.items()}
    assert hd % 2 == 0
    return c, state


_TO_GGUF = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}
_LAYER_TO_GGUF = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                  "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                  "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down"}


def gguf_name(hf: str) -> str:
    if hf in _TO_GGUF:
        return _TO_GGUF[hf]
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{_LAYER_TO_GGUF[rest.removesuffix('.weight')]}.weight"


def write_tiny_gguf(path: Path, c: dict, state: dict[str, np.ndarray], types=None, arch="llama",
                    drop_keys=(), rope_factors=None, extra_kv=None, pre="llama-bpe") -> Path:
    """A GGUF as llama.cpp's converter writes one: metadata, byte-level vocab, permuted q/k."""
    types = types or {}
    w = gguf.GGUFWriter(str(path), arch)
    kv = {f"{arch}.context_length": c["ctx"], f"{arch}.embedding_length": c["hidden"],
          f"{arch}.block_count": c["layers"], f"{arch}.feed_forward_length": c["ffn"],
          f"{arch}.attention.head_count": c["heads"], f"{arch}.attention.head_count_kv": c["kv_heads"],
          f"{arch}.rope.dimension_count": c["head_dim"], f"{arch}.attention.key_length": c["head_dim"]}
    for key, value in kv.items():
        if key not in drop_keys:
            w.add_uint32(key, value)
    for key, value in {f"{arch}.rope.freq_base": c["theta"], f"{arch}.attention.layer_norm_rms_epsilon": 1e-5}.items():
        if key not in drop_keys:
            w.add_float32(key, value)
    tokens, token_types, merges = _byte_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(True)
    w.add_chat_template("{{ messages[0]['content'] }}")
    for key, value in (extra_kv or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_float32(key, value)
    for name, arr in state.items():
        if ".q_proj." in name:
            arr = llamacpp_permute(arr, c["heads"])
        elif ".k_proj." in name:
            arr = llamacpp_permute(arr, c["kv_heads"])
        qtype = types.get(name, Q.F32)
        w.add_tensor(gguf_name(name), encode(arr, qtype), raw_dtype=qtype)
    if rope_factors is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_factors, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def encode(arr: np.ndarray, qtype) -> np.ndarray:
    """arr in GGML type qtype: gguf-py's quantizer where it has one, else random blocks (for types
    only an error path reads)."""
    if qtype == Q.F32:
        return arr
    try:
        return gguf.quants.quantize(arr, qtype)
    except NotImplementedError:
        shape = gguf.quant_shape_to_byte_shape(arr.shape, qtype)
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def bf16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16)


MIXED_TYPES = {"model.embed_tokens.weight": Q.Q8_0, "model.layers.0.self_attn.q_proj.weight": Q.Q8_0,
               "model.layers.0.self_attn.k_proj.weight": Q.Q4_0, "model.layers.1.self_attn.q_proj.weight": Q.F16,
               "model.layers.1.mlp.up_proj.weight": Q.Q4_0, "model.layers.0.mlp.down_proj.weight": Q.F16}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, original HF weights, GGUF path) of a tiny random Llama with mixed tensor types."""
    c, state = random_hf_llama()
    path = write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", c, state, MIXED_TYPES)
    return c, state, path


def test_tiny_round_trip_recovers_hf_weights(tiny, tmp_path):
    c, state, path = tiny
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
    c, state, path = tiny
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            dtype=torch.float32).state_dict()
    ck = Checkpoint(convert_gguf(path, tmp_path / "out", progress=False))
    for name in ("model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                 "model.layers.1.self_attn.k_proj.weight"):
        want = ref[name].to(torch.bfloat16).view(torch.int16).numpy()
        assert np.array_equal(ck.tensor(name).view(np.int16), want), name


def test_tiny_config_and_tokenizer(tiny, tmp_path):
    transformers = pytest.importorskip("transformers")
    c, state, path = tiny
    out = convert_gguf(path, tmp_path / "out", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"] is None and cfg["tie_word_embeddings"] is False
    assert cfg["vocab_size"] == len(_byte_vocab()[0])
    hf = transformers.LlamaConfig.from_pretrained(str(out))
    assert (hf.hidden_size, hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == (256, 2, 1, 128)
    # Llama 3-style vocabulary: BOS added, special tokens whole, the llama-bpe regex applied.
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in ("the thing<|eos|>", " the 12345 x\n\n\ty", "<|bos|>thé"):
        for special in (True, False):
            assert ours(text, add_special_tokens=special)["input_ids"] == \
                ref(text, add_special_tokens=special)["input_ids"], (text, special)
    assert ours("x")["input_ids"][0] == len(_byte_vocab()[0]) - 2


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
    c, state = random_hf_llama(layers=1, tie=True)
    table = gguf_file.llama3_rope_factors(c["theta"], c["head_dim"], factor, 1.0, 4.0, 8192)
    assert (table == 1).sum() == 29 and (table == factor).sum() == 29  # Meta's 29 / 29 / 6 split
    path = write_tiny_gguf(tmp_path / "l31.gguf", c, state, rope_factors=table.astype(np.float32))
    cfg = json.loads((convert_gguf(path, tmp_path / "out", progress=False) / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert cfg["tie_word_embeddings"] is True


def test_rope_freqs_that_are_not_llama3_are_refused(tmp_path):
    c, state = random_hf_llama(layers=1, tie=True)
    table = np.linspace(1, 8, c["head_dim"] // 2, dtype=np.float32)
    path = write_tiny_gguf(tmp_path / "odd.gguf", c, state, rope_factors=table)
    with pytest.raises(ModelFormatError, match="rope_freqs"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_linear_rope_scaling_metadata(tmp_path):
    c, state = random_hf_llama(layers=1, tie=True)
    path = write_tiny_gguf(tmp_path / "lin.gguf", c, state,
                           extra_kv={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0})
    cfg = json.loads((convert_gguf(path, tmp_path / "out", progress=False) / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}


def test_end_of_turn_ids_join_eos(tmp_path):
    # Llama 3 instruct GGUFs keep <|eot_id|> / <|eom_id|> under their own keys; generation must stop on them.
    c, state = random_hf_llama(layers=1, tie=True, hidden=64, head_dim=32, ffn=64)
    eos = len(_byte_vocab()[0]) - 1
    path = write_tiny_gguf(tmp_path / "eot.gguf", c, state,
                           extra_kv={"tokenizer.ggml.eot_token_id": 5, "tokenizer.ggml.eom_token_id": eos})
    out = convert_gguf(path, tmp_path / "out", progress=False)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [eos, 5]
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == [eos, 5]


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    c, state = random_hf_llama(layers=1, tie=True, hidden=64, head_dim=32, ffn=64)
    path = write_tiny_gguf(tmp_path / "pre.gguf", c, state, pre="mystery-bpe")
    with pytest.raises(ModelFormatError, match="tokenizer.ggml.pre 'mystery-bpe'"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_sharded_output(tiny, tmp_path):
    c, state, path = tiny
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
    c, state = random_hf_llama(layers=1, tie=True, hidden=64, head_dim=32, ffn=64)
    return c, state, write_tiny_gguf(tmp_path / "small.gguf", c, state)


def test_other_architecture_is_refused(tmp_path):
    c, state = random_hf_llama(layers=1, tie=True, hidden=64, head_dim=32, ffn=64)
    path = write_tiny_gguf(tmp_path / "mamba.gguf", c, state, arch="mamba")
    with pytest.raises(ModelFormatError, match=r"mamba.gguf.*'mamba'"):
        convert_gguf(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_truncated_gguf_is_refused(small, tmp_path):
    _, _, path = small
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
    _, _, path = small
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
    c, state = random_hf_llama(layers=1, tie=True, hidden=256, head_dim=32, ffn=256)
    path = write_tiny_gguf(tmp_path / "iq2.gguf", c, state, {"model.layers.0.mlp.up_proj.weight": Q.IQ2_XXS})
    with pytest.raises(ModelFormatError, match=r"blk\.0\.ffn_up\.weight.*IQ2_XXS"):
        convert_gguf(path, tmp_path / "out", progress=False)
    with pytest.raises(ModelFormatError, match=r"blk\.0\.ffn_up\.weight.*IQ2_XXS"):
        GGUFWeights(path)


def test_missing_metadata_key_is_named(tmp_path):
    c, state = random_hf_llama(layers=1, tie=True, hidden=64, head_dim=32, ffn=64)
    path = write_tiny_gguf(tmp_path / "nokey.gguf", c, state, drop_keys={"llama.feed_forward_length"})
    with pytest.raises(ModelFormatError, match="llama.feed_forward_length"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_metadata_contradicting_tensors_is_refused(tmp_path):
    c, state = random_hf_llama(layers=1, tie=True, hidden=64, head_dim=32, ffn=64)
    path = write_tiny_gguf(tmp_path / "wrong.gguf", {**c, "ffn": 32}, state)
    with pytest.raises(ModelFormatError, match=r"ffn_gate.*shape \[64, 64\].*expected \[32, 64\]"):
        convert_gguf(path, tmp_path / "out", progress=False)


def test_existing_out_dir_needs_force(small, tmp_path):
    _, _, path = small
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="force"):
        convert_gguf(path, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    convert_gguf(path, out, force=True, progress=False)
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()


def test_interrupted_conversion_leaves_nothing(small, tmp_path, monkeypatch):
    _, _, path = small
    real_load, calls = gguf_import._load, []

    def load_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_load(*args)

    monkeypatch.setattr(gguf_import, "_load", load_then_interrupt)
    out = tmp_path / "conv" / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(path, out, progress=False)
    assert len(calls) == 3
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no .partial directory or file left behind


# ---------------------------------------------------------------------------------------------
# The side-file cache behind LLM("x.gguf"): config and tokenizer only, never weights

def test_cache_dir_follows_file_identity(small, tmp_path, monkeypatch):
    _, _, path = small
    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path / "cache"))
    d = side_files_cache_dir(path)
    assert d.parent == tmp_path / "cache" / "gguf-meta" and d.name.startswith("small-")
    assert side_files_cache_dir(path) == d
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size; a different last MiB (and mtime)
    path.write_bytes(bytes(data))
    assert side_files_cache_dir(path) != d


def test_side_files_written_once_without_weights(small, tmp_path, monkeypatch):
    _, _, path = small
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
