// 4-lane fp32 vector on AArch64 NEON with the dot-product extension (ARMv8.2-A +dotprod: Apple
// M-series, Graviton 2 and later, Cortex-A76 and later). Included only by kernels_neon.cpp.
#pragma once
#include <arm_neon.h>

#include <cstdint>

namespace ll::cpu {
namespace {

struct VecNeon {
    using reg = float32x4_t;
    static constexpr int W = 4;
    // 4x4 accumulators + 4 X + 1 W of the 32 vector registers
    static constexpr int MR = 4, NR = 4;
    static constexpr int GEMM_NN_MR = 4, GEMM_NN_NV = 4;
    static reg zero() { return vdupq_n_f32(0.0f); }
    static reg set1(float a) { return vdupq_n_f32(a); }
    static reg load(const float* p) { return vld1q_f32(p); }
    static void store(float* p, reg v) { vst1q_f32(p, v); }
    static reg add(reg a, reg b) { return vaddq_f32(a, b); }
    static reg sub(reg a, reg b) { return vsubq_f32(a, b); }
    static reg mul(reg a, reg b) { return vmulq_f32(a, b); }
    static reg div(reg a, reg b) { return vdivq_f32(a, b); }
    static reg fma(reg a, reg b, reg c) { return vfmaq_f32(c, a, b); }
    static reg max(reg a, reg b) { return vmaxq_f32(a, b); }
    static reg min(reg a, reg b) { return vminq_f32(a, b); }
    static float reduce_add(reg a) { return vaddvq_f32(a); }
    static float reduce_max(reg a) { return vmaxvq_f32(a); }
    static reg load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
    static reg load_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
    // The two ISA-specific steps of exp (kernels_impl.h: vexp).
    static reg round(reg x) { return vrndnq_f32(x); }
    static reg mul_pow2(reg p, reg n) {  // p * 2^n for integral n in the normal range
        const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
        return vmulq_f32(p, vreinterpretq_f32_s32(e));
    }

    // ---- bf16 tile kernels (bf16_impl.h): a quarter of a 64-byte chunk's even / odd columns
    static constexpr bool kBF16Dot = false;
    static reg bf16_lo(const uint8_t* p) {
        return vreinterpretq_f32_u32(vshlq_n_u32(vld1q_u32(reinterpret_cast<const uint32_t*>(p)), 16));
    }
    static reg bf16_hi(const uint8_t* p) {
        return vreinterpretq_f32_u32(vandq_u32(vld1q_u32(reinterpret_cast<const uint32_t*>(p)), vdupq_n_u32(0xFFFF0000u)));
    }

    // ---- FP8 tile kernels (fp8_impl.h): 4 E4M3 codes as fp32 / 256 (exact)
    static reg fp8_col(const uint8_t* p) {
        uint32_t w;
        __builtin_memcpy(&w, p, 4);
        const uint16x4_t b = vget_low_u16(vmovl_u8(vcreate_u8(uint64_t(w))));
        const uint16x4_t h = vorr_u16(vshl_n_u16(vand_u16(b, vdup_n_u16(0x7F)), 7), vshl_n_u16(vand_u16(b, vdup_n_u16(0x80)), 8));
        return vcvt_f32_f16(vreinterpret_f16_u16(h));
    }
    static void fp8_col2(const uint8_t* p, reg& a, reg& b) {
        a = fp8_col(p);
        b = fp8_col(p + 16);
    }

