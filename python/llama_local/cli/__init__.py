"""The llama-local command. One module per command; each has register(subparsers) and run(args)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import LlamaLocalError
from . import chat, convert, generate, info, perplexity, quantize
from . import list as list_models

COMMANDS = (chat, generate, list_models, info, convert, quantize, perplexity)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    p = argparse.ArgumentParser(prog="llama-local", description="Run Llama models locally.")
    p.add_argument("--version", action="version", version=f"llama-local {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
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
