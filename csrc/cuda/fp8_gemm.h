// The FP8 GEMM/GEMV on the device: Y [M, N] = X [M, K] . W^T with W E4M3 in the layout of
// fp8_layout.h (per-column or per-block fp32 scales), fp32 accumulation. Two paths:
//   W8A8   (sm_89+) X quantized per row to E4M3 by fp8_quantize_activations, mma.sync e4m3 with
//          its 22-bit partial sums promoted to fp32 at least every 128 k (fp8_gemm_tiling.h);
//          Y bf16 = rn(sa[m] * sum_b sw[n, b] * sum_{k in b} qa[m, k] qw[n, k])
//   W8A16  (sm_80+ bf16, any arch fp16) X and Y 16-bit, the codes expanded exactly to X's type;
//          Y = rn(sum_b sw[n, b] * sum_{k in b} x[m, k] qw[n, k]), and for integer codes with
//          mins + sum_b mw[n, b] * sum_{k in b} x[m, k]
// Compiled only in CUDA builds (LL_HAVE_CUDA); the index math it runs is in fp8_layout.h and
// fp8_gemm_tiling.h.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fp8_gemm_tiling.h"
#include "fp8_repack.h"

namespace ll::cuda {

// A repacked weight's buffers in device memory.
struct Fp8DeviceWeight {
    Fp8TileGeometry g;
    const uint32_t* q;
    const float* scales;
    bool int8 = false;  // signed integer codes (GGUF Q8_0, Q5_0; 8-bit checkpoints): W8A16 only
    const float* mins = nullptr;  // integer codes with mins (GGUF Q5_K, Q5_1): in the scales' layout
};

// W8A8's activations: X [M, K] bf16 (row stride ldx halves) -> codes [M, ldq] in slot order,
// zeros from K to ldq (ldq >= ceil(K / 32) * 32, a multiple of 16; codes 16-byte aligned) and
// one scale per row (device_math.h: e4m3_act_scale with bound ub, +inf for none).
cudaError_t fp8_quantize_activations(const uint16_t* x, int64_t ldx, int64_t M, int64_t K, float ub, uint8_t* codes,
                                     int64_t ldq, float* scales, cudaStream_t stream, std::string* error);

// Whether this GPU runs fp8_gemm_w8a8: it has e4m3 mma (sm_89+) and the build has code for it.
bool fp8_w8a8_supported();

// fp32 partial sums a split-K plan needs (0 for one split).
size_t fp8_gemm_workspace_bytes(const GemmPlan& plan, int64_t M, int64_t N);

// W8A8: Y [M, N] bf16 (row stride ldy) from fp8_quantize_activations' codes and scales. With
// plan.splits > 1 the partial sums go to `workspace` and are added in split order by a second
// kernel, so results do not depend on timing. Returns the launch error, or cudaErrorInvalidValue
// with `error` saying which argument was wrong (or that this GPU has no e4m3 mma).
cudaError_t fp8_gemm_w8a8(const uint8_t* codes, int64_t ldq, const float* a_scales, int64_t M,
                          const Fp8DeviceWeight& w, uint16_t* y, int64_t ldy, const GemmPlan& plan, float* workspace,
                          size_t workspace_bytes, cudaStream_t stream, std::string* error);

// W8A16: X [M, K] (16-byte aligned, ldx % 8 == 0; columns from K on never read) and Y of the
// same 16-bit type, bf16 (sm_80+) or fp16; the weight's codes E4M3 or, with w.int8, integers
// (with w.mins, each block's min added: in blocks of whole 32-column tiles shorter than the row).
cudaError_t fp8_gemm_w8a16(const uint16_t* x, int64_t ldx, int64_t M, const Fp8DeviceWeight& w, bool bf16,
                           uint16_t* y, int64_t ldy, const GemmPlan& plan, float* workspace, size_t workspace_bytes,
                           cudaStream_t stream, std::string* error);

// For tests: upload a host weight and X [M, K] (16-bit bits, row-major), run the W8A8 path
// (bf16 X, quantized on the device with bound ub) or the W8A16 path (bf16 or fp16; E4M3 or INT8
// codes as w.int8 says, with w.mins if it has them) with `splits` (0: fp8_gemm_plan's choice for
// this device) and return Y [M, N]. Throws std::runtime_error with the CUDA error's text.
std::vector<uint16_t> fp8_gemm_on_device(const Fp8GpuWeight& w, const uint16_t* x, int64_t M, bool w8a8, bool bf16,
                                         int splits, float ub);

// For tests: fp8_quantize_activations on X [M, K] bf16 -> codes [M, ceil(K / 32) * 32], scales [M].
void fp8_quantize_on_device(const uint16_t* x, int64_t M, int64_t K, float ub, std::vector<uint8_t>* codes,
                            std::vector<float>* scales);

}  // namespace ll::cuda
