"""`llama-local quantize SRC DST --format fp8`: a compressed-tensors checkpoint that vLLM,
transformers and llama_local load."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from ..quant import writer
    q = sub.add_parser("quantize", help="quantize a model into a compressed-tensors checkpoint",
                       description=writer.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("src", help="anything LLM() loads: an HF directory, a .gguf file, a Meta original/ directory")
    q.add_argument("dst", help="the output directory (refused if it exists, unless --force)")
    q.add_argument("--format", choices=writer.FORMATS, required=True,
                   help="fp8: E4M3 weights with per-channel scales (W8A16); "
                        "int4: 4-bit group-wise weights (W4A16, pack-quantized)")
    q.add_argument("--group-size", type=int, default=128, choices=[32, 64, 128],
                   help="int4: input columns per scale (default 128)")
    q.add_argument("--symmetric", action="store_true", help="int4: no zero points (default: one per group)")
    q.add_argument("--dynamic-activations", action="store_true",
                   help="fp8: W8A8, per-token FP8 activation scales computed at run time (llm-compressor's "
                        "FP8_DYNAMIC), for GPUs with FP8 products; llama_local's CPU path keeps fp32 activations")
    q.add_argument("--force", action="store_true", help="replace DST if it exists")
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..quant.writer import quantize
    with Progress(TextColumn(f"quantizing to {args.format}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("tensors"), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task("", total=None)
        out = quantize(args.src, args.dst, fmt=args.format, force=args.force, group_size=args.group_size,
                       symmetric=args.symmetric, dynamic_activations=args.dynamic_activations,
                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(f"wrote {out}")
    return 0
