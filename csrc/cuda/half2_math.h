// Packed 16-bit float arithmetic (two bf16 or two fp16 values in a uint32, low half first), as the
// tensor-core kernels do it on the device, with a host copy that rounds exactly as the device does.
//
// The one operation is d = a * b + c per half, rounded once to nearest even: PTX fma.rn.bf16x2
// (sm_80+) or fma.rn.f16x2. A product is c = -0.0 (so +0 * x stays +0), a difference b = 1.0; every
// step of a dequantization is then one instruction whose result the host reproduces bit for bit.
// On the host the exact a * b + c is rounded to odd in double first (53 bits >= 11 + 2, so the later
// rounding to 8 or 11 bits cannot round twice), then to nearest even at the 16-bit precision.
#pragma once
#include <cstdint>

#include "device_math.h"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace ll::cuda {

// 1.0 and -0.0 in both halves of a pair.
template <bool kBf16>
LL_HOST_DEVICE constexpr uint32_t half2_one() { return kBf16 ? 0x3F803F80u : 0x3C003C00u; }
constexpr uint32_t kHalf2NegZero = 0x80008000u;

// Both halves = half `h` (0 low, 1 high) of x: a per-column scale applied to a pair of k values.
LL_HOST_DEVICE uint32_t half2_broadcast(uint32_t x, int h) {
    const uint32_t v = (x >> (16 * h)) & 0xFFFFu;
    return v | v << 16;
}

#if !defined(__CUDA_ARCH__)
// A double rounded to nearest even at the 16-bit format's precision (8 significant bits and
// subnormals down to 2^-133 for bf16; 11 bits down to 2^-24 for fp16), returned as its bits.
// Past the largest finite value the result is infinity, as on the device; NaN stays NaN.
static inline uint16_t host_round_to_half(double x, bool bf16) {
    if (std::isnan(x)) return bf16 ? 0x7FC0 : 0x7E00;
    const int digits = bf16 ? 8 : 11, min_ulp_exp = bf16 ? -133 : -24;
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    double a = std::fabs(x);
    if (a != 0.0) {
        int e;
        std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
        const int q = e - digits > min_ulp_exp ? e - digits : min_ulp_exp;  // exponent of one ulp
        a = std::ldexp(std::nearbyint(std::ldexp(a, -q)), q);  // the default mode: ties to even
    }
    if (bf16) {  // a is a bf16 value (or beyond fp32's range): its fp32 bits are exact
        const float f = float(a);
        return uint16_t(sign | (float_to_bits(f) >> 16));
    }
    if (a > 65504.0) return uint16_t(sign | 0x7C00);
    if (a < 0x1p-14) return uint16_t(sign | uint16_t(std::ldexp(a, 24)));  // subnormal: multiples of 2^-24
    int e;
    const double f = std::frexp(a, &e);  // a = f * 2^e; the half's exponent field is e - 1 + 15
    return uint16_t(sign | uint16_t(e + 14) << 10 | uint16_t(std::ldexp(f, 11) - 1024.0));
}

static inline double host_half_value(uint16_t h, bool bf16) { return bf16 ? bf16_to_float(h) : fp16_to_float(h); }

// Exact a * b + c (the product of two 16-bit values is exact in double), rounded to odd, then to
// the 16-bit format. TwoSum gives the sum's rounding error exactly; when the sum is inexact and its
// last bit even, the neighbour on the error's side is the odd one.
static inline uint16_t host_fma_half(uint16_t a, uint16_t b, uint16_t c, bool bf16) {
    const double p = host_half_value(a, bf16) * host_half_value(b, bf16), z = host_half_value(c, bf16);
    double s = p + z;
    const double bb = s - p, err = (p - (s - bb)) + (z - bb);
    if (err != 0.0) {
        uint64_t bits;
        std::memcpy(&bits, &s, 8);
        if ((bits & 1) == 0) s = std::nextafter(s, err > 0 ? HUGE_VAL : -HUGE_VAL);
    }
    return host_round_to_half(s, bf16);
}
#endif

// a * b + c on each half, rounded once: fma.rn.bf16x2 / fma.rn.f16x2.
template <bool kBf16>
LL_HOST_DEVICE uint32_t half2_fma(uint32_t a, uint32_t b, uint32_t c) {
#if defined(__CUDA_ARCH__)
    uint32_t d;
    if constexpr (kBf16) {
#if __CUDA_ARCH__ >= 800
        asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
#else
        static_assert(!kBf16, "bf16 arithmetic needs sm_80 or newer (sm_75 kernels use fp16)");
#endif
    } else {
        asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    }
    return d;
#else
    const uint16_t lo = host_fma_half(uint16_t(a), uint16_t(b), uint16_t(c), kBf16);
    const uint16_t hi = host_fma_half(uint16_t(a >> 16), uint16_t(b >> 16), uint16_t(c >> 16), kBf16);
    return uint32_t(lo) | uint32_t(hi) << 16;
#endif
}

// An fp32 (an accumulator) rounded once, to nearest even, to the 16-bit type: cvt.rn on the device.
template <bool kBf16>
LL_HOST_DEVICE uint16_t float_to_half_bits(float x) {
#if defined(__CUDA_ARCH__)
    uint16_t h;
    if constexpr (kBf16) {
#if __CUDA_ARCH__ >= 800
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
#else
        static_assert(!kBf16, "bf16 conversion needs sm_80 or newer (sm_75 kernels use fp16)");
#endif
    } else {
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    }
    return h;
#else
    return host_round_to_half(double(x), kBf16);
#endif
}

}  // namespace ll::cuda
