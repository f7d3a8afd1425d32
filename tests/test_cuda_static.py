"""The CUDA sources compile with nvcc for every architecture the wheel targets, on a machine with no
GPU (DESIGN.md: CUDA code compiles in CI wherever nvcc is present). A plain `pip install .` here
builds the CPU core only (no NVIDIA driver), so this is where csrc/cuda meets nvcc.

Each check compiles on its own, two at a time, and its result is kept in
~/.cache/llama_local/cuda_static ($XDG_CACHE_HOME) under a hash of the sources and the command, so an unchanged tree
does not compile again. For device code, ptxas's own report is parsed: no spills, no stack frame.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cuda_emulated import compile_cache

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
CORE_DIR = ROOT / "csrc" / "core"  # device_math.h builds on core/dtype.h
NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed: the CUDA sources cannot be compiled here")

# CMakeLists.txt's default LLAMA_LOCAL_CUDA_ARCHS, read from it so the two cannot drift.
ARCHS = re.search(r'set\(LLAMA_LOCAL_CUDA_ARCHS "([^"]+)"', (ROOT / "CMakeLists.txt").read_text()).group(1).split(";")

# Device code over every function of the shared headers, so that each is compiled for the device
# exactly as a kernel will call it (the host runs the same functions in test_cuda_device_math.py).
HEADER_PROBE = r"""
#include "cuda/device_math.h"
#include "cuda/mma_frag.h"
#include "cuda/int4_layout.h"
using namespace ll;
using namespace ll::cuda;
__global__ void probe(const uint8_t* codes, const float* x, const uint32_t* packed, float* out, uint16_t* h, int* rc) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = e4m3_to_float(codes[i]) + int4_dequant(packed[i], i & 7, x[i], 8);
    h[i] = float_to_bf16(x[i]) ^ float_to_e4m3(x[i]);
    float wa, wb;
    const SoftmaxPartial p = softmax_merge(SoftmaxPartial{x[i], 1.0f}, SoftmaxPartial{x[i + 1], 2.0f}, &wa, &wb);
    out[i + 1] = softmax_finish(wa * x[i] + wb * x[i + 1], p);
    const FragCoord a = mma_a(MmaShape::M16N8K32, threadIdx.x & 31, i & 15), b = mma_b(MmaShape::M16N8K16, threadIdx.x & 31, i & 3);
    const FragCoord c = mma_c(threadIdx.x & 31, i & 3);
    rc[i] = a.row + a.col + b.row + b.col + c.row + c.col;
}
// The INT4 load path as the W4A16 kernel runs it: each lane's 128-bit loads of its tile words,
// scales and mins at the layout's offsets, dequantized into B fragments (bf16 needs sm_80).
template <bool kBf16, bool kHasMin>
__device__ uint32_t int4_probe(const uint4* q, const uint4* s, const uint4* m, const Int4Geometry& g, int zero) {
    const int lane = threadIdx.x & 31;
    const uint4 qv = q[int4_q_offset(g, blockIdx.x, blockIdx.y, lane) / 4];
    const uint4 sv = s[int4_scale_offset(g, blockIdx.x, blockIdx.y, lane) / 8];
    const uint4 mv = m[int4_scale_offset(g, blockIdx.x, blockIdx.y, lane) / 8];
    const uint32_t qa[4] = {qv.x, qv.y, qv.z, qv.w}, sa[4] = {sv.x, sv.y, sv.z, sv.w}, ma[4] = {mv.x, mv.y, mv.z, mv.w};
    uint32_t frag[kInt4SubTiles][2];
    int4_tile_fragments<kBf16, kHasMin>(qa, sa, ma, int4_bias<kBf16>(zero), frag);
    uint32_t acc = 0;
    for (int t = 0; t < kInt4SubTiles; ++t) acc = acc * 3 + (frag[t][0] ^ frag[t][1]);
    const FragCoord c = int4_tile_coord(lane, threadIdx.y & 3, threadIdx.z & 7);
    return acc + uint32_t(c.row * 64 + c.col + int4_scale_col(lane, threadIdx.y & 7));
}
__global__ void probe_int4(const uint4* q, const uint4* s, const uint4* m, Int4Geometry g, int zero, uint32_t* out) {
    uint32_t r = int4_probe<false, false>(q, s, m, g, zero) ^ int4_probe<false, true>(q, s, m, g, zero);
#if __CUDA_ARCH__ >= 800
    r ^= int4_probe<true, false>(q, s, m, g, zero) ^ int4_probe<true, true>(q, s, m, g, zero);
#endif
    out[blockIdx.x * blockDim.x + threadIdx.x] = r;
}
"""


def nvcc_version() -> str:
    return subprocess.run([NVCC, "--version"], capture_output=True, text=True, check=True).stdout


def compile_once(name: str, source: str, args: list[str]) -> dict:
    """nvcc on `source` (text) with `args`: {"rc", "log", "ptx"}, from the cache when the headers,
    the source, the command and nvcc itself are unchanged."""
    headers = "".join(p.read_text() for p in sorted(CUDA_DIR.glob("*.h")) + sorted(CUDA_DIR.glob("*.cuh"))
                      + sorted(CORE_DIR.glob("*.h")))
    key = hashlib.sha256(json.dumps([headers, source, args, nvcc_version()]).encode()).hexdigest()[:24]
    hit = compile_cache("cuda_static") / f"{name}-{key}.json"
    if hit.is_file():
        return json.loads(hit.read_text())
    work = hit.parent / f"work-{key}"
    work.mkdir(exist_ok=True)
    src = work / "src.cu"
    src.write_text(source)
    out = subprocess.run([NVCC, *args, "-I", str(ROOT / "csrc"), "-I", str(CUDA_DIR), "-o", "out.o", "src.cu"],
                         capture_output=True, text=True, cwd=work)
    result = {"rc": out.returncode, "log": out.stdout + out.stderr,
              "ptx": "".join(p.read_text() for p in sorted(work.glob("*.ptx")))}
    tmp = hit.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(hit)
    shutil.rmtree(work, ignore_errors=True)
    return result


def arch_flags(arch: str) -> list[str]:
    # SASS for the arch, and the PTX kept (--keep) in the work directory.
    return [f"-gencode=arch=compute_{arch},code=[sm_{arch},compute_{arch}]", "-std=c++17", "-O3", "-c",
            "-Xptxas", "-v", "-Werror", "all-warnings", "--keep", "--keep-dir", "."]


def run_all(jobs: list[tuple[str, str, list[str]]]) -> list[dict]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda j: compile_once(*j), jobs))


@pytest.mark.parametrize("source", sorted(p.name for p in CUDA_DIR.glob("*.cu")))
def test_each_cuda_source_compiles_for_every_arch(source):
    text = (CUDA_DIR / source).read_text()
    results = run_all([(f"{source}-{a}", text, arch_flags(a)) for a in ARCHS])
    for arch, r in zip(ARCHS, results):
        assert r["rc"] == 0, f"{source} for sm_{arch}:\n{r['log']}"
        for name, f in ptxas_functions(r["log"]).items():  # every kernel, the small ones too
            assert f["stack"] == f["spill_stores"] == f["spill_loads"] == 0, f"{source} sm_{arch} {name}: {f}"


def test_the_shared_headers_compile_for_the_device_without_spills():
    results = run_all([(f"probe-{a}", HEADER_PROBE, arch_flags(a)) for a in ARCHS])
    for arch, r in zip(ARCHS, results):
        assert r["rc"] == 0, f"sm_{arch}:\n{r['log']}"
        stats = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", r["log"])
        assert stats, f"sm_{arch}: ptxas printed no resource usage:\n{r['log']}"
        assert all(s == ("0", "0", "0") for s in stats), f"sm_{arch}: stack or spills:\n{r['log']}"
        assert ".entry" in r["ptx"] and "probe" in r["ptx"], f"sm_{arch}: no PTX kept"
        # The fast exponential of the softmax merge, not a library call.
        assert "ex2.approx" in r["ptx"], f"sm_{arch}: softmax_exp is not ex2.approx"
        # INT4 dequantization: lop3 for the magic numbers, then one packed fma per step.
        assert "lop3.b32" in r["ptx"] and "fma.rn.f16x2" in r["ptx"], f"sm_{arch}: INT4 dequant instructions"
        assert ("fma.rn.bf16x2" in r["ptx"]) == (int(arch.rstrip("a")) >= 80), f"sm_{arch}: bf16 dequant"


def ptxas_functions(log: str) -> dict[str, dict[str, int]]:
    """ptxas -v's report per entry function: {mangled name: {registers, stack, spill_stores, spill_loads}}."""
    out = {}
    for part in log.split("Compiling entry function '")[1:]:
        name = part[:part.index("'")]
        regs = re.search(r"Used (\d+) registers", part)
        stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", part)
        assert regs and stack, f"no resource usage for {name}:\n{part}"
        out[name] = {"registers": int(regs.group(1)), "stack": int(stack.group(1)),
                     "spill_stores": int(stack.group(2)), "spill_loads": int(stack.group(3))}
    return out


