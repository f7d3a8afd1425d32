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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
EMU_DIR = ROOT / "tests" / "cuda_emulation"
CXX = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
FLAGS = ["-std=c++20", "-O2", "-pthread", "-DLL_CUDA_HOST_EMULATION", f"-I{CUDA_DIR}", f"-I{EMU_DIR}"]
# Each driver and the host sources it links (the repack its binding runs before the kernel).
DRIVERS = {"int4_gemm": ["int4_repack.cpp"]}
COPIES = ("at-issue", "at-wait", "random")


def cache_dir() -> Path:
    # Not LLAMA_LOCAL_CACHE: the suite points that at a fresh directory each run (conftest.py).
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llama_local" / "cuda_emulation"
    d.mkdir(parents=True, exist_ok=True)
    return d


def driver(name: str, cuda_dir: Path = CUDA_DIR) -> Path:
    """The compiled driver of kernel family `name`, built if its sources changed; cuda_dir: where
    the kernel sources are (a changed copy, for the tests that show a broken kernel fails)."""
    sources = [EMU_DIR / f"{name}_emulated.cpp"] + [cuda_dir / s for s in DRIVERS[name]]
    inputs = sorted(cuda_dir.glob("*.h")) + sorted(cuda_dir.glob("*.cuh")) + sorted((ROOT / "csrc" / "core").glob("*.h"))
    inputs += sorted(EMU_DIR.glob("*.h")) + sources
    version = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    flags = [f"-I{cuda_dir}" if f == f"-I{CUDA_DIR}" else f for f in FLAGS]
    h = hashlib.sha256(version.encode() + " ".join(flags).encode())
    for p in inputs:
        h.update(p.name.encode() + p.read_bytes())
    exe = cache_dir() / f"{name}-{h.hexdigest()[:24]}"
    if not exe.is_file():
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        out = subprocess.run([CXX, *flags, *map(str, sources), "-o", str(tmp)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"building the {name} emulation failed:\n{out.stderr[-4000:]}")
        tmp.replace(exe)
    return exe


def _run(name: str, args: list, inputs: dict[str, np.ndarray], out_shape: tuple[int, ...],
         cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        for key, a in inputs.items():
            np.ascontiguousarray(a).tofile(Path(d) / key)
        out = subprocess.run([str(driver(name, cuda_dir)), d, *map(str, args)], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"the {name} emulation failed:\n{out.stderr[-4000:]}")
        return np.fromfile(Path(d) / "y", np.uint16).reshape(out_shape)


def int4_gemm(x, codes, scales, group, mins=None, zero=0, dtype="bf16", splits=0, sms=132, copies="at-wait",
              seed=0, cuda_dir: Path = CUDA_DIR) -> np.ndarray:
    """_core.cuda_kernels.int4_gemm's y [M, N] (16-bit bits), from int4_gemm_block.cuh run on the host."""
    x = np.asarray(x).view(np.uint16)
    codes = np.asarray(codes, np.uint8)
    (M, K), N = x.shape, codes.shape[0]
    inputs = {"x": x, "codes": codes, "scales": np.asarray(scales, np.float32)}
    if mins is not None:
        inputs["mins"] = np.asarray(mins, np.float32)
    args = [M, N, K, group, zero, int(mins is not None), int(dtype == "bf16"), splits, sms, copies, seed]
    return _run("int4_gemm", args, inputs, (M, N), cuda_dir)
