"""Reading a llama.cpp GGUF file: the checked header, the Hugging Face config it implies, its
tokenizer files, and the plan of its tensors under Hugging Face names.

    f = GGUFFile("model.gguf")      # header and every tensor's extent checked; config derived
    f.config                        # config.json as a dict
    f.plan                          # [(HF name, GGUF tensor, heads to un-permute or None)]
    f.write_side_files(directory)   # config.json, generation_config.json, tokenizer*.json

No weight is read here (only the small rope_freqs table): the converter (gguf_import) and the
in-place loader (gguf_weights) read them, each its own way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import rope
from ..errors import ModelFormatError
from .gguf_reader import GGUFFormatError, GGUFHeader
from .llama_layout import GGUF_ROPE_FREQS, gguf_name, hf_name
from ..tokenizer.gguf_vocab import build_tokenizer

SUPPORTED_ARCHITECTURES = ("llama",)
# Tensor types llama_local reads: the floats, and every block type the core repacks exactly.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                   "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")


def _gguf():
    # Imported lazily: `gguf` pulls in a lot and only GGUF reading needs it.
    import gguf
    return gguf


def _types():
    Q = _gguf().GGMLQuantizationType
    return {Q[name] for name in SUPPORTED_TYPES}


# ---------------------------------------------------------------------------------------------
# Reading and checking the file

class _Metadata:
    """The GGUF key/value section, with errors that name the file and the key."""

    def __init__(self, reader, path: Path):
        self._fields = reader.fields
        self.path = path

    def __contains__(self, key: str) -> bool:
        return key in self._fields

    def get(self, key: str, default: Any = None) -> Any:
        return self._fields.get(key, default)

    def require(self, key: str) -> Any:
        if key not in self._fields:
            raise ModelFormatError(f"{self.path}: required metadata key {key!r} is missing")
        return self._fields[key]


def _open_gguf(path: Path) -> GGUFHeader:
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such GGUF file")
    try:
        return GGUFHeader(path)
    except GGUFFormatError as e:
        message = str(e)
        if message.startswith("no GGUF magic"):
            message = f"not a GGUF file ({message})"
        raise ModelFormatError(f"{path}: {message}") from None


# ---------------------------------------------------------------------------------------------
# config.json

def _f32(x) -> float:
    """A float32 metadata value as the decimal it was written from (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(x)))


