#!/usr/bin/env python3
"""Perplexity of llama_local next to llama.cpp on the same GGUF files: SmolLM2-135M-Instruct's
shipped Q4_1, and Q8_0 / Q6_K / Q4_K_M files llama.cpp's own quantizer makes from its BF16 GGUF.

    python bench/bench_quality.py                 # needs llama-cpp-python (the peer) installed

Both engines get the same token ids (1024 tokens of tests/data/prose.txt, tokenized by
llama_local) in one window and return logits at every position; perplexity is exp of the mean
negative log-likelihood of each next token, computed the same way for both. Also printed: top-1
agreement between the engines' predictions.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_models as bm  # noqa: E402

PROSE = HERE.parent / "tests" / "data" / "prose.txt"


def nll(logits: np.ndarray, ids: list[int]) -> float:
    """Mean negative log-likelihood of each next token (the same code for both engines' logits)."""
    from llama_local.evaluate.perplexity import token_nll
    return float(token_nll(logits[:-1], np.asarray(ids[1:])).mean())


def logits_of(engine: str, path: Path, ids: list[int], out: Path, threads: int) -> None:
    """All-position logits of `engine` on `path`, in a fresh process, saved to `out` (.npy)."""
    code = {
        "llama_local": ("import sys, numpy as np, llama_local\n"
                        "ids = [int(t) for t in sys.argv[2].split(',')]\n"
                        "llm = llama_local.LLM(sys.argv[1], n_ctx=len(ids) + 16, n_threads=int(sys.argv[4]))\n"
                        "np.save(sys.argv[3], llm.logits(ids))\n"),
        "llama.cpp": ("import sys, numpy as np, llama_cpp\n"
                      "ids = [int(t) for t in sys.argv[2].split(',')]\n"
                      "l = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=len(ids) + 16, n_batch=len(ids),\n"
                      "                    n_ubatch=len(ids), n_threads=int(sys.argv[4]), logits_all=True, verbose=False)\n"
                      "l.eval(ids)\n"
                      "np.save(sys.argv[3], np.array(l.scores[:len(ids)], dtype=np.float32))\n"),
    }[engine]
    r = subprocess.run([sys.executable, "-c", code, str(path), ",".join(map(str, ids)), str(out), str(threads)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{engine} on {path.name}: {r.stderr[-2000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="shipped,q8_0,q6_k,q4_k_m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="~/.cache/llama_local/bench")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    from llama_local.demo import demo_model_path
    from llama_local.tokenizer import Tokenizer
    workdir = Path(args.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    shipped = demo_model_path()
    hf = bm.ensure_bf16_dir(shipped, workdir, log=print)
    ids = Tokenizer.load(hf).encode(PROSE.read_text())[:args.tokens]
    assert len(ids) == args.tokens, f"the text has only {len(ids)} tokens"
    rows = []
    for t in [s.strip().lower() for s in args.types.split(",") if s.strip()]:
        if t == "shipped":
            path = shipped
        else:
            bf16 = bm.ensure_gguf(hf, "bf16", kv_from=shipped, out_dir=workdir, log=print)
            path = bm.ensure_llamacpp_quantized(bf16, t, log=print)
        got = {}
        for engine in ("llama_local", "llama.cpp"):
            out = workdir / f"quality.{engine}.{path.stem}.npy"
            logits_of(engine, path, ids, out, args.threads)
            got[engine] = np.load(out)
        ppl = {e: math.exp(nll(v, ids)) for e, v in got.items()}
        agree = float((got["llama_local"].argmax(1) == got["llama.cpp"].argmax(1)).mean())
        rows.append({"file": path.name, "ppl_llama_local": ppl["llama_local"], "ppl_llama_cpp": ppl["llama.cpp"],
                     "ratio": ppl["llama_local"] / ppl["llama.cpp"], "top1_agreement": agree})
        print(f"{path.name:45s} perplexity llama_local {ppl['llama_local']:8.3f}  llama.cpp {ppl['llama.cpp']:8.3f}  "
              f"ratio {rows[-1]['ratio']:.4f}  top-1 agreement {agree:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens": args.tokens, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
