#!/usr/bin/env python3
"""Where a forward pass on the GPU spends its time, kernel by kernel: the device time of each
kernel of a prefill and of decode steps (CUDA graphs replayed, as `llama-local` runs them), read
with torch.profiler (CUPTI), which sees every kernel in the process, ours included.

    python tools/gpu/profile_step.py --weights bf16,int4,q4_k_m --layers 4

First the GEMM benches split by kernel (the product and its split-K sum), and the GEMMs' time with
each split-K factor at M = 1 and 16 (--no-sweep: not).

The model is bench_models' seeded random Llama-3.2-1B shape with --layers layers (fewer than the
real 16 keeps generating it quick; the per-layer kernels and the LM head are the real model's), in
the weight variants of bench_gpu.py. Needs a CUDA build of llama_local, a GPU and torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_gpu  # noqa: E402
import bench_models as bm  # noqa: E402


def short_name(kernel: str) -> str:
    """A demangled kernel name without namespaces and argument list: 'int4_gemm_kernel<true, false, 1>'."""
    name = re.sub(r"\((?:[^()]|\([^()]*\))*\)$", "", kernel.strip())
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"[A-Za-z_]\w*::|\(anonymous namespace\)::", "", name)
    return name[:90]


def kernel_table(prof, steps: int) -> list[tuple[str, int, float]]:
    """(kernel, launches per step, device µs per step) of the profiled region, longest first."""
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None)
        if us is None:
            us = e.cuda_time_total
        if us > 0 and e.count > 0 and not e.key.startswith(("cudaLaunch", "cudaGraph", "Memcpy", "Memset")):
            rows.append((short_name(e.key), e.count / steps, us / steps))
    return sorted(rows, key=lambda r: -r[2])


def show(title: str, rows, wall_us: float | None = None) -> None:
    total = sum(r[2] for r in rows)
    print(f"\n{title}: {total:.1f} us of kernels" + (f", {wall_us:.1f} us wall" if wall_us is not None else ""))
    print(f"{'kernel':90s} {'per step':>8s} {'us':>9s} {'%':>6s}")
    for name, calls, us in rows:
        print(f"{name:90s} {calls:8.1f} {us:9.1f} {100 * us / total:5.1f}%")


# Llama-3.2-1B's products (Q/K/V and gate/up fused, the tied LM head) then Llama-3.1-8B's.
SWEEP_GEMMS = [("1b qkv", 3072, 2048), ("1b o", 2048, 2048), ("1b gate_up", 16384, 2048), ("1b down", 2048, 8192),
               ("1b head", 128256, 2048)] + [("8b " + name, n, k) for name, n, k in bench_gpu.LAYER_GEMMS]
SWEEP_SPLITS = (1, 2, 4, 8, 16, 32, 64)


def splits_sweep(ck, m: int) -> None:
    """µs of each product at M = m with the plan's split-K factor, then with each of SWEEP_SPLITS:
    the data behind gemm_splits' rule (int4_gemm_tiling.h)."""
    print(f"\nsplit-K at M = {m}: us with the plan's splits, then with each factor (capped at the k stages)")
    print(f"{'product':22s} {'plan':>7s} " + " ".join(f"{s:>6d}" for s in SWEEP_SPLITS) + "   best GB/s")
    for fmt in ("int4", "bf16"):
        for name, n, k in SWEEP_GEMMS:
            if fmt == "int4" and name.endswith("head"):
                continue
            if fmt == "int4":
                def t(s):
                    return ck.time_int4_gemm(m, n, k, 128, bf16=True, repeats=3, splits=s)
                weight_bytes = n * k / 2 + n * (k // 128) * 2
            else:
                def t(s):
                    return ck.time_bf16_gemm(m, n, k, bf16=True, y_f32=name.endswith("head"), repeats=3, splits=s)
                weight_bytes = n * k * 2
            times = [t(0)] + [t(s) for s in SWEEP_SPLITS]
            print(f"{fmt + ' ' + name:22s} " + " ".join(f"{x * 1e6:6.1f}" for x in times) +
                  f"   {weight_bytes / min(times) / 1e9:6.0f} (plan {weight_bytes / times[0] / 1e9:.0f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="bf16,int4,q4_k_m")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--workdir", default="/tmp/llama_local_profile")
    ap.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the GEMMs at M = 1 and 16 with each split-K factor")
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from llama_local import LLM
    spec = dataclasses.replace(bm.LLAMA_1B, name=f"llama-3.2-1b-{args.layers}-layers", layers=args.layers)
    workdir = Path(args.workdir)
    from llama_local import _core
    ck = _core.cuda_kernels
    with profile(activities=[ProfilerActivity.CUDA]) as prof:  # the kernels' bench, split by kernel
        for name, n, k in bench_gpu.LAYER_GEMMS[:1] + bench_gpu.LAYER_GEMMS[3:]:
            ck.time_int4_gemm(1, n, k, 128, bf16=True, repeats=5)
            ck.time_bf16_gemm(1, n, k, bf16=True, repeats=5)
    show("the GEMM benches at M = 1 (qkv and down shapes, INT4 g128 and bf16; all repeats)", kernel_table(prof, 1))
    if args.sweep:
        splits_sweep(ck, 1)
        splits_sweep(ck, 16)
    hf = bm.ensure_synthetic_hf(spec, workdir)
    for name, path in bench_gpu.model_variants(hf, bench_gpu.weight_names(args.weights), workdir):
        llm = LLM(path, device="cuda", n_ctx=args.prompt_tokens + args.decode_steps + 8, progress=False,
                  allow_beyond_trained_context=True)
        print(f"\n=== {name}: {', '.join(f for f, _ in llm.model.weight_formats)}; "
              f"{llm.model.weight_bytes / 1e9:.2f} GB on the device, {args.layers} layers")
        prompt = np.random.default_rng(0).integers(0, llm.config.vocab_size, args.prompt_tokens).astype(np.int32)
        # warm: the first prefill and decode steps allocate and capture their graphs
        llm.model.forward(prompt)
        for _ in range(4):
            llm.model.forward(np.array([1], np.int32))
        llm.model.reset()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            llm.model.forward(prompt)
            wall = (time.perf_counter() - t0) * 1e6
        show(f"prefill of {args.prompt_tokens} tokens", kernel_table(prof, 1), wall)
        tok = np.array([1], np.int32)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t0 = time.perf_counter()
            for _ in range(args.decode_steps):
                llm.model.forward(tok)
            wall = (time.perf_counter() - t0) * 1e6 / args.decode_steps
        show(f"decode step at depth {args.prompt_tokens}", kernel_table(prof, args.decode_steps), wall)
        del llm
        torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