def compiled(source: str):
    """(arch, sm, ptx, ptxas functions) of csrc/cuda/<source> for each arch: the same cached jobs as
    test_each_cuda_source_compiles_for_every_arch, each required to have compiled."""
    text = (CUDA_DIR / source).read_text()
    for arch, r in zip(ARCHS, run_all([(f"{source}-{a}", text, arch_flags(a)) for a in ARCHS])):
        assert r["rc"] == 0, f"sm_{arch}:\n{r['log']}"
        yield arch, int(arch.rstrip("a")), r["ptx"], ptxas_functions(r["log"])


MMA_BF16 = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
MMA_F16 = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
MMA_F16_TURING = "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32"


def assert_16_bit_tensor_cores(arch: str, sm: int, ptx: str, bf16_marker: str = "bf16") -> None:
    """bf16 and f16 m16n8k16 mma and cp.async copies from sm_80; on Turing, fp16 m16n8k16 as two
    m16n8k8 with plain loads, and nothing bf16 (bf16_marker: what bf16 code would show)."""
    if sm >= 80:
        for instr in (MMA_BF16, MMA_F16, "cp.async.cg.shared.global", "cp.async.wait_group"):
            assert instr in ptx, f"sm_{arch}: {instr} missing"
    else:
        assert MMA_F16_TURING in ptx, f"sm_{arch}: no fp16 mma"
        assert bf16_marker not in ptx and "m16n8k16" not in ptx and "cp.async" not in ptx, f"sm_{arch}: not on Turing"


