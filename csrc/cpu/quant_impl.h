// The integer weight kernels over a SIMD type V (vec_avx2.h, vec_avx512.h): one code of the
// weight tile layout (quant_layout.h) against int8 activation blocks, 16 or 8 tile rows per
// register, int32 dot products per block, fp32 accumulation.
//
// One register holds 4 codes of each of V::QR rows; an activation word (4 int8 codes) broadcast to
// every lane meets them in one VNNI vpdpbusd (u8 x s8, four products summed per lane), so the
// QR dot products land one per lane. For each block of 32 columns:
//     acc += cvt(dot) * (s * d_x)  +  mm * x_sum
// (see quant_ref.h for the symbols); blocks whose activations carry a residual plane also take its
// dot products. Prefill runs MR activation rows per pass over a tile, so the codes are unpacked
// once and reused MR times while the tile stays in L1.
#pragma once
#include <cstdint>

#include "quant_kinds.h"
#include "quant_ref.h"

namespace ll::cpu {
namespace {

template <class V>
void quantize_acts(const float* x, int64_t K, int64_t Kp, int8_t* q, float* d, float* s) {
    if constexpr (V::W == 1) {
        quantize_acts_ref(x, K, Kp, q, d, s);
    } else {
        int64_t b = 0;
        for (; b * 32 + 32 <= K; ++b) V::quantize_block32(x + b * 32, q + b * 32, d + b, s + 2 * b);
        if (b * 32 < Kp) {  // the tail block and zero padding, as the reference does them
            const int64_t k0 = b * 32;
            quantize_acts_ref(x + k0, K - k0, Kp - k0, q + k0, d + b, s + 2 * b);
        }
    }
}

// How far ahead of the block in use a decode step asks for the weight stream, in bytes (on Zen 4,
// 2 KiB streamed 4-bit tiles faster than 1 KiB or 4 KiB did, in alternating A/B runs).
constexpr int64_t kPrefetch = 2048;

// dA[m], dB[m] += the int32 dot products of one block's codes (columns 0-15, 16-31) with
// activation codes x0 + m * ld (this register's rows of the tile); with RES, also rA[m], rB[m]
// with the residual codes r0 + m * ld, the codes unpacked once for both.
template <class V, int BITS, bool LUT, int MR, bool RES>
inline void block_dots(const uint8_t* cp, const int8_t* x0, const int8_t* r0, int64_t ld, typename V::ireg* dA,
                       typename V::ireg* dB, typename V::ireg* rA, typename V::ireg* rB) {
    using ireg = typename V::ireg;
    constexpr bool kWide = BITS > 6 || LUT;
    auto dot = [](ireg acc, ireg c, const int8_t* x) { return kWide ? V::dot4w(acc, c, x) : V::dot4(acc, c, x); };
    auto both = [&](int m, int k, ireg lo, ireg hi) {  // 4 codes of columns k.. (A) and k + 16.. (B)
        dA[m] = dot(dA[m], lo, x0 + m * ld + k);
        dB[m] = dot(dB[m], hi, x0 + m * ld + k + 16);
        if constexpr (RES) {
            rA[m] = dot(rA[m], lo, r0 + m * ld + k);
            rB[m] = dot(rB[m], hi, r0 + m * ld + k + 16);
        }
    };
    if constexpr (BITS == 4 || BITS == 6) {
        ireg hA, hB;  // 6-bit codes: their top two bits, 4 columns' worth per byte
        if constexpr (BITS == 6) {
            hA = V::iload(cp + 256);
            hB = V::iload(cp + 320);
        }
#pragma GCC unroll 8
        for (int i = 0; i < 4; ++i) {
            const ireg v = V::iload(cp + 64 * i);
            ireg lo = V::lo_nib(v), hi = V::hi_nib(v);
            if constexpr (LUT) {
                lo = V::lut16(lo, kIQ4Values);
                hi = V::lut16(hi, kIQ4Values);
            }
            if constexpr (BITS == 6) {
                lo = V::add_bits45(lo, hA, 2 * i);
                hi = V::add_bits45(hi, hB, 2 * i);
            }
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) both(m, 4 * i, lo, hi);
        }
    } else {
        // 8-bit codes: lines i (columns 4i.., A) and i + 4 (columns 16 + 4i.., B).
#pragma GCC unroll 8
        for (int i = 0; i < 4; ++i) {
            const ireg lo = V::iload(cp + 64 * i), hi = V::iload(cp + 64 * (i + 4));
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) both(m, 4 * i, lo, hi);
        }
    }
}

