"""The model description: a Hugging Face config.json (transformers 4.x or 5.x) for a Llama model,
and the RoPE frequencies it implies (plain, linear, or Llama 3.1 scaled)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import rope
from .errors import ModelFormatError

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM"}
SUPPORTED_MODEL_TYPES = {"llama"}


@dataclass
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    quantization_config: dict[str, Any] | None = None
    source: str = "config.json"

    @classmethod
    def load(cls, model_dir: str | Path) -> "ModelConfig":
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            raise ModelFormatError(f"{model_dir}: no config.json (expected a Hugging Face model directory)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        if not isinstance(d, dict):
            raise ModelFormatError(f"{source}: expected a JSON object")

        def typed(key: str, kinds: tuple, what: str, default: Any = None) -> Any:
            """d[key] when present and of one of `kinds` (bool is never a number), else an error."""
            if key not in d or d[key] is None:
                return default
            v = d[key]
            if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
                raise ModelFormatError(f"{source}: field {key!r} must be {what}, got {v!r}")
            return v

        arch = typed("architectures", (list,), "a list of class names", [])
        if not all(isinstance(a, str) for a in arch):
            raise ModelFormatError(f"{source}: field 'architectures' must be a list of class names, got {arch!r}")
        model_type = typed("model_type", (str,), "a string")
        if model_type not in SUPPORTED_MODEL_TYPES and not SUPPORTED_ARCHITECTURES.intersection(arch):
            raise ModelFormatError(
                f"{source}: model_type {model_type!r} / architectures {arch!r} is not a Llama model "
                f"(supported: {sorted(SUPPORTED_ARCHITECTURES)})")

        def need(key: str) -> Any:
            if key not in d:
                raise ModelFormatError(f"{source}: missing required field {key!r}")
            return d[key]

        def positive_int(key: str, value: Any) -> int:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ModelFormatError(f"{source}: {key} must be a positive integer, got {value!r}")
            return value

        hidden = positive_int("hidden_size", need("hidden_size"))
        heads = positive_int("num_attention_heads", need("num_attention_heads"))
        kv_heads = positive_int("num_key_value_heads", d.get("num_key_value_heads") or heads)
        head_dim = positive_int("head_dim", d.get("head_dim") or hidden // heads)
        if heads % kv_heads:
            raise ModelFormatError(f"{source}: num_attention_heads {heads} is not a multiple of "
                                   f"num_key_value_heads {kv_heads}")
        if head_dim % 2:
            raise ModelFormatError(f"{source}: head_dim {head_dim} must be even for RoPE")
        if d.get("attention_bias") or d.get("mlp_bias"):
            raise ModelFormatError(f"{source}: attention_bias / mlp_bias are not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise ModelFormatError(f"{source}: hidden_act {d['hidden_act']!r} is not supported (need silu)")

        # transformers 5.x: rope_parameters holds rope_theta and the scaling; 4.x: top-level
        # rope_theta plus an optional rope_scaling dict (with "type" in older files).
        params = d.get("rope_parameters")
        if isinstance(params, dict):
            theta = params.get("rope_theta", d.get("rope_theta", rope.DEFAULT_THETA))
            scaling = dict(params)
        else:
            theta = d.get("rope_theta", rope.DEFAULT_THETA)
            scaling = dict(d["rope_scaling"]) if isinstance(d.get("rope_scaling"), dict) else {}
        if not isinstance(theta, (int, float)) or isinstance(theta, bool) or theta <= 0:
            raise ModelFormatError(f"{source}: field 'rope_theta' must be a positive number, got {theta!r}")
        scaling.pop("rope_theta", None)
        rope_type = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
        scaling.pop("type", None)
        rope_scaling = None if rope_type == "default" else {"rope_type": rope_type, **scaling}

        eos = typed("eos_token_id", (int, list), "a token id or a list of them")
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not all(isinstance(e, int) and not isinstance(e, bool) for e in eos_ids):
            raise ModelFormatError(f"{source}: field 'eos_token_id' must be a token id or a list of them, got {eos!r}")
        number = (int, float)
        cfg = cls(
            vocab_size=positive_int("vocab_size", need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=positive_int("intermediate_size", need("intermediate_size")),
            num_hidden_layers=positive_int("num_hidden_layers", need("num_hidden_layers")),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(typed("rms_norm_eps", number, "a number", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=rope_scaling,
            max_position_embeddings=positive_int("max_position_embeddings", d.get("max_position_embeddings", 2048)),
            tie_word_embeddings=typed("tie_word_embeddings", (bool,), "true or false", False),
            bos_token_id=typed("bos_token_id", (int,), "a token id"),
            eos_token_ids=eos_ids,
            quantization_config=typed("quantization_config", (dict,), "an object"),
            source=source,
        )
        cfg.inv_freq()  # refuse an unsupported RoPE type now, naming the file
        return cfg

    def inv_freq(self) -> np.ndarray:
        """head_dim/2 RoPE frequencies, float32, computed as transformers computes them."""
        inv = rope.inv_freq(self.rope_theta, self.head_dim)
        s = self.rope_scaling
        if s is None:
            return inv
        kind = s["rope_type"]
        try:
            if kind == "linear":
                return (inv / np.float32(s["factor"])).astype(np.float32)
            if kind == "llama3":
                return rope.llama3_scaled(inv, float(s["factor"]), float(s["low_freq_factor"]),
                                          float(s["high_freq_factor"]), float(s["original_max_position_embeddings"]))
        except KeyError as e:
            raise ModelFormatError(f"{self.source}: rope scaling {kind!r} lacks field {e.args[0]!r}") from None
        except (TypeError, ValueError):
            raise ModelFormatError(f"{self.source}: rope scaling {kind!r} has a field that is not a number "
                                   f"({s})") from None
        raise ModelFormatError(f"{self.source}: rope scaling type {kind!r} is not supported "
                               "(supported: default, linear, llama3)")

    def core_dict(self) -> dict[str, Any]:
        """What the compiled core's Model takes."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "inv_freq": self.inv_freq().tolist(),
        }

    def linear_params(self) -> int:
        """Parameters of the decoder layers' linear weights (q, k, v, o, gate, up, down)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * hd * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
        return self.num_hidden_layers * (attn + 3 * d * f)

    def n_params(self) -> int:
        d = self.hidden_size
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        norms = self.num_hidden_layers * 2 * d + d
        return self.vocab_size * d + self.linear_params() + norms + head