# The W4A16 GEMM's occupancy targets (csrc/cuda/int4_gemm_tiling.h, gemm_min_blocks): 4 blocks of
# 128 threads per SM (16 warps, to hide the weight stream's latency at decode) for 1 or 2 A
# fragments, 3 blocks for 3; an SM has 65536 registers, so a thread may use 65536 / (128 blocks).
GEMM_BLOCKS_PER_SM = {1: 4, 2: 4, 3: 3}


def test_int4_gemm_uses_tensor_cores_without_spills():
    for arch, sm, ptx, funcs in compiled("int4_gemm.cu"):
        assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in ptx, f"sm_{arch}: activations not loaded by ldmatrix"
        assert "lop3.b32" in ptx and "fma.rn.f16x2" in ptx, f"sm_{arch}: no in-register INT4 dequantization"
        assert_16_bit_tensor_cores(arch, sm, ptx)
        assert ("fma.rn.bf16x2" in ptx) == (sm >= 80), f"sm_{arch}: bf16 dequantization"
        gemms = {n: f for n, f in funcs.items() if "int4_gemm_kernel" in n}
        assert len(gemms) == 12 and sum("splitk_reduce" in n for n in funcs) == 2, sorted(funcs)
        for name, f in funcs.items():
            assert f["stack"] == f["spill_stores"] == f["spill_loads"] == 0, f"sm_{arch} {name}: {f}"
        for name, f in gemms.items():
            # mangled template arguments: <bool bf16, bool has_min, int m_frags>
            bf16, _, m_frags = re.search(r"int4_gemm_kernelILb([01])ELb([01])ELi(\d)E", name).groups()
            if sm < 80 and bf16 == "1":
                continue  # the trap that int4_gemm never launches there
            bound = 65536 // (128 * GEMM_BLOCKS_PER_SM[int(m_frags)])
            assert f["registers"] <= bound, f"sm_{arch} {name}: {f['registers']} registers > {bound}"


