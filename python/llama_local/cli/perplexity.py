"""`llama-local perplexity MODEL --file TEXT`: perplexity as llama.cpp's perplexity tool computes it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import LlamaLocalError
from .options import add_context_options


def register(sub) -> None:
    from ..evaluate import perplexity as method
    p = sub.add_parser("perplexity", help="perplexity of a model on a text file (llama.cpp's method)",
                       description=method.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a path, a Hugging Face repo id in the local cache, or an Ollama model")
    p.add_argument("--file", "-f", required=True, help="the text (UTF-8)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512, as llama.cpp)")
    p.add_argument("--batch", type=int, default=512, help="prefill batch size in tokens (default 512)")
    p.add_argument("--chunks", type=int, default=None, help="score at most this many chunks")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    add_context_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate.perplexity import perplexity
    from ..llm import LLM
    path = Path(args.file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlamaLocalError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LlamaLocalError(f"{path}: cannot be read as UTF-8 text ({e})") from None
    if args.ctx is None or args.ctx < 4:
        raise LlamaLocalError(f"--ctx must be at least 4, got {args.ctx}")
    if args.batch < 1:
        raise LlamaLocalError(f"--batch must be positive, got {args.batch}")
    llm = LLM(args.model, n_ctx=args.ctx, n_threads=args.threads, n_batch=args.batch, kv_cache=args.kv_cache,
              allow_beyond_trained_context=args.allow_beyond_trained_context)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    err = Console(stderr=True)
    with Progress(TextColumn("perplexity"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
                  TimeRemainingColumn(), TextColumn("{task.description}"), console=err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def on_chunk(done: int, total: int, ppl: float) -> None:
            bar.update(task, completed=done, total=total, description=f"PPL so far {ppl:.4f}")

        result = perplexity(llm, text, ctx=args.ctx, max_chunks=args.chunks, on_chunk=on_chunk)
    summary = (f"{result.chunks} chunks of {result.ctx} tokens, {result.scored_tokens} tokens scored "
               f"(of {result.text_tokens} in {path.name})")
    if args.json:
        print(json.dumps({"model": llm.model_name, "file": str(path), **result.as_dict()}, indent=2))
        print(summary, file=sys.stderr)
    else:
        print(summary)
        print(f"Final estimate: PPL = {result.ppl:.4f} +/- {result.error:.5f}")
    return 0
