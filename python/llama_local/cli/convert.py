"""`llama-local convert SRC OUT`: a GGUF file or a Meta original/ checkpoint to HF layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LlamaLocalError


def register(sub) -> None:
    v = sub.add_parser("convert", help="convert a GGUF file or a Meta original/ checkpoint to HF layout")
    v.add_argument("src")
    v.add_argument("out")
    v.add_argument("--force", action="store_true", help="replace OUT if it exists")
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..formats.meta_original import convert_meta_original, find_original_dir
    src = Path(args.src)
    if src.is_file() and src.suffix.lower() == ".gguf":
        from ..formats.gguf_import import convert_gguf
        out = convert_gguf(src, args.out, force=args.force, progress=True)
    elif src.is_dir() and (original := find_original_dir(src)) is not None:
        out = convert_meta_original(original, args.out, force=args.force, progress=True)
    else:
        raise LlamaLocalError(f"{src}: expected a .gguf file or a Meta original/ directory with params.json")
    print(f"wrote {out}")
    return 0
