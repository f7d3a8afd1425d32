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
    static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
    static float reduce_add(reg a) { return _mm512_reduce_add_ps(a); }
    static float reduce_max(reg a) { return _mm512_reduce_max_ps(a); }
    static reg load_f16(const uint16_t* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static reg load_bf16(const uint16_t* p) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    }
    // The two ISA-specific steps of exp (kernels_impl.h: vexp).
    static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static reg mul_pow2(reg p, reg n) { return _mm512_scalef_ps(p, n); }  // p * 2^n
};

}  // namespace
}  // namespace ll::cpu