    // ---- integer weight kernels (quant_impl.h): 4 tile rows per register, sdot dot products
    using ireg = int32x4_t;
    static constexpr int QR = 4;        // tile rows per register
    static constexpr int QMR = 4;       // activation rows per micro-tile (prefill; divides kResidualRows)
    static constexpr int XMR = 4, XR = 2;  // prefill over expanded codes (quant_prefill_impl.h)
    // sdot multiplies signed bytes: codes up to 127 go in as they are, wider ones as u - 128.
    static constexpr int kWideBias = 128;
    static ireg izero() { return vdupq_n_s32(0); }
    static ireg iload(const uint8_t* p) { return vreinterpretq_s32_u8(vld1q_u8(p)); }
    static void istore(uint8_t* p, ireg v) { vst1q_u8(p, vreinterpretq_u8_s32(v)); }
    static ireg iadd(ireg a, ireg b) { return vaddq_s32(a, b); }
    static ireg iset1(int32_t v) { return vdupq_n_s32(v); }
    static ireg ishl8(ireg a) { return vshlq_n_s32(a, 8); }
    static ireg lo_nib(ireg v) { return vreinterpretq_s32_u8(vandq_u8(vreinterpretq_u8_s32(v), vdupq_n_u8(15))); }
    static ireg hi_nib(ireg v) { return vreinterpretq_s32_u8(vshrq_n_u8(vreinterpretq_u8_s32(v), 4)); }
    static ireg add_bits45(ireg lo, ireg h, int shift) {  // lo | bits shift..shift+1 of h at bits 4-5
        const uint8x16_t hb = vreinterpretq_u8_s32(h);
        const uint8x16_t t = shift == 0 ? vshlq_n_u8(hb, 4) : shift == 2 ? vshlq_n_u8(hb, 2) : shift == 4 ? hb : vshrq_n_u8(hb, 2);
        return vreinterpretq_s32_u8(vorrq_u8(vreinterpretq_u8_s32(lo), vandq_u8(t, vdupq_n_u8(0x30))));
    }
    static ireg lut16(ireg idx, const uint8_t* table) {
        return vreinterpretq_s32_u8(vqtbl1q_u8(vld1q_u8(table), vreinterpretq_u8_s32(idx)));
    }
    static int8x16_t bcast4(const int8_t* x) {
        int32_t w;
        __builtin_memcpy(&w, x, 4);
        return vreinterpretq_s8_s32(vdupq_n_s32(w));
    }
    static ireg dot4(ireg acc, ireg u, const int8_t* x) { return vdotq_s32(acc, vreinterpretq_s8_s32(u), bcast4(x)); }
    static ireg dot4w(ireg acc, ireg u, const int8_t* x) {
        const int8x16_t c = vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_s32(u), vdupq_n_u8(0x80)));
        return vdotq_s32(acc, c, bcast4(x));
    }
    static reg cvt(ireg v) { return vcvtq_f32_s32(v); }
    static reg load_i8(const uint8_t* p) {  // 4 int8 -> fp32
        int32_t w;
        __builtin_memcpy(&w, p, 4);
        const int16x8_t s = vmovl_s8(vcreate_s8(uint64_t(uint32_t(w))));
        return vcvtq_f32_s32(vmovl_s16(vget_low_s16(s)));
    }
    // One activation block, bit-equal to quantize_acts_ref (vcvtnq rounds to nearest even).
    static void quantize_block32(const float* x, int8_t* q, float* d, float* s, int32_t* isum) {
        reg v[8];
        reg amax = zero();
        for (int i = 0; i < 8; ++i) {
            v[i] = load(x + 4 * i);
            amax = vmaxq_f32(amax, vabsq_f32(v[i]));
        }
        const float db = vmaxvq_f32(amax) / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int32x4_t qi[8];
        for (int i = 0; i < 8; ++i) qi[i] = vcvtnq_s32_f32(vmulq_f32(v[i], vdupq_n_f32(id)));
        for (int i = 0; i < 8; i += 2) {
            const int16x8_t h = vcombine_s16(vqmovn_s32(qi[i]), vqmovn_s32(qi[i + 1]));
            vst1_s8(q + 4 * i, vqmovn_s16(h));
        }
        isum[0] = vaddvq_s32(vaddq_s32(vaddq_s32(qi[0], qi[1]), vaddq_s32(qi[2], qi[3])));
        isum[1] = vaddvq_s32(vaddq_s32(vaddq_s32(qi[4], qi[5]), vaddq_s32(qi[6], qi[7])));
        *d = db;
        s[0] = db * float(isum[0]);
        s[1] = db * float(isum[1]);
    }
};

}  // namespace
}  // namespace ll::cpu
