// The pieces of one 32-column block that both integer kernels use: the decode kernel (quant_impl.h:
// qtile, reading packed tiles) and the prefill kernel (quant_prefill_impl.h: xtile, reading tiles
// expanded once). They differ only in where a block's codes and scales come from.
//
// For a block, MR activation rows against R row registers of QR rows each:
//     sums   d = codes . activation codes (int32, one per row and register; two for groups of 16),
//            and in residual blocks (d << 8) + codes . residual codes (step 1/256)
//     acc   += cvt(d - zero * x_isum) * (s * d_x)           (symmetric formats)
//     acc   += cvt(d) * (s * d_x)  +  mm * x_sum            (formats with a min)
// (quant_ref.h has the symbols and the scalar reference.)
#pragma once
#include <cstdint>

#include "quant_kinds.h"

namespace ll::cpu {
namespace {

// Step i (0..3) of a block's packed codes at c (a register's rows, bits = BITS): the codes of
// columns 4i..4i+3 (lo) and 16+4i..16+4i+3 (hi) as bytes, code-book values for LUT layouts.
template <class V, int BITS, bool LUT>
__attribute__((always_inline)) inline void unpack_step(const uint8_t* c, int i, typename V::ireg& lo, typename V::ireg& hi) {
    if constexpr (BITS == 8) {
        lo = V::iload(c + 64 * i);
        hi = V::iload(c + 64 * (i + 4));
    } else {
        const typename V::ireg v = V::iload(c + 64 * i);
        lo = V::lo_nib(v);
        hi = V::hi_nib(v);
        if constexpr (LUT) {
            lo = V::lut16(lo, kIQ4Values);
            hi = V::lut16(hi, kIQ4Values);
        }
        if constexpr (BITS == 6) {  // the top two bits of columns 4i.. and 16 + 4i..
            lo = V::add_bits45(lo, V::iload(c + 256), 2 * i);
            hi = V::add_bits45(hi, V::iload(c + 320), 2 * i);
        }
    }
}

// The effective group min of a register's rows: the min field at mp (o: the register's offset in
// rows), plus the bias V's wide products leave out. Symmetric formats take their zero point in
// int32 instead, and get 0.
template <class V, ScaleKind SK, bool MIN, bool kWide>
typename V::reg eff_min(typename V::reg s, const uint8_t* mp, typename V::reg dmin, int o) {
    using reg = typename V::reg;
    if constexpr (!MIN) return V::zero();
    reg mm;
    if constexpr (SK == ScaleKind::F16) mm = V::load_f16(reinterpret_cast<const uint16_t*>(mp) + o);
    else if constexpr (SK == ScaleKind::F32) mm = V::load(reinterpret_cast<const float*>(mp) + o);
    else mm = V::mul(dmin, V::load_i8(mp + o));
    if constexpr (kWide) mm = V::fma(s, V::set1(float(V::kWideBias)), mm);
    return mm;
}

// Always inlined into the kernels' block loops: the sums, scales and accumulators must stay in
// registers.
// Block b's sums and fp32 update for MR activation rows from m0. codes(i, lo, hi) gives step i's
// codes of each register (unpack_step); sA/sB, mmA/mmB are the registers' group scales and
// effective mins (B: columns 16-31 of groups of 16); zeff is the zero point net of V's wide bias;
// res_word holds the residual flags of the 64 blocks around b.
template <class V, bool kWide, bool MIN, bool G16, int MR, int R, class Codes>
__attribute__((always_inline)) inline void accumulate_block(typename V::reg (&acc)[MR][R], const QActs& a, int64_t m0, int64_t b, uint64_t res_word,
                      int32_t zeff, Codes codes, const typename V::reg* sA, const typename V::reg* sB,
                      const typename V::reg* mmA, const typename V::reg* mmB) {
    using reg = typename V::reg;
    using ireg = typename V::ireg;
    constexpr int NA = G16 ? 2 : 1;  // int32 sums per row and register: columns 0-15 and 16-31 apart
    // With one row register and one activation row (decode), a block's 8 dot products would form
    // one chain of dependent VNNI instructions; the odd steps go into a second set of sums
    // instead (4-bit codes in cache, one core: 5-8% faster).
    constexpr bool kSplit = MR * R == 1;
    const int64_t ld32 = a.ld / 32, ld16 = a.ld / 16;

    ireg d[MR][R][NA], e[NA];  // e: the odd steps' sums when split (then MR = R = 1)
    // d += the block's codes times activation codes x + m * ld (the odd steps into e when split,
    // then added).
    auto dots = [&](const int8_t* x) {
        auto dot = [](ireg s, ireg c, const int8_t* w) { return kWide ? V::dot4w(s, c, w) : V::dot4(s, c, w); };
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
            ireg lo[R], hi[R];
            codes(i, lo, hi);
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                const int8_t* w = x + m * a.ld + 4 * i;
#pragma GCC unroll 4
                for (int j = 0; j < R; ++j) {
                    ireg* t = kSplit && (i & 1) ? e : d[m][j];
                    t[0] = dot(t[0], lo[j], w);
                    t[NA - 1] = dot(t[NA - 1], hi[j], w + 16);
                }
            }
        }
        if constexpr (kSplit) {
#pragma GCC unroll 2
            for (int k = 0; k < NA; ++k) {
                d[0][0][k] = V::iadd(d[0][0][k], e[k]);
                e[k] = V::izero();
            }
        }
    };
    const bool residual = (res_word >> (b & 63)) & 1;
    const int32_t* is0 = a.isum + m0 * ld16 + 2 * b;
    // Symmetric formats: w = s (u - zero), so the zero point comes off the int32 sums as zero
    // times the activation codes' sum, and fp32 sees one product per group. Outside residual
    // blocks that is where the sums start; in them it is added after the shift, as the codes'
    // sum there is (sum << 8) + the residual codes' sum.
    auto zero_term = [&](int m, int k) {
        const int32_t* is = is0 + m * ld16;
        return MIN ? 0 : -zeff * (G16 ? is[k] : is[0] + is[1]);
    };
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
        for (int k = 0; k < NA; ++k) {
            const ireg z = V::iset1(residual ? 0 : zero_term(m, k));
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) d[m][j][k] = z;
        }
