// Element types of weights and the scalar conversions shared by every kernel (host and device).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LL_HOST_DEVICE __host__ __device__ __forceinline__
#else
// static: internal linkage, so a copy compiled into an AVX-512 translation unit can never be the
// one the linker keeps for callers on a CPU without AVX-512.
#define LL_HOST_DEVICE static inline
#endif

namespace ll {

// Storage type of a weight matrix. Quantized formats join this list with their own kernels.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };
constexpr int kNumDTypes = 3;

static inline int dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

LL_HOST_DEVICE float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}

LL_HOST_DEVICE uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
#endif
}

// bf16 is the top half of an fp32: widening is exact.
LL_HOST_DEVICE float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// Round to nearest even, NaN kept quiet (what torch and ml_dtypes do).
LL_HOST_DEVICE uint16_t float_to_bf16(float f) {
    uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

// IEEE half -> float, subnormals and inf/nan included (exact).
LL_HOST_DEVICE float fp16_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        // subnormal: value = man * 2^-24
        float v = float(man) * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

// FP8 E4M3 (OCP "e4m3fn": bias 7, no infinities) -> float, exact. The byte's exponent and mantissa
// land in an fp16's (sign to the sign) so that the fp16 holds x * 2^-8, subnormals included;
// widening it and scaling by 2^8 is exact. The NaN codes (0x7F, 0xFF) come out as +-480:
// quantizers never write them.
LL_HOST_DEVICE float fp8_e4m3_to_float(uint8_t b) {
    const uint16_t h = uint16_t(((b & 0x80u) << 8) | ((b & 0x7Fu) << 7));
    return fp16_to_float(h) * 256.0f;
}

}  // namespace ll
