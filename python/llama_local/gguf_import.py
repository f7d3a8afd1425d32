"""Converting a llama.cpp GGUF file into a Hugging Face-layout model directory.

    convert_gguf("model.gguf", "model-dir")     # config.json, tokenizer*.json, model.safetensors
    ensure_converted("model.gguf")              # the same, once, into a cache (what LLM("x.gguf") uses)

Weights are dequantized with the `gguf` package (llama.cpp's own Python reference) and stored as
bfloat16, the dtype the engine streams; 1-D norm weights too, so that every tensor of the directory
has one dtype, as in Meta's and Hugging Face's releases. llama.cpp's converter permutes the rows of
q_proj and k_proj for its RoPE layout; that is undone here. One tensor is held at a time.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from . import conversion_cache
from .errors import ModelFormatError
from .fsutil import atomic_output_dir
from .progress import byte_progress
from .gguf_tokenizer import build_tokenizer
from .safetensors_io import LazyTensor, write_safetensors

# Bump when the output of a conversion changes, so that stale cached copies are not reused.
CONVERTER_VERSION = 1
SUPPORTED_ARCHITECTURES = ("llama",)
DEFAULT_MAX_SHARD_BYTES = 4 * 10**9


def _gguf():
    # Imported lazily: `gguf` pulls in a lot and only this converter needs it.
    import gguf
    return gguf


def _types():
    Q = _gguf().GGMLQuantizationType
    return {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q5_K, Q.Q6_K}


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
        field = self._fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except (ValueError, UnicodeDecodeError, IndexError) as e:
            raise ModelFormatError(f"{self.path}: metadata key {key!r} cannot be read ({e})") from None

    def require(self, key: str) -> Any:
        if key not in self._fields:
            raise ModelFormatError(f"{self.path}: required metadata key {key!r} is missing")
        return self.get(key)


def _open_gguf(path: Path):
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelFormatError(f"{path}: not a GGUF file (no GGUF magic at byte 0)")
    try:
        # The reader parses the header into views of a memory map: it raises ValueError, IndexError,
        # struct or numpy errors on a truncated or corrupt header, never anything of ours.
        reader = _gguf().GGUFReader(path)
    except Exception as e:  # noqa: BLE001 -- any failure here means the file is bad
        raise ModelFormatError(f"{path}: truncated or corrupt GGUF file ({type(e).__name__}: {e})") from None
    _check_tensor_extents(reader, path)
    return reader


def _check_tensor_extents(reader, path: Path) -> None:
    """Every tensor's type is known and its bytes lie inside the file, before any is read."""
    gguf = _gguf()
    size = path.stat().st_size
    for t in reader.tensors:
        if t.tensor_type not in gguf.GGML_QUANT_SIZES:
            raise ModelFormatError(f"{path}: tensor {t.name!r} has unknown type {t.tensor_type}")
        block, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        shape = [int(d) for d in t.shape]
        if not shape or shape[0] % block:
            raise ModelFormatError(f"{path}: tensor {t.name!r} of type {t.tensor_type.name} has shape "
                                   f"{shape}, whose first dimension is not a multiple of {block}")
        nbytes = math.prod(shape) // block * type_size
        end = int(t.data_offset) + nbytes
        if end > size:
            raise ModelFormatError(f"{path}: tensor {t.name!r} needs bytes {t.data_offset}..{end} but "
                                   f"the file has {size} bytes (truncated?)")


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
    embed = tensors.get("token_embd.weight")
    if embed is None:
        raise ModelFormatError(f"{meta.path}: tensor 'token_embd.weight' is missing")
    vocab_size = int(embed.shape[1])
    theta = _f32(meta.get(p + "rope.freq_base", 10000.0))
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
        "rope_scaling": _rope_scaling(meta, tensors.get("rope_freqs.weight"), arch, theta, head_dim),
        "max_position_embeddings": int(meta.require(p + "context_length")),
        "vocab_size": vocab_size,
        "tie_word_embeddings": "output.weight" not in tensors,
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
        original = int(meta.get(p + "original_context_length", 8192))
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