#pragma GCC unroll 2
    for (int k = 0; k < NA; ++k) e[k] = V::izero();
    dots(a.q + m0 * a.ld + b * 32);
    // The residual's step 1/256 goes on the weight scales (exactly: a power of two), so that
    // each activation scale is one broadcast from memory.
    reg scA[R], scB[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
        scA[j] = sA[j];
        if constexpr (G16) scB[j] = sB[j];
    }
    if (residual) {
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j)
#pragma GCC unroll 2
                for (int k = 0; k < NA; ++k) d[m][j][k] = V::ishl8(d[m][j][k]);
        dots(a.r + m0 * a.ld + b * 32);
        if constexpr (!MIN) {
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m)
#pragma GCC unroll 2
                for (int k = 0; k < NA; ++k) {
                    const ireg z = V::iset1(zero_term(m, k));
#pragma GCC unroll 4
                    for (int j = 0; j < R; ++j) d[m][j][k] = V::iadd(d[m][j][k], z);
                }
        }
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            scA[j] = V::mul(scA[j], V::set1(1.0f / 256.0f));
            if constexpr (G16) scB[j] = V::mul(scB[j], V::set1(1.0f / 256.0f));
        }
    }

    const float* xd0 = a.d + m0 * ld32 + b;
    const float* xs0 = G16 ? a.s + m0 * ld16 + 2 * b : a.s32 + m0 * ld32 + b;
    const int64_t xs_ld = G16 ? ld16 : ld32;
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
        const reg xd = V::set1(xd0[m * ld32]);
        if constexpr (!MIN) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                if constexpr (G16) {
                    const reg t = V::fma(V::cvt(d[m][j][1]), scB[j], V::mul(V::cvt(d[m][j][0]), scA[j]));
                    acc[m][j] = V::fma(t, xd, acc[m][j]);
                } else {
                    acc[m][j] = V::fma(V::cvt(d[m][j][0]), V::mul(scA[j], xd), acc[m][j]);
                }
            }
        } else {
            const float* xs = xs0 + m * xs_ld;
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                acc[m][j] = V::fma(V::cvt(d[m][j][0]), V::mul(scA[j], xd), acc[m][j]);
                acc[m][j] = V::fma(mmA[j], V::set1(xs[0]), acc[m][j]);
                if constexpr (G16) {
                    acc[m][j] = V::fma(V::cvt(d[m][j][1]), V::mul(scB[j], xd), acc[m][j]);
                    acc[m][j] = V::fma(mmB[j], V::set1(xs[1]), acc[m][j]);
                }
            }
        }
    }
}

// The residual flags of rows [m0, m0 + MR) for the 64 blocks from b (b a multiple of 64).
template <int MR>
uint64_t residual_word(const QActs& a, int64_t m0, int64_t b) {
    uint64_t w = 0;
    for (int m = 0; m < MR; ++m) w |= a.flags[(m0 + m) * a.fw + (b >> 6)];
    return w;
}

// Y[m0 + m, rr[j].n0 ...] (+)= acc[m][j], the register's valid rows only.
template <class V, int MR, int R, class Reg>
void store_acc(const typename V::reg (&acc)[MR][R], const Reg* rr, float* Y, int64_t ldy, int64_t m0,
               bool accumulate) {
    constexpr int QR = V::QR;
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

}  // namespace
}  // namespace ll::cpu
