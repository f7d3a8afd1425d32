"""Meta's original Llama 3.x checkpoint (`original/`) → a Hugging Face layout directory.

Input: params.json, consolidated.00.pth … consolidated.NN.pth (one per model-parallel rank),
tokenizer.model. Output: config.json (transformers LlamaConfig), model.safetensors (bf16, HF
names), tokenizer.json, tokenizer_config.json, generation_config.json — written into a
temporary directory that becomes OUT_DIR only when complete.

Two layout changes matter for correctness:

* Shards. Each rank holds a slice of every parallel weight: column-parallel layers (wq, wk, wv,
  w1, w3, output) along the output dim 0, row-parallel ones (wo, w2) along the input dim 1, the
  embedding along the vocabulary (Llama 3's VocabParallelEmbedding: dim 0; Llama 2's
  ParallelEmbedding split dim 1), norms replicated. The axis is read off the shard shapes against
  the full shape from params.json, so both embedding layouts convert.
* RoPE. Meta rotates interleaved pairs (x0, x1), (x2, x3) … as complex numbers; transformers
  rotates halves (x_i, x_{i+d/2}). Permuting the rows of wq and wk within each head (as
  transformers' convert_llama_weights_to_hf does) makes the two compute the same attention.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import ml_dtypes
import numpy as np

from . import conversion_cache
from .. import llama3, rope
from ..errors import ModelFormatError
from ..fsutil import atomic_output_dir
from ..progress import byte_progress
from .llama_layout import unpermute_qk
from .pth_io import load_state_dict
from .safetensors_io import LazyTensor, write_safetensors

# Bump when the output of a conversion changes, so that stale cached copies are not reused.
CONVERTER_VERSION = 1

BF16 = np.dtype(ml_dtypes.bfloat16)


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """Meta's FeedForward size: 2/3 of 4·dim, times the multiplier, rounded up to multiple_of."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def read_params(path: Path) -> dict:
    """params.json with the defaults of Meta's ModelArgs, checked for what the converter needs."""
    if not path.is_file():
        raise ModelFormatError(f"{path}: params.json not found (expected a Meta original/ checkpoint directory)")
    try:
        p = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(p, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    for key in ("dim", "n_layers", "n_heads", "vocab_size"):
        if not isinstance(p.get(key), int) or p[key] <= 0:
            raise ModelFormatError(f"{path}: {key} must be a positive integer, got {p.get(key)!r}")
    p.setdefault("n_kv_heads", p["n_heads"])
    p.setdefault("multiple_of", 256)
    p.setdefault("ffn_dim_multiplier", None)
    p.setdefault("norm_eps", 1e-5)
    p.setdefault("rope_theta", rope.LLAMA3_THETA)
    p.setdefault("use_scaled_rope", False)
    if p["dim"] % p["n_heads"] or p["n_heads"] % p["n_kv_heads"] or (p["dim"] // p["n_heads"]) % 2:
        raise ModelFormatError(
            f"{path}: dim {p['dim']}, n_heads {p['n_heads']}, n_kv_heads {p['n_kv_heads']} do not divide evenly"
        )
    return p


def _shard_paths(src: Path) -> list[Path]:
    shards = sorted(src.glob("consolidated.*.pth"), key=lambda p: int(re.findall(r"\d+", p.name)[0]))
    if not shards:
        raise ModelFormatError(f"{src}: no consolidated.*.pth shards found")
    numbers = [int(re.findall(r"\d+", p.name)[0]) for p in shards]
    if numbers != list(range(len(shards))):
        raise ModelFormatError(f"{src}: shards are not consolidated.00 … consolidated.{len(shards) - 1:02d}: {numbers}")
    return shards


class _Merger:
    """Builds each full tensor from the shards, one tensor at a time."""

    def __init__(self, shards: list[dict[str, np.ndarray]], paths: list[Path], params: dict):
        self.shards, self.paths, self.p = shards, paths, params
        d, h, kv = params["dim"], params["n_heads"], params["n_kv_heads"]
        self.head_dim = d // h
        self.ffn = ffn_hidden_dim(d, params["multiple_of"], params["ffn_dim_multiplier"])
        v = params["vocab_size"]
        hd = self.head_dim
        self.full_shapes = {
            "tok_embeddings": (v, d), "output": (v, d), "norm": (d,),
            "attention.wq": (h * hd, d), "attention.wk": (kv * hd, d), "attention.wv": (kv * hd, d),
            "attention.wo": (d, h * hd), "feed_forward.w1": (self.ffn, d), "feed_forward.w3": (self.ffn, d),
            "feed_forward.w2": (d, self.ffn), "attention_norm": (d,), "ffn_norm": (d,),
        }

    def full_shape(self, name: str) -> tuple[int, ...]:
        key = re.sub(r"^layers\.\d+\.", "", name).removesuffix(".weight")
        return self.full_shapes[key]

    def layout(self, name: str) -> tuple[list[np.ndarray], int | None, int]:
        """(shard tensors, concat axis or None for "take rank 0", rank step), shapes checked.

        Works on shapes only, so every tensor can be checked before any data is read.
        """
        parts = []
        for shard, path in zip(self.shards, self.paths):
            if name not in shard:
                raise ModelFormatError(f"{path}: tensor {name} is missing")
            parts.append(shard[name])
        want = self.full_shape(name)
        where = self.paths[0].parent
        s = tuple(parts[0].shape)
        if any(tuple(p.shape) != s for p in parts):
            raise ModelFormatError(f"{where}: shards disagree on the shape of {name}")
        n = len(parts)
        if s == want:
            return parts, None, 1  # a single rank, or a replicated norm
        if len(s) == 2 and s[0] * n == want[0] and s[1] == want[1]:
            return parts, 0, 1
        if len(s) == 2 and s[1] * n == want[1] and s[0] == want[0]:
            return parts, 1, 1
        kv = self.p["n_kv_heads"]
        if name.endswith(("attention.wk.weight", "attention.wv.weight")) and n > kv and n % kv == 0 \
                and s == (self.head_dim, want[1]):
            # More ranks than KV heads (405B: 16 ranks, 8 KV heads): each KV head is replicated on
            # n/kv consecutive ranks; keep one copy of each.
            return parts, 0, n // kv
        shapes = f"{n} shards of shape {s}" if n > 1 else f"shape {s}"
        raise ModelFormatError(f"{where}: tensor {name} has {shapes}, params.json implies {want}")

    def merged(self, name: str) -> np.ndarray:
        parts, axis, step = self.layout(name)
        return parts[0] if axis is None else np.concatenate(parts[::step], axis=axis)


def hf_tensor_plan(params: dict) -> list[tuple[str, str, str | None]]:
    """(HF name, Meta name, RoPE permutation: "q" | "k" | None) in HF's usual order."""
    plan = [("model.embed_tokens.weight", "tok_embeddings.weight", None)]
    for i in range(params["n_layers"]):
        m, h = f"layers.{i}.", f"model.layers.{i}."
        plan += [
            (h + "self_attn.q_proj.weight", m + "attention.wq.weight", "q"),
            (h + "self_attn.k_proj.weight", m + "attention.wk.weight", "k"),
            (h + "self_attn.v_proj.weight", m + "attention.wv.weight", None),
            (h + "self_attn.o_proj.weight", m + "attention.wo.weight", None),
            (h + "mlp.gate_proj.weight", m + "feed_forward.w1.weight", None),
            (h + "mlp.up_proj.weight", m + "feed_forward.w3.weight", None),
            (h + "mlp.down_proj.weight", m + "feed_forward.w2.weight", None),
            (h + "input_layernorm.weight", m + "attention_norm.weight", None),
            (h + "post_attention_layernorm.weight", m + "ffn_norm.weight", None),
        ]
    plan += [("model.norm.weight", "norm.weight", None), ("lm_head.weight", "output.weight", None)]
    return plan


def hf_config(params: dict) -> dict:
    """transformers LlamaConfig (4.x layout: top-level rope_theta, rope_scaling)."""
    scaled = bool(params["use_scaled_rope"])
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": params["dim"],
        "intermediate_size": ffn_hidden_dim(params["dim"], params["multiple_of"], params["ffn_dim_multiplier"]),
        "num_hidden_layers": params["n_layers"],
        "num_attention_heads": params["n_heads"],
        "num_key_value_heads": params["n_kv_heads"],
        "head_dim": params["dim"] // params["n_heads"],
        "vocab_size": params["vocab_size"],
        "rms_norm_eps": params["norm_eps"],
        "rope_theta": float(params["rope_theta"]),
        "rope_scaling": dict(rope.LLAMA31_SCALING) if scaled else None,
        # Llama 3.1 is trained to 128K positions with the scaled RoPE; Llama 3 to 8K.
        "max_position_embeddings": rope.LLAMA31_CONTEXT if scaled else rope.LLAMA3_CONTEXT,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": llama3.BOS_ID,
        "eos_token_id": llama3.EOS_ID,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def _write_tokenizer(tokenizer_model: Path, out: Path) -> None:
    from tokenizers import processors

    from ..tokenizer.tiktoken_convert import convert_tokenizer_model

    tok = convert_tokenizer_model(tokenizer_model)
    # What Meta's HF release does: BOS is added by the post-processor, so transformers'
    # tokenizer(text) starts with <|begin_of_text|> as Meta's completions do.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{llama3.BEGIN_OF_TEXT} $A",
            pair=f"{llama3.BEGIN_OF_TEXT} $A {llama3.BEGIN_OF_TEXT} $B:1",
            special_tokens=[(llama3.BEGIN_OF_TEXT, llama3.BOS_ID)],
        ),
    ])
    tok.save(str(out / "tokenizer.json"))
    config = {
        "bos_token": llama3.BEGIN_OF_TEXT,
        "eos_token": llama3.END_OF_TEXT,
        "add_bos_token": True,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": rope.LLAMA31_CONTEXT,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def convert_meta_original(
    src_dir: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False, progress: bool = True
) -> Path:
    """Convert a Meta original/ checkpoint directory into an HF-layout directory; returns out_dir."""
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise ModelFormatError(f"{src}: not a directory (expected Meta's original/ with params.json)")
    params = read_params(src / "params.json")
    tokenizer_model = src / "tokenizer.model"
    if not tokenizer_model.is_file():
        raise ModelFormatError(f"{tokenizer_model}: tokenizer.model not found")
    paths = _shard_paths(src)
    shards = [load_state_dict(p) for p in paths]  # memory-mapped: nothing is read yet
    merger = _Merger(shards, paths, params)

    plan = hf_tensor_plan(params)
    for _, meta_name, _ in plan:
        merger.layout(meta_name)  # check every name and shape before writing anything

    total = sum(2 * math.prod(merger.full_shape(meta_name)) for _, meta_name, _ in plan)
    with byte_progress(progress, total, src.name) as advance:

        def produce(meta_name: str, qk: str | None):
            def load() -> np.ndarray:
                w = merger.merged(meta_name)
                # Meta's rows are in the interleaved order that llama.cpp's permutation makes.
                if qk == "q":
                    w = unpermute_qk(w, params["n_heads"])
                elif qk == "k":
                    w = unpermute_qk(w, params["n_kv_heads"])
                w = np.ascontiguousarray(w).astype(BF16, copy=False)
                advance(w.nbytes)
                return w
            return load

        tensors = [
            (hf_name, LazyTensor(BF16, merger.full_shape(meta_name), produce(meta_name, qk)))
            for hf_name, meta_name, qk in plan
        ]
        with atomic_output_dir(out, force=force) as tmp:
            write_safetensors(tmp / "model.safetensors", tensors, metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(hf_config(params), indent=2) + "\n", encoding="utf-8")
            generation = {
                "bos_token_id": llama3.BOS_ID,
                "eos_token_id": sorted(llama3.STOP_IDS),
                "do_sample": True,
                "temperature": 0.6,
                "top_p": 0.9,
            }
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
            _write_tokenizer(tokenizer_model, tmp)
    return out


def find_original_dir(path: str | os.PathLike) -> Path | None:
    """The Meta original/ checkpoint directory `path` is or holds (params.json), else None."""
    p = Path(path)
    for d in (p, p / "original"):
        if (d / "params.json").is_file():
            return d
    return None


def ensure_converted_meta(src_dir: str | os.PathLike, progress: bool = True) -> Path:
    """The converted copy of a Meta original/ directory, made on first use (what LLM(dir) loads)."""
    return conversion_cache.ensure_converted(
        "meta", src_dir, CONVERTER_VERSION,
        lambda src, dst: convert_meta_original(src, dst, progress=progress))
