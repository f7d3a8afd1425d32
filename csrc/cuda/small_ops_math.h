// The per-element arithmetic of the CUDA forward pass's small ops (small_ops.cu), shared with
// the host so that tests hold it to the CPU kernels' (csrc/cpu/kernels_impl.h) formulas: the same
// operations in the same order in fp32, so the two backends differ only by the 16-bit roundings
// the device adds between ops.
#pragma once
#include "device_math.h"

namespace ll::cuda {

// RMSNorm's scale from a row's sum of squares: 1 / sqrt(ms + eps), then y = (x * inv) * w, as
// the CPU computes it.
LL_HOST_DEVICE float rms_inv(float sum_sq, int n, float eps) {
#if defined(__CUDA_ARCH__)
    return 1.0f / sqrtf(sum_sq / float(n) + eps);  // IEEE sqrt and division: not rsqrtf's approximation
#else
    return 1.0f / __builtin_sqrtf(sum_sq / float(n) + eps);
#endif
}
LL_HOST_DEVICE float rms_apply(float x, float inv, float w) { return (x * inv) * w; }

// RoPE on one pair (x[i], x[i + half]) of a head, Llama's rotate_half convention (the GGUF q/k
// row permutation is undone at load): the CPU's a c - b s and a s + b c.
struct RopePair {
    float a;
    float b;
};
LL_HOST_DEVICE RopePair rope_pair(float a, float b, float c, float s) { return RopePair{a * c - b * s, a * s + b * c}; }

// SwiGLU: silu(g) * u = g / (1 + exp(-g)) * u, with an exact exp (expf, not __expf) so that large
// |g| saturates as the CPU's does.
LL_HOST_DEVICE float silu_mul(float g, float u) {
#if defined(__CUDA_ARCH__)
    return g / (1.0f + expf(-g)) * u;
#else
    return g / (1.0f + __builtin_expf(-g)) * u;
#endif
}

}  // namespace ll::cuda
