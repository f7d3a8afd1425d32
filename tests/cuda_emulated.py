"""The CUDA kernels' own block code, run on the host (tests/cuda_emulation): each kernel family's
driver is compiled with the host C++ compiler, with ptx.cuh's instructions emulated
(cuda_host_emulation.h), and called here with the same arguments as its _core.cuda_kernels
binding, so that the GPU tests' checks run on a machine without a GPU too.

A driver is built once per content of the sources it reads and kept in
~/.cache/llama_local/cuda_emulation ($XDG_CACHE_HOME)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache, partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
EMU_DIR = ROOT / "tests" / "cuda_emulation"
CXX = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
FLAGS = ["-std=c++20", "-O2", "-pthread", "-DLL_CUDA_HOST_EMULATION", f"-I{CUDA_DIR}", f"-I{EMU_DIR}"]
# Each driver and the host sources it links (the repack its binding runs before the kernel).
DRIVERS = {"int4_gemm": ["int4_repack.cpp"], "fp8_gemm": ["fp8_repack.cpp"], "bf16_gemm": [], "flash_attn": [],
           "small_ops": []}
COPIES = ("at-issue", "at-wait", "random")


class EmulationError(RuntimeError):
    """A driver ran and failed: the emulation saw a read outside the buffers, a misaligned copy,
    copies in flight at the end (or the driver refused its arguments)."""


def compile_cache(kind: str) -> Path:
    """Where the tests keep what they compiled from the CUDA sources (this emulation's drivers,
    test_cuda_static.py's nvcc results) across runs: ~/.cache/llama_local/KIND ($XDG_CACHE_HOME).
    Not LLAMA_LOCAL_CACHE: the suite points that at a fresh directory each run (conftest.py)."""
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llama_local" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


@cache
def driver(name: str, cuda_dir: Path = CUDA_DIR) -> Path:
    """The compiled driver of kernel family `name`, built if its sources changed (looked up once a
    run); cuda_dir: where the kernel sources are (a changed copy, for the tests that show a broken
    kernel fails)."""
    sources = [EMU_DIR / f"{name}_emulated.cpp"] + [cuda_dir / s for s in DRIVERS[name]]
    inputs = sorted(cuda_dir.glob("*.h")) + sorted(cuda_dir.glob("*.cuh")) + sorted((ROOT / "csrc" / "core").glob("*.h"))
    inputs += sorted(EMU_DIR.glob("*.h")) + sources
    version = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    flags = [f"-I{cuda_dir}" if f == f"-I{CUDA_DIR}" else f for f in FLAGS]
    h = hashlib.sha256(version.encode() + " ".join(flags).encode())
    for p in inputs:
        h.update(p.name.encode() + p.read_bytes())
    exe = compile_cache("cuda_emulation") / f"{name}-{h.hexdigest()[:24]}"
    if not exe.is_file():
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        out = subprocess.run([CXX, *flags, *map(str, sources), "-o", str(tmp)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"building the {name} emulation failed:\n{out.stderr[-4000:]}")
        tmp.replace(exe)
    return exe


def broken_copy(tmp: Path, file: str, old: str, new: str) -> Path:
    """csrc/cuda (and the csrc/core it includes) copied under tmp, with `old` in `file` made `new`:
    a kernel with a bug planted, for the tests that show the emulation notices it. Its csrc/cuda."""
    for d in ("cuda", "core"):
        shutil.copytree(ROOT / "csrc" / d, tmp / "csrc" / d)
    path = tmp / "csrc" / "cuda" / file
    text = path.read_text()
    if text.count(old) != 1:
        raise ValueError(f"{old!r} is not in {file} once")
    path.write_text(text.replace(old, new))
    return tmp / "csrc" / "cuda"


def nth(runner, i: int, **kw):
    """runner (one of the kernels below) with the i-th way of landing copies and seed i, so that
    the cases of a test, numbered, meet each way in turn: each case one, all of them all."""
    return partial(runner, copies=COPIES[i % len(COPIES)], seed=i, **kw)


def copies_failing(run_check) -> int:
    """How many of the ways of landing copies (COPIES, by index) make run_check(i) fail, for the
    tests that plant a bug: it must fail at least one (a race shows in some ways, not all). A
    kernel that no longer builds raises, rather than counting as noticed."""
    failures = 0
    for i in range(len(COPIES)):
        try:
            run_check(i)
        except (AssertionError, EmulationError):
            failures += 1
    return failures


def _bf16(dtype: str) -> int:
    """The drivers' BF16 argument: 1 for bf16, 0 for fp16; anything else refused, as the bindings do."""
    if dtype not in ("bf16", "fp16"):
        raise ValueError(f"dtype is bf16 or fp16, not {dtype}")
    return int(dtype == "bf16")


def _run(name: str, args: list, inputs: dict[str, np.ndarray], out_shape: tuple[int, ...],
         cuda_dir: Path = CUDA_DIR, out_dtype=np.uint16) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        for key, a in inputs.items():
            np.ascontiguousarray(a).tofile(Path(d) / key)
        out = subprocess.run([str(driver(name, cuda_dir)), d, *map(str, args)], capture_output=True, text=True)
        if out.returncode:
            raise EmulationError(f"the {name} emulation failed:\n{out.stderr[-4000:]}")
        return np.fromfile(Path(d) / "y", out_dtype).reshape(out_shape)


def int4_gemm(x, codes, scales, group, mins=None, zero=0, dtype="bf16", splits=0, sms=132, copies="at-wait",
              seed=0, cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    """_core.cuda_kernels.int4_gemm's y [M, N] (16-bit bits), from int4_gemm_block.cuh run on the host."""
    x = np.asarray(x).view(np.uint16)
    codes = np.asarray(codes, np.uint8)
    (M, K), N = x.shape, codes.shape[0]
    inputs = {"x": x, "codes": codes, "scales": np.asarray(scales, np.float32)}
    if mins is not None:
        inputs["mins"] = np.asarray(mins, np.float32)
    args = [M, N, K, group, zero, int(mins is not None), _bf16(dtype), splits, sms, copies, seed]
    return _run("int4_gemm", args, inputs, (M, N), cuda_dir)


def bf16_gemm(x, w, dtype="bf16", y_f32=False, splits=0, sms=132, copies="at-wait", seed=0,
              cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    """_core.cuda_kernels.bf16_gemm's y [M, N] (float32: 16-bit results widened exactly), from
    bf16_gemm_block.cuh run on the host."""
    x, w = np.asarray(x).view(np.uint16), np.asarray(w).view(np.uint16)
    (M, K), N = x.shape, w.shape[0]
    args = [M, N, K, _bf16(dtype), int(y_f32), splits, sms, copies, seed]
    return _run("bf16_gemm", args, {"x": x, "w": w}, (M, N), cuda_dir, np.float32)


def flash_attention(q, k, v, p0, n_heads, n_kv_heads, dtype="bf16", splits=0, sms=132, copies="at-wait", seed=0,
                    cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    """_core.cuda_kernels.flash_attention's output [T, n_heads hd] (16-bit bits), from
    flash_attn_block.cuh run on the host."""
    q, k, v = (np.asarray(a).view(np.uint16) for a in (q, k, v))
    T, hd = q.shape[0], q.shape[1] // n_heads
    args = [T, p0, n_heads, n_kv_heads, hd, _bf16(dtype), splits, sms, copies, seed]
    return _run("flash_attn", args, {"q": q, "k": k, "v": v}, q.shape, cuda_dir)


def fp8_gemm(x, codes, scales, block=0, path="w8a8", dtype="bf16", splits=0, ub=None, int8=False, mins=None,
             sms=132, copies="at-wait", seed=0, cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    """_core.cuda_kernels.fp8_gemm's y [M, N] (16-bit bits), from fp8_gemm_block.cuh run on the host:
    W8A8 (x quantized per row by the kernel's own block code, with bound ub) or W8A16 (int8: integer
    codes, with mins if given). The binding's argument checks here; the repack's in the driver."""
    x = np.asarray(x).view(np.uint16)
    codes = np.asarray(codes, np.uint8)
    if x.ndim != 2 or codes.ndim != 2 or x.shape[1] != codes.shape[1]:
        raise ValueError("fp8_gemm: x [M, K] and codes [N, K] must agree on K")
    if path not in ("w8a8", "w8a16"):
        raise ValueError("fp8_gemm: path is w8a8 or w8a16")
    if _bf16(dtype) == 0 and path == "w8a8":
        raise ValueError("fp8_gemm: W8A8 takes bf16 activations")
    (M, K), N = x.shape, codes.shape[0]
    inputs = {"x": x, "codes": codes, "scales": np.asarray(scales, np.float32)}
    if mins is not None:
        inputs["mins"] = np.asarray(mins, np.float32)
    for key, a in inputs.items():  # scales, mins: [N] or [N, blocks] (the driver counts the blocks)
        if key in ("scales", "mins") and (a.ndim > 2 or (a.ndim == 2 and a.shape[0] != N)):
            raise ValueError(f"fp8_gemm: {key} must be float32 [N] or [N, blocks]")
    bound = np.inf if ub is None else float(np.float32(ub))  # the binding's float
    args = [M, N, K, block, int(path == "w8a8"), _bf16(dtype), int(int8), int(mins is not None), splits,
            repr(bound), sms, copies, seed]
    return _run("fp8_gemm", args, inputs, (M, N), cuda_dir)


# small_ops.cu's kernels, each as its _core.cuda_kernels binding (the arguments it refuses, refused
# the same way here), from small_ops_kernels.cuh run on the host. SmallOps(cuda_dir): all of them
# from the kernel sources in cuda_dir.

def _small_op(op: str, dtype: str, args: list, inputs: dict, out_shape, out_dtype, cuda_dir: Path) -> np.ndarray:
    return _run("small_ops", [op, _bf16(dtype), *args], inputs, out_shape, cuda_dir, out_dtype)


def rmsnorm(x, w, eps, dtype="bf16", cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    args = [*x.shape, repr(float(np.float32(eps)))]
    return _small_op("rmsnorm", dtype, args, {"x": x, "w": w}, x.shape, np.uint16, cuda_dir)


def rope(x, n_heads, cos, sin, p0, dtype="bf16", key_heads=0, cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    """key_heads: how many of the n_heads heads (the last ones) the kernel takes as key heads, as
    the forward's rope_qk does (the binding passes none)."""
    x = np.asarray(x).view(np.uint16)
    cos, sin = np.asarray(cos, np.float32), np.asarray(sin, np.float32)
    hd = x.shape[1] // n_heads
    args = [x.shape[0], n_heads - key_heads, key_heads, hd, cos.shape[0], p0]
    return _small_op("rope", dtype, args, {"x": x, "cos": cos, "sin": sin}, x.shape, np.uint16, cuda_dir)


def swiglu(gu, dtype="bf16", cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    gu = np.asarray(gu).view(np.uint16)
    T, F = gu.shape[0], gu.shape[1] // 2
    return _small_op("swiglu", dtype, [T, F], {"x": gu}, (T, F), np.uint16, cuda_dir)


def residual_add(x, y, dtype="bf16", cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    x, y = np.asarray(x, np.float32), np.asarray(y).view(np.uint16)
    return _small_op("residual_add", dtype, list(x.shape), {"x": x, "w": y}, x.shape, np.float32, cuda_dir)


def embed(table, tokens, dtype="bf16", cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    table, tokens = np.asarray(table).view(np.uint16), np.asarray(tokens, np.int32)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= table.shape[0]):
        raise ValueError("embed: token id outside the vocabulary")
    V, D = table.shape
    inputs = {"x": table, "w": tokens}
    return _small_op("embed", dtype, [V, tokens.size, D], inputs, (tokens.size, D), np.float32, cuda_dir)


def kv_append(k, v, n_kv_heads, n_ctx, p0, cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    k, v = np.asarray(k).view(np.uint16), np.asarray(v).view(np.uint16)
    T, hd = k.shape[0], k.shape[1] // n_kv_heads
    if p0 < 0 or p0 + T > n_ctx:
        raise ValueError("kv_append: need k, v [T, KH * hd] and p0 + T <= n_ctx")
    return _small_op("kv_append", "fp16", [T, n_kv_heads, hd, n_ctx, p0], {"x": k, "w": v},
                     (2, n_kv_heads, n_ctx, hd), np.uint16, cuda_dir)


class SmallOps:
    """The small ops above from the kernel sources in cuda_dir (a copy with a bug planted)."""

    def __init__(self, cuda_dir: Path):
        for name in ("rmsnorm", "rope", "swiglu", "residual_add", "embed", "kv_append"):
            setattr(self, name, partial(globals()[name], cuda_dir=cuda_dir))
