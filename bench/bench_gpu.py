#!/usr/bin/env python3
"""The CUDA kernels on a GPU: GB/s and TFLOP/s, as fractions of the memory bandwidth and of the
tensor cores' peak, on Llama-3.1-8B's shapes (the INT4 and the 16-bit-weight GEMMs, flash
attention); and decode / prefill tokens/s of the 8B layer stack as the sum of its GEMM and
attention kernels (the small ops are not in it yet).

    python bench/bench_gpu.py                 # bf16
    python bench/bench_gpu.py --dtype fp16 --depths 1024,32768
    python bench/bench_gpu.py --model llama-1b --weights bf16,int4,fp8,q8_0,q4_k_m   # also the forward pass
    python bench/bench_gpu.py --model path/to/model.gguf --kernels none   # a model of your own only

Decode is memory-bound: a product at M = 1 is reported in GB/s of weight bytes (codes and scales)
and as a fraction of the copy bandwidth measured in the same run (a 1 GiB device-to-device copy,
bytes read + written), next to the datasheet figure. Prefill is compute-bound: TFLOP/s (2 flops per
multiply-add) as a fraction of the dense 16-bit tensor-core peak of a table by compute capability
(SM count x clock x FLOP per SM per clock; GeForce parts accumulate fp32 at half that rate, and on
sm_90 the figure is wgmma's, which mma.sync does not reach).

With --model, the forward pass itself (LLM(..., device="cuda")): a --prompt-tokens prefill and
--gen-tokens greedy decode steps, best of --repeats passes, tokens/s next to the device weight bytes
each decode step reads as a fraction of the copy bandwidth, and decode again with
LLAMA_LOCAL_CUDA_GRAPHS=0 (each step's kernels launched one by one instead of one graph replayed).
"llama-1b" is bench_cpu.py's seeded random Llama-3.2-1B-shaped model, generated once into --workdir
with its variants (model_variants); anything else is a model path. Needs a CUDA build
(LLAMA_LOCAL_CUDA=ON pip install .) and a GPU; elsewhere it says why and exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402,F401  (puts the source tree on sys.path when llama_local is not installed)

from llama_local import _core  # noqa: E402

# Dense 16-bit mma FLOP per SM per clock, fp32 accumulation (datasheets: T4, A100, A10/A40, L40S,
# H100 SXM, RTX PRO 6000 Blackwell).
TC_FLOP_PER_SM_CLOCK = {(7, 5): 1024, (8, 0): 2048, (8, 6): 1024, (8, 7): 1024, (8, 9): 1024, (9, 0): 4096,
                        (12, 0): 1024}

# Llama-3.1-8B: hidden 4096, FFN 14336, 32 heads, 8 KV heads, head_dim 128, 32 layers; Q/K/V and
# gate/up fused as the device forward fuses them.
LAYER_GEMMS = [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336)]
N_LAYERS, HEADS, KV_HEADS, HEAD_DIM = 32, 32, 8, 128

WEIGHT_VARIANTS = ("bf16", "int4", "fp8", "q8_0", "q4_k_m", "q5_k_m", "q6_k")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--group", type=int, default=128, help="INT4 group size")
    ap.add_argument("--prefill", type=int, default=512, help="rows of the kernels' prefill products")
    ap.add_argument("--depths", default="1024,8192,131072", help="decode depths (cached positions)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kernels", choices=["all", "none"], default="all", help="the kernel tables (default) or not")
    ap.add_argument("--model", help="also time the forward pass of this model: llama-1b or a path")
    ap.add_argument("--weights", default="bf16", help=f"with --model llama-1b: any of {', '.join(WEIGHT_VARIANTS)}")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--workdir", default="~/.cache/llama_local/bench", help="where llama-1b is generated")
    args = ap.parse_args(argv)

    info = _core.build_info()
    if not hasattr(_core, "cuda_kernels") or info["cuda_devices"] == 0:
        print(f"no GPU to benchmark: {info['cuda_unavailable_reason']}")
        return 0
    ck = _core.cuda_kernels
    bf16 = args.dtype == "bf16"
    spec = ck.device_spec()
    cc = tuple(spec["compute_capability"])
    per_clock = TC_FLOP_PER_SM_CLOCK.get(cc, TC_FLOP_PER_SM_CLOCK[max(k for k in TC_FLOP_PER_SM_CLOCK if k <= cc)])
    peak = spec["sms"] * spec["sm_clock_ghz"] * 1e9 * per_clock
    bw = spec["copy_gbps"]
    print(f"{spec['name']}: sm_{cc[0]}{cc[1]}, {spec['sms']} SMs at {spec['sm_clock_ghz']:.2f} GHz; memory "
          f"{bw:.0f} GB/s measured (copy), {spec['mem_spec_gbps']:.0f} GB/s datasheet; tensor-core peak "
          f"{peak / 1e12:.0f} TFLOP/s ({args.dtype}, dense); best of {args.repeats}\n")
    if args.kernels == "all":
        kernel_tables(ck, args, bf16, bw, peak)
    if args.model:
        forward_pass(args, bw)
    return 0


def forward_pass(args, bw: float) -> None:
    """Prefill and decode tokens/s of LLM(..., device="cuda") on each requested model."""
    from llama_local import LLM
    if args.model == "llama-1b":
        import bench_models as bm
        workdir = Path(args.workdir).expanduser()
        workdir.mkdir(parents=True, exist_ok=True)
        names = weight_names(args.weights)  # refused before the model is generated
        models = model_variants(bm.ensure_synthetic_hf(bm.LLAMA_1B, workdir), names, workdir)
    else:
        models = [(Path(args.model).name, Path(args.model))]
    n_ctx = args.prompt_tokens + args.gen_tokens + 1
    print(f"\nforward pass: {args.prompt_tokens}-token prefill, {args.gen_tokens} greedy decode steps, best of "
          f"{args.repeats}; decode with each step a CUDA graph, then launched kernel by kernel")
    print(f"{'weights':10s} {'device weights':>15s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'GB/s':>7s} "
          f"{'% bw':>6s} {'no graphs':>10s}")
    for name, path in models:
        rates = {}
        for graphs in ("1", "0"):
            os.environ["LLAMA_LOCAL_CUDA_GRAPHS"] = graphs
            llm = LLM(path, device="cuda", n_ctx=n_ctx, progress=False, allow_beyond_trained_context=True)
            rates[graphs] = passes(llm, args)
            gb = llm.model.weight_bytes / 1e9
            formats = ", ".join(f for f, _ in llm.model.weight_formats)
            del llm
        os.environ.pop("LLAMA_LOCAL_CUDA_GRAPHS")
        (pre, dec), (_, dec_launched) = rates["1"], rates["0"]
        print(f"{name:10s} {gb:12.2f} GB {pre:14.0f} {dec:13.1f} {gb * dec:7.0f} {100 * gb * dec / bw:5.0f}% "
              f"{dec_launched:10.1f}   ({formats})")


def weight_names(weights: str) -> list[str]:
    """--weights, comma-separated, each checked."""
    names = [w.strip() for w in weights.split(",") if w.strip()]
    for w in names:
        if w not in WEIGHT_VARIANTS:
            raise SystemExit(f"--weights: {w!r} is not one of {', '.join(WEIGHT_VARIANTS)}")
    return names


def model_variants(hf: Path, names: list[str], workdir: Path, log=print) -> list[tuple[str, Path]]:
    """The files of the weight variants `names` made from the bf16 HF directory `hf`, each once:
    bf16 is `hf` itself; int4 and fp8 are `llama-local quantize`'s INT4 g32 and FP8 of it; q8_0 is
    a Q8_0 GGUF of it (gguf-py's quantizer); q4_k_m, q5_k_m and q6_k are llama.cpp's type mixes of
    its F16 GGUF: by llama.cpp's quantizer where llama-cpp-python is installed, else rounded to
    nearest into the same types, which read the same bytes through the same kernels
    (bench_models.ensure_gguf_mix)."""
    import bench_models as bm
    models = []
    for w in names:
        if w == "bf16":
            models.append((w, hf))
        elif w == "q8_0":
            models.append((w, bm.ensure_gguf(hf, "q8_0", out_dir=workdir, log=log)))
        elif w in ("int4", "fp8"):
            models.append((w, bm.ensure_ct(hf, f"ct-{w}", log=log)))
        else:
            models.append((w, bm.ensure_gguf_mix(bm.ensure_gguf(hf, "f16", out_dir=workdir, log=log), w, log=log)))
    return models


def passes(llm, args) -> tuple[float, float]:
    """Best prefill and decode tokens/s over --repeats passes from an empty cache."""
    prompt = np.random.default_rng(0).integers(0, llm.config.vocab_size, args.prompt_tokens).astype(np.int32)
    best_pre = best_dec = 0.0
    for _ in range(args.repeats):
        llm.model.reset()
        t0 = time.perf_counter()
        logits = llm.model.forward(prompt)
        t1 = time.perf_counter()
        tok = int(np.argmax(logits))
        for _ in range(args.gen_tokens):
            tok = int(np.argmax(llm.model.forward(np.array([tok], np.int32))))
        t2 = time.perf_counter()
        best_pre = max(best_pre, args.prompt_tokens / (t1 - t0))
        best_dec = max(best_dec, args.gen_tokens / (t2 - t1))
    return best_pre, best_dec


def kernel_tables(ck, args, bf16: bool, bw: float, peak: float) -> None:

    gemm_time = {}
    header = f"{'product':8s} {'N x K':>13s} {'M':>5s} {'us':>9s} {'GB/s':>8s} {'% bw':>6s} {'TFLOP/s':>8s} {'% peak':>7s}"
    for fmt in ("int4", "bf16"):
        print("INT4 W4A16 (group %d)" % args.group if fmt == "int4" else "\n16-bit weights (W16A16)",
              "on Llama-3.1-8B's shapes")
        print(header)
        for name, n, k in LAYER_GEMMS:
            for m in (1, 16, args.prefill):
                if fmt == "int4":
                    t = ck.time_int4_gemm(m, n, k, args.group, bf16=bf16, repeats=args.repeats)
                    weight_bytes = n * k / 2 + n * -(-k // args.group) * 2
                else:
                    t = ck.time_bf16_gemm(m, n, k, bf16=bf16, repeats=args.repeats)
                    weight_bytes = n * k * 2
                gemm_time[(fmt, name, m)] = t
                gbs, tflops = weight_bytes / t / 1e9, 2 * m * n * k / t / 1e12
                print(f"{name:8s} {n:>6d} x {k:<5d} {m:5d} {t * 1e6:9.1f} {gbs:8.0f} {100 * gbs / bw:5.0f}% "
                      f"{tflops:8.1f} {100 * tflops * 1e12 / peak:6.1f}%")

    print(f"\nflash attention: {HEADS} heads, {KV_HEADS} KV heads, head_dim {HEAD_DIM}")
    print(f"{'phase':8s} {'positions':>10s} {'us':>9s} {'GB/s':>8s} {'% bw':>6s} {'TFLOP/s':>8s} {'% peak':>7s}")
    depths = [int(d) for d in args.depths.split(",") if d]
    attn_time = {}
    for depth in depths:
        t = ck.time_flash_attention(1, depth - 1, HEADS, KV_HEADS, HEAD_DIM, bf16=bf16, repeats=args.repeats)
        attn_time[depth] = t
        gbs = 2 * depth * KV_HEADS * HEAD_DIM * 2 / t / 1e9
        print(f"{'decode':8s} {depth:10d} {t * 1e6:9.1f} {gbs:8.0f} {100 * gbs / bw:5.0f}% {'':>8s} {'':>7s}")
    T = args.prefill
    t_pre = ck.time_flash_attention(T, 0, HEADS, KV_HEADS, HEAD_DIM, bf16=bf16, repeats=args.repeats)
    flops = 4 * HEADS * HEAD_DIM * T * (T + 1) / 2
    print(f"{'prefill':8s} {T:10d} {t_pre * 1e6:9.1f} {'':>8s} {'':>6s} {flops / t_pre / 1e12:8.1f} "
          f"{100 * flops / t_pre / peak:6.1f}%")

    for fmt in ("int4", "bf16"):
        print(f"\nLlama-3.1-8B layer stack, {fmt} weights, sum of the kernels above (no small ops, no LM head):")
        for depth in depths:
            step = N_LAYERS * (sum(gemm_time[(fmt, name, 1)] for name, _, _ in LAYER_GEMMS) + attn_time[depth])
            print(f"  decode at depth {depth}: {1 / step:.0f} tokens/s")
        pre = N_LAYERS * (sum(gemm_time[(fmt, name, T)] for name, _, _ in LAYER_GEMMS) + t_pre)
        print(f"  prefill of {T} tokens: {T / pre:.0f} tokens/s")


if __name__ == "__main__":
    sys.exit(main())
