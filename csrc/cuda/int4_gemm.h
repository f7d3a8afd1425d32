// The W4A16 GEMM/GEMV on the device: Y [M, N] = X [M, K] . W^T, X and Y 16-bit (bf16 on sm_80+,
// fp16 anywhere), W INT4 in the layout of int4_layout.h, fp32 accumulation. Compiled only in CUDA
// builds (LL_HAVE_CUDA); the index math it runs is in int4_layout.h and int4_gemm_tiling.h.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "int4_gemm_tiling.h"
#include "int4_repack.h"

namespace ll::cuda {

// A repacked weight's buffers in device memory.
struct Int4DeviceWeight {
    Int4Geometry g;
    bool bf16;
    bool has_min;
    int zero;
    const uint32_t* q;
    const uint16_t* scales;
    const uint16_t* mins;  // null unless has_min
};

// fp32 partial sums a split-K plan needs (0 for one split).
size_t int4_gemm_workspace_bytes(const GemmPlan& plan, int64_t M, int64_t N);

// Y [M, N] (row stride ldy) = X [M, K] (row stride ldx, in halves) . W^T on `stream`. X must be
// 16-byte aligned with ldx % 8 == 0 (each 8 k is one 16-byte copy); its columns from K on are never
// read. With plan.splits > 1 the partial sums go to `workspace` (int4_gemm_workspace_bytes) and
// are added in split order by a second kernel, so results do not depend on timing. Returns the
// launch error, or cudaErrorInvalidValue with `error` saying which argument was wrong.
cudaError_t int4_gemm(const uint16_t* x, int64_t ldx, int64_t M, const Int4DeviceWeight& w, uint16_t* y,
                      int64_t ldy, const GemmPlan& plan, float* workspace, size_t workspace_bytes,
                      cudaStream_t stream, std::string* error);

// For tests: uploads a host weight and X [M, K] (16-bit bits, row-major), runs int4_gemm with
// `splits` (0: int4_gemm_plan's choice for this device) and returns Y [M, N]. Throws
// std::runtime_error with the CUDA error's text.
std::vector<uint16_t> int4_gemm_on_device(const Int4GpuWeight& w, const uint16_t* x, int64_t M, int splits);

}  // namespace ll::cuda