# Flash attention's occupancy targets (csrc/cuda/flash_attn.cu): blocks of 128 threads per SM, by
# kernel and head_dim. Prefill keeps Q, S and O fragments in registers (for head_dim 128: 32 + 32 +
# 64 fp32/bf16x2 registers before addresses): 2 blocks for 128 (and 48 KB of shared memory each),
# 3 for 64; decode holds a 16-position slice of S, so 3 and 4; the merge kernel is small.
FA_BLOCKS_PER_SM = {("prefill", 128): 2, ("prefill", 64): 3, ("decode", 128): 3, ("decode", 64): 4,
                    ("decode_merge", 128): 8, ("decode_merge", 64): 8}


def test_flash_attention_uses_tensor_cores_without_spills():
    for arch, sm, ptx, funcs in compiled("flash_attn.cu"):
        for instr in ("ldmatrix.sync.aligned.m8n8.x4.shared.b16", "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
                      "ex2.approx", "shfl.sync.bfly"):
            assert instr in ptx, f"sm_{arch}: {instr} missing"
        assert_16_bit_tensor_cores(arch, sm, ptx)
        assert ("cvt.rn.bf16x2.f32" in ptx) == (sm >= 80), f"sm_{arch}: bf16 packing"
        assert len(funcs) == 12, sorted(funcs)  # 3 kernels x bf16/fp16 x head_dim 64/128
        for name, f in funcs.items():
            assert f["stack"] == f["spill_stores"] == f["spill_loads"] == 0, f"sm_{arch} {name}: {f}"
            kind, bf16, hd = re.search(r"fa_(prefill|decode_merge|decode)_kernelILb([01])ELi(\d+)E", name).groups()
            if sm < 80 and bf16 == "1":
                continue  # the trap flash_attention never launches there
            bound = min(255, 65536 // (128 * FA_BLOCKS_PER_SM[(kind, int(hd))]))
            assert f["registers"] <= bound, f"sm_{arch} {name}: {f['registers']} registers > {bound}"


def test_bf16_gemm_uses_tensor_cores_without_spills():
    for arch, sm, ptx, funcs in compiled("bf16_gemm.cu"):
        assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in ptx, f"sm_{arch}: no ldmatrix"
        # (the kernels' names hold "bf16": look for the instructions' type suffix)
        assert_16_bit_tensor_cores(arch, sm, ptx, bf16_marker=".bf16")
        gemms = {n: f for n, f in funcs.items() if "bf16_gemm_kernel" in n}
        assert len(gemms) == 12 and sum("splitk_reduce" in n for n in funcs) == 4, sorted(funcs)
        for name, f in gemms.items():
            # mangled template arguments: <bool bf16, bool fp32 output, int m_frags>
            bf16, _, m_frags = re.search(r"bf16_gemm_kernelILb([01])ELb([01])ELi(\d)E", name).groups()
            if sm < 80 and bf16 == "1":
                continue  # the trap bf16_gemm never launches there
            bound = 65536 // (128 * GEMM_BLOCKS_PER_SM[int(m_frags)])
            assert f["registers"] <= bound, f"sm_{arch} {name}: {f['registers']} registers > {bound}"


# The FP8 GEMM's occupancy targets (csrc/cuda/fp8_gemm_tiling.h, fp8_gemm_min_blocks): blocks of
# 128 threads per SM by path, folding and A fragments, from a lane's fp32 accumulators (32 per
# fragment, twice that where partial sums fold into totals: always for W8A8, for block-scaled
# W8A16): W8A8 4 blocks for 64 accumulators, 3 for 128 (2 on sm_90, whose ptxas needs ~30 more
# registers for the same e4m3 code); W8A16 (expansion temporaries) 4 for 32, 3 for 64 and 96, 2
# for 128.
FP8_BLOCKS_PER_SM = {("e4m3", True, 1): 4, ("e4m3", True, 2): 3,
                     ("w8a16", False, 1): 4, ("w8a16", False, 2): 3, ("w8a16", False, 3): 3,
                     ("w8a16", True, 1): 3, ("w8a16", True, 2): 2}
FP8_ACTS = {"0": "e4m3", "1": "bf16", "2": "fp16"}  # fp8_gemm.cu's enum Fp8Act


def test_fp8_gemm_uses_e4m3_mma_where_it_exists_without_spills():
    for arch, sm, ptx, funcs in compiled("fp8_gemm.cu"):
        # W8A8 on the FP8 tensor cores of Ada, Hopper and Blackwell, and nowhere else: below sm_89
        # only the W8A16 kernels are built (the e4m3 ones are traps the launcher never reaches).
        e4m3 = "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"
        assert (e4m3 in ptx) == (sm >= 89), f"sm_{arch}: e4m3 mma {'missing' if sm >= 89 else 'present'}"
        # The W8A16 expansion (prmt sign-extension, then one packed fma) and ldmatrix everywhere;
        # the activation quantization's IEEE divisions (never an approximate reciprocal) likewise.
        for instr in ("ldmatrix.sync.aligned.m8n8.x4.shared.b16", "prmt.b32", "fma.rn.f16x2", "shfl.sync.bfly",
                      "div.rn.f32"):
            assert instr in ptx, f"sm_{arch}: {instr} missing"
        assert_16_bit_tensor_cores(arch, sm, ptx)
        assert ("fma.rn.bf16x2" in ptx) == (sm >= 80), f"sm_{arch}: bf16 expansion"
        gemms = {n: f for n, f in funcs.items() if "fp8_gemm_kernel" in n}
        # W8A8: 2 (folding); W8A16 bf16, fp16, each with E4M3 and integer codes: 3 per-column + 2 folding,
        # and for integer codes 2 more folding every k16 step (blocks of 16) and 2 adding mins
        assert len(gemms) == 2 + 2 * 2 * 5 + 2 * 2 + 2 * 2, sorted(funcs)
        assert sum("splitk_reduce" in n for n in funcs) == 2 and sum("fp8_quantize_kernel" in n for n in funcs) == 1
        for name, f in funcs.items():
            assert f["stack"] == f["spill_stores"] == f["spill_loads"] == 0, f"sm_{arch} {name}: {f}"
        for name, f in gemms.items():
            # mangled template arguments: <Fp8Act act, bool int8, int fold (0 none, 1 tiles, 2 steps, 3 mins),
            # int m_frags>
            act, _, fold, m_frags = re.search(r"fp8_gemm_kernelILNS\d_6Fp8ActE(\d)ELb([01])ELi(\d)ELi(\d)E",
                                              name).groups()
            fold = "0" if fold == "0" else "1"
            act = FP8_ACTS[act]
            if (act == "e4m3" and sm < 89) or (act == "bf16" and sm < 80):
                continue  # the traps fp8_gemm never launches there
            blocks = FP8_BLOCKS_PER_SM[("e4m3" if act == "e4m3" else "w8a16", fold == "1", int(m_frags))]
            if act == "e4m3" and sm == 90 and blocks == 3:
                blocks = 2
            bound = min(255, 65536 // (128 * blocks))
            assert f["registers"] <= bound, f"sm_{arch} {name}: {f['registers']} registers > {bound}"
