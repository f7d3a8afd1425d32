"""The NEON kernel table (AArch64 with the dot product) against the scalar reference: the core's
sources and tests/native/kernel_check.cpp cross-compiled for aarch64 and run under qemu-aarch64.

Skipped, saying why, where the cross compiler or qemu-user is missing
(`apt install g++-aarch64-linux-gnu qemu-user`); on an aarch64 machine the NEON table is the
native one and the Python kernel tests run it directly.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["tests/native/kernel_check.cpp", "csrc/cpu/isa.cpp", "csrc/cpu/thread_pool.cpp",
           "csrc/cpu/kernels_scalar.cpp", "csrc/cpu/kernels_neon.cpp", "csrc/cpu/act_residual.cpp",
           "csrc/weights/quant_layout.cpp", "csrc/weights/gguf_blocks.cpp", "csrc/weights/linear.cpp",
           "csrc/weights/bf16_tiles.cpp", "csrc/weights/fp8_tiles.cpp"]


def test_neon_kernels_match_the_scalar_reference(tmp_path):
    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
    if not cxx or not qemu:
        pytest.skip("NEON kernels not run: needs aarch64-linux-gnu-g++ and qemu-aarch64 "
                    "(apt install g++-aarch64-linux-gnu qemu-user)")
    exe = tmp_path / "kernel_check"
    build = subprocess.run([cxx, "-std=c++17", "-O2", "-march=armv8.2-a+dotprod", "-static", "-DLL_HAVE_NEON_KERNELS",
                            '-DLL_VERSION="check"', "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                            *SOURCES, "-o", str(exe), "-lpthread"], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([qemu, "-cpu", "max", str(exe), "neon"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("all ok"), run.stdout + run.stderr
    checks = [line for line in run.stdout.splitlines() if line.rstrip().endswith(")") or line.rstrip().endswith("ok")]
    assert len(checks) >= 30, run.stdout  # every kernel family was exercised