template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16, int MR>
void qtile(const QActs& a, int64_t m0, const QuantGeometry& g, const uint8_t* tile, int h, float* Y,
           int64_t ldy, int64_t n0, int n_valid, bool accumulate) {
    using reg = typename V::reg;
    using ireg = typename V::ireg;
    constexpr int QR = V::QR;
    // Codes that may exceed 127 (8-bit, code-book values): V's product for them may be biased.
    constexpr bool kWide = BITS > 6 || LUT;
    constexpr float kBias = kWide ? float(V::kWideBias) : 0.0f;
    constexpr int kFields = MIN ? 2 : 1;
    const int64_t ld32 = a.ld / 32, ld16 = a.ld / 16;
    const float neg_zero = -float(g.layout.zero);
    const int8_t* xq = a.q + m0 * a.ld;
    const int8_t* xr = a.r + m0 * a.ld;

    reg acc[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) acc[m] = V::zero();

    const uint8_t* cp = nullptr;  // the next block's codes (this register's rows of them)
    int64_t b = 0;                // the next activation block

    // Flags of the blocks whose activations have a residual plane in any of the MR rows (quant_kinds.h:
    // QActs), one 64-block word at a time: such a block also gets the residual's dot products,
    // from the same unpacked codes, folded in as (dot << 8) + rdot (the residual's step is 1/256).
    uint64_t res_word = 0;

    // One block of codes against the MR rows; groups A (columns 0-15) and B (16-31) may differ.
    auto block = [&](reg sA, reg mmA, reg sB, reg mmB) {
        if ((b & 63) == 0) {
            res_word = 0;
            for (int m = 0; m < MR; ++m) res_word |= a.flags[(m0 + m) * a.fw + (b >> 6)];
        }
        ireg dA[MR], dB[MR], rA[MR], rB[MR];
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) dA[m] = dB[m] = V::izero();
        // The tile is one stream: asking for it well ahead keeps DRAM busy across 4 KiB pages.
#pragma GCC unroll 8
        for (int off = 0; off < BITS * 64; off += 64) __builtin_prefetch(cp + kPrefetch + off);
        const bool res = (res_word >> (b & 63)) & 1;
        float xscale = 1.0f;
        if (res) {
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) rA[m] = rB[m] = V::izero();
            block_dots<V, BITS, LUT, MR, true>(cp, xq + b * 32, xr + b * 32, a.ld, dA, dB, rA, rB);
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                dA[m] = V::iadd(V::ishl8(dA[m]), rA[m]);
                dB[m] = V::iadd(V::ishl8(dB[m]), rB[m]);
            }
            xscale = 1.0f / 256.0f;
        } else {
            block_dots<V, BITS, LUT, MR, false>(cp, xq + b * 32, nullptr, a.ld, dA, dB, nullptr, nullptr);
        }
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
            const reg xd = V::set1(a.d[(m0 + m) * ld32 + b] * xscale);
            const float* xs = a.s + (m0 + m) * ld16 + 2 * b;
            if constexpr (G16) {
                acc[m] = V::fma(V::cvt(dA[m]), V::mul(sA, xd), acc[m]);
                acc[m] = V::fma(V::cvt(dB[m]), V::mul(sB, xd), acc[m]);
                acc[m] = V::fma(mmA, V::set1(xs[0]), acc[m]);
                acc[m] = V::fma(mmB, V::set1(xs[1]), acc[m]);
            } else {
                acc[m] = V::fma(V::cvt(V::iadd(dA[m], dB[m])), V::mul(sA, xd), acc[m]);
                acc[m] = V::fma(mmA, V::set1(xs[0] + xs[1]), acc[m]);
            }
        }
        cp += g.block_code_bytes();
        ++b;
    };
    // The effective min: the stored min, or -zero * s; plus the bias V's wide products leave out.
    auto eff_min = [&](reg s, const uint8_t* mp, reg dmin) -> reg {
        reg mm;
        if constexpr (!MIN) {
            mm = V::mul(s, V::set1(neg_zero + kBias));
        } else {
            if constexpr (SK == ScaleKind::F16) mm = V::load_f16(reinterpret_cast<const uint16_t*>(mp) + QR * h);
            else if constexpr (SK == ScaleKind::F32) mm = V::load(reinterpret_cast<const float*>(mp) + QR * h);
            else mm = V::mul(dmin, V::load_i8(mp + QR * h));
            if constexpr (kWide) mm = V::fma(s, V::set1(kBias), mm);
        }
        return mm;
    };
    auto f16_at = [&](const uint8_t* p) { return V::load_f16(reinterpret_cast<const uint16_t*>(p) + QR * h); };
    // One span: its header at hp, its blocks from cp on.
    auto span = [&](const uint8_t* hp) {
        if constexpr (SK == ScaleKind::Super) {
            const reg dv = f16_at(hp);
            hp += 2 * kTileRows;
            reg dmin = V::zero();
            if constexpr (MIN) {
                dmin = f16_at(hp);
                hp += 2 * kTileRows;
            }
            auto group = [&](reg& s, reg& mm) {
                s = V::mul(dv, V::load_i8(hp + QR * h));
                mm = eff_min(s, hp + kTileRows, dmin);
                hp += kFields * kTileRows;
            };
            for (int blk = 0; blk < kSuperCols / 32; ++blk) {
                reg sA, mmA;
                group(sA, mmA);
                if constexpr (G16) {
                    reg sB, mmB;
                    group(sB, mmB);
                    block(sA, mmA, sB, mmB);
                } else {
                    block(sA, mmA, sA, mmA);
                }
            }
        } else {
            constexpr int W = SK == ScaleKind::F32 ? 4 : 2;
            const reg s = SK == ScaleKind::F16 ? f16_at(hp) : V::load(reinterpret_cast<const float*>(hp) + QR * h);
            const reg mm = eff_min(s, hp + W * kTileRows, V::zero());
            for (int64_t i = 0; i < g.span_blocks(); ++i) block(s, mm, s, mm);
        }
    };

    const int64_t spu = g.spans_per_unit, hbytes = g.span_header_bytes;
    const uint8_t* up = tile;
    for (int64_t j0 = 0; j0 < g.n_spans; j0 += spu) {
        const int64_t n = imin(spu, g.n_spans - j0);
        cp = up + g.header_bytes(n) + h * (QR * 4);
        for (int64_t i = 0; i < n; ++i) span(up + i * hbytes);
        up += g.unit_bytes(n);
    }

    for (int m = 0; m < MR; ++m) {
        float* y = Y + (m0 + m) * ldy + n0;
        if (n_valid == QR) {
            V::store(y, accumulate ? V::add(V::load(y), acc[m]) : acc[m]);
        } else {
            float tmp[QR];
            V::store(tmp, acc[m]);
            for (int r = 0; r < n_valid; ++r) y[r] = accumulate ? y[r] + tmp[r] : tmp[r];
        }
    }
}

