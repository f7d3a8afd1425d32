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
// through Y once per chunk. The arithmetic per block is qtile's: the same int32 dot products, the
// same fp32 scales computed by the same operations, the same order of fp32 updates.
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
            if constexpr (BITS == 8) {
                for (int q = 0; q < 8; ++q) V::istore(oc + 64 * q + ho, V::iload(c + 64 * q + ho));
            } else {
                for (int q = 0; q < 4; ++q) {
                    const ireg v = V::iload(c + 64 * q + ho);
                    ireg lo = V::lo_nib(v), hi = V::hi_nib(v);
                    if constexpr (LUT) {
                        lo = V::lut16(lo, kIQ4Values);
                        hi = V::lut16(hi, kIQ4Values);
                    }
                    if constexpr (BITS == 6) {
                        lo = V::add_bits45(lo, V::iload(c + 256 + ho), 2 * q);
                        hi = V::add_bits45(hi, V::iload(c + 320 + ho), 2 * q);
                    }
                    V::istore(oc + 64 * q + ho, lo);
                    V::istore(oc + 64 * (q + 4) + ho, hi);
                }
            }
            // The scales and mins, computed exactly as qtile computes them.
            auto f16 = [&](const uint8_t* p) { return V::load_f16(reinterpret_cast<const uint16_t*>(p) + QR * h); };
            auto eff_min = [&](reg s, const uint8_t* mp, reg dmin) -> reg {
                reg mm;
                if constexpr (SK == ScaleKind::F16) mm = f16(mp);
                else if constexpr (SK == ScaleKind::F32) mm = V::load(reinterpret_cast<const float*>(mp) + QR * h);
                else mm = V::mul(dmin, V::load_i8(mp + QR * h));
                if constexpr (kWide) mm = V::fma(s, V::set1(float(V::kWideBias)), mm);
                return mm;
            };
            float* os = out.scale + b * NA * kTileRows + QR * h;
            float* om = MIN ? out.min + b * NA * kTileRows + QR * h : nullptr;
            if constexpr (SK == ScaleKind::Super) {
                const reg dv = f16(hdr);
                const reg dmin = MIN ? f16(hdr + 2 * kTileRows) : V::zero();
                const uint8_t* p = hdr + 2 * kTileRows * kFields + (b % sb) * NA * kFields * kTileRows;
                for (int k = 0; k < NA; ++k, p += kFields * kTileRows) {
                    const reg s = V::mul(dv, V::load_i8(p + QR * h));
                    V::store(os + k * kTileRows, s);
                    if constexpr (MIN) V::store(om + k * kTileRows, eff_min(s, p + kTileRows, dmin));
                }
            } else {
                constexpr int W = SK == ScaleKind::F32 ? 4 : 2;
                const reg s = SK == ScaleKind::F16 ? f16(hdr) : V::load(reinterpret_cast<const float*>(hdr) + QR * h);
                V::store(os, s);
                if constexpr (MIN) V::store(om, eff_min(s, hdr + W * kTileRows, V::zero()));
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

// MR activation rows against R row registers over all nb blocks: qtile's block, reading the
// expanded codes and scales.
template <class V, bool MIN, bool G16, bool kWide, int MR, int R>
void xtile(const QActs& a, int64_t m0, int32_t zeff, int64_t nb, const XReg* rr, float* Y, int64_t ldy,
           bool accumulate) {
    using reg = typename V::reg;
    using ireg = typename V::ireg;
    constexpr int QR = V::QR, NA = G16 ? 2 : 1;
    const int64_t ld32 = a.ld / 32, ld16 = a.ld / 16;
    const int32_t* is0 = a.isum + m0 * ld16;
    const float* xd0 = a.d + m0 * ld32;
    const float* xs0 = G16 ? a.s + m0 * ld16 : a.s32 + m0 * ld32;
    const int64_t xs_ld = G16 ? ld16 : ld32;

    reg acc[MR][R];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) acc[m][j] = V::zero();

    auto dots = [&](ireg (&d)[MR][R][NA], const int8_t* x, const uint8_t* const (&codes)[R]) {
        auto dot = [](ireg acc, ireg c, const int8_t* w) { return kWide ? V::dot4w(acc, c, w) : V::dot4(acc, c, w); };
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
            ireg lo[R], hi[R];
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                lo[j] = V::iload(codes[j] + 64 * i);
                hi[j] = V::iload(codes[j] + 64 * (i + 4));
            }
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                const int8_t* w = x + m * a.ld + 4 * i;
#pragma GCC unroll 4
                for (int j = 0; j < R; ++j) {
                    d[m][j][0] = dot(d[m][j][0], lo[j], w);
                    d[m][j][NA - 1] = dot(d[m][j][NA - 1], hi[j], w + 16);
                }
            }
        }
    };

    uint64_t res_word = 0;
    for (int64_t b = 0; b < nb; ++b) {
        if ((b & 63) == 0) {
            res_word = 0;
            for (int m = 0; m < MR; ++m) res_word |= a.flags[(m0 + m) * a.fw + (b >> 6)];
        }
        const bool residual = (res_word >> (b & 63)) & 1;
        const uint8_t* codes[R];
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) codes[j] = rr[j].x.codes + b * (kTileRows * kQBlock) + rr[j].h * (QR * 4);
        // Symmetric formats: the zero point comes off the int32 sums as zero times the activation
        // codes' sum. Outside residual blocks it is where the sums start; in them it is added after
        // the shift, as the codes' sum there is (sum << 8) + the residual codes' sum.
        ireg d[MR][R][NA];
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
            const int32_t* is = is0 + m * ld16 + 2 * b;
            ireg z[NA];
            if constexpr (G16) {
                z[0] = V::iset1(MIN || residual ? 0 : -zeff * is[0]);
                z[NA - 1] = V::iset1(MIN || residual ? 0 : -zeff * is[1]);
            } else {
                z[0] = V::iset1(MIN || residual ? 0 : -zeff * (is[0] + is[1]));
            }
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j)
#pragma GCC unroll 2
                for (int k = 0; k < NA; ++k) d[m][j][k] = z[k];
        }
        dots(d, a.q + m0 * a.ld + b * 32, codes);
        float xscale = 1.0f;
        if (residual) {
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
                for (int j = 0; j < R; ++j)
#pragma GCC unroll 2
                    for (int k = 0; k < NA; ++k) d[m][j][k] = V::ishl8(d[m][j][k]);
            dots(d, a.r + m0 * a.ld + b * 32, codes);
            if constexpr (!MIN) {
#pragma GCC unroll 16
                for (int m = 0; m < MR; ++m) {
                    const int32_t* is = is0 + m * ld16 + 2 * b;
#pragma GCC unroll 4
                    for (int j = 0; j < R; ++j) {
                        if constexpr (G16) {
                            d[m][j][0] = V::iadd(d[m][j][0], V::iset1(-zeff * is[0]));
                            d[m][j][1] = V::iadd(d[m][j][1], V::iset1(-zeff * is[1]));
                        } else {
                            d[m][j][0] = V::iadd(d[m][j][0], V::iset1(-zeff * (is[0] + is[1])));
                        }
                    }
                }
            }
            xscale = 1.0f / 256.0f;
        }
        // The residual's step 1/256 goes on the weight scales (exactly: a power of two), so that
        // each activation scale is one broadcast from memory.
        reg sA[R], sB[R], mmA[R], mmB[R];
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            const int64_t o = b * NA * kTileRows + rr[j].h * QR;
            sA[j] = V::load(rr[j].x.scale + o);
            if constexpr (G16) sB[j] = V::load(rr[j].x.scale + o + kTileRows);
            if (residual) {
                sA[j] = V::mul(sA[j], V::set1(xscale));
                if constexpr (G16) sB[j] = V::mul(sB[j], V::set1(xscale));
            }
            if constexpr (MIN) {
                mmA[j] = V::load(rr[j].x.min + o);
                if constexpr (G16) mmB[j] = V::load(rr[j].x.min + o + kTileRows);
            }
        }
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
            const reg xd = V::set1(xd0[m * ld32 + b]);
            if constexpr (!MIN) {
#pragma GCC unroll 4
                for (int j = 0; j < R; ++j) {
                    if constexpr (G16) {
                        const reg t = V::fma(V::cvt(d[m][j][1]), sB[j], V::mul(V::cvt(d[m][j][0]), sA[j]));
                        acc[m][j] = V::fma(t, xd, acc[m][j]);
                    } else {
                        acc[m][j] = V::fma(V::cvt(d[m][j][0]), V::mul(sA[j], xd), acc[m][j]);
                    }
                }
            } else {
                const float* xs = xs0 + m * xs_ld + (G16 ? 2 * b : b);
#pragma GCC unroll 4
                for (int j = 0; j < R; ++j) {
                    acc[m][j] = V::fma(V::cvt(d[m][j][0]), V::mul(sA[j], xd), acc[m][j]);
                    acc[m][j] = V::fma(mmA[j], V::set1(xs[0]), acc[m][j]);
                    if constexpr (G16) {
                        acc[m][j] = V::fma(V::cvt(d[m][j][1]), V::mul(sB[j], xd), acc[m][j]);
                        acc[m][j] = V::fma(mmB[j], V::set1(xs[1]), acc[m][j]);
                    }
                }
            }
        }
    }

    for (int m = 0; m < MR; ++m)
        for (int j = 0; j < R; ++j) {
            float* y = Y + (m0 + m) * ldy + rr[j].n0;
            if (rr[j].n_valid == QR) {
                V::store(y, accumulate ? V::add(V::load(y), acc[m][j]) : acc[m][j]);
            } else {
                float tmp[QR];
                V::store(tmp, acc[m][j]);
                for (int r = 0; r < rr[j].n_valid; ++r) y[r] = accumulate ? y[r] + tmp[r] : tmp[r];
            }
        }
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
