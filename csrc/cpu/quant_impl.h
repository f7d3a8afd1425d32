// The integer weight kernels over a SIMD type V (vec_avx2.h, vec_avx512.h): the weight tile
// layout (quant_layout.h) against int8 activation blocks, 16 or 8 tile rows per register, int32
// dot products per block, fp32 accumulation.
//
// One register holds 4 codes of each of V::QR rows; an activation word (4 int8 codes) broadcast to
// every lane meets them in one VNNI vpdpbusd (u8 x s8, four products summed per lane), so the
// QR dot products land one per lane. For each block of 32 columns:
//     acc += cvt(dot) * (s * d_x)  +  mm * x_sum
// (see quant_ref.h for the symbols); blocks whose activations carry a residual plane also take its
// dot products. A micro-tile is MR activation rows by two row registers: each broadcast feeds two
// dot products, and the codes, unpacked once, serve MR rows while the tile stays in L1.
#pragma once
#include <cstdint>

#include "quant_block_impl.h"
#include "quant_kinds.h"
#include "quant_prefill_impl.h"
#include "quant_ref.h"

namespace ll::cpu {
namespace {

template <class V>
void quantize_acts(const float* x, int64_t K, int64_t Kp, int8_t* q, float* d, float* s, int32_t* isum) {
    if constexpr (V::W == 1) {
        quantize_acts_ref(x, K, Kp, q, d, s, isum);
    } else {
        int64_t b = 0;
        for (; b * 32 + 32 <= K; ++b) V::quantize_block32(x + b * 32, q + b * 32, d + b, s + 2 * b, isum + 2 * b);
        if (b * 32 < Kp) {  // the tail block and zero padding, as the reference does them
            const int64_t k0 = b * 32;
            quantize_acts_ref(x + k0, K - k0, Kp - k0, q + k0, d + b, s + 2 * b, isum + 2 * b);
        }
    }
}

// How far ahead of the block in use a decode step asks for the weight stream, in bytes (on Zen 4,
// 2 KiB streamed 4-bit tiles faster than 1 KiB or 4 KiB did, in alternating A/B runs).
constexpr int64_t kPrefetch = 2048;

// A micro-tile's row registers: register j holds tile rows [n0, n0 + QR) (V::QR of them), at
// offset h * QR within their tile (AVX2's 8-lane registers take a tile in two halves).
struct RowReg {
    const uint8_t* tile;
    int h;
    int64_t n0;
    int n_valid;
};

// MR activation rows against R row registers, over the whole of K. Each activation word
// broadcast feeds R dot products; the int32 sums of a block (one per row and register, or two
// for groups of 16) turn into fp32 once per block, scaled by the weight group's and the
// activation block's scales.
template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16, int MR, int R>
void qtile(const QActs& a, int64_t m0, const QuantGeometry& g, const RowReg* rr, float* Y, int64_t ldy,
           bool accumulate) {
    using reg = typename V::reg;
    using ireg = typename V::ireg;
    constexpr int QR = V::QR;
    constexpr int NA = G16 ? 2 : 1;  // int32 sums per row and register: columns 0-15 and 16-31 apart
    // Codes that may exceed 127 (8-bit, code-book values): V's product for them may be biased.
    constexpr bool kWide = BITS > 6 || LUT;
    constexpr int kFields = MIN ? 2 : 1;
    // The zero point net of the bias V's wide products leave out (their codes taken as u - bias).
    const int32_t zeff = g.layout.zero - V::kWideBias * int32_t(kWide);

    reg acc[MR][R];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) acc[m][j] = V::zero();

    int64_t off = 0;   // the next block's codes, from the start of a tile
    int64_t b = 0;     // the next activation block
    // The blocks whose activations have a residual plane in any of the MR rows, 64 at a time
    // (quant_kinds.h: QActs): their sums become (dot << 8) + residual dot (its step is 1/256).
    uint64_t res_word = 0;
    reg sA[R], mmA[R], sB[R], mmB[R];

