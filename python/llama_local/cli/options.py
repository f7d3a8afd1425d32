"""Options shared by the commands that load a model, and the model loading itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def n_ctx_value(s: str) -> int | str:
    if s == "max":
        return s
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tokens or 'max', got {s!r}") from None


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-ctx", type=n_ctx_value, default=None,
                   help="context size in tokens, or 'max': the model's max_position_embeddings "
                        "(default 4096, or that if smaller)")
    add_context_options(p)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])


def add_context_options(p: argparse.ArgumentParser) -> None:
    from ..formats.memory_plan import KV_CACHE_TYPES
    p.add_argument("--kv-cache", default=KV_CACHE_TYPES[0], choices=KV_CACHE_TYPES,
                   help="KV cache dtype (default f16; q8_0: int8 in blocks of 32, about half of f16)")
    p.add_argument("--allow-beyond-trained-context", action="store_true",
                   help="accept a context longer than the model's max_position_embeddings")


def add_sampling_options(p: argparse.ArgumentParser, max_tokens: int = 256, stop: bool = True) -> None:
    p.add_argument("--max-tokens", type=int, default=max_tokens, help=f"default {max_tokens}")
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default: the model's generation_config, else 0.6)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repeat-penalty", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    if stop:
        p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")


def sampling_kwargs(args: argparse.Namespace) -> dict:
    return dict(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                top_k=args.top_k, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=getattr(args, "stop", None))


def load_model(args: argparse.Namespace, model: str | None):
    from ..llm import LLM
    if model is None:
        from ..demo import demo_model_path
        model = str(demo_model_path())
        print(f"(using the bundled demo model {Path(model).name})", file=sys.stderr)
    return LLM(model, device=args.device, n_ctx=args.n_ctx, n_threads=args.threads, kv_cache=args.kv_cache,
               allow_beyond_trained_context=args.allow_beyond_trained_context)


def print_stats(s: dict) -> None:
    pre = s["prompt_tokens"] / s["prefill_s"] if s.get("prefill_s") else 0.0
    dec = (s["completion_tokens"] - 1) / s["decode_s"] if s.get("decode_s") else 0.0
    print(f"[prompt {s['prompt_tokens']} tok, {pre:.1f} tok/s | generated {s['completion_tokens']} tok, "
          f"{dec:.1f} tok/s]", file=sys.stderr)
