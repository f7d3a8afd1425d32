#!/usr/bin/env python3
"""CPU throughput of llama_local next to llama.cpp on the same weights, same threads, same run.

    python bench/bench_cpu.py                          # Llama-3.2-1B-shaped random model, 2 threads
    python bench/bench_cpu.py --model smollm2          # the real SmolLM2-135M-Instruct
    python bench/bench_cpu.py --verify                 # prove both engines' files hold the same weights
    python bench/bench_cpu.py --weights q4_0 --context 8192   # long context: 8,192-token prompt,
                                                       # decode at that depth and at depth 0

Prefill: one call evaluating --prompt-tokens token ids from an empty context. Decode: then
--gen-tokens single-token steps, each fed the argmax of the previous logits. Both engines get the
same seeded token ids. Each engine runs in its own subprocess, is loaded and warmed up once, then
the engines take turns: --repeats rounds of one timed pass each, memory bandwidth measured before
every round. See bench/README.md for the methodology.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import bench_models as bm  # noqa: E402  (also puts the source tree on sys.path if needed)

RESULT_MARK = "@@BENCH_RESULT@@ "


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Engines: the same three operations on both
# --------------------------------------------------------------------------------------------

class LlamaLocalEngine:
    name = "llama_local"

    def __init__(self, path: str, threads: int, n_ctx: int, n_batch: int = 512, kv_cache: str = "f16"):
        import llama_local

        self.llm = llama_local.LLM(path, n_ctx=n_ctx, n_threads=threads, n_batch=n_batch, kv_cache=kv_cache,
                                   allow_beyond_trained_context=True)
        self.model = self.llm.model

    def _forward(self, tokens, start_pos: int, all_logits: bool) -> np.ndarray:
        return np.asarray(self.model.forward(np.asarray(tokens, dtype=np.int32), start_pos,
                                             all_logits=all_logits))

    def prefill(self, tokens) -> np.ndarray:
        self.model.reset()
        return self._forward(tokens, 0, False).reshape(-1)

    def step(self, token: int, pos: int) -> np.ndarray:
        return self._forward([token], pos, False).reshape(-1)

    def all_logits(self, tokens) -> np.ndarray:
        self.model.reset()
        out = self._forward(tokens, 0, True)
        return out.reshape(len(tokens), -1)


class LlamaCppEngine:
    name = "llama.cpp"

    def __init__(self, path: str, threads: int, n_ctx: int, n_batch: int = 512,
                 logits_all: bool = False, flash_attn: bool = False):
        import llama_cpp

        self._lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads,
                                   n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                                   logits_all=logits_all, flash_attn=flash_attn, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def _last(self) -> np.ndarray:
        # A view of llama.cpp's logits buffer for the last evaluated position (no copy).
        ptr = self._lc.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def prefill(self, tokens) -> np.ndarray:
        self.llm.reset()
        self.llm.eval([int(t) for t in tokens])
        return self._last()

    def step(self, token: int, pos: int) -> np.ndarray:
        assert self.llm.n_tokens == pos
        self.llm.eval([token])
        return self._last()

    def all_logits(self, tokens) -> np.ndarray:
        self.llm.reset()
        self.llm.eval([int(t) for t in tokens])
        return np.array(self.llm.scores[:len(tokens)], dtype=np.float32)


def prompt_ids(n: int, vocab: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, size=n)]


def timed_pass(engine, prompt: list[int], n_gen: int, depth0: bool = False) -> dict:
    out = _timed_pass(engine, prompt, n_gen)
    if depth0:  # decode from an empty context too: what a long context costs per token
        out["decode0_tps"] = _timed_pass(engine, prompt[:1], n_gen)["decode_tps"]
    return out


def _timed_pass(engine, prompt: list[int], n_gen: int) -> dict:
    t0 = time.perf_counter()
    logits = engine.prefill(prompt)
    t1 = time.perf_counter()
    tok = int(np.argmax(logits))
    finite = bool(np.isfinite(logits).all())
    tokens = []
    t2 = time.perf_counter()
    for i in range(n_gen):
        logits = engine.step(tok, len(prompt) + i)
        tok = int(np.argmax(logits))
        tokens.append(tok)
    t3 = time.perf_counter()
    finite = finite and bool(np.isfinite(logits).all())
    return {"prefill_s": t1 - t0, "decode_s": t3 - t2,
            "prefill_tps": len(prompt) / (t1 - t0), "decode_tps": n_gen / (t3 - t2) if n_gen else 0.0,
            "finite": finite, "tokens": tokens[:16]}


def argmax_cost_s(vocab: int) -> float:
    x = np.random.default_rng(0).standard_normal(vocab).astype(np.float32)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(100):
            np.argmax(x)
        best = min(best, (time.perf_counter() - t) / 100)
    return best


# --------------------------------------------------------------------------------------------
# Worker subprocesses (one engine / one measurement per process)
# --------------------------------------------------------------------------------------------

def serve_engine(job: dict) -> None:
    """Load one engine, then answer commands from stdin, one JSON line each:
    {"cmd": "warmup"} | {"cmd": "pass"} | {"cmd": "info"} | {"cmd": "quit"}."""
    threads, n_ctx = job["threads"], job["n_ctx"]
    t = time.perf_counter()
    try:
        if job["engine"] == "llama_local":
            eng = LlamaLocalEngine(job["path"], threads, n_ctx, n_batch=job["n_batch"],
                                   kv_cache=job.get("kv_cache", "f16"))
        else:
            eng = LlamaCppEngine(job["path"], threads, n_ctx, n_batch=job["n_batch"],
                                 flash_attn=job.get("flash_attn", False))
    except Exception as e:
        import traceback
        traceback.print_exc()
        _reply({"error": f"{type(e).__name__}: {e}"})
        return
    load_s = time.perf_counter() - t
    prompt = prompt_ids(job["prompt_tokens"], job["vocab"], job["seed"])
    _reply({"load_s": load_s})
    for line in sys.stdin:
        cmd = json.loads(line)["cmd"]
        try:
            if cmd == "warmup":
                _reply(timed_pass(eng, prompt, min(8, job["gen_tokens"])))
            elif cmd == "pass":
                _reply(timed_pass(eng, prompt, job["gen_tokens"], depth0=job.get("depth0", False)))
            elif cmd == "info":
                _reply(_engine_info(job, eng, prompt))
            elif cmd == "quit":
                _reply({})
                return
        except Exception as e:
            import traceback
            traceback.print_exc()
            _reply({"error": f"{type(e).__name__}: {e}"})


def _engine_info(job: dict, eng, prompt) -> dict:
    vocab = int(np.asarray(eng.prefill(prompt[:1])).size)
    out = {"vocab": vocab, "argmax_s": argmax_cost_s(vocab)}
    if job["engine"] == "llama_local":
        out["system_info"] = _llama_local_system_info()
        out["model_info"] = {k: getattr(eng.model, k, None)
                             for k in ("isa", "n_threads", "weight_bytes", "kv_bytes", "scratch_bytes")}
    else:
        import llama_cpp
        out["llama_cpp_version"] = llama_cpp.__version__
        out["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    return out


def _reply(obj: dict) -> None:
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(obj), flush=True)


class EngineProcess:
    """One engine in its own interpreter, loaded once, driven pass by pass."""

    def __init__(self, job: dict, kind: str = "serve"):
        self.label = job["label"]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({**job, "kind": kind})]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.loaded = self._read()

    def _read(self) -> dict:
        for line in self.p.stdout:
            if line.startswith(RESULT_MARK):
                out = json.loads(line[len(RESULT_MARK):])
                if "error" in out:
                    raise RuntimeError(f"{self.label}: {out['error']}")
                return out
        raise RuntimeError(f"{self.label}: worker exited with {self.p.wait()} and no result")

    def ask(self, cmd: str) -> dict:
        self.p.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            if self.p.poll() is None:
                self.ask("quit")
        except (RuntimeError, OSError):
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def serve_bandwidth(job: dict) -> None:
    """Memory read bandwidth, on request ({"cmd": "measure"}), so that it can be measured between
    the passes: the host's bandwidth drifts with its other tenants.

    Summing a 1 GiB float32 array (L3 here is 32 MiB), best of 5: torch's reduction with
    `threads` threads is the figure used; numpy's single-threaded reduction, measured once at the
    start, is a lower bound for comparison."""
    n = job.get("bytes", 1 << 30) // 4
    a = np.ones(n, dtype=np.float32)
    np.add.reduce(a)
    info = {"bytes": n * 4,
            "numpy_1thread_GBps": n * 4 / min(_timeit(lambda: np.add.reduce(a)) for _ in range(5)) / 1e9}
    del a
    try:
        import torch
        torch.set_num_threads(job["threads"])
        t = torch.ones(n, dtype=torch.float32)
        t.sum()
        measure = lambda: t.sum()  # noqa: E731
        info["source"] = f"torch sum, {job['threads']} threads"
    except ImportError:
        a = np.ones(n, dtype=np.float32)
        measure = lambda: np.add.reduce(a)  # noqa: E731
        info["source"] = "numpy sum, 1 thread"
    _reply(info)
    for line in sys.stdin:
        cmd = json.loads(line)["cmd"]
        if cmd == "measure":
            _reply({"GBps": n * 4 / min(_timeit(measure) for _ in range(5)) / 1e9})
        elif cmd == "quit":
            _reply({})
            return


def _timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def worker_verify(job: dict) -> dict:
    """Logits of the whole prompt from one engine or transformers, saved to job['out'] (.npy)."""
    toks = prompt_ids(job["n"], job["vocab"], job["seed"])
    if job["engine"] == "transformers":
        import torch
        from transformers import LlamaForCausalLM
        torch.set_num_threads(job["threads"])
        m = LlamaForCausalLM.from_pretrained(job["path"], dtype=torch.float32,
                                             attn_implementation="eager")
        with torch.no_grad():
            out = m(torch.tensor([toks])).logits[0].float().numpy()
    elif job["engine"] == "llama_local":
        out = LlamaLocalEngine(job["path"], job["threads"], 2 * job["n"], n_batch=job["n"]).all_logits(toks)
    else:
        out = LlamaCppEngine(job["path"], job["threads"], 2 * job["n"], n_batch=job["n"],
                             logits_all=True).all_logits(toks)
    np.save(job["out"], out.astype(np.float32))
    return {"shape": list(out.shape)}


def run_worker(job: dict, timeout: float = 3600, quiet: bool = False) -> dict:
    """Run `job` in a fresh interpreter; its progress goes to our stderr."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None,
                       text=True, timeout=timeout)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            out = json.loads(line[len(RESULT_MARK):])
            if "error" in out:
                raise RuntimeError(f"{job.get('label', job['kind'])}: {out['error']}")
            return out
    raise RuntimeError(f"worker {job.get('label', job['kind'])} exited with {p.returncode} "
                       f"and no result (stdout tail: {p.stdout[-2000:]!r})")


