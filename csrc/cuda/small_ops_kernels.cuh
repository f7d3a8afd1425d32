// The forward pass's small ops as kernels (small_ops.cu launches them; its file comment says what
// they do). Device code, in a header of its own so that tests/cuda_emulation can run these very
// kernels on the host.
#pragma once
#include <cstdint>

#include "half2_math.h"
#include "ptx.cuh"
#include "small_ops_math.h"

namespace ll::cuda {
namespace {

constexpr int kRowThreads = 256;

// The elementwise ops (SwiGLU, the residual add) spread a row over blocks of kRowThreads columns
// (blockIdx.y), a column a thread: at decode (one row) a block per row would run on one SM alone.
inline unsigned column_blocks(int n) { return unsigned((n + kRowThreads - 1) / kRowThreads); }

template <bool kBf16>
__device__ __forceinline__ float widen(uint16_t h) {
    return kBf16 ? bf16_to_float(h) : fp16_to_float(h);
}

// The bf16 kernels exist for sm_75 too (templates are compiled for every arch), but launch() never
// starts them there: on sm_75 they stop at once.
template <bool kBf16>
__device__ __forceinline__ bool unsupported() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    return kBf16;
#else
    return false;
#endif
}

template <bool kBf16>
__device__ __forceinline__ uint16_t narrow(float x) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // (and the tests' host emulation)
    return float_to_half_bits<kBf16>(x);
#else
    return float_to_half_bits<false>(x);  // bf16 never runs here (unsupported)
#endif
}

// The sum of v over the block's threads, returned to every thread.
__device__ float block_sum(float v) {
    __shared__ float part[kRowThreads / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kRowThreads / 32; ++w) s += part[w];
    __syncthreads();  // part may be written again by a later call
    return s;
}

template <bool kBf16>
__global__ void __launch_bounds__(kRowThreads) rmsnorm_kernel(const float* x, int64_t ldx, const float* w, int D,
                                                               float eps, uint16_t* y, int64_t ldy) {
    if (unsupported<kBf16>()) return;
    const float* row = x + int64_t(blockIdx.x) * ldx;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += kRowThreads) ss += row[i] * row[i];
    const float inv = rms_inv(block_sum(ss), D, eps);
    uint16_t* out = y + int64_t(blockIdx.x) * ldy;
    for (int i = threadIdx.x; i < D; i += kRowThreads) out[i] = narrow<kBf16>(rms_apply(row[i], inv, w[i]));
}

// Block t rotates row t's pairs: the query heads' then the KV heads'.
template <bool kBf16>
__global__ void __launch_bounds__(kRowThreads) rope_kernel(uint16_t* q, int64_t ldq, int n_heads, uint16_t* k,
                                                            int64_t ldk, int n_kv_heads, int hd, const float* cos,
                                                            const float* sin, const int* pos) {
    if (unsupported<kBf16>()) return;
    const int t = blockIdx.x, half = hd / 2, p0 = *pos;
    const float* c = cos + int64_t(p0 + t) * half;
    const float* s = sin + int64_t(p0 + t) * half;
    for (int j = threadIdx.x; j < (n_heads + n_kv_heads) * half; j += kRowThreads) {
        const int head = j / half, i = j % half;
        uint16_t* x = head < n_heads ? q + int64_t(t) * ldq + head * hd : k + int64_t(t) * ldk + (head - n_heads) * hd;
        const RopePair r = rope_pair(widen<kBf16>(x[i]), widen<kBf16>(x[i + half]), c[i], s[i]);
        x[i] = narrow<kBf16>(r.a);
        x[i + half] = narrow<kBf16>(r.b);
    }
}

__global__ void __launch_bounds__(kRowThreads) kv_append_kernel(const uint16_t* k, const uint16_t* v, int64_t ld,
                                                                 int n_kv_heads, int hd, uint16_t* ck, uint16_t* cv,
                                                                 int64_t n_ctx, const int* pos) {
    const int t = blockIdx.x, p0 = *pos;
    for (int j = threadIdx.x; j < n_kv_heads * hd; j += kRowThreads) {
        const int64_t dst = (int64_t(j / hd) * n_ctx + p0 + t) * hd + j % hd;
        ck[dst] = k[int64_t(t) * ld + j];
        cv[dst] = v[int64_t(t) * ld + j];
    }
}

template <bool kBf16>
__global__ void __launch_bounds__(kRowThreads) swiglu_kernel(const uint16_t* gu, int F, uint16_t* out) {
    if (unsupported<kBf16>()) return;
    const int i = int(blockIdx.y) * kRowThreads + int(threadIdx.x);
    if (i >= F) return;
    const uint16_t* row = gu + int64_t(blockIdx.x) * 2 * F;
    out[int64_t(blockIdx.x) * F + i] = narrow<kBf16>(silu_mul(widen<kBf16>(row[i]), widen<kBf16>(row[F + i])));
}

template <bool kBf16>
__global__ void __launch_bounds__(kRowThreads) residual_add_kernel(float* x, const uint16_t* y, int D) {
    const int i = int(blockIdx.y) * kRowThreads + int(threadIdx.x);
    if (i >= D) return;
    const int64_t at = int64_t(blockIdx.x) * D + i;
    x[at] += widen<kBf16>(y[at]);
}

template <bool kBf16>
__global__ void __launch_bounds__(kRowThreads) embed_kernel(const uint16_t* table, const int32_t* tokens, int D,
                                                             float* x) {
    const uint16_t* row = table + int64_t(tokens[blockIdx.x]) * D;
    for (int i = threadIdx.x; i < D; i += kRowThreads) x[int64_t(blockIdx.x) * D + i] = widen<kBf16>(row[i]);
}

}  // namespace
}  // namespace ll::cuda
