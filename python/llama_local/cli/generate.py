"""`llama-local generate MODEL PROMPT`: complete a prompt, streaming to stdout."""

from __future__ import annotations

import argparse
import sys

from .options import add_model_options, add_sampling_options, load_model, print_stats, sampling_kwargs


def register(sub) -> None:
    g = sub.add_parser("generate", help="complete a prompt, streaming to stdout")
    g.add_argument("model")
    g.add_argument("prompt")
    g.add_argument("-v", "--verbose", action="store_true", help="print speed figures to stderr")
    add_model_options(g)
    add_sampling_options(g)
    g.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    llm = load_model(args, args.model)
    for chunk in llm.generate(args.prompt, **sampling_kwargs(args)):
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.verbose and llm.last_stats:
        print_stats(llm.last_stats)
    return 0
