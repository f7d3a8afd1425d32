// The integer weight kernels over a SIMD type V (vec_avx2.h, vec_avx512.h): one code of the
// weight tile layout (quant_layout.h) against int8 activation blocks, 16 or 8 tile rows per
// register, int32 dot products per block, fp32 accumulation.
//
// One register holds 4 codes of each of V::QR rows; an activation word (4 int8 codes) broadcast to
// every lane meets them in one VNNI vpdpbusd (u8 x s8, four products summed per lane), so the
// QR dot products land one per lane. For each block of 32 columns:
//     acc += cvt(dot) * (s * d_x)  +  mm * x_sum
// (see quant_ref.h for the symbols), then one more pass over the blocks whose activations carry a
// residual plane (quant_kinds.h: QActs). Prefill runs MR activation rows per pass over a tile, so
// the codes are unpacked once and reused MR times while the tile stays in L1.
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
// activation codes x0 + m * ld (this register's rows of the tile).
template <class V, int BITS, bool LUT, int MR>
inline void block_dots(const uint8_t* cp, const int8_t* x0, int64_t ld, typename V::ireg* dA, typename V::ireg* dB) {
    using ireg = typename V::ireg;
    constexpr bool kWide = BITS == 8 || LUT;
    if constexpr (BITS == 4) {
#pragma GCC unroll 8
        for (int i = 0; i < 4; ++i) {
            const ireg v = V::iload(cp + 64 * i);
            ireg lo = V::lo_nib(v), hi = V::hi_nib(v);
            if constexpr (LUT) {
                lo = V::lut16(lo, kIQ4Values);
                hi = V::lut16(hi, kIQ4Values);
            }
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                const int8_t* x = x0 + m * ld + 4 * i;
                if constexpr (kWide) {
                    dA[m] = V::dot4w(dA[m], lo, x);
                    dB[m] = V::dot4w(dB[m], hi, x + 16);
                } else {
                    dA[m] = V::dot4(dA[m], lo, x);
                    dB[m] = V::dot4(dB[m], hi, x + 16);
                }
            }
        }
    } else {
        // 8-bit codes: the block's 8 lines in address order (columns 0-15, then 16-31).
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
            const ireg c = V::iload(cp + 64 * i);
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                const int8_t* x = x0 + m * ld + 4 * i;
                if (i < 4) dA[m] = V::dot4w(dA[m], c, x);
                else dB[m] = V::dot4w(dB[m], c, x);
            }
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
    constexpr bool kWide = BITS == 8 || LUT;
    constexpr float kBias = kWide ? float(V::kWideBias) : 0.0f;
    constexpr int kFields = MIN ? 2 : 1;
    const int64_t ld32 = a.ld / 32, ld16 = a.ld / 16;
    const float neg_zero = -float(g.layout.zero);
    const int8_t* xq = a.q + m0 * a.ld;

    reg acc[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) acc[m] = V::zero();

    const uint8_t* cp = nullptr;  // the next block's codes (this register's rows of them)
    int64_t b = 0;                // the next activation block

    // One block of codes against the MR rows; groups A (columns 0-15) and B (16-31) may differ.
    auto block = [&](reg sA, reg mmA, reg sB, reg mmB) {
        ireg dA[MR], dB[MR];
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) dA[m] = dB[m] = V::izero();
        // The tile is one stream: asking for it well ahead keeps DRAM busy across 4 KiB pages.
#pragma GCC unroll 8
        for (int off = 0; off < BITS * 64; off += 64) __builtin_prefetch(cp + kPrefetch + off);
        block_dots<V, BITS, LUT, MR>(cp, xq + b * 32, a.ld, dA, dB);
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
            const float xd = a.d[(m0 + m) * ld32 + b];
            const float* xs = a.s + (m0 + m) * ld16 + 2 * b;
            if constexpr (G16) {
                acc[m] = V::fma(V::cvt(dA[m]), V::mul(sA, V::set1(xd)), acc[m]);
                acc[m] = V::fma(V::cvt(dB[m]), V::mul(sB, V::set1(xd)), acc[m]);
                acc[m] = V::fma(mmA, V::set1(xs[0]), acc[m]);
                acc[m] = V::fma(mmB, V::set1(xs[1]), acc[m]);
            } else {
                acc[m] = V::fma(V::cvt(V::iadd(dA[m], dB[m])), V::mul(sA, V::set1(xd)), acc[m]);
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

    // The residual plane, over the blocks any of the MR rows flagged (its values are zero for
    // the others). Its sums are in the half-block sums already, so only the codes' products remain.
    for (int64_t w = 0; w < a.fw; ++w) {
        uint64_t bits = 0;
        for (int m = 0; m < MR; ++m) bits |= a.flags[(m0 + m) * a.fw + w];
        for (; bits; bits &= bits - 1) {
            const int64_t rb = w * 64 + __builtin_ctzll(bits);
            const int64_t j = rb / g.span_blocks();
            const uint8_t* hp = g.span_header(tile, j);
            reg sA, sB;
            if constexpr (SK == ScaleKind::Super) {
                const int64_t gi = G16 ? 2 * (rb % 8) : rb % 8;
                const uint8_t* p = hp + 2 * kTileRows * kFields + gi * kTileRows * kFields;
                const reg dv = f16_at(hp);
                sA = V::mul(dv, V::load_i8(p + QR * h));
                sB = G16 ? V::mul(dv, V::load_i8(p + kTileRows * kFields + QR * h)) : sA;
            } else {
                sA = sB = SK == ScaleKind::F16 ? f16_at(hp) : V::load(reinterpret_cast<const float*>(hp) + QR * h);
            }
            ireg dA[MR], dB[MR];
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) dA[m] = dB[m] = V::izero();
            const uint8_t* rcp = g.span_codes(tile, j) + (rb % g.span_blocks()) * g.block_code_bytes() + h * (QR * 4);
            block_dots<V, BITS, LUT, MR>(rcp, a.r + m0 * a.ld + rb * 32, a.ld, dA, dB);
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                const reg xd2 = V::set1(a.d[(m0 + m) * ld32 + rb] * (1.0f / 256.0f));
                if constexpr (G16) {
                    acc[m] = V::fma(V::cvt(dA[m]), V::mul(sA, xd2), acc[m]);
                    acc[m] = V::fma(V::cvt(dB[m]), V::mul(sB, xd2), acc[m]);
                } else {
                    acc[m] = V::fma(V::cvt(V::iadd(dA[m], dB[m])), V::mul(sA, xd2), acc[m]);
                }
            }
        }
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
