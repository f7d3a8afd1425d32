// 8-lane fp32 vector on AVX2 + FMA + F16C. Included only by kernels_avx2.cpp.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace ll::cpu {
namespace {

struct VecAvx2 {
    using reg = __m256;
    static constexpr int W = 8;
    // 3x3 accumulators + 3 X + 1 W registers: fits the 16 ymm registers without spilling.
    static constexpr int MR = 3, NR = 3;
    // P.V in attention: MR rows x NV vectors of accumulators.
    static constexpr int GEMM_NN_MR = 6, GEMM_NN_NV = 2;
    static reg zero() { return _mm256_setzero_ps(); }
    static reg set1(float a) { return _mm256_set1_ps(a); }
    static reg load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
    static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
    static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
    static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
    static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
    static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
    static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
    static float reduce_add(reg a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static float reduce_max(reg a) {
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static reg load_f16(const uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static reg load_bf16(const uint16_t* p) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
    // The two ISA-specific steps of exp (kernels_impl.h: vexp).
    static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static reg mul_pow2(reg p, reg n) {  // p * 2^n for integral n in the normal range
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    }

    // ---- bf16 tile kernels (bf16_impl.h): half a 64-byte chunk's even / odd columns as fp32
    static constexpr bool kBF16Dot = false;
    static reg bf16_lo(const uint8_t* p) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), 16));
    }
    static reg bf16_hi(const uint8_t* p) {
        return _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)),
                                                    _mm256_set1_epi32(int(0xFFFF0000u))));
    }

    // ---- FP8 tile kernels (fp8_impl.h): 8 E4M3 codes as fp32 / 256 (exact)
    static reg fp8_col(const uint8_t* p) {
        // sign-extended and shifted into fp16 bits; the sign's second copy (bit 14) masked off
        const __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16(int16_t(0xBFFF))));
    }
    static void fp8_col2(const uint8_t* p, reg& a, reg& b) {
        a = fp8_col(p);
        b = fp8_col(p + 16);
    }

    // ---- integer weight kernels (quant_impl.h): 8 tile rows per register, maddubs dot products
    using ireg = __m256i;
    static constexpr int QR = 8;          // tile rows per register
    static constexpr int QMR = 2;         // activation rows per micro-tile (prefill; divides kResidualRows)
    static constexpr int XMR = 2, XR = 2;  // prefill over expanded codes (quant_prefill_impl.h)
    // maddubs adds pairs of u8 x s8 products into int16 with saturation, which codes up to 255
    // could reach; dot4w takes such codes as signed (u - 128) instead and leaves the 128 out.
    static constexpr int kWideBias = 128;
    static ireg izero() { return _mm256_setzero_si256(); }
    static ireg iload(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static void istore(uint8_t* p, ireg v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
    static ireg iadd(ireg a, ireg b) { return _mm256_add_epi32(a, b); }
    static ireg iset1(int32_t v) { return _mm256_set1_epi32(v); }
    static ireg ishl8(ireg a) { return _mm256_slli_epi32(a, 8); }
    static ireg lo_nib(ireg v) { return _mm256_and_si256(v, _mm256_set1_epi8(15)); }
    static ireg hi_nib(ireg v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15)); }
    // lo | bits shift..shift+1 of each byte of h, placed at bits 4-5 (6-bit codes' top bits)
    static ireg add_bits45(ireg lo, ireg h, int shift) {
        const ireg t = shift <= 4 ? _mm256_slli_epi16(h, 4 - shift) : _mm256_srli_epi16(h, shift - 4);
        return _mm256_or_si256(lo, _mm256_and_si256(t, _mm256_set1_epi8(0x30)));
    }
    static ireg lut16(ireg idx, const uint8_t* table) {
        return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table))), idx);
    }
    static ireg bcast4(const int8_t* x) {
        int32_t w;
        __builtin_memcpy(&w, x, 4);
        return _mm256_set1_epi32(w);
    }
    // acc += per lane: 4 codes (at most 127) times the 4 activation codes at x (broadcast)
    static ireg dot4(ireg acc, ireg u, const int8_t* x) {
        const __m256i p = _mm256_maddubs_epi16(u, bcast4(x));
        return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    }
    // acc += per lane: (codes - 128) times the activation codes, by the sign trick |c| * sign(c) x
    static ireg dot4w(ireg acc, ireg u, const int8_t* x) {
        const __m256i c = _mm256_xor_si256(u, _mm256_set1_epi8(char(0x80)));
        const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(bcast4(x), c));
        return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
    }
    static reg cvt(ireg v) { return _mm256_cvtepi32_ps(v); }
    static reg load_i8(const uint8_t* p) {  // 8 int8 -> fp32
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }
    // One activation block, bit-equal to quantize_acts_ref.
    static void quantize_block32(const float* x, int8_t* q, float* d, float* s, int32_t* isum) {
        const __m256 sign = _mm256_set1_ps(-0.0f);
        reg v[4];
        reg amax = zero();
        for (int i = 0; i < 4; ++i) {
            v[i] = load(x + 8 * i);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
        }
        const float db = reduce_max(amax) / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        __m256i qi[4];
        for (int i = 0; i < 4; ++i) qi[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], set1(id)));
        const __m256i s0 = _mm256_add_epi32(qi[0], qi[1]), s1 = _mm256_add_epi32(qi[2], qi[3]);
        // int32 -> int8, then undo the lane interleaving of the two packs
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(qi[0], qi[1]), _mm256_packs_epi32(qi[2], qi[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        *d = db;
        isum[0] = hsum(s0);
        isum[1] = hsum(s1);
        s[0] = db * float(isum[0]);
        s[1] = db * float(isum[1]);
    }
    static int32_t hsum(__m256i v) {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        return _mm_cvtsi128_si32(s);
    }
};

}  // namespace
}  // namespace ll::cpu