def worker_main(arg: str) -> None:
    job = json.loads(arg)
    try:
        if job["kind"] == "serve":
            return serve_engine(job)
        if job["kind"] == "serve_bandwidth":
            return serve_bandwidth(job)
        fn = {"verify": worker_verify, "probe": worker_probe}[job["kind"]]
        out = fn(job)
    except Exception as e:  # reported to the parent, which names the worker
        import traceback
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# Availability and system information
# --------------------------------------------------------------------------------------------

def worker_probe(job: dict) -> dict:
    if job["what"] == "llama_local":
        import llama_local
        import llama_local._core  # noqa: F401
        llama_local.LLM  # noqa: B018
        return {"where": str(Path(llama_local.__file__).parent)}
    import llama_cpp
    return {"version": llama_cpp.__version__}


def _probe(what: str) -> tuple[bool, str]:
    try:
        run_worker({"kind": "probe", "what": what, "label": f"probe {what}"}, timeout=120, quiet=True)
        return True, ""
    except Exception as e:
        return False, str(e)


def llama_local_available() -> tuple[bool, str]:
    return _probe("llama_local")


def llama_cpp_available() -> tuple[bool, str]:
    return _probe("llama_cpp")


def _llama_local_system_info():
    try:
        import llama_local
        info = llama_local.system_info()
        return info if isinstance(info, (str, dict, list)) else str(info)
    except Exception as e:
        return f"unavailable ({type(e).__name__}: {e})"


