// Number formats and the online-softmax merge, shared by the CUDA kernels and the host.
//
// Every function here is __host__ __device__ and uses nothing but integer and fp32 arithmetic, so
// the host build (bindings.cpp: _core.device_math) runs exactly the code a kernel runs, and the
// tests hold it against ml_dtypes and numpy on the host (tests/test_cuda_device_math.py). A GPU
// test then only has to show that the kernels call it correctly.
#pragma once
#include <cstdint>

// bits_to_float, float_to_bits, float_to_bf16, bf16_to_float, fp8_e4m3_to_float and the
// LL_HOST_DEVICE qualifier: the scalar conversions the CPU kernels already share.
#include "../core/dtype.h"

namespace ll::cuda {

// ---- FP8 E4M3 (float8_e4m3fn: bias 7, no infinities, S.1111.111 is NaN, max 448)

// Exact, as dtype.h widens it, except that the NaN codes stay NaN (the activation codes a kernel
// converts back are not filtered as a checkpoint's are).
LL_HOST_DEVICE float e4m3_to_float(uint8_t code) {
    if ((code & 0x7F) == 0x7F) return bits_to_float(uint32_t(code & 0x80) << 24 | 0x7FC00000u);
    return fp8_e4m3_to_float(code);
}

// Round to nearest, ties to even, saturating to +-448 (NVIDIA's __NV_SATFINITE: activation scales
// are chosen so |x| <= 448, and a rounding step past the top must not become NaN); NaN stays NaN.
LL_HOST_DEVICE uint8_t float_to_e4m3(float x) {
    const uint32_t u = float_to_bits(x);
    const uint8_t sign = uint8_t((u >> 24) & 0x80);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return uint8_t(sign | 0x7F);  // NaN
    if (a >= 0x43E00000u) return uint8_t(sign | 0x7E);  // >= 448 (and inf): the largest finite
    if (a < 0x3C800000u) {  // below 2^-6: subnormal codes, steps of 2^-9
        // |x| * 2^9 rounded to an integer 0..8 (8 is the smallest normal, code 0x08), ties to even:
        // 1.5 * 2^23 added and taken away rounds an fp32 below 2^22 to an integer in the FPU's mode.
        const float scaled = bits_to_float(a) * 512.0f;
        const float r = (scaled + 12582912.0f) - 12582912.0f;
        return uint8_t(sign | uint8_t(r));
    }
    // Normal: keep 3 mantissa bits of 23, ties to even, carrying into the exponent.
    const uint32_t lsb = (a >> 20) & 1;
    const uint32_t rounded = a + 0x7FFFF + lsb;
    const uint32_t e = (rounded >> 23) - 120, m = (rounded >> 20) & 0x7;
    if (e > 15 || (e == 15 && m == 7)) return uint8_t(sign | 0x7E);
    return uint8_t(sign | e << 3 | m);
}

// ---- Dynamic per-token E4M3 activations (W8A8; compressed-tensors' "token" strategy, vLLM's
// dynamic FP8 quantization): a row x gets the scale s = absmax(x) / 448 and the codes
// e4m3(x / s), both divisions rounded to nearest as IEEE does (the textbook x / scale, never a
// multiply by an inexact reciprocal), so x = s * e4m3(...) to within the rounding of e4m3.

// a / b rounded to nearest even: __fdiv_rn on the device (whatever --use_fast_math says), IEEE
// division on the host.
LL_HOST_DEVICE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

// The scale of a row whose largest |x| is absmax, that bound first clamped to ub (Meta's
// activation_scale_ub; +inf for none). Floored at 2^-126, the smallest normal fp32: a zero row
// (or one below 448 * 2^-126) then gets codes 0 (or at most 448) instead of 0 / 0 = NaN, and x / s
// cannot overflow.
LL_HOST_DEVICE float e4m3_act_scale(float absmax, float ub) {
    const float a = absmax < ub ? absmax : ub;
    const float s = div_rn(a, 448.0f);
    return s >= 0x1p-126f ? s : 0x1p-126f;
}

// The code of x under scale s, ties to even. Saturating (__NV_SATFINITE): where ub clamped the
// scale, or a quotient rounds past 448, the code is +-448, never NaN.
LL_HOST_DEVICE uint8_t e4m3_act_code(float x, float s) { return float_to_e4m3(div_rn(x, s)); }

// ---- INT4 group-wise weights (the compressed-tensors / GPTQ / AWQ math): w = scale * (q - zero),
// q the unsigned nibble; symmetric formats take zero = 8. One fp32 multiply of an exact integer:
// the result the CPU kernels see, bit for bit.
LL_HOST_DEVICE float int4_dequant(uint32_t packed, int i, float scale, int zero) {
    const int q = int((packed >> (4 * i)) & 0xF);
    return scale * float(q - zero);
}

// ---- Online softmax (flash attention): a partial result over a range of key positions is
// (m, l, o): m the largest score seen, l = sum exp(s - m), o = sum exp(s - m) v (not yet divided
// by l). Two partials over disjoint ranges merge exactly into the partial over their union; an
// empty range is m = -inf, l = 0, o = 0 and merges as the identity (a fully masked row stays
// l = 0, which the final division turns into 0, never NaN).
struct SoftmaxPartial {
    float m;
    float l;
};

LL_HOST_DEVICE float softmax_exp(float x) {
#if defined(__CUDA_ARCH__)
    return __expf(x);
#else
    return __builtin_expf(x);
#endif
}

// The weights a and b's o take in the merged partial: o = wa * o_a + wb * o_b.
LL_HOST_DEVICE SoftmaxPartial softmax_merge(SoftmaxPartial a, SoftmaxPartial b, float* wa, float* wb) {
    const float m = a.m > b.m ? a.m : b.m;
    if (m == bits_to_float(0xFF800000u)) {  // -inf: both empty
        *wa = *wb = 0.0f;
        return SoftmaxPartial{m, 0.0f};
    }
    *wa = softmax_exp(a.m - m);
    *wb = softmax_exp(b.m - m);
    return SoftmaxPartial{m, a.l * *wa + b.l * *wb};
}

// The final output of a merged partial: o / l, or 0 for a row that saw no position.
LL_HOST_DEVICE float softmax_finish(float o, SoftmaxPartial p) { return p.l > 0.0f ? o / p.l : 0.0f; }

}  // namespace ll::cuda
