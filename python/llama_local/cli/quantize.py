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
    q.add_argument("--method", choices=writer.METHODS, default="rtn",
                   help="int4: rtn (round to nearest, default) or gptq (needs --calibration)")
    q.add_argument("--calibration", default=None, help="gptq: a UTF-8 text file to calibrate on")
    q.add_argument("--calibration-tokens", type=int, default=4096, help="gptq: tokens of it to use (default 4096)")
    q.add_argument("--quantize-lm-head", action="store_true",
                   help="quantize the LM head too, by rounding, as llama.cpp's files do (default: bf16, as "
                        "llm-compressor leaves it); a model that ties it to the embeddings gets a quantized "
                        "copy, and its embeddings stay bf16")
    q.add_argument("--force", action="store_true", help="replace DST if it exists")
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import LlamaLocalError
    text = None
    if args.calibration:
        try:
            text = Path(args.calibration).expanduser().read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LlamaLocalError(f"{args.calibration}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise LlamaLocalError(f"{args.calibration}: cannot be read as UTF-8 text ({e})") from None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..quant.writer import quantize
    with Progress(TextColumn(f"quantizing to {args.format}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("tensors"), TimeRemainingColumn(), TextColumn("{task.description}"),
                  console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task("", total=None)
        out = quantize(args.src, args.dst, fmt=args.format, force=args.force, group_size=args.group_size,
                       symmetric=args.symmetric, dynamic_activations=args.dynamic_activations,
                       method=args.method, calibration=text, calibration_tokens=args.calibration_tokens,
                       quantize_lm_head=args.quantize_lm_head,
                       on_calibration=lambda done, total: bar.update(
                           task, description=f"calibrated layers {done}/{total}"),
                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(f"wrote {out}")
    return 0