def cpu_info() -> dict:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                       "avx_vnni", "amx_tile") if f in flags]
    info = {"cpu": model, "logical_cpus": os.cpu_count(), "isa": isa,
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["mem_total_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def prepare_models(args) -> dict:
    """What to compare: {'comparisons': [{'name', 'llama_local': path, 'llamacpp': [(label, path)]}],
    'vocab': n, 'desc': str}.

    --weights hf: llama_local reads the bf16 Hugging Face directory, llama.cpp F16 / BF16 GGUFs
    written from it (--gguf-types). --weights q4_0,q4_k_m,...: for each type, one GGUF (llama.cpp's
    own quantizer, from the BF16 GGUF) that both engines read: the same file."""
    workdir = Path(args.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    shipped = None
    if args.model == "llama-1b":
        hf = bm.ensure_synthetic_hf(bm.LLAMA_1B, workdir, log=log)
        kv_from, out_dir, vocab = None, None, bm.LLAMA_1B.vocab
        desc = "Llama-3.2-1B shape, random bf16 weights (seeded)"
    else:
        from llama_local.demo import demo_model_path
        shipped = demo_model_path()
        hf = bm.ensure_bf16_dir(shipped, workdir, log=log)
        kv_from, out_dir = shipped, workdir
        vocab = json.loads((hf / "config.json").read_text())["vocab_size"]
        desc = f"SmolLM2-135M-Instruct (from {shipped.name})"
    if args.weights == ["hf"]:
        lc = []
        if not args.no_llamacpp:
            lc = [(f"llama.cpp {ft.upper()}", bm.ensure_gguf(hf, ft, kv_from=kv_from, out_dir=out_dir, log=log))
                  for ft in args.gguf_types]
            if shipped is not None:
                lc.append(("llama.cpp Q4_1 (shipped)", shipped))
        return {"comparisons": [{"name": "bf16 dir", "llama_local": hf, "llamacpp": lc}], "vocab": vocab,
                "desc": desc + "; llama_local reads the bf16 HF directory"}
    comparisons = []
    bf16 = bm.ensure_gguf(hf, "bf16", kv_from=kv_from, out_dir=out_dir, log=log)
    for w in args.weights:
        if w in bm.CT_VARIANTS:  # ours from `llama-local quantize`, llama.cpp's from its quantizer
            ftype = bm.CT_VARIANTS[w][1]
            files = [] if args.no_llamacpp else [(ftype.upper(), bm.ensure_llamacpp_quantized(bf16, ftype, log=log))]
            if shipped is not None and w == "ct-int4" and not args.no_llamacpp:
                files.append(("Q4_1 (shipped)", shipped))
            name = f"{w} (llama.cpp: {', '.join(kind for kind, _ in files)})" if files else w
            comparisons.append({"name": name, "llama_local": bm.ensure_ct(hf, w, log=log),
                                "llamacpp": [(f"llama.cpp {kind}", path) for kind, path in files]})
            continue
        path = bf16 if w == "bf16" else (shipped if w == "shipped" else bm.ensure_llamacpp_quantized(bf16, w, log=log))
        name = "Q4_1 (shipped)" if w == "shipped" else w.upper()
        comparisons.append({"name": name, "llama_local": path,
                            "llamacpp": [] if args.no_llamacpp else [("llama.cpp", path)]})
    same = "both engines read the same GGUF" + (" (ct-*: each engine its own quantizer's file of the same weights)"
                                                if any(w in bm.CT_VARIANTS for w in args.weights) else "")
    return {"comparisons": comparisons, "vocab": vocab, "desc": f"{desc}; {same}"}


# --------------------------------------------------------------------------------------------
# --verify: both files hold the same weights
# --------------------------------------------------------------------------------------------

def compare(a: np.ndarray, ref: np.ndarray) -> dict:
    a, ref = a.astype(np.float64), ref.astype(np.float64)
    rel_rms = float(np.linalg.norm(a - ref) / np.linalg.norm(ref))
    max_rel = float(np.abs(a - ref).max() / np.abs(ref).max())
    agree = float((a.argmax(-1) == ref.argmax(-1)).mean())
    return {"rel_rms": rel_rms, "max_abs_over_max_ref": max_rel, "argmax_agree": agree}


def verify(args) -> dict:
    """transformers (fp32 on the bf16 HF dir) vs llama.cpp (our GGUFs) vs llama_local, all
    positions of a random prompt. A GGUF written without the q/k permutation is the negative
    control: it must fail, or the check could not tell."""
    from rich.table import Table

    workdir = Path(args.workdir).expanduser() / "verify"
    workdir.mkdir(parents=True, exist_ok=True)
    n_tok = 256  # long enough for Llama 3's low-frequency RoPE scaling to show
    cases = []
    hf = bm.ensure_synthetic_hf(bm.VERIFY_SMALL, workdir, log=log)
    cases.append(("small random", hf, None, bm.VERIFY_SMALL.vocab))
    if args.model == "smollm2":
        from llama_local.demo import demo_model_path
        shipped = demo_model_path()
        sh = bm.ensure_bf16_dir(shipped, workdir, log=log)
        cases.append(("SmolLM2-135M", sh, shipped,
                      json.loads((sh / "config.json").read_text())["vocab_size"]))
    have_ll, why_ll = llama_local_available()
    have_lc, why_lc = llama_cpp_available()
    results, ok = [], True
    for title, hf_dir, kv_from, vocab in cases:
        ref_file = workdir / f"{hf_dir.name}.ref.npy"
        base = {"kind": "verify", "n": n_tok, "vocab": vocab, "seed": args.seed, "threads": args.threads}
        log(f"verify {title}: transformers reference")
        run_worker({**base, "engine": "transformers", "path": str(hf_dir), "out": str(ref_file)})
        ref = np.load(ref_file)
        checks = []
        if have_lc:
            for ft in args.gguf_types:
                g = bm.ensure_gguf(hf_dir, ft, kv_from=kv_from, out_dir=workdir, log=log)
                checks.append((f"llama.cpp {ft.upper()} GGUF", "llama.cpp", g, True))
            bad = workdir / f"{hf_dir.name}.unpermuted.gguf"
            if not bad.is_file():
                bm.write_gguf_from_hf(hf_dir, bad, "f16", kv_from=kv_from, permute_qk=False, log=log)
            checks.append(("llama.cpp F16, q/k NOT permuted (negative control)", "llama.cpp", bad, False))
            if bm._rope_scaling(json.loads((hf_dir / "config.json").read_text())):
                bad = workdir / f"{hf_dir.name}.no-rope-freqs.gguf"
                if not bad.is_file():
                    bm.write_gguf_from_hf(hf_dir, bad, "f16", kv_from=kv_from, rope_factors=False, log=log)
                checks.append(("llama.cpp F16, no llama3 rope_freqs (negative control)", "llama.cpp",
                               bad, False))
        if have_ll:
            checks.append(("llama_local (HF dir)", "llama_local", hf_dir, True))
        for label, engine, path, should_match in checks:
            out_file = workdir / f"{hf_dir.name}.{engine}.{Path(path).name}.npy"
            log(f"verify {title}: {label}")
            try:
                run_worker({**base, "engine": engine, "path": str(path), "out": str(out_file)},
                           timeout=900)
                m = compare(np.load(out_file), ref)
            except Exception as e:
                m = {"error": str(e)}
            # Measured on the small model: llama.cpp F16 ~3e-3 (it rounds activations to f16 in
            # its matmuls), BF16 ~1.5e-2; no rope_freqs ~0.12; unpermuted q/k ~1.1.
            match = "error" not in m and m["rel_rms"] < args.verify_tol and m["argmax_agree"] >= 0.9
            passed = match == should_match
            ok &= passed
            results.append({"model": title, "check": label, "expect_match": should_match,
                            "match": match, "passed": passed, **m})
    t = Table(title=f"--verify: logits of {n_tok} random tokens vs transformers (fp32 on the bf16 weights)")
    for c in ("model", "engine / file", "rel. RMS err", "max|Δ| / max|ref|", "argmax agree", "result"):
        t.add_column(c)
    for r in results:
        if "error" in r:
            t.add_row(r["model"], r["check"], "-", "-", "-", f"[red]ERROR[/] {r['error'][:60]}")
            continue
        verdict = ("[green]PASS[/]" if r["passed"] else "[red]FAIL[/]") + (
            " (matches)" if r["match"] else " (differs, as it must)" if not r["expect_match"] else " (differs)")
        t.add_row(r["model"], r["check"], f"{r['rel_rms']:.2e}", f"{r['max_abs_over_max_ref']:.2e}",
                  f"{r['argmax_agree']:.3f}", verdict)
    con = _console()
    con.print(t)
    con.print("small random: hidden 256, 2 layers, 8 heads / 2 KV heads (GQA 4:1), Llama 3.2 RoPE "
              "scaling, tied head, vocabulary 128256; sharp attention so that q/k and RoPE mistakes show")
    if not have_lc:
        con.print(f"llama.cpp not checked: llama_cpp not importable ({why_lc})")
    if not have_ll:
        con.print(f"llama_local not checked: {why_ll}")
    con.print("[green]verify: OK[/]" if ok else "[red]verify: FAILED[/]")
    return {"ok": ok, "tolerance_rel_rms": args.verify_tol, "results": results}


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def _console():
    from rich.console import Console
    # Not a terminal (a log, CI): wide enough that the tables keep one line per row.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _fmt_info(info) -> str:
    if not isinstance(info, dict):
        return str(info)
    parts = [f"{k}={v}" for k, v in info.items() if not k.startswith("cuda")]
    if info.get("cuda_available"):
        parts.append(f"cuda_devices={info.get('cuda_devices')}")
    return ", ".join(parts)


def pick(values: list[float], stat: str) -> float:
    return max(values) if stat == "best" else statistics.median(values)


def benchmark(args) -> dict:
    from rich.table import Table

    con = _console()
    have_ll, why_ll = llama_local_available()
    have_lc, why_lc = (False, "--no-llamacpp") if args.no_llamacpp else llama_cpp_available()
    if not have_lc:
        args.no_llamacpp = True
    models = prepare_models(args)
    common = {"threads": args.threads, "n_ctx": args.n_ctx,
              "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
              "seed": args.seed, "vocab": models["vocab"], "flash_attn": args.llamacpp_flash_attn,
              "n_batch": min(args.prompt_tokens, 512), "kv_cache": args.kv_cache, "depth0": args.context > 0}
    load0 = os.getloadavg()
    # (label, engine, path, weight bytes per decoded token); a comparison's labels are its engines.
    engines = []
    for c in models["comparisons"]:
        ll_path = Path(c["llama_local"])
        c["ll_label"] = f"llama_local {c['name']}" if len(models["comparisons"]) > 1 else "llama_local"
        c["lc_labels"] = [f"{lbl} {c['name']}" if len(models["comparisons"]) > 1 else lbl for lbl, _ in c["llamacpp"]]
        if have_ll:
            bpt = bm.gguf_bytes_per_token(ll_path) if ll_path.suffix == ".gguf" else bm.hf_bytes_per_token(ll_path)
            engines.append((c["ll_label"], "llama_local", ll_path, bpt))
        for lbl, (_, g) in zip(c["lc_labels"], c["llamacpp"]):
            engines.append((lbl, "llama.cpp", g, bm.gguf_bytes_per_token(g)))
    results = {label: {"engine": engine, "path": str(path), "bytes_per_token": bpt, "runs": []}
               for label, engine, path, bpt in engines}
    procs: dict[str, EngineProcess] = {}
    bw_samples: list[float] = []
    log("measuring memory read bandwidth")
    meter = EngineProcess({"label": "bandwidth", "threads": args.threads}, kind="serve_bandwidth")
    bw_info = meter.loaded
    try:
        # Load and warm up one at a time; then alternate the timed passes between the engines
        # (rotating who goes first) so that both meet the same background load on a shared
        # machine. A waiting engine is blocked on stdin with its thread pool idle.
        for label, engine, path, _ in engines:
            log(f"{label}: loading {path}")
            try:
                procs[label] = EngineProcess({**common, "label": label, "engine": engine, "path": str(path)})
                results[label]["load_s"] = procs[label].loaded["load_s"]
                results[label]["warmup"] = procs[label].ask("warmup")
                results[label].update(procs[label].ask("info"))
            except Exception as e:
                log(f"{label}: FAILED: {e}")
                results[label]["error"] = str(e)
                procs.pop(label, None)
        order = [lbl for lbl, *_ in engines if lbl in procs]
        for r in range(args.repeats):
            bw_samples.append(meter.ask("measure")["GBps"])
            k = r % max(1, len(order))
            for label in order[k:] + order[:k]:
                time.sleep(0.5)  # let the previous engine's pool go idle
                try:
                    res = procs[label].ask("pass")
                except Exception as e:
                    log(f"{label}: FAILED: {e}")
                    results[label]["error"] = str(e)
                    procs.pop(label).close()
                    order.remove(label)
                    continue
                res["round"] = r
                results[label]["runs"].append(res)
                log(f"  pass {r + 1}/{args.repeats} {label}: prefill {res['prefill_tps']:.1f} tok/s, "
                    f"decode {res['decode_tps']:.2f} tok/s")
        bw_samples.append(meter.ask("measure")["GBps"])
    finally:
        for pr in procs.values():
            pr.close()
        meter.close()
    load1 = os.getloadavg()

    # ---- figures
    fig = {}
    for label, r in results.items():
        if not r["runs"]:
            continue
        p = [x["prefill_tps"] for x in r["runs"]]
        d = [x["decode_tps"] for x in r["runs"]]
        gbps = [x * r["bytes_per_token"] / 1e9 for x in d]
        # each pass against the faster of the two bandwidth samples that bracket its round
        frac = [g / max(bw_samples[x["round"]], bw_samples[x["round"] + 1]) for g, x in zip(gbps, r["runs"])]
        fig[label] = {"prefill_tps": pick(p, args.stat), "decode_tps": pick(d, args.stat),
                      **({"decode0_tps": pick([x["decode0_tps"] for x in r["runs"]], args.stat)}
                         if args.context else {}),
                      "prefill_all": p, "decode_all": d,
                      "decode_GBps": pick(gbps, args.stat), "decode_frac_bw": pick(frac, args.stat),
                      "decode_frac_bw_all": frac,
                      "argmax_frac_of_step": r["argmax_s"] * pick(d, args.stat),
                      "finite": all(x["finite"] for x in r["runs"])}

    # ---- report
    sysinfo = cpu_info()
    ll_info = next((r.get("system_info") for r in results.values() if r.get("system_info")), None)
    lc_info = next((r.get("llama_cpp_system_info") for r in results.values()
                    if r.get("llama_cpp_system_info")), None)
    lc_ver = next((r.get("llama_cpp_version") for r in results.values() if r.get("llama_cpp_version")), None)
    con.print(f"[bold]bench_cpu[/]  model: {models['desc']}")
    con.print(f"CPU: {sysinfo['cpu']} ({sysinfo['logical_cpus']} logical CPUs; {' '.join(sysinfo['isa'])}); "
              f"threads: {args.threads}; load avg before/after: {load0[0]:.2f}/{load1[0]:.2f}")
    if ll_info is not None:
        con.print(f"llama_local: {_fmt_info(ll_info)}")
        for label, r in results.items():
            mi = r.get("model_info") or {}
            if mi:
                con.print(f"{label}: " + ", ".join(
                    f"{k}={v / 1e9:.3f} GB" if k.endswith("bytes") and v else f"{k}={v}" for k, v in mi.items()))
    if lc_ver:
        con.print(f"llama.cpp (llama-cpp-python {lc_ver}): {lc_info}")
    con.print(f"prompt {args.prompt_tokens} tokens, decode {args.gen_tokens} tokens (greedy), "
              f"{args.repeats} timed pass(es) per engine after 1 warm-up, engines alternating; "
              f"figure = {args.stat} of the passes")

    t = Table(title=f"tokens/s ({args.stat} of {args.repeats}); ratio = llama_local / llama.cpp")
    t.add_column("weights")
    t.add_column("phase")
    t.add_column("llama_local", justify="right")
    n_lc = max(len(c["llamacpp"]) for c in models["comparisons"])
    widest = max(models["comparisons"], key=lambda c: len(c["llamacpp"]))
    for k in range(n_lc):
        t.add_column(widest["llamacpp"][k][0] if n_lc > 1 else "llama.cpp", justify="right")
        t.add_column("ratio", justify="right")
    ratios = {}
    for c in models["comparisons"]:
        ll = fig.get(c["ll_label"])
        phases = [("prefill", "prefill_tps", f"prefill ({args.prompt_tokens} tok)"),
                  ("decode", "decode_tps", f"decode ({args.gen_tokens} tok" +
                   (f" at depth {args.prompt_tokens})" if args.context else ")"))]
        if args.context:
            phases.append(("decode0", "decode0_tps", f"decode ({args.gen_tokens} tok at depth 0)"))
        for phase, key, title in phases:
            row = [c["name"] if phase == "prefill" else "", title, f"{ll[key]:.2f}" if ll else "n/a"]
            for lbl in c["lc_labels"]:
                f = fig.get(lbl)
                row.append(f"{f[key]:.2f}" if f else "failed")
                row.append(f"{ll[key] / f[key]:.2f}x" if (ll and f) else "-")
                if ll and f:
                    ratios.setdefault(lbl, {})[key] = ll[key] / f[key]
            t.add_row(*row)
    con.print(t)
    if args.context:
        for label, f in fig.items():
            con.print(f"{label}: decode at depth {args.prompt_tokens} is "
                      f"{100 * f['decode_tps'] / f['decode0_tps']:.0f}% of decode at depth 0")

    t2 = Table(title=f"decode vs memory read bandwidth ({bw_info['source']}: "
                     f"{min(bw_samples):.1f}-{max(bw_samples):.1f} GB/s over the run)")
    for c in ("engine / weights", "weight bytes / token", "decode tok/s", "GB/s read", "% of bandwidth"):
        t2.add_column(c, justify="right" if c != "engine / weights" else "left")
    for label, f in fig.items():
        t2.add_row(label, f"{results[label]['bytes_per_token'] / 1e9:.3f} GB", f"{f['decode_tps']:.2f}",
                   f"{f['decode_GBps']:.1f}", f"{100 * f['decode_frac_bw']:.0f}%")
    con.print(t2)
    con.print(f"bandwidth: sum of a 1 GiB float32 array, best of 5, before each round and at the end: "
              f"{bw_info['source']}: {', '.join(f'{x:.1f}' for x in bw_samples)} GB/s; "
              f"numpy 1 thread {bw_info['numpy_1thread_GBps']:.1f} GB/s. % of bandwidth: each pass "
              f"against the faster sample bracketing it, {args.stat} over passes")
    for label, f in fig.items():
        if not f["finite"]:
            con.print(f"[red]{label}: non-finite logits[/]")
        if f["argmax_frac_of_step"] > 0.01:
            con.print(f"[yellow]{label}: argmax is {100 * f['argmax_frac_of_step']:.1f}% of a decode step[/]")
    if not have_ll:
        con.print(f"[yellow]llama_local not measured: {why_ll}[/]")
    if not have_lc:
        con.print(f"[yellow]llama.cpp not measured: {why_lc}[/]")
    for label, r in results.items():
        if "error" in r:
            con.print(f"[red]{label} failed: {r['error']}[/]")

    return {"model": args.model, "description": models["desc"], "threads": args.threads,
            "context": args.context, "kv_cache": args.kv_cache,
            "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
            "repeats": args.repeats, "stat": args.stat, "system": sysinfo,
            "llama_local_system_info": ll_info, "llama_cpp_version": lc_ver,
            "llama_cpp_system_info": lc_info, "loadavg_before_after": [load0, load1],
            "bandwidth": {**bw_info, "samples_GBps": bw_samples},
            "figures": fig,
            "ratios": ratios,
            "raw": {k: {kk: vv for kk, vv in v.items()} for k, v in results.items()},
            "files": {label: r["path"] for label, r in results.items()}}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("llama-1b", "smollm2"), default="llama-1b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per engine (after 1 warm-up)")
    ap.add_argument("--stat", choices=("best", "median"), default="best",
                    help="which of the repeats to report (default best: on a shared machine noise "
                         "only slows a pass down)")
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--context", type=int, default=0, metavar="N",
                    help="long context: an N-token prompt (n_ctx N + --gen-tokens, llama.cpp with "
                         "flash_attn=True and its f16 KV cache), decode timed at depth N and at depth 0")
    ap.add_argument("--kv-cache", default="f16", choices=("f16", "bf16", "q8_0", "f32"),
                    help="llama_local's KV cache format (default f16)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt token ids")
    ap.add_argument("--workdir", default="~/.cache/llama_local/bench")
    ap.add_argument("--no-llamacpp", action="store_true")
    ap.add_argument("--weights", default="hf",
                    help="hf (default): llama_local reads the bf16 HF directory, llama.cpp the F16/BF16 "
                         "GGUFs of --gguf-types; or a comma list of GGUF types, each one file that both "
                         "engines read: q4_0, q4_k_m, q8_0, q6_k, q5_k_m, ... (made by llama.cpp's own "
                         "quantizer from the BF16 GGUF), bf16, and for --model smollm2 'shipped' (its Q4_1); "
                         "ct-int4 / ct-fp8: llama_local reads `llama-local quantize`'s INT4 g32 symmetric / "
                         "FP8 output (LM head quantized too), llama.cpp its Q4_0 / Q8_0 of the same weights "
                         "(and with --model smollm2, ct-int4 also against the shipped Q4_1)")
    ap.add_argument("--gguf-types", default="f16,bf16",
                    help="comma list of GGUF types for llama.cpp, one column each: f16, bf16 "
                         "(default both: bf16 is bit-exact and llama.cpp's fastest 16-bit path on "
                         "CPUs with AVX512-BF16; f16 is what convert_hf_to_gguf.py writes by default)")
    ap.add_argument("--llamacpp-flash-attn", action="store_true",
                    help="flash_attn=True for llama.cpp (llama-cpp-python's default is off)")
    ap.add_argument("--verify", action="store_true",
                    help="check that llama.cpp's GGUF and llama_local's HF dir hold the same weights "
                         "(logits vs transformers on a small model of the same structure), then exit")
    ap.add_argument("--verify-tol", type=float, default=5e-2,
                    help="max relative RMS error of the logits for --verify (default 5e-2)")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.gguf_types = [s.strip().lower() for s in args.gguf_types.split(",") if s.strip()]
    args.weights = [s.strip().lower() for s in args.weights.split(",") if s.strip()]
    for w in args.weights:
        if w not in ("hf", "bf16", "shipped") and w not in bm.LLAMACPP_FTYPES and w not in bm.CT_VARIANTS:
            ap.error(f"--weights: {w!r} is not hf, bf16, shipped, {', '.join(bm.CT_VARIANTS)} "
                     f"or one of {', '.join(bm.LLAMACPP_FTYPES)}")
    if "hf" in args.weights and len(args.weights) > 1:
        ap.error("--weights hf cannot be combined with GGUF types")
    if "shipped" in args.weights and args.model != "smollm2":
        ap.error("--weights shipped needs --model smollm2")
    for ft in args.gguf_types:
        if ft not in ("f16", "bf16"):
            ap.error(f"--gguf-types: {ft!r} is not f16 or bf16")
    if args.context:
        args.prompt_tokens, args.n_ctx, args.llamacpp_flash_attn = args.context, args.context + args.gen_tokens, True
    if args.prompt_tokens + args.gen_tokens > args.n_ctx:
        ap.error("--prompt-tokens + --gen-tokens exceeds --n-ctx")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    out = verify(args) if args.verify else benchmark(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0 if out.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
