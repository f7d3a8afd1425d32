"""`llama-local info [MODEL]`: a model's configuration, weight formats and memory plan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import LlamaLocalError
from .options import add_model_options, load_model


def register(sub) -> None:
    i = sub.add_parser("info", help="print a model's configuration, size and memory plan",
                       description="Loads the model and reports it. For a model too big for this machine, "
                       "or a directory holding only config.json (or the config.json itself), or with --plan, "
                       "it reads config.json alone and prints the memory each format needs, whether it fits, "
                       "and the vLLM command that serves it on GPUs.")
    i.add_argument("model", nargs="?")
    i.add_argument("--json", action="store_true")
    i.add_argument("--plan", action="store_true", help="the plan from config.json, without loading the weights")
    i.add_argument("--gpu-gib", type=float, default=80.0, help="memory per GPU for the vLLM plan (default 80)")
    add_model_options(i)
    i.set_defaults(func=run)


def plan_source(model: str | None, force: bool) -> Path | None:
    """The directory whose config.json to plan from, or None to load the model. A plan is made
    when asked, when there is only a config (no weights), or when the weights exceed this
    machine's memory."""
    if model is None:
        return None
    from ..formats.locate import resolve_model
    from ..formats.memory_plan import machine_memory
    p = resolve_model(model)
    if p.is_file() and p.name == "config.json":
        return p.parent
    if not p.is_dir() or not (p / "config.json").is_file():
        return None
    weights = list(p.glob("*.safetensors"))
    if force or not weights:
        return p
    size = sum(w.stat().st_size for w in weights)
    return p if size > 0.9 * machine_memory() > 0 else None


def run_plan(args: argparse.Namespace, where: Path) -> int:
    from ..config import ModelConfig
    from ..formats.memory_plan import machine_memory, plan, vllm_command
    from ..llm import context_size
    c = ModelConfig.load(where)
    n_ctx = context_size(args.n_ctx, c.max_position_embeddings, args.allow_beyond_trained_context)
    gpu = int(args.gpu_gib * 2**30)
    machine = machine_memory()
    rows = plan(c, n_ctx, gpu, machine, kv_cache=args.kv_cache)
    already_fp8 = bool(c.quantization_config)
    source = args.model
    commands = {r.format: vllm_command(source, r.format, r.vllm_tp, n_ctx, already_fp8)
                for r in rows if r.vllm_tp is not None}
    if args.json:
        print(json.dumps({"config": str(where / "config.json"), "parameters": c.n_params(), "n_ctx": n_ctx,
                          "max_position_embeddings": c.max_position_embeddings, "kv_cache": args.kv_cache,
                          "machine_bytes": machine, "gpu_bytes": gpu,
                          "formats": [{**r.__dict__, "vllm_command": commands.get(r.format)} for r in rows]},
                         indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    def gib(n: int) -> str:
        return f"{n / 2**30:,.1f} GiB"

    con = Console()
    t = Table(title=f"{source}: {c.n_params() / 1e9:,.1f}B parameters, n_ctx {n_ctx:,} "
                    f"(from {where / 'config.json'})")
    for col in ("format", "weights", f"KV cache ({args.kv_cache})", "needs here", f"fits ({gib(machine)})",
                f"vLLM GPUs ({args.gpu_gib:g} GiB)"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r.format, gib(r.weight_bytes), gib(r.kv_bytes), gib(r.total_bytes),
                  "yes" if r.fits else "no", str(r.vllm_tp) if r.vllm_tp else "more than 16")
    con.print(t)
    for r in rows:
        if not r.fits and r.format in commands:
            con.print(f"{r.format}: {commands[r.format]}", highlight=False, soft_wrap=True)
    return 0


def info_table(info: dict):
    """A rich Table of LLM.info(): also what the chat's /model command shows."""
    from rich.table import Table

    def mib(n: int) -> str:
        return f"{n / 2**20:,.1f} MiB"

    t = Table(title=f"{info['model']}", show_header=False)
    t.add_row("source", f"{info['source']} ({mib(info['source_bytes'])})")
    for key in ("parameters", "vocab_size", "hidden_size", "intermediate_size", "layers", "heads",
                "kv_heads", "head_dim", "rope_theta", "rope_scaling", "tie_word_embeddings",
                "max_position_embeddings", "n_ctx", "kv_cache", "n_threads", "isa"):
        v = info[key]
        t.add_row(key, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    for fmt, n in sorted(info["weight_formats"].items(), key=lambda kv: -kv[1]):
        t.add_row(f"weights: {fmt}", mib(n))
    t.add_row("memory: weights", mib(info["weight_bytes"]))
    t.add_row(f"memory: KV cache ({info['kv_cache']}, {info['n_ctx']:,} positions)", mib(info["kv_cache_bytes"]))
    t.add_row("memory: scratch", mib(info["scratch_bytes"]))
    t.add_row("memory: total", mib(info["weight_bytes"] + info["kv_cache_bytes"] + info["scratch_bytes"]))
    return t


def run(args: argparse.Namespace) -> int:
    where = plan_source(args.model, args.plan)
    if where is not None:
        return run_plan(args, where)
    if args.plan:
        raise LlamaLocalError("--plan needs a Hugging Face model directory (or its config.json)")
    from ..llm import system_info
    llm = load_model(args, args.model)
    info = llm.info()
    if args.json:
        print(json.dumps({"model": info, "system": system_info()}, indent=2))
        return 0
    from rich.console import Console
    Console().print(info_table(info))
    return 0
