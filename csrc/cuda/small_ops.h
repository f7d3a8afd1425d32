// The CUDA forward pass's small ops, between the GEMMs and attention. The residual stream is fp32
// [T][ld]; what feeds a GEMM or the KV cache is 16-bit (bf16 on sm_80+, fp16 anywhere) [T][ld].
// The arithmetic is small_ops_math.h's, the CPU kernels' formulas. Compiled only in CUDA builds.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "first_position.h"

namespace ll::cuda {

// y = rmsnorm(x) * w, rounded to 16 bits: one block per row.
cudaError_t rmsnorm_to_half(const float* x, int64_t ldx, const float* w, int T, int D, float eps, uint16_t* y,
                            int64_t ldy, bool bf16, cudaStream_t stream);

// RoPE in place on q [T][ldq] (n_heads heads) and k [T][ldk] (n_kv_heads) of head_dim hd, rows at
// positions p0 + t; cos and sin fp32 [positions][hd / 2] (Llama 3.1 scaling already in them).
cudaError_t rope_qk(uint16_t* q, int64_t ldq, int n_heads, uint16_t* k, int64_t ldk, int n_kv_heads, int hd, int T,
                    const float* cos, const float* sin, FirstPos p0, bool bf16, cudaStream_t stream);

// k and v rows [T][n_kv_heads hd] into the cache [n_kv_heads][n_ctx][hd] at positions p0 + t.
cudaError_t kv_append(const uint16_t* k, const uint16_t* v, int64_t ld, int T, int n_kv_heads, int hd,
                      uint16_t* cache_k, uint16_t* cache_v, int64_t n_ctx, FirstPos p0, cudaStream_t stream);

// out [T][F] = silu(gate) * up, gate and up the halves of gu [T][2F] (the fused gate/up GEMM's
// output: gate columns first).
cudaError_t swiglu(const uint16_t* gu, int T, int F, uint16_t* out, bool bf16, cudaStream_t stream);

// x [T][D] (fp32) += y [T][D] (16-bit).
cudaError_t residual_add(float* x, const uint16_t* y, int T, int D, bool bf16, cudaStream_t stream);

// x [T][D] (fp32) = rows tokens[t] of table [vocab][D] (16-bit).
cudaError_t embed(const uint16_t* table, int64_t vocab, const int32_t* tokens, int T, int D, float* x, bool bf16,
                  cudaStream_t stream);

// For tests: each op run once on host data (16-bit values as their bits), the result copied back.
// Throws std::runtime_error with the CUDA error's text.
std::vector<uint16_t> rmsnorm_on_device(const float* x, const float* w, int T, int D, float eps, bool bf16);
std::vector<uint16_t> rope_on_device(const uint16_t* qk, int T, int n_heads, int hd, const float* cos, const float* sin,
                                     int n_pos, int p0, bool bf16);
std::vector<uint16_t> swiglu_on_device(const uint16_t* gu, int T, int F, bool bf16);
std::vector<float> residual_add_on_device(const float* x, const uint16_t* y, int T, int D, bool bf16);
std::vector<float> embed_on_device(const uint16_t* table, int64_t vocab, const int32_t* tokens, int T, int D,
                                   bool bf16);
// The cache [n_kv_heads][n_ctx][hd] after appending T rows at p0 to a zero cache: (K, V).
std::vector<uint16_t> kv_append_on_device(const uint16_t* k, const uint16_t* v, int T, int n_kv_heads, int hd,
                                          int64_t n_ctx, int p0);

}  // namespace ll::cuda
