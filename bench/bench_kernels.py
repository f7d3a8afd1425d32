#!/usr/bin/env python3
"""Micro-benchmarks of the weight kernels, each weight built exactly as the model builds it.

    python bench/bench_kernels.py                       # every format, the best ISA, 1 and 2 threads
    python bench/bench_kernels.py --formats Q4_0,Q6_K --isa avx2,avx512

Decode (one activation row) is reported in GB/s of weight bytes streamed, against a matrix far
larger than the last-level cache, so DRAM is in the loop as in a real decode step; prefill (many
rows) in GFLOP/s (2 flops per multiply-add) on a Llama-shaped matrix. Each figure is the best of
--repeats runs; configurations alternate round by round, so a change in the machine's load hits
them all alike.

Flash attention (--kv, one row per KV cache format) is timed the same way over a cache of 16
layers at depth --attn-depth: decode (one token's query heads) in GB/s of K and V bytes read,
prefill (--attn-prefill queries ending at that depth) in GFLOP/s of QK^T and PV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402,F401  (puts the source tree on sys.path when llama_local is not installed)

from llama_local import _core  # noqa: E402
from llama_local.formats.memory_plan import KV_CACHE_BYTES  # noqa: E402

F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
              "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_NL": [0], "IQ4_XS": [0]}


def weight(fmt: str, rows: int, cols: int, rng) -> dict:
    """A spec of random weights in `fmt` (a GGUF block type, BF16 or FP8)."""
    if fmt == "FP8":  # E4M3 codes (no NaN) with one scale per row
        codes = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
        codes[(codes & 0x7F) == 0x7F] = 0x3C
        return {"format": "fp8", "data": codes, "scales": np.full(rows, 0.01, np.float32)}
    if fmt == "BF16":
        import ml_dtypes
        bits = rng.integers(0, 1 << 16, (rows, cols), dtype=np.uint16) & 0x3FFF  # finite, |w| < 2
        return {"format": "float", "data": bits.view(ml_dtypes.bfloat16)}
    import gguf
    qtype = gguf.GGMLQuantizationType[fmt]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows * cols // block, size), dtype=np.uint8)
    for off in F16_FIELDS[fmt]:
        raw[:, off:off + 2] = np.array([0.01], dtype=np.float16).view(np.uint8)
    return {"format": "gguf", "ggml_type": int(qtype), "data": raw.reshape(rows, -1), "shape": [rows, cols]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="Q4_0,Q4_1,Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS,BF16,FP8")
    ap.add_argument("--isa", default=_core.build_info()["best_isa"], help="comma list (default: the best here)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--decode-rows", type=int, default=65536, help="rows of the decode matrix (x 2048 columns)")
    ap.add_argument("--prefill", default="8192x2048x512", help="NxKxM of the prefill product")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kv", default="f16,bf16,q8_0,f32", help="KV cache formats for attention ('' for none)")
    ap.add_argument("--attn-shape", default="32,8,64", help="query heads, KV heads, head_dim (Llama-3.2-1B)")
    ap.add_argument("--attn-depth", type=int, default=8192, help="cached positions the last query sees")
    ap.add_argument("--attn-prefill", type=int, default=512, help="queries of the attention prefill")
    args = ap.parse_args(argv)
    formats = [f.strip().upper() for f in args.formats.split(",") if f.strip()]
    isas = [i.strip() for i in args.isa.split(",") if i.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    pn, pk, pm = (int(v) for v in args.prefill.split("x"))
    rng = np.random.default_rng(0)
    print(f"CPU ISAs here: {_core.build_info()['isas_supported']}; decode: {args.decode_rows}x2048, "
          f"prefill: N={pn} K={pk} M={pm}; best of {args.repeats}")
    print(f"{'format':8s} {'isa':11s} {'threads':>7s} {'decode GB/s':>12s} {'prefill GFLOP/s':>16s}")
    for fmt in formats:
        dec = _core.kernels.Packed(weight(fmt, args.decode_rows, 2048, rng), n_threads=2)
        pre = _core.kernels.Packed(weight(fmt, pn, pk, rng), n_threads=2)
        best: dict = {}
        for _ in range(args.repeats):
            for isa in isas:
                for th in threads:
                    t = dec.time_matmul(1, isa=isa, n_threads=th, iters=5, repeats=1)
                    gbps = dec.nbytes / t / 1e9
                    t = pre.time_matmul(pm, isa=isa, n_threads=th, iters=1, repeats=1)
                    gflops = 2 * pn * pk * pm / t / 1e9
                    b = best.setdefault((isa, th), [0.0, 0.0])
                    b[0], b[1] = max(b[0], gbps), max(b[1], gflops)
        for (isa, th), (gbps, gflops) in best.items():
            print(f"{fmt:8s} {isa:11s} {th:7d} {gbps:12.1f} {gflops:16.1f}", flush=True)
    kvs = [k.strip() for k in args.kv.split(",") if k.strip()]
    if kvs:
        attention(kvs, isas, threads, args)
    return 0


def attention(kvs, isas, threads, args) -> None:
    H, KH, hd = (int(v) for v in args.attn_shape.split(","))
    depth, T = args.attn_depth, args.attn_prefill
    p0 = max(depth - T, 0)
    # decode reads K and V of depth positions; prefill's query t (position p0 + t) sees p0 + t + 1
    flops = 4 * H * hd * sum(p0 + t + 1 for t in range(depth - p0))
    print(f"\nflash attention: {H} query heads, {KH} KV heads, head_dim {hd}; decode at depth {depth}, "
          f"prefill of {depth - p0} queries from position {p0}; best of {args.repeats}")
    print(f"{'KV cache':8s} {'isa':11s} {'threads':>7s} {'decode GB/s':>12s} {'prefill GFLOP/s':>16s}")
    time_attention = _core.kernels.time_attention
    for kv in kvs:
        best: dict = {}
        for _ in range(args.repeats):
            for isa in isas:
                for th in threads:
                    t = time_attention(1, depth - 1, H, KH, hd, kv_cache=kv, isa=isa, n_threads=th, repeats=1)
                    gbps = 2 * depth * KH * hd * KV_CACHE_BYTES[kv] / t / 1e9
                    t = time_attention(depth - p0, p0, H, KH, hd, kv_cache=kv, isa=isa, n_threads=th, repeats=1)
                    b = best.setdefault((isa, th), [0.0, 0.0])
                    b[0], b[1] = max(b[0], gbps), max(b[1], flops / t / 1e9)
        for (isa, th), (gbps, gflops) in best.items():
            print(f"{kv:8s} {isa:11s} {th:7d} {gbps:12.1f} {gflops:16.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
