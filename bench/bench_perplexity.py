#!/usr/bin/env python3
"""`llama-local perplexity` next to llama.cpp's perplexity method, on the same GGUF files and text.

    python bench/bench_perplexity.py                       # SmolLM2's shipped Q4_1, prose.txt, ctx 128 and 256
    python bench/bench_perplexity.py --gguf a.gguf,b.gguf --file wiki.test.raw --ctx 512

llama-cpp-python ships no llama-perplexity binary, so its side runs llama.cpp's own method
(tools/perplexity/perplexity.cpp, `perplexity()`) through the library: llama.cpp's tokenizer on the
whole text (BOS added as its vocabulary says), floor(n / ctx) chunks each evaluated from an empty
KV cache with its first token replaced by BOS, the second half of each chunk scored, PPL =
exp(mean NLL) +/- PPL * sqrt(var / (count - 1)). llama_local's side is the CLI itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROSE = HERE.parent / "tests" / "data" / "prose.txt"

LLAMA_CPP = r"""
import json, math, sys
import numpy as np
import llama_cpp
from llama_local.evaluate.perplexity import token_nll  # the same per-token NLL for both engines
path, text_file, ctx, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, n_threads=threads,
                      logits_all=True, verbose=False)
add_bos = llm._model.add_bos_token()  # llama_vocab_get_add_bos, as perplexity.cpp asks
bos = llm.token_bos()
tokens = llm.tokenize(open(text_file, "rb").read(), add_bos=bool(add_bos), special=False)
n_chunks, first = len(tokens) // ctx, ctx // 2
nll = []
for c in range(n_chunks):
    window = list(tokens[c * ctx:(c + 1) * ctx])
    if add_bos:
        window[0] = bos
    llm.reset()
    llm.eval(window)
    nll.extend(token_nll(np.asarray(llm.scores[first:ctx - 1]), np.asarray(window[first + 1:])))
nll = np.array(nll)
mean, var = nll.mean(), (nll * nll).mean() - nll.mean() ** 2
ppl = math.exp(mean)
print(json.dumps({"ppl": ppl, "error": ppl * math.sqrt(var / (len(nll) - 1)), "chunks": n_chunks,
                  "scored_tokens": len(nll), "text_tokens": len(tokens)}))
"""


def run_llama_local(path: Path, text: Path, ctx: int, threads: int) -> dict:
    r = subprocess.run([sys.executable, "-m", "llama_local.cli", "perplexity", str(path), "--file", str(text),
                        "--ctx", str(ctx), "--threads", str(threads), "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"llama-local perplexity on {path.name}: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def run_llama_cpp(path: Path, text: Path, ctx: int, threads: int) -> dict:
    r = subprocess.run([sys.executable, "-c", LLAMA_CPP, str(path), str(text), str(ctx), str(threads)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp on {path.name}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=None, help="comma-separated GGUF files (default: SmolLM2's shipped Q4_1)")
    ap.add_argument("--file", default=str(PROSE))
    ap.add_argument("--ctx", default="128,256", help="comma-separated chunk sizes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import bench_models  # noqa: F401  (puts the source tree on sys.path when llama_local is not installed)
    if args.gguf:
        files = [Path(p) for p in args.gguf.split(",")]
    else:
        from llama_local.demo import demo_model_path
        files = [demo_model_path()]
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"perplexity on {Path(args.file).name}, {args.threads} threads")
    for col in ("file", "ctx", "chunks", "tokens", "llama_local", "llama.cpp", "ratio"):
        t.add_column(col, justify="right")
    rows = []
    for path in files:
        for ctx in (int(c) for c in args.ctx.split(",")):
            ours = run_llama_local(path, Path(args.file), ctx, args.threads)
            theirs = run_llama_cpp(path, Path(args.file), ctx, args.threads)
            ratio = ours["ppl"] / theirs["ppl"]
            rows.append({"file": path.name, "ctx": ctx, "llama_local": ours, "llama.cpp": theirs, "ratio": ratio})
            t.add_row(path.name, str(ctx), str(ours["chunks"]),
                      f"{ours['text_tokens']}" + ("" if ours["text_tokens"] == theirs["text_tokens"] else f" / {theirs['text_tokens']}"),
                      f"{ours['ppl']:.4f} ± {ours['error']:.4f}", f"{theirs['ppl']:.4f} ± {theirs['error']:.4f}",
                      f"{ratio:.4f}")
    Console().print(t)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
