#!/usr/bin/env bash
# The CUDA backend's run on a lent GPU machine (issue 14): each stage under its own time limit,
# every log written to $OUT (which the device tool brings back; ./gpu-out when OUT is unset).
#
#   here, once:   tools/gpu/carry_wheels.sh      (the packages that machine lacks, into .whl/)
#   there:        tools/gpu/run.sh build test     then  tools/gpu/run.sh bench
#                 then  tools/gpu/run.sh sanitize (one device-tool call each, carrying ".whl"; a
#                 call has 10 minutes, and a stage that finds no build, the machine having gone
#                 cold between calls, builds first)
#
# Stages, run in the order given (default: build test):
#   build     LLAMA_LOCAL_CUDA=ON pip install of this tree for the GPU's own arch (or
#             $LLAMA_LOCAL_CUDA_ARCHS) into /tmp/llama_local_pkg, with the carried wheels in
#             /tmp/llama_local_site; prints build_info() and system_info().
#   test      tests/test_core_stub.py and tests/test_cuda_*.py: the GPU tests and the host-side
#             ones, on this build (not the static checks nor the host emulation, which need no
#             GPU); also junit.xml.
#   bench     bench/bench_gpu.py: the kernel tables, then the forward pass of the 1B model with
#             $LLAMA_LOCAL_GPU_WEIGHTS (default bf16,int4,fp8,q8_0,q4_k_m).
#   profile   tools/gpu/profile_step.py: each kernel's device time in a prefill and a decode step
#             of the 1B shape ($LLAMA_LOCAL_GPU_WEIGHTS, default bf16,int4,q4_k_m; 4 layers).
#   sanitize  the GPU kernel tests under compute-sanitizer's memcheck (out-of-bounds and
#             misaligned accesses), where the machine's runtime allows it.
# STAGE.log holds each stage's output, env.txt the machine, and summary.txt one line per stage:
# its exit status (124: stopped at its limit, LLAMA_LOCAL_GPU_<STAGE>_S seconds) and seconds.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
PKG=/tmp/llama_local_pkg
SITE=/tmp/llama_local_site
export PYTHONPATH="$PKG:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
[ $# -gt 0 ] || set -- build test

limit() {  # limit STAGE DEFAULT
    local var="LLAMA_LOCAL_GPU_${1^^}_S"
    echo "${!var:-$2}"
}

gpu_arch() {  # this GPU's arch as LLAMA_LOCAL_CUDA_ARCHS names it (Hopper's wgmma-capable 90a)
    local cc
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
    [ -n "$cc" ] || return 1
    [ "$cc" = 90 ] && cc=90a
    echo "$cc"
}

environment() {
    {
        date -u
        nvidia-smi 2>&1 || echo "nvidia-smi: none"
        nvcc --version 2>&1 | tail -n2
        "$PY" --version
        "$PY" -m pip list 2>/dev/null | grep -iE '^(numpy|ml.dtypes|tokenizers|torch|transformers|gguf|pybind11|scikit-build-core|pytest) '
    } >"$OUT/env.txt" 2>&1
}

install_wheels() {  # the carried packages this image lacks
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    fi
}

stage_build() {
    local archs="${LLAMA_LOCAL_CUDA_ARCHS:-$(gpu_arch)}"
    if [ -z "$archs" ]; then
        echo "no GPU found (nvidia-smi) and LLAMA_LOCAL_CUDA_ARCHS unset: which arch to build?"
        return 2
    fi
    install_wheels || return
    echo "building for sm_$archs"
    LLAMA_LOCAL_CUDA=ON LLAMA_LOCAL_CUDA_ARCHS="$archs" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$PY" -m pip install --no-build-isolation --no-deps --no-index --upgrade --target "$PKG" \
        -C build-dir="build/gpu-$archs" . || return
    "$PY" -c "import llama_local, llama_local._core as c, json; print(json.dumps(c.build_info(), indent=1)); print(llama_local.system_info())"
}

built() {  # a CUDA-enabled llama_local is importable from $PKG
    "$PY" -c "import sys, llama_local._core as c
sys.exit(not (c.__file__.startswith('$PKG') and c.build_info()['cuda_compiled']))" 2>/dev/null
}

stage_test() {
    built || stage_build || return
    # Not the static checks (no GPU needed) nor the host emulation of the kernels (run here already).
    local tests
    tests=$(ls tests/test_cuda_*.py | grep -v -e '^tests/test_cuda_static.py$' -e '^tests/test_cuda_emulated_')
    # shellcheck disable=SC2086  # one file per word
    "$PY" -m pytest -p no:cacheprovider -q -rs --junitxml="$OUT/junit.xml" tests/test_core_stub.py $tests
}

stage_bench() {
    built || stage_build || return
    "$PY" bench/bench_gpu.py --model llama-1b --workdir /tmp/llama_local_bench \
        --weights "${LLAMA_LOCAL_GPU_WEIGHTS:-bf16,int4,fp8,q8_0,q4_k_m}"
}

stage_profile() {
    built || stage_build || return
    "$PY" tools/gpu/profile_step.py --weights "${LLAMA_LOCAL_GPU_WEIGHTS:-bf16,int4,q4_k_m}"
}

stage_sanitize() {
    built || stage_build || return
    if ! command -v compute-sanitizer >/dev/null; then
        echo "no compute-sanitizer here"
        return 2
    fi
    # Memcheck slows each launch many times over: the kernel tests only, not the forward's models.
    compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20 \
        "$PY" -m pytest -p no:cacheprovider -q -x -m cuda tests/test_cuda_small_ops.py \
        tests/test_cuda_int4_gemm.py tests/test_cuda_bf16_gemm.py tests/test_cuda_fp8_gemm.py \
        tests/test_cuda_flash_attention.py
}

declare -A DEFAULT_S=([build]=240 [test]=300 [bench]=540 [profile]=300 [sanitize]=540)
for stage in "$@"; do  # all checked before any runs
    if [ -z "${DEFAULT_S[$stage]:-}" ]; then
        echo "unknown stage '$stage': one of build test bench profile sanitize" >&2
        exit 2
    fi
done
: >"$OUT/summary.txt"
environment
status=0
for stage in "$@"; do
    start=$SECONDS
    # The stage runs in a subshell under timeout's clock; its output goes to the terminal and its log.
    export -f gpu_arch install_wheels built stage_build stage_test stage_bench stage_profile stage_sanitize
    export PY PKG SITE OUT
    timeout --kill-after=10 "$(limit "$stage" "${DEFAULT_S[$stage]}")" bash -c "stage_$stage" 2>&1 | tee "$OUT/$stage.log"
    rc=${PIPESTATUS[0]}
    echo "$stage: exit $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
    [ "$rc" = 0 ] || status=1
done
exit $status