def llama3_rope_factors(theta: float, head_dim: int, factor: float, low: float, high: float,
                        original: int) -> np.ndarray:
    """The per-frequency divisors llama.cpp's converter stores as `rope_freqs.weight` (Llama 3.1)."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    wavelen = 2 * math.pi / freqs.astype(np.float64)
    smooth = (original / wavelen - low) / (high - low)
    blended = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, blended))


def _llama3_scaling_from_factors(factors: np.ndarray, theta: float, head_dim: int, original: int,
                                 path: Path) -> dict | None:
    """Recover Llama 3.1's rope_scaling parameters from the table llama.cpp stores instead of them.

    The table is 1 for short wavelengths, `factor` for long ones, and in between 1/f is linear in
    1/wavelength: 1/f = 1/factor + s(1 - 1/factor) with s = (original/wavelen - low)/(high - low).
    A line through the blended entries gives low and high (original is the converter's 8192 unless
    the file says otherwise); the result is then checked by rebuilding the table from it.
    """
    f = np.asarray(factors, dtype=np.float64)
    if f.shape != (head_dim // 2,):
        raise ModelFormatError(f"{path}: rope_freqs.weight has {f.size} entries, expected {head_dim // 2}")
    factor = float(f.max())
    if np.allclose(f, 1.0):
        return None
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    wavelen = 2 * math.pi / freqs.astype(np.float64)
    mid = (f > 1 + 1e-4) & (f < factor * (1 - 1e-4))
    low, high = 1.0, 4.0  # Meta's values, kept when the table has too few blended entries to fit
    if mid.sum() >= 2:
        s = (1 / f[mid] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(1 / wavelen[mid], s, 1)
        width = original / slope
        low, high = round(-intercept * width, 4), round(-intercept * width + width, 4)
    rebuilt = llama3_rope_factors(theta, head_dim, factor, low, high, original)
    if not np.allclose(rebuilt, f, rtol=1e-3, atol=1e-4):
        raise ModelFormatError(f"{path}: rope_freqs.weight is not a Llama 3 RoPE scaling table "
                               f"(no factor/low/high/original_context_length reproduces it)")
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": original}


# ---------------------------------------------------------------------------------------------
# tokenizer.json, tokenizer_config.json, generation_config.json

def _tokenizer_files(meta: _Metadata, config: dict) -> tuple[str, dict, dict]:
    tokens = meta.require("tokenizer.ggml.tokens")
    n = len(tokens)
    if n > config["vocab_size"]:
        raise ModelFormatError(f"{meta.path}: {n} tokens but token_embd.weight has only "
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
                          meta.get("tokenizer.ggml.merges"), meta.get("tokenizer.ggml.scores"), ids,
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

_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
_LAYER_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


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


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _LAYER_RE.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"
    return None


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's `LlamaModel.permute`, which interleaves the two rotary halves of each
    head's rows: [n_heads, 2, hd/2, in] -> [n_heads, hd/2, 2, in]. Rows of each head go back to the
    half-split order that HF's rotate_half expects."""
    out_dim = w.shape[0]
    return w.reshape(n_heads, out_dim // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _weight_plan(reader, config: dict, path: Path) -> list[tuple[str, Any, int | None]]:
    """(HF name, GGUF tensor, heads to un-permute or None) for every tensor, in HF order, checked."""
    supported = _types()
    expected = _expected_shapes(config)
    plan = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":  # becomes config.rope_scaling
            continue
        name = _hf_name(t.name)
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


def _load(t, heads: int | None, shape: tuple[int, ...], path: Path) -> np.ndarray:
    try:
        w = _gguf().quants.dequantize(t.data, t.tensor_type).reshape(shape)
    except (ValueError, OSError) as e:
        raise ModelFormatError(f"{path}: tensor {t.name!r} cannot be read ({e})") from None
    if heads is not None:
        w = unpermute_qk(w, heads)
    return w.astype(ml_dtypes.bfloat16)


def _shards(sizes: list[int], max_bytes: int) -> list[list[int]]:
    """Consecutive groups of tensor indices, each under max_bytes (a bigger tensor gets its own)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(sizes):
        if groups[-1] and total + n > max_bytes:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def _write_weights(out: Path, plan, path: Path, max_shard_bytes: int, progress: bool) -> None:
    bf16 = np.dtype(ml_dtypes.bfloat16)
    expected = [tuple(int(d) for d in reversed(t.shape)) for _, t, _ in plan]
    sizes = [math.prod(s) * bf16.itemsize for s in expected]
    groups = _shards(sizes, max_shard_bytes)
    names = (["model.safetensors"] if len(groups) == 1 else
             [f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" for k in range(len(groups))])
    with byte_progress(progress, sum(sizes), path.name) as advance:
        def lazy(i: int) -> LazyTensor:
            name, t, heads = plan[i]

            def load() -> np.ndarray:
                w = _load(t, heads, expected[i], path)
                advance(sizes[i])
                return w
            return LazyTensor(bf16, expected[i], load)

        for fname, group in zip(names, groups):
            write_safetensors(out / fname, [(plan[i][0], lazy(i)) for i in group], metadata={"format": "pt"})
    if len(groups) > 1:
        index = {"metadata": {"total_size": sum(sizes)},
                 "weight_map": {plan[i][0]: names[k] for k, g in enumerate(groups) for i in g}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Public API

def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False,
                 progress: bool = True, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write a Hugging Face-layout directory (bf16 safetensors, tokenizer, configs) from a GGUF file.

    Everything is checked before anything is written; the directory appears only when complete.
    An existing `out_dir` is refused unless `force`.
    """
    path = Path(gguf_path)
    out = Path(out_dir)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists (pass force=True / --force to replace it)")
    reader = _open_gguf(path)
    meta = _Metadata(reader, path)
    arch = meta.require("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelFormatError(f"{path}: general.architecture is {arch!r}; llama_local converts "
                               f"{', '.join(SUPPORTED_ARCHITECTURES)} models only")
    config = _model_config(meta, reader, arch)
    tokenizer_json, tok_config, gen_config = _tokenizer_files(meta, config)
    plan = _weight_plan(reader, config, path)

    with atomic_output_dir(out, force=force) as tmp:
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", gen_config)
        _write_json(tmp / "tokenizer_config.json", tok_config)
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        _write_weights(tmp, plan, path, max_shard_bytes, progress)
    return out


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def gguf_cache_dir(gguf_path: str | os.PathLike) -> Path:
    """Where `ensure_converted` keeps the converted copy of a GGUF file (see conversion_cache)."""
    return conversion_cache.cache_dir("gguf", gguf_path, CONVERTER_VERSION)


def ensure_converted(gguf_path: str | os.PathLike, progress: bool = True) -> Path:
    """The converted directory of `gguf_path`, converting it on first use."""
    return conversion_cache.ensure_converted(
        "gguf", gguf_path, CONVERTER_VERSION,
        lambda src, dst: convert_gguf(src, dst, progress=progress))
