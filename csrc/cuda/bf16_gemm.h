// The 16-bit-weight GEMM/GEMV on the device: Y [M, N] = X [M, K] . W^T with W [N, K] bf16 (sm_80+)
// or fp16, row-major as checkpoints store it, X the same type, fp32 accumulation; Y 16-bit, or
// fp32 for logits. Compiled only in CUDA builds; its work split is bf16_gemm_tiling.h's.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bf16_gemm_tiling.h"

namespace ll::cuda {

struct Bf16GemmArgs {
    const uint16_t* x;   // [M][ldx], 16-byte aligned rows (ldx % 8 == 0)
    int64_t ldx;
    const uint16_t* w;   // [N][ldw], the same
    int64_t ldw;
    int64_t M, N, K;
    bool bf16;
    void* y;             // [M][ldy]: 16-bit, or fp32 when y_f32
    int64_t ldy;
    bool y_f32;
    GemmPlan plan;       // bf16_gemm_plan
    float* workspace;    // split-K partials: bf16_gemm_workspace_bytes
    size_t workspace_bytes;
};

size_t bf16_gemm_workspace_bytes(const GemmPlan& plan, int64_t M, int64_t N);

// Launches on `stream`. Returns the launch error, or cudaErrorInvalidValue with `error` saying
// which argument was wrong.
cudaError_t bf16_gemm(const Bf16GemmArgs& a, cudaStream_t stream, std::string* error);

// For tests: x [M, K] and w [N, K] (16-bit bits) uploaded, the product run with `splits` (0: the
// plan's choice) -> y [M, N] in fp32 (16-bit results widened exactly).
std::vector<float> bf16_gemm_on_device(const uint16_t* x, const uint16_t* w, int64_t M, int64_t N, int64_t K,
                                       bool bf16, bool y_f32, int splits);

}  // namespace ll::cuda
