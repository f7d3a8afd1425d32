// 16-lane fp32 vector on AVX-512 F/BW/VL/DQ + VNNI (+ FMA, F16C). Included only by kernels_avx512.cpp.
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

    // ---- bf16 tile kernels (bf16_impl.h): a 64-byte chunk's even / odd columns as fp32
    static constexpr bool kBF16Dot = false;
    static reg bf16_lo(const uint8_t* p) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(p), 16)); }
    static reg bf16_hi(const uint8_t* p) {
        return _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(p), _mm512_set1_epi32(int(0xFFFF0000u))));
    }

    // ---- FP8 tile kernels (fp8_impl.h): 16 E4M3 codes as fp32 / 256 (exact)
    //   The code sign-extended to 16 bits and shifted left 7 is the fp16 bit pattern of w / 256
    //   (sign at bit 15, exponent and mantissa below it) except for a second copy of the sign at
    //   bit 14, the top exponent bit, which one mask clears.
    static reg fp8_col(const uint8_t* p) {
        const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(int16_t(0xBFFF))));
    }
    // two consecutive columns (32 bytes) at once: the widening done on 512 bits
    static void fp8_col2(const uint8_t* p, reg& a, reg& b) {
        const __m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        const __m512i h = _mm512_and_si512(_mm512_slli_epi16(v, 7), _mm512_set1_epi16(int16_t(0xBFFF)));
        a = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
        b = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
    }

    // ---- integer weight kernels (quant_impl.h): 16 tile rows per register, VNNI dot products
    using ireg = __m512i;
    static constexpr int QR = 16;       // tile rows per register
    static constexpr int QMR = 4;       // activation rows per micro-tile (prefill; divides kResidualRows)
    static constexpr int XMR = 4, XR = 2;  // prefill over expanded codes (quant_prefill_impl.h)
    static constexpr int kWideBias = 0; // vpdpbusd takes codes up to 255 as they are
    static ireg izero() { return _mm512_setzero_si512(); }
    static ireg iload(const uint8_t* p) { return _mm512_loadu_si512(p); }
    static void istore(uint8_t* p, ireg v) { _mm512_storeu_si512(p, v); }
    static ireg iadd(ireg a, ireg b) { return _mm512_add_epi32(a, b); }
    static ireg iset1(int32_t v) { return _mm512_set1_epi32(v); }
    static ireg ishl8(ireg a) { return _mm512_slli_epi32(a, 8); }
    static ireg lo_nib(ireg v) { return _mm512_and_si512(v, _mm512_set1_epi8(15)); }
    static ireg hi_nib(ireg v) { return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(15)); }
    // lo | bits shift..shift+1 of each byte of h, placed at bits 4-5 (6-bit codes' top bits)
    static ireg add_bits45(ireg lo, ireg h, int shift) {
        const ireg t = shift <= 4 ? _mm512_slli_epi16(h, 4 - shift) : _mm512_srli_epi16(h, shift - 4);
        return _mm512_ternarylogic_epi32(lo, t, _mm512_set1_epi8(0x30), 0xF8);  // lo | (t & mask)
    }
    static ireg lut16(ireg idx, const uint8_t* table) {
        return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table))), idx);
    }
    // acc += per lane: 4 unsigned codes times the 4 activation codes at x (broadcast)
    static ireg dot4(ireg acc, ireg u, const int8_t* x) {
        int32_t w;
        __builtin_memcpy(&w, x, 4);
        return _mm512_dpbusd_epi32(acc, u, _mm512_set1_epi32(w));
    }
    static ireg dot4w(ireg acc, ireg u, const int8_t* x) { return dot4(acc, u, x); }
    static reg cvt(ireg v) { return _mm512_cvtepi32_ps(v); }
    static reg load_i8(const uint8_t* p) {  // 16 int8 -> fp32
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    }
    // One activation block, bit-equal to quantize_acts_ref.
    static void quantize_block32(const float* x, int8_t* q, float* d, float* s, int32_t* isum) {
        const reg a = load(x), b = load(x + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, set1(id)));
        const __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, set1(id)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(qa));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtsepi32_epi8(qb));
        *d = db;
        isum[0] = _mm512_reduce_add_epi32(qa);
        isum[1] = _mm512_reduce_add_epi32(qb);
        s[0] = db * float(isum[0]);
        s[1] = db * float(isum[1]);
    }
};

}  // namespace
}  // namespace ll::cpu
