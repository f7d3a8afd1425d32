// Prefill over integer weights (quant_impl.h's layout, 32 activation rows or more): a tile's
// codes are expanded once into bytes and its group scales into fp32 per block, over all of K,
// and every micro-tile of activation rows then runs against the expanded tile.
//
// The decode kernel (quant_impl.h: qtile) unpacks nibbles and builds each block's scales from the
// packed header on every pass, which in prefill was redone for each micro-tile of rows (128 times
// for a 512-token batch). Here the micro-kernel's loop is loads, broadcasts, dot products and the
// per-block fp32 update, which is what bounds it now (on Zen 4 the dot products and the fp32
// multiplies share two pipes). The expanded tiles stay in L2 (18 KiB per 1024 columns and tile);
// expanding a few blocks at a time to stay in L1 was slower, as every micro-tile's sums then went
// through Y once per chunk. The arithmetic per block is qtile's: both run quant_block_impl.h's
// accumulate_block, and the expanded scales are computed by the same operations.
//
// An expanded tile, for each of its nb blocks of 32 columns:
//   codes  nb x 512 bytes: the 8-bit block layout of quant_layout.h (chunk c, byte 4r + j: row r's
//          code of column 4c + j), codes as the kernels take them (code-book values for LUT layouts)
//   scale  nb x NA x 16 fp32: the group scale of each row (NA = 2 for groups of 16: columns 0-15,
//          then 16-31)
//   min    nb x NA x 16 fp32, formats with a min only: the effective min (qtile's eff_min)
#pragma once
#include <cstdint>

#include "../core/aligned_buffer.h"
#include "quant_block_impl.h"
#include "quant_kinds.h"

