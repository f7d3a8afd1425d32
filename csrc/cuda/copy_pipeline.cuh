// The cp.async pipeline the GEMMs share (int4_gemm_block.cuh, fp8_gemm_block.cuh,
// bf16_gemm_block.cuh), written once: a block streams stages [begin, begin + n) of its k range
// through kStages shared-memory buffers, kStages - 1 stages in flight while it multiplies one.
// Device code, run on the host too by tests/cuda_emulation (through ptx.cuh's emulation).
#pragma once
#include <cstdint>

#include "ptx.cuh"

namespace ll::cuda {
namespace {

// load(stage, buf) issues the copies of stage `stage` into buffer buf; use(it, buf) multiplies
// iteration it's stage (begin + it), landed in buffer buf. Every iteration commits one copy group
// (empty past the end), so "all but kStages - 2 groups done" always means "this iteration's stage
// has landed".
template <int kStages, class Load, class Use>
__device__ __forceinline__ void copy_pipeline(int64_t begin, int64_t n, Load load, Use use) {
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < n) load(begin + s, s);
        copy_commit();
    }
    for (int64_t it = 0; it < n; ++it) {
        copy_wait<kStages - 2>();
        __syncthreads();  // the stage is visible to all, and the buffer refilled below is free
        const int64_t next = it + kStages - 1;
        if (next < n) load(begin + next, int(next % kStages));
        copy_commit();
        use(it, int(it % kStages));
    }
}

}  // namespace
}  // namespace ll::cuda
