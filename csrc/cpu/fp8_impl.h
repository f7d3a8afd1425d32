// Kernels for FP8 E4M3 weights in 16-row tiles (weights/fp8_tiles.h), over V: fp32 activations
// (W8A16), a column's 16 codes widened to fp32 in one register, exact.
//
// A code's exponent and mantissa go into an fp16's with a shift and a mask (so the fp16 holds
// w / 256, subnormals included) and vcvtph2ps widens it; the 256 is folded into the block's scale.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "../weights/fp8_tiles.h"

namespace ll::cpu {
namespace {

inline void fp8_matmul_ref(const float* X, int64_t ldx, int64_t M, const FP8Geometry& g, const uint8_t* w, float* Y,
                           int64_t ldy, int64_t t0, int64_t t1, bool accumulate) {
    for (int64_t t = t0; t < t1; ++t)
        for (int r = 0; r < 16 && t * 16 + r < g.N; ++r)
            for (int64_t m = 0; m < M; ++m) {
                const uint8_t* u = w + t * g.tile_bytes;
                float total = 0.0f;
                for (int64_t b = 0; b < g.n_blocks; ++b) {
                    const int64_t k0 = b * g.block, cols = g.K - k0 < g.block ? g.K - k0 : g.block;
                    float scale, part = 0.0f;
                    __builtin_memcpy(&scale, u + 4 * r, 4);
                    for (int64_t k = 0; k < cols; ++k) part += fp8_e4m3_to_float(u[64 + 16 * k + r]) * X[m * ldx + k0 + k];
                    total += scale * part;
                    u += g.unit_bytes(cols);
                }
                float* y = Y + m * ldy + t * 16 + r;
                *y = accumulate ? *y + total : total;
            }
}

// MR rows of activations against one register of tile rows (V::W of them, half h of the tile).
template <class V, int MR>
void fp8_tile(const float* X, int64_t ldx, const FP8Geometry& g, const uint8_t* tile, int h, float* Y, int64_t ldy,
              int n_valid, bool accumulate) {
    using reg = typename V::reg;
    reg acc[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) acc[m] = V::zero();
    const uint8_t* u = tile;
    for (int64_t b = 0; b < g.n_blocks; ++b) {
        const int64_t k0 = b * g.block, cols = g.K - k0 < g.block ? g.K - k0 : g.block;
        const reg scale = V::mul(V::load(reinterpret_cast<const float*>(u) + h * V::W), V::set1(256.0f));
        reg part[MR][2];
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) part[m][0] = part[m][1] = V::zero();
        const uint8_t* c = u + 64 + h * V::W;
        int64_t k = 0;
        for (; k + 2 <= cols; k += 2, c += 32) {
            __builtin_prefetch(c + 1024);
            reg w0, w1;
            V::fp8_col2(c, w0, w1);
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                part[m][0] = V::fma(w0, V::set1(X[m * ldx + k0 + k]), part[m][0]);
                part[m][1] = V::fma(w1, V::set1(X[m * ldx + k0 + k + 1]), part[m][1]);
            }
        }
        if (k < cols) {
            const reg w0 = V::fp8_col(c);
            for (int m = 0; m < MR; ++m) part[m][0] = V::fma(w0, V::set1(X[m * ldx + k0 + k]), part[m][0]);
        }
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) acc[m] = V::fma(V::add(part[m][0], part[m][1]), scale, acc[m]);
        u += g.unit_bytes(cols);
    }
    for (int m = 0; m < MR; ++m) store_rows<V>(acc[m], Y + m * ldy, n_valid, accumulate);
}

template <class V, int MR>
void fp8_tile_rows(int64_t mr, const float* X, int64_t ldx, const FP8Geometry& g, const uint8_t* tile, int h, float* Y,
                   int64_t ldy, int n_valid, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return fp8_tile_rows<V, MR - 1>(mr, X, ldx, g, tile, h, Y, ldy, n_valid, accumulate);
    }
    fp8_tile<V, MR>(X, ldx, g, tile, h, Y, ldy, n_valid, accumulate);
}

// Y[m, n] (+)= sum_k X[m, k] W[n, k] for the rows n of tiles [t0, t1).
template <class V>
void fp8_matmul(const float* X, int64_t ldx, int64_t M, const FP8Geometry& g, const uint8_t* w, float* Y, int64_t ldy,
                int64_t t0, int64_t t1, bool accumulate) {
    if constexpr (V::W == 1) {
        fp8_matmul_ref(X, ldx, M, g, w, Y, ldy, t0, t1, accumulate);
    } else {
        constexpr int MR = V::QMR;
        for (int64_t t = t0; t < t1; ++t)
            for (int h = 0; h < 16 / V::W; ++h) {
                const int64_t n0 = t * 16 + h * V::W;
                if (n0 >= g.N) break;
                const int valid = int(g.N - n0 < V::W ? g.N - n0 : V::W);
                for (int64_t m = 0; m < M; m += MR)
                    fp8_tile_rows<V, MR>(imin(MR, M - m), X + m * ldx, ldx, g, w + t * g.tile_bytes, h, Y + m * ldy + n0,
                                         ldy, valid, accumulate);
            }
    }
}

}  // namespace
}  // namespace ll::cpu
