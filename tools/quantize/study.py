#!/usr/bin/env python3
"""Size and perplexity of a model in each quantized format: the table in the README.

    python tools/quantize/study.py                         # SmolLM2-135M-Instruct, tests/data/prose*.txt
    python tools/quantize/study.py --file wiki.test.raw --ctx 512 --json out.json
    python tools/quantize/study.py --calibration my_text.txt     # GPTQ's calibration text

The base is the model's bf16 Hugging Face directory (for the demo: its shipped Q4_1 GGUF converted,
so every row below starts from the same weights). Each format is written by `llama-local quantize`
(round to nearest; the GPTQ row calibrates on --calibration, by default Python's own reference
documentation from the standard library, text unlike the prose it is scored on) and scored by `llama-local perplexity` (llama.cpp's
method) on the same text. When llama-cpp-python is installed, llama.cpp's own quantizer makes its
Q4_0, Q4_K_M and Q8_0 of the same weights for comparison (scored by the same perplexity code).
bits/weight counts every byte of the decoder's linear layers (codes, scales, zero points) over
their parameters; embeddings, norms and the LM head are bf16 in every compressed-tensors row.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import bench_models as bm  # noqa: E402  (also puts the source tree on sys.path if needed)

from llama_local import LLM  # noqa: E402
from llama_local.evaluate.perplexity import perplexity  # noqa: E402
from llama_local.quant.writer import LINEAR, quantize  # noqa: E402

# (label, quantize() arguments)
VARIANTS = [
    ("fp8 (channel)", dict(fmt="fp8")),
    ("int4 g32 sym", dict(fmt="int4", group_size=32, symmetric=True)),
    ("int4 g32 sym gptq", dict(fmt="int4", group_size=32, symmetric=True, method="gptq")),
    ("int4 g32 asym", dict(fmt="int4", group_size=32, symmetric=False)),
    ("int4 g64 sym", dict(fmt="int4", group_size=64, symmetric=True)),
    ("int4 g64 asym", dict(fmt="int4", group_size=64, symmetric=False)),
    ("int4 g128 asym", dict(fmt="int4", group_size=128, symmetric=False)),
]


def linear_bits(path: Path) -> float | None:
    """Bits per linear weight of a safetensors checkpoint (None for a GGUF)."""
    from llama_local.formats.safetensors_io import Checkpoint
    if path.is_file():
        return None
    c = Checkpoint(path)
    params = nbytes = 0
    for name in c.keys():
        dtype, shape = c.info(name)
        size = int(dtype.itemsize) * int(math.prod(shape))
        prefix = name.rsplit(".", 1)[0]
        if LINEAR.match(prefix + ".weight"):
            nbytes += size
            if name.endswith(".weight"):
                params += int(math.prod(shape))
            elif name.endswith(".weight_packed"):
                params += int(math.prod(shape)) * 8
    return 8 * nbytes / params if params else None


def disk_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.glob("*.safetensors"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a GGUF or HF directory (default: the SmolLM2 demo)")
    ap.add_argument("--file", nargs="+", default=[str(ROOT / "tests" / "data" / f) for f in ("prose.txt", "prose2.txt")],
                    help="the text(s) to score, joined by blank lines (default: the two prose texts in tests/data)")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--calibration", default=None, help="GPTQ's calibration text (default: pydoc_data's topics)")
    ap.add_argument("--calibration-tokens", type=int, default=4096)
    ap.add_argument("--workdir", default=str(Path.home() / ".cache" / "llama_local" / "study"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from llama_local.demo import demo_model_path
        args.model = str(demo_model_path())
    src = Path(args.model)
    base = bm.ensure_bf16_dir(src, work) if src.is_file() else src
    text = "\n\n".join(Path(f).read_text(encoding="utf-8") for f in args.file)
    if args.calibration:
        calibration = Path(args.calibration).read_text(encoding="utf-8")
    else:
        from pydoc_data.topics import topics
        calibration = "\n\n".join(topics[k] for k in sorted(topics))

    rows = []

    def score(label: str, path: Path, method: str) -> None:
        llm = LLM(path, n_ctx=args.ctx, progress=False)
        r = perplexity(llm, text, ctx=args.ctx)
        rows.append({"format": label, "method": method, "bytes": disk_bytes(path), "bits": linear_bits(path),
                     "ppl": r.ppl, "error": r.error})
        print(f"{label:>18}: ppl {r.ppl:.4f} ± {r.error:.4f}", file=sys.stderr)

    score("bf16 (base)", base, "-")
    for label, kw in VARIANTS:
        out = work / f"{base.name}.{label.replace(' ', '-').replace('(', '').replace(')', '')}"
        try:
            if not (out / "config.json").is_file():
                if kw.get("method") == "gptq":
                    kw = dict(kw, calibration=calibration, calibration_tokens=args.calibration_tokens)
                quantize(base, out, force=True, **kw)
        except Exception as e:  # e.g. a group size that does not divide the model's widths
            print(f"{label:>18}: skipped ({e})", file=sys.stderr)
            continue
        score(label, out, kw.get("method", "rtn"))
    try:
        import llama_cpp  # noqa: F401
        bf16_gguf = bm.ensure_gguf(base, "bf16", kv_from=src if src.is_file() else None, out_dir=work)
        for ftype in ("q8_0", "q4_k_m", "q4_0"):
            score(f"llama.cpp {ftype.upper()}", bm.ensure_llamacpp_quantized(bf16_gguf, ftype), "llama.cpp")
    except ImportError:
        print("llama-cpp-python is not installed: no llama.cpp rows", file=sys.stderr)

    from rich.console import Console
    from rich.table import Table
    base_ppl = rows[0]["ppl"]
    t = Table(title=f"{base.name}: perplexity on {' + '.join(Path(f).name for f in args.file)}, ctx {args.ctx} (llama.cpp's method)")
    for col in ("format", "method", "size", "bits/weight (linear)", "perplexity", "vs bf16"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["format"], r["method"], f"{r['bytes'] / 2**20:,.1f} MiB",
                  f"{r['bits']:.2f}" if r["bits"] else "-", f"{r['ppl']:.4f} ± {r['error']:.4f}",
                  f"{100 * (r['ppl'] / base_ppl - 1):+.2f}%")
    Console().print(t)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
