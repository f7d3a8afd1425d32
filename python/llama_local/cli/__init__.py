"""The llama-local command: generate, chat, info, convert."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import LlamaLocalError


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default: the model's generation_config, else 0.6)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--repeat-penalty", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")


def _sampling(args: argparse.Namespace) -> dict:
    return dict(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                top_k=args.top_k, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=args.stop)


def _load(args: argparse.Namespace, model: str | None):
    from .llm import LLM
    if model is None:
        from .demo import demo_model_path
        model = str(demo_model_path())
        print(f"(using the bundled demo model {Path(model).name})", file=sys.stderr)
    return LLM(model, device=args.device, n_ctx=args.n_ctx, n_threads=args.threads)


def cmd_generate(args: argparse.Namespace) -> int:
    llm = _load(args, args.model)
    for chunk in llm.generate(args.prompt, **_sampling(args)):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    s = llm.last_stats
    if args.verbose and s:
        _print_stats(s)
    return 0


def _print_stats(s: dict) -> None:
    pre = s["prompt_tokens"] / s["prefill_s"] if s.get("prefill_s") else 0.0
    dec = (s["completion_tokens"] - 1) / s["decode_s"] if s.get("decode_s") else 0.0
    print(f"[prompt {s['prompt_tokens']} tok, {pre:.1f} tok/s | generated {s['completion_tokens']} tok, "
          f"{dec:.1f} tok/s]", file=sys.stderr)


def cmd_chat(args: argparse.Namespace) -> int:
    llm = _load(args, args.model)
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print(f"Chatting with {llm.model_name}. Ctrl-C stops a reply; Ctrl-D or /exit leaves.", file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print("\n(use Ctrl-D or /exit to leave)", file=sys.stderr)
            continue
        if line.strip() in ("/exit", "/quit", "/bye"):
            return 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        try:
            for chunk in llm.chat(messages, stream=True, **_sampling(args)):
                delta = chunk["choices"][0]["delta"].get("content") or ""
                reply.append(delta)
                sys.stdout.write(delta)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [interrupted]")
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})


def cmd_info(args: argparse.Namespace) -> int:
    from .llm import system_info
    llm = _load(args, args.model)
    info = llm.info()
    if args.json:
        print(json.dumps({"model": info, "system": system_info()}, indent=2))
        return 0
    from rich.console import Console
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
    Console().print(t)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert_meta import convert_meta_original, find_original_dir
    src = Path(args.src)
    if src.is_file() and src.suffix.lower() == ".gguf":
        from .gguf_import import convert_gguf
        out = convert_gguf(src, args.out, force=args.force, progress=True)
    elif src.is_dir() and (original := find_original_dir(src)) is not None:
        out = convert_meta_original(original, args.out, force=args.force, progress=True)
    else:
        raise LlamaLocalError(f"{src}: expected a .gguf file or a Meta original/ directory with params.json")
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="llama-local", description="Run Llama models locally.")
    p.add_argument("--version", action="version", version=f"llama-local {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="complete a prompt, streaming to stdout")
    g.add_argument("model")
    g.add_argument("prompt")
    g.add_argument("-v", "--verbose", action="store_true", help="print speed figures to stderr")
    _add_model_options(g)
    _add_sampling_options(g)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="chat in the terminal (no MODEL: the bundled SmolLM2 demo)")
    c.add_argument("model", nargs="?")
    c.add_argument("--system", default=None, help="system prompt")
    _add_model_options(c)
    _add_sampling_options(c)
    c.set_defaults(func=cmd_chat)

    i = sub.add_parser("info", help="print a model's configuration, size and memory plan")
    i.add_argument("model", nargs="?")
    i.add_argument("--json", action="store_true")
    _add_model_options(i)
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("convert", help="convert a GGUF file or a Meta original/ checkpoint to HF layout")
    v.add_argument("src")
    v.add_argument("out")
    v.add_argument("--force", action="store_true", help="replace OUT if it exists")
    v.set_defaults(func=cmd_convert)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LlamaLocalError, FileExistsError, ValueError) as e:
        print(f"llama-local: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