namespace ll::cpu {
namespace {

constexpr int64_t kXMinRows = 32;  // fewer activation rows take qtile (measured crossover: 16-32)

template <bool MIN, bool G16>
struct XShape {
    static constexpr int NA = G16 ? 2 : 1;
    static constexpr int64_t kCodeBytes = kTileRows * kQBlock;                   // one block's codes
    static constexpr int64_t kScaleFloats = int64_t(NA) * kTileRows;             // one block's scales
    static constexpr int64_t kBlockBytes = kCodeBytes + (MIN ? 2 : 1) * kScaleFloats * int64_t(sizeof(float));
};

// One expanded tile (layout above).
struct XTile {
    uint8_t* codes;
    float* scale;
    float* min;
};

template <bool MIN, bool G16>
XTile xtile_at(uint8_t* base, int64_t nb) {
    using S = XShape<MIN, G16>;
    uint8_t* codes = base;
    float* scale = reinterpret_cast<float*>(codes + nb * S::kCodeBytes);
    return XTile{codes, scale, MIN ? scale + nb * S::kScaleFloats : nullptr};
}

// A thread's expansion buffer, grown as needed.
inline uint8_t* x_buffer(size_t bytes) {
    thread_local AlignedBuffer buf;
    if (buf.size() < bytes) buf = AlignedBuffer(bytes);
    return buf.get();
}

// Expands the nb blocks of a packed tile.
template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16>
void expand_tile(const QuantGeometry& g, const uint8_t* tile, int64_t nb, const XTile& out) {
    using reg = typename V::reg;
    using ireg = typename V::ireg;
    constexpr int QR = V::QR, NA = G16 ? 2 : 1, kFields = MIN ? 2 : 1;
    constexpr bool kWide = BITS > 6 || LUT;
    const int64_t sb = g.span_blocks();
    for (int64_t b = 0; b < nb; ++b) {
        const int64_t span = b / sb;
        const uint8_t* c = g.span_codes(tile, span) + (b % sb) * g.block_code_bytes();
        const uint8_t* hdr = g.span_header(tile, span);
        uint8_t* oc = out.codes + b * (kTileRows * kQBlock);
        for (int h = 0; h < kTileRows / QR; ++h) {
            const int64_t ho = int64_t(h) * QR * 4;  // a register's bytes within a 64-byte chunk
            for (int q = 0; q < 4; ++q) {
                ireg lo, hi;
                unpack_step<V, BITS, LUT>(c + ho, q, lo, hi);
                V::istore(oc + 64 * q + ho, lo);
                V::istore(oc + 64 * (q + 4) + ho, hi);
            }
            // The scales and mins, computed exactly as qtile computes them.
            auto f16 = [&](const uint8_t* p) { return V::load_f16(reinterpret_cast<const uint16_t*>(p) + QR * h); };
            auto min_of = [&](reg s, const uint8_t* mp, reg dmin) { return eff_min<V, SK, MIN, kWide>(s, mp, dmin, QR * h); };
            float* os = out.scale + b * NA * kTileRows + QR * h;
            float* om = MIN ? out.min + b * NA * kTileRows + QR * h : nullptr;
            if constexpr (SK == ScaleKind::Super) {
                const reg dv = f16(hdr);
                const reg dmin = MIN ? f16(hdr + 2 * kTileRows) : V::zero();
                const uint8_t* p = hdr + 2 * kTileRows * kFields + (b % sb) * NA * kFields * kTileRows;
                for (int k = 0; k < NA; ++k, p += kFields * kTileRows) {
                    const reg s = V::mul(dv, V::load_i8(p + QR * h));
                    V::store(os + k * kTileRows, s);
                    if constexpr (MIN) V::store(om + k * kTileRows, min_of(s, p + kTileRows, dmin));
                }
            } else {
                constexpr int W = SK == ScaleKind::F32 ? 4 : 2;
                const reg s = SK == ScaleKind::F16 ? f16(hdr) : V::load(reinterpret_cast<const float*>(hdr) + QR * h);
                V::store(os, s);
                if constexpr (MIN) V::store(om, min_of(s, hdr + W * kTileRows, V::zero()));
            }
        }
    }
}

// A register's rows in an expanded tile: rows [n0, n0 + QR) of the output, at offset h * QR in
// their tile.
struct XReg {
    XTile x;
    int h;
    int64_t n0;
    int n_valid;
};

// MR activation rows against R row registers over all nb blocks, reading the expanded codes and
// scales.
template <class V, bool MIN, bool G16, bool kWide, int MR, int R>
void xtile(const QActs& a, int64_t m0, int32_t zeff, int64_t nb, const XReg* rr, float* Y, int64_t ldy,
           bool accumulate) {
    using reg = typename V::reg;
    using ireg = typename V::ireg;
    constexpr int QR = V::QR, NA = G16 ? 2 : 1;
    reg acc[MR][R];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) acc[m][j] = V::zero();
    uint64_t res_word = 0;
    for (int64_t b = 0; b < nb; ++b) {
        if ((b & 63) == 0) res_word = residual_word<MR>(a, m0, b);
        auto codes = [&](int i, ireg (&lo)[R], ireg (&hi)[R]) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                const uint8_t* c = rr[j].x.codes + b * (kTileRows * kQBlock) + rr[j].h * (QR * 4);
                lo[j] = V::iload(c + 64 * i);
                hi[j] = V::iload(c + 64 * (i + 4));
            }
        };
        reg sA[R], sB[R], mmA[R], mmB[R];
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            const int64_t o = b * NA * kTileRows + rr[j].h * QR;
            sA[j] = V::load(rr[j].x.scale + o);
            if constexpr (G16) sB[j] = V::load(rr[j].x.scale + o + kTileRows);
            if constexpr (MIN) {
                mmA[j] = V::load(rr[j].x.min + o);
                if constexpr (G16) mmB[j] = V::load(rr[j].x.min + o + kTileRows);
            }
        }
        accumulate_block<V, kWide, MIN, G16, MR, R>(acc, a, m0, b, res_word, zeff, codes, sA, sB, mmA, mmB);
    }
    store_acc<V, MR, R>(acc, rr, Y, ldy, m0, accumulate);
}