template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16, int MR>
void qtile_rows(int64_t mr, const QActs& a, int64_t m0, const QuantGeometry& g, const uint8_t* tile, int h,
                float* Y, int64_t ldy, int64_t n0, int n_valid, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR)
            return qtile_rows<V, BITS, SK, MIN, LUT, G16, MR - 1>(mr, a, m0, g, tile, h, Y, ldy, n0, n_valid, accumulate);
    }
    qtile<V, BITS, SK, MIN, LUT, G16, MR>(a, m0, g, tile, h, Y, ldy, n0, n_valid, accumulate);
}

// Y[m, n] (+)= sum_k X[m, k] W[n, k] for the rows n of tiles [t0, t1).
template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16>
void qmatmul(const QActs& a, const QuantGeometry& g, const uint8_t* w, float* Y, int64_t ldy, int64_t t0,
             int64_t t1, bool accumulate) {
    constexpr int MR = V::QMR;
    static_assert(kResidualRows % MR == 0, "a micro-tile's rows must share their residual blocks");
    for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* tile = w + t * g.tile_bytes;
        for (int h = 0; h < kTileRows / V::QR; ++h) {
            const int64_t n0 = t * kTileRows + h * V::QR;
            if (n0 >= g.N) break;
            const int n_valid = int(g.N - n0 < V::QR ? g.N - n0 : V::QR);
            for (int64_t m = 0; m < a.M; m += MR)
                qtile_rows<V, BITS, SK, MIN, LUT, G16, MR>(imin(MR, a.M - m), a, m, g, tile, h, Y, ldy, n0,
                                                           n_valid, accumulate);
        }
    }
}

template <class V, size_t... I>
void fill_qmatmul(Kernels& k, std::index_sequence<I...>) {
    ((k.qmatmul[I] = qmatmul<V, kQKinds[I].bits, kQKinds[I].scale, kQKinds[I].has_min, kQKinds[I].lut,
                             kQKinds[I].g16>),
     ...);
}

template <class V>
void fill_quant_kernels(Kernels& k) {
    k.quantize_acts = quantize_acts<V>;
    if constexpr (V::W == 1) {
        for (int i = 0; i < kNumQKinds; ++i) k.qmatmul[i] = qmatmul_ref;
    } else {
        fill_qmatmul<V>(k, std::make_index_sequence<kNumQKinds>{});
    }
}

}  // namespace
}  // namespace ll::cpu
