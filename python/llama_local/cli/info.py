"""`llama-local info [MODEL]`: a model's configuration, weight formats and memory plan."""

from __future__ import annotations

import argparse
import json

from .options import add_model_options, load_model


def register(sub) -> None:
    i = sub.add_parser("info", help="print a model's configuration, size and memory plan")
    i.add_argument("model", nargs="?")
    i.add_argument("--json", action="store_true")
    add_model_options(i)
    i.set_defaults(func=run)


def info_table(info: dict):
    """A rich Table of LLM.info(): also what the chat's /model command shows."""
    from rich.table import Table

    def mib(n: int) -> str:
        return f"{n / 2**20:,.1f} MiB"

    t = Table(title=f"{info['model']}", show_header=False)
    t.add_row("source", f"{info['source']} ({mib(info['source_bytes'])})")
    for key in ("parameters", "vocab_size", "hidden_size", "intermediate_size", "layers", "heads",
                "kv_heads", "head_dim", "rope_theta", "rope_scaling", "tie_word_embeddings",
                "n_ctx", "n_threads", "isa"):
        v = info[key]
        t.add_row(key, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    for fmt, n in sorted(info["weight_formats"].items(), key=lambda kv: -kv[1]):
        t.add_row(f"weights: {fmt}", mib(n))
    t.add_row("memory: weights", mib(info["weight_bytes"]))
    t.add_row("memory: KV cache (n_ctx)", mib(info["kv_cache_bytes"]))
    t.add_row("memory: scratch", mib(info["scratch_bytes"]))
    t.add_row("memory: total", mib(info["weight_bytes"] + info["kv_cache_bytes"] + info["scratch_bytes"]))
    return t


def run(args: argparse.Namespace) -> int:
    from ..llm import system_info
    llm = load_model(args, args.model)
    info = llm.info()
    if args.json:
        print(json.dumps({"model": info, "system": system_info()}, indent=2))
        return 0
    from rich.console import Console
    Console().print(info_table(info))
    return 0
