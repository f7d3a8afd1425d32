// 16-lane fp32 vector on AVX-512 F/BW/VL/DQ (+ FMA, F16C). Included only by kernels_avx512.cpp.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace ll::cpu {
namespace {

struct VecAvx512 {
    using reg = __m512;
    static constexpr int W = 16;
    // 4x6 accumulators + 4 X + 1 W = 29 of the 32 zmm registers: 24 FMAs per 10 loads.
    static constexpr int MR = 4, NR = 6;
    // P.V in attention: MR rows x NV vectors of accumulators.
    static constexpr int GEMM_NN_MR = 6, GEMM_NN_NV = 4;
    static reg zero() { return _mm512_setzero_ps(); }
    static reg set1(float a) { return _mm512_set1_ps(a); }
    static reg load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
    static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
    static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
    static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
    static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
    static float reduce_add(reg a) { return _mm512_reduce_add_ps(a); }
    static float reduce_max(reg a) { return _mm512_reduce_max_ps(a); }
    static reg load_f16(const uint16_t* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static reg load_bf16(const uint16_t* p) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    }
    // exp(x) = 2^n * e^r, |r| <= ln2/2, degree-6 polynomial (Cephes expf): ~1 ulp.
    static reg exp(reg x) {
        x = _mm512_min_ps(_mm512_max_ps(x, set1(-87.3f)), set1(88.3f));
        reg n = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        reg r = _mm512_fnmadd_ps(n, set1(0.693359375f), x);
        r = _mm512_fnmadd_ps(n, set1(-2.12194440e-4f), r);
        reg p = set1(1.9875691500e-4f);
        p = fma(p, r, set1(1.3981999507e-3f));
        p = fma(p, r, set1(8.3334519073e-3f));
        p = fma(p, r, set1(4.1665795894e-2f));
        p = fma(p, r, set1(1.6666665459e-1f));
        p = fma(p, r, set1(5.0000001201e-1f));
        p = fma(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, set1(1.0f)));
        return _mm512_scalef_ps(p, n);
    }
};

}  // namespace
}  // namespace ll::cpu