    auto f16_at = [&](int j, const uint8_t* p) {
        return V::load_f16(reinterpret_cast<const uint16_t*>(p) + QR * rr[j].h);
    };
    auto block = [&]() {
        if ((b & 63) == 0) res_word = residual_word<MR>(a, m0, b);
        // The tiles are streams: asking for them well ahead keeps DRAM busy across 4 KiB pages.
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j)
            if (rr[j].h == 0)
#pragma GCC unroll 8
                for (int o = 0; o < BITS * 64; o += 64) __builtin_prefetch(rr[j].tile + off + kPrefetch + o);
        auto codes = [&](int i, ireg (&lo)[R], ireg (&hi)[R]) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j)
                unpack_step<V, BITS, LUT>(rr[j].tile + off + rr[j].h * (QR * 4), i, lo[j], hi[j]);
        };
        accumulate_block<V, kWide, MIN, G16, MR, R>(acc, a, m0, b, res_word, zeff, codes, sA, sB, mmA, mmB);
        off += g.block_code_bytes();
        ++b;
    };
    auto min_of = [&](int j, reg s, const uint8_t* mp, reg dmin) {
        return eff_min<V, SK, MIN, kWide>(s, mp, dmin, QR * rr[j].h);
    };
    // One span whose header starts `hoff` bytes into each tile; its blocks start at `off`.
    auto span = [&](int64_t hoff) {
        if constexpr (SK == ScaleKind::Super) {
            reg dv[R], dmin[R];
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                dv[j] = f16_at(j, rr[j].tile + hoff);
                dmin[j] = MIN ? f16_at(j, rr[j].tile + hoff + 2 * kTileRows) : V::zero();
            }
            const int64_t groups = hoff + 2 * kTileRows * kFields;
            for (int blk = 0; blk < kSuperCols / 32; ++blk) {
#pragma GCC unroll 4
                for (int j = 0; j < R; ++j) {
                    const uint8_t* p = rr[j].tile + groups + blk * NA * kFields * kTileRows;
                    sA[j] = V::mul(dv[j], V::load_i8(p + QR * rr[j].h));
                    mmA[j] = min_of(j, sA[j], p + kTileRows, dmin[j]);
                    if constexpr (G16) {
                        p += kFields * kTileRows;
                        sB[j] = V::mul(dv[j], V::load_i8(p + QR * rr[j].h));
                        mmB[j] = min_of(j, sB[j], p + kTileRows, dmin[j]);
                    }
                }
                block();
            }
        } else {
            constexpr int W = SK == ScaleKind::F32 ? 4 : 2;
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                const uint8_t* p = rr[j].tile + hoff;
                sA[j] = SK == ScaleKind::F16 ? f16_at(j, p) : V::load(reinterpret_cast<const float*>(p) + QR * rr[j].h);
                mmA[j] = min_of(j, sA[j], p + W * kTileRows, V::zero());
            }
            for (int64_t i = 0; i < g.span_blocks(); ++i) block();
        }
    };

    const int64_t spu = g.spans_per_unit, hbytes = g.span_header_bytes;
    int64_t up = 0;
    for (int64_t j0 = 0; j0 < g.n_spans; j0 += spu) {
        const int64_t n = imin(spu, g.n_spans - j0);
        off = up + g.header_bytes(n);
        for (int64_t i = 0; i < n; ++i) span(up + i * hbytes);
        up += g.unit_bytes(n);
    }

    store_acc<V, MR, R>(acc, rr, Y, ldy, m0, accumulate);
}

template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16, int MR, int R>
void qtile_rows(int64_t mr, const QActs& a, int64_t m0, const QuantGeometry& g, const RowReg* rr, float* Y,
                int64_t ldy, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return qtile_rows<V, BITS, SK, MIN, LUT, G16, MR - 1, R>(mr, a, m0, g, rr, Y, ldy, accumulate);
    }
    qtile<V, BITS, SK, MIN, LUT, G16, MR, R>(a, m0, g, rr, Y, ldy, accumulate);
}

// Y[m, n] (+)= sum_k X[m, k] W[n, k] for the rows n of tiles [t0, t1): pairs of row registers,
// each against all of M, MR rows at a time. Many rows (prefill) go to quant_prefill_impl.h, which
// expands the codes once instead of once per micro-tile.
template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16>
void qmatmul(const QActs& a, const QuantGeometry& g, const uint8_t* w, float* Y, int64_t ldy, int64_t t0,
             int64_t t1, bool accumulate) {
    if (a.M >= kXMinRows) return qmatmul_expanded<V, BITS, SK, MIN, LUT, G16>(a, g, w, Y, ldy, t0, t1, accumulate);
    constexpr int MR = V::QMR;
    static_assert(kResidualRows % MR == 0, "a micro-tile's rows must share their residual blocks");
    constexpr int QR = V::QR, per_tile = kTileRows / QR;
    // Decode streams each tile once: two registers from two tiles would be two streams, which
    // DRAM serves more slowly than one; the halves of one tile (AVX2) are one stream.
    const int pair = a.M > 1 || per_tile > 1 ? 2 : 1;
    RowReg regs[2];
    int n_regs = 0;
    auto flush = [&]() {
        for (int64_t m = 0; m < a.M; m += MR) {
            if (n_regs == 2) qtile_rows<V, BITS, SK, MIN, LUT, G16, MR, 2>(imin(MR, a.M - m), a, m, g, regs, Y, ldy, accumulate);
            else qtile_rows<V, BITS, SK, MIN, LUT, G16, MR, 1>(imin(MR, a.M - m), a, m, g, regs, Y, ldy, accumulate);
        }
        n_regs = 0;
    };
    for (int64_t t = t0; t < t1; ++t)
        for (int h = 0; h < per_tile; ++h) {
            const int64_t n0 = t * kTileRows + h * QR;
            if (n0 >= g.N) break;
            regs[n_regs++] = RowReg{w + t * g.tile_bytes, h, n0, int(imin(QR, g.N - n0))};
            if (n_regs == pair) flush();
        }
    if (n_regs) flush();
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
