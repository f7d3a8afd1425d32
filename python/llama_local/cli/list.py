"""`llama-local list`: the models found on this machine (HF cache, Ollama store, the demo)."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    ls = sub.add_parser("list", help="list the models found in the Hugging Face cache and the Ollama store")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..formats.locate import hf_hub_cache, list_models, ollama_models_dir
    found = list_models()
    if args.json:
        print(json.dumps([{"name": m.name, "kind": m.kind, "path": str(m.path), "bytes": m.size}
                          for m in found], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    console = Console()
    if not found:
        console.print(f"no models found in {hf_hub_cache()} or {ollama_models_dir()}")
        return 0
    t = Table("name (what `llama-local chat NAME` takes)", "from", "size", "path")
    for m in found:
        t.add_row(m.name, m.kind, f"{m.size / 2**30:,.2f} GiB", str(m.path))
    console.print(t)
    return 0