def _model_config(meta: _Metadata, reader, arch: str) -> dict:
    p = f"{arch}."
    hidden = int(meta.require(p + "embedding_length"))
    n_heads = int(meta.require(p + "attention.head_count"))
    n_kv = int(meta.get(p + "attention.head_count_kv", n_heads))
    if n_heads <= 0 or hidden <= 0:
        raise ModelFormatError(f"{meta.path}: {p}attention.head_count = {n_heads} and "
                               f"{p}embedding_length = {hidden} must be positive")
    head_dim = int(meta.get(p + "attention.key_length", hidden // n_heads))
    rope_dim = meta.get(p + "rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise ModelFormatError(f"{meta.path}: {p}rope.dimension_count = {rope_dim} but head_dim = "
                               f"{head_dim}; partial rotary embeddings are not a Llama model")
    if n_kv <= 0 or n_heads % n_kv or head_dim <= 0 or head_dim % 2:
        raise ModelFormatError(f"{meta.path}: {n_heads} attention heads, {n_kv} KV heads and head_dim "
                               f"{head_dim} do not make a Llama attention layer")
    tensors = {t.name: t for t in reader.tensors}
    embed = tensors.get(gguf_name("model.embed_tokens.weight"))
    if embed is None:
        raise ModelFormatError(f"{meta.path}: tensor {gguf_name('model.embed_tokens.weight')!r} is missing")
    vocab_size = int(embed.shape[1])
    theta = _f32(meta.get(p + "rope.freq_base", rope.DEFAULT_THETA))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(meta.require(p + "feed_forward_length")),
        "num_hidden_layers": int(meta.require(p + "block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _f32(meta.require(p + "attention.layer_norm_rms_epsilon")),
        "rope_theta": theta,
        "rope_scaling": _rope_scaling(meta, tensors.get(GGUF_ROPE_FREQS), arch, theta, head_dim),
        "max_position_embeddings": int(meta.require(p + "context_length")),
        "vocab_size": vocab_size,
        "tie_word_embeddings": gguf_name("lm_head.weight") not in tensors,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "bfloat16",
    }


def _rope_scaling(meta: _Metadata, freqs_tensor, arch: str, theta: float, head_dim: int) -> dict | None:
    p = f"{arch}.rope.scaling."
    if freqs_tensor is not None:
        factors = _gguf().quants.dequantize(freqs_tensor.data, freqs_tensor.tensor_type).reshape(-1)
        # llama.cpp's converter records no original length; every Llama 3.x release uses 3.1's.
        original = int(meta.get(p + "original_context_length",
                                rope.LLAMA31_SCALING["original_max_position_embeddings"]))
        return _llama3_scaling_from_factors(factors, theta, head_dim, original, meta.path)
    kind = meta.get(p + "type")
    if kind in (None, "none"):
        return None
    factor = _f32(meta.require(p + "factor"))
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        return {"rope_type": "yarn", "factor": factor,
                "original_max_position_embeddings": int(meta.require(p + "original_context_length"))}
    raise ModelFormatError(f"{meta.path}: {p}type {kind!r} is not supported (linear, yarn, or llama3 "
                           f"scaling stored as a rope_freqs tensor)")


def _llama3_scaling_from_factors(factors: np.ndarray, theta: float, head_dim: int, original: int,
                                 path: Path) -> dict | None:
    """Recover Llama 3.1's rope_scaling parameters from the table llama.cpp stores instead of them.

    The table is 1 for short wavelengths, `factor` for long ones, and in between 1/f is linear in
    1/wavelength: 1/f = 1/factor + s(1 - 1/factor) with s = (original/wavelen - low)/(high - low).
    A line through the blended entries gives low and high (original is Llama 3.1's unless the file
    says otherwise); the result is then checked by rebuilding the table from it.
    """
    f = np.asarray(factors, dtype=np.float64)
    if f.shape != (head_dim // 2,):
        raise ModelFormatError(f"{path}: rope_freqs.weight has {f.size} entries, expected {head_dim // 2}")
    factor = float(f.max())
    if np.allclose(f, 1.0):
        return None
    wavelen = 2 * np.pi / rope.inv_freq(theta, head_dim).astype(np.float64)
    mid = (f > 1 + 1e-4) & (f < factor * (1 - 1e-4))
    # Meta's values, kept when the table has too few blended entries to fit.
    low, high = rope.LLAMA31_SCALING["low_freq_factor"], rope.LLAMA31_SCALING["high_freq_factor"]
    if mid.sum() >= 2:
        s = (1 / f[mid] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(1 / wavelen[mid], s, 1)
        width = original / slope
        low, high = round(-intercept * width, 4), round(-intercept * width + width, 4)
    rebuilt = rope.llama3_factors(theta, head_dim, factor, low, high, original)
    if not np.allclose(rebuilt, f, rtol=1e-3, atol=1e-4):
        raise ModelFormatError(f"{path}: rope_freqs.weight is not a Llama 3 RoPE scaling table "
                               f"(no factor/low/high/original_context_length reproduces it)")
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": original}


# ---------------------------------------------------------------------------------------------
# tokenizer.json, tokenizer_config.json, generation_config.json

def _as_list(v):
    return None if v is None else list(v)


def _tokenizer_files(meta: _Metadata, config: dict) -> tuple[str, dict, dict]:
    tokens = list(meta.require("tokenizer.ggml.tokens"))  # the reader keeps long arrays mapped
    n = len(tokens)
    if n > config["vocab_size"]:
        raise ModelFormatError(f"{meta.path}: {n} tokens but {gguf_name('model.embed_tokens.weight')} has only "
                               f"{config['vocab_size']} rows")

    def token_id(key: str) -> int | None:
        i = meta.get(f"tokenizer.ggml.{key}")
        if i is not None and not 0 <= int(i) < n:
            raise ModelFormatError(f"{meta.path}: tokenizer.ggml.{key} = {i} is not a token id (0..{n - 1})")
        return None if i is None else int(i)

    ids = {"bos": token_id("bos_token_id"), "eos": token_id("eos_token_id"),
           "unk": token_id("unknown_token_id"), "pad": token_id("padding_token_id")}
    model = meta.require("tokenizer.ggml.model")
    # llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise (transformers too).
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    types = meta.get("tokenizer.ggml.token_type")
    if types is not None and len(types) != n:
        raise ModelFormatError(f"{meta.path}: tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    tok = build_tokenizer(model, meta.get("tokenizer.ggml.pre"), tokens, types,
                          _as_list(meta.get("tokenizer.ggml.merges")), meta.get("tokenizer.ggml.scores"), ids,
                          add_bos, add_eos, meta.get("tokenizer.ggml.add_space_prefix"), str(meta.path))
    name = {k: (tokens[i] if i is not None else None) for k, i in ids.items()}
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name["bos"], "eos_token": name["eos"], "unk_token": name["unk"], "pad_token": name["pad"],
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }
    template = meta.get("tokenizer.chat_template")
    if template is not None:
        tok_config["chat_template"] = template
    # Instruct models end a turn with EOT/EOM, which llama.cpp keeps under their own keys.
    eos = [i for i in (ids["eos"], token_id("eot_token_id"), token_id("eom_token_id")) if i is not None]
    eos = list(dict.fromkeys(eos))
    gen = {"bos_token_id": ids["bos"], "eos_token_id": eos[0] if len(eos) == 1 else (eos or None)}
    config.update(bos_token_id=gen["bos_token_id"], eos_token_id=gen["eos_token_id"])
    if ids["pad"] is not None:
        config["pad_token_id"] = ids["pad"]
    return tok.to_str(pretty=True), tok_config, gen


# ---------------------------------------------------------------------------------------------
# Weights

def _expected_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """HF name -> numpy shape [out, in] of every tensor a Llama with config `c` has."""
    h, hd, ffn = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (c["vocab_size"], h)
    per_layer = {"input_layernorm": (h,), "post_attention_layernorm": (h,), "self_attn.q_proj": (q, h),
                 "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, q),
                 "mlp.gate_proj": (ffn, h), "mlp.up_proj": (ffn, h), "mlp.down_proj": (h, ffn)}
    for i in range(c["num_hidden_layers"]):
        for k, s in per_layer.items():
            shapes[f"model.layers.{i}.{k}.weight"] = s
    return shapes


def _weight_plan(reader, config: dict, path: Path) -> list[tuple[str, Any, int | None]]:
    """(HF name, GGUF tensor, heads to un-permute or None) for every tensor, in HF order, checked."""
    supported = _types()
    expected = _expected_shapes(config)
    plan = {}
    for t in reader.tensors:
        if t.name == GGUF_ROPE_FREQS:  # becomes config.rope_scaling
            continue
        name = hf_name(t.name)
        if name is None or name not in expected:
            raise ModelFormatError(f"{path}: tensor {t.name!r} is not part of a Llama model with "
                                   f"{config['num_hidden_layers']} layers")
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists ne0 (the row length) first
        if shape != expected[name]:
            raise ModelFormatError(f"{path}: tensor {t.name!r} has shape {list(shape)} (numpy order), "
                                   f"expected {list(expected[name])} from the metadata")
        if t.tensor_type not in supported:
            raise ModelFormatError(
                f"{path}: tensor {t.name!r} has type {t.tensor_type.name}, which llama_local cannot "
                f"import (supported: {', '.join(sorted(q.name for q in supported))})")
        heads = (config["num_attention_heads"] if ".q_proj." in name
                 else config["num_key_value_heads"] if ".k_proj." in name else None)
        plan[name] = (name, t, heads)
    missing = [n for n in expected if n not in plan]
    if missing:
        raise ModelFormatError(f"{path}: {len(missing)} tensors missing, first {missing[0]!r}")
    return [plan[n] for n in expected]


# ---------------------------------------------------------------------------------------------
# The file as a whole

class GGUFFile:
    """A GGUF file opened and checked: metadata, config, tensor plan (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.reader = _open_gguf(self.path)
        self.meta = _Metadata(self.reader, self.path)
        arch = self.meta.require("general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ModelFormatError(f"{self.path}: general.architecture is {arch!r}; llama_local reads "
                                   f"{', '.join(SUPPORTED_ARCHITECTURES)} models only")
        self.arch = arch
        self.config = _model_config(self.meta, self.reader, arch)
        self.plan = _weight_plan(self.reader, self.config, self.path)

    def write_side_files(self, directory: Path) -> None:
        """config.json, generation_config.json, tokenizer_config.json and tokenizer.json.

        Building the tokenizer takes a while and some memory, so it happens only here; it also
        fixes the config's bos/eos ids, so config.json is written after it."""
        tokenizer_json, tok_config, gen_config = _tokenizer_files(self.meta, self.config)
        _write_json(directory / "config.json", self.config)
        _write_json(directory / "generation_config.json", gen_config)
        _write_json(directory / "tokenizer_config.json", tok_config)
        (directory / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")

    def tensor_bytes(self, t) -> np.ndarray:
        """A tensor's raw bytes: a read-only view of the memory-mapped file (no copy)."""
        return self.reader.tensor_bytes(t)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
