// VecAvx512 plus AVX512-BF16 dot products. Included only by kernels_avx512_bf16.cpp.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../core/dtype.h"
#include "vec_avx512.h"

namespace ll::cpu {
namespace {

struct VecAvx512Bf16 : VecAvx512 {
    static constexpr bool kBF16Dot = true;
    static constexpr int BMR = 4;  // activation rows per bf16 micro-tile (x 2 tiles)
    static __m512i bcast32(const uint32_t* p) { return _mm512_set1_epi32(int(*p)); }
    // acc += per lane: w's column pair times x's pair (bf16 products, fp32 sums)
    static reg dpbf16(reg acc, __m512i w, __m512i x) {
        return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(w), reinterpret_cast<__m512bh>(x));
    }
    // x[0:K] rounded to bf16 (nearest even), as pairs: out[p] = bf16(x[2p]) | bf16(x[2p + 1]) << 16,
    // zeros up to Kp / 2 pairs.
    static void to_bf16_pairs(const float* x, int64_t K, int64_t Kp, uint32_t* out) {
        int64_t k = 0;
        for (; k + 32 <= K; k += 32)
            _mm512_storeu_si512(out + k / 2, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(load(x + k + 16), load(x + k))));
        for (; k < Kp; k += 2) {
            const uint32_t lo = k < K ? float_to_bf16(x[k]) : 0, hi = k + 1 < K ? float_to_bf16(x[k + 1]) : 0;
            out[k / 2] = lo | hi << 16;
        }
    }
    // Two consecutive FP8 columns (32 bytes: 16 rows' codes each) as 16 bf16 pairs, lane r holding
    // row r's (column 0, column 1): the fp32 / 256 of fp8_col2 keeps 3 mantissa bits, so its top
    // half is the same value as a bf16, exactly.
    static __m512i fp8_pairs(const uint8_t* p) {
        reg a, b;
        fp8_col2(p, a, b);
        return pair_halves(a, b);
    }
    // The last column of an odd block alone: its pair's second half is zero.
    static __m512i fp8_pair_last(const uint8_t* p) { return pair_halves(fp8_col(p), zero()); }
    static __m512i pair_halves(reg a, reg b) {
        return _mm512_or_si512(_mm512_srli_epi32(_mm512_castps_si512(a), 16),
                               _mm512_and_si512(_mm512_castps_si512(b), _mm512_set1_epi32(int(0xFFFF0000u))));
    }
};

}  // namespace
}  // namespace ll::cpu