template <class V, bool MIN, bool G16, bool kWide, int MR, int R>
void xtile_rows(int64_t mr, const QActs& a, int64_t m0, int32_t zeff, int64_t nb, const XReg* rr,
                float* Y, int64_t ldy, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return xtile_rows<V, MIN, G16, kWide, MR - 1, R>(mr, a, m0, zeff, nb, rr, Y, ldy, accumulate);
    }
    xtile<V, MIN, G16, kWide, MR, R>(a, m0, zeff, nb, rr, Y, ldy, accumulate);
}

// nr (<= R) row registers against all M activation rows, MR at a time.
template <class V, bool MIN, bool G16, bool kWide, int MR, int R>
void xtile_regs(int nr, const QActs& a, int32_t zeff, int64_t nb, const XReg* rr, float* Y, int64_t ldy,
                bool accumulate) {
    if constexpr (R > 1) {
        if (nr < R) return xtile_regs<V, MIN, G16, kWide, MR, R - 1>(nr, a, zeff, nb, rr, Y, ldy, accumulate);
    }
    for (int64_t m = 0; m < a.M; m += MR)
        xtile_rows<V, MIN, G16, kWide, MR, R>(imin(MR, a.M - m), a, m, zeff, nb, rr, Y, ldy, accumulate);
}

// Y[m, n] (+)= sum_k X[m, k] W[n, k] for the rows n of tiles [t0, t1), many rows m: XR row
// registers' worth of tiles expanded over all of K (L2-resident: at most 18 KiB per 1024 columns
// and register), then every MR rows of activations against them, each micro-tile over the whole
// of K so that Y is written once.
template <class V, int BITS, ScaleKind SK, bool MIN, bool LUT, bool G16>
void qmatmul_expanded(const QActs& a, const QuantGeometry& g, const uint8_t* w, float* Y, int64_t ldy, int64_t t0,
                      int64_t t1, bool accumulate) {
    using S = XShape<MIN, G16>;
    // Groups of 16 keep two int32 sums per row and register: fewer registers fit.
    constexpr int XR = G16 ? 2 : V::XR, MR = G16 ? V::QMR : V::XMR;
    constexpr int QR = V::QR, per_tile = kTileRows / QR;
    constexpr int group_tiles = XR / per_tile > 1 ? XR / per_tile : 1;  // tiles expanded together
    constexpr bool kWide = BITS > 6 || LUT;
    static_assert(kResidualRows % MR == 0, "a micro-tile's rows must share their residual blocks");
    const int32_t zeff = g.layout.zero - V::kWideBias * int32_t(kWide);
    const int64_t nb = g.Kp / kQBlock;
    uint8_t* buf = x_buffer(size_t(group_tiles * nb * S::kBlockBytes));
    for (int64_t t = t0; t < t1; t += group_tiles) {
        const int nt = int(imin(group_tiles, t1 - t));
        XReg regs[group_tiles * per_tile];
        int n_regs = 0;
        for (int i = 0; i < nt; ++i) {
            const XTile xt = xtile_at<MIN, G16>(buf + i * nb * S::kBlockBytes, nb);
            expand_tile<V, BITS, SK, MIN, LUT, G16>(g, w + (t + i) * g.tile_bytes, nb, xt);
            for (int h = 0; h < per_tile; ++h) {
                const int64_t n0 = (t + i) * kTileRows + h * QR;
                if (n0 < g.N) regs[n_regs++] = XReg{xt, h, n0, int(imin(QR, g.N - n0))};
            }
        }
        for (int r = 0; r < n_regs; r += XR)
            xtile_regs<V, MIN, G16, kWide, MR, XR>(int(imin(XR, n_regs - r)), a, zeff, nb, regs + r, Y, ldy,
                                                   accumulate);
    }
}

}  // namespace
}  // namespace ll::cpu
