// Kernels for bf16 weights in 16-row tiles of column pairs (weights/bf16_tiles.h), over V.
//
//   fp32 activations (decode, and prefill without AVX512-BF16): each 32-bit lane of a chunk holds a
//     row's column pair; a shift widens the even column to fp32 and a mask the odd one, and two
//     FMAs against the broadcast activations add them in. Exact: only the summation order differs
//     from a float64 dot product.
//   bf16 activations (prefill with AVX512-BF16, V::kBF16Dot): an activation row is rounded to bf16
//     once per micro-tile, and one vdpbf16ps multiplies a chunk by a broadcast pair: 32
//     multiply-adds per instruction, twice the FMA path's (llama.cpp's BF16 path rounds the same way).
#pragma once
#include <cstdint>
#include <vector>

#include "../core/dtype.h"
#include "../weights/bf16_tiles.h"

namespace ll::cpu {
namespace {

inline void bf16_matmul_ref(const float* X, int64_t ldx, int64_t M, const BF16Geometry& g, const uint8_t* w, float* Y,
                            int64_t ldy, int64_t t0, int64_t t1, bool accumulate) {
    for (int64_t t = t0; t < t1; ++t) {
        const uint16_t* tile = reinterpret_cast<const uint16_t*>(w + t * g.tile_bytes());
        for (int r = 0; r < 16 && t * 16 + r < g.N; ++r)
            for (int64_t m = 0; m < M; ++m) {
                float s = 0.0f;
                for (int64_t k = 0; k < g.K; ++k) s += bf16_to_float(tile[(k / 2) * 32 + 2 * r + k % 2]) * X[m * ldx + k];
                float* y = Y + m * ldy + t * 16 + r;
                *y = accumulate ? *y + s : s;
            }
    }
}

template <class V>
void store_rows(typename V::reg v, float* y, int n_valid, bool accumulate) {
    if (n_valid == V::W) {
        V::store(y, accumulate ? V::add(V::load(y), v) : v);
    } else {
        float tmp[V::W];
        V::store(tmp, v);
        for (int r = 0; r < n_valid; ++r) y[r] = accumulate ? y[r] + tmp[r] : tmp[r];
    }
}

// MR rows of fp32 activations against one register of tile rows (V::W of them, half h).
template <class V, int MR>
void bf16_tile_fma(const float* X, int64_t ldx, const BF16Geometry& g, const uint8_t* tile, int h, float* Y, int64_t ldy,
                   int n_valid, bool accumulate) {
    using reg = typename V::reg;
    reg even[MR], odd[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) even[m] = odd[m] = V::zero();
    const uint8_t* c = tile + h * V::W * 4;
    const int64_t pairs = g.K / 2;
    for (int64_t p = 0; p < pairs; ++p, c += 64) {
        __builtin_prefetch(c + 1024);
        const reg e = V::bf16_lo(c), o = V::bf16_hi(c);
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
            even[m] = V::fma(e, V::set1(X[m * ldx + 2 * p]), even[m]);
            odd[m] = V::fma(o, V::set1(X[m * ldx + 2 * p + 1]), odd[m]);
        }
    }
    if (g.K % 2) {  // the last column alone (its pair's other half is zero and past X's rows)
        const reg e = V::bf16_lo(c);
        for (int m = 0; m < MR; ++m) even[m] = V::fma(e, V::set1(X[m * ldx + g.K - 1]), even[m]);
    }
    for (int m = 0; m < MR; ++m) store_rows<V>(V::add(even[m], odd[m]), Y + m * ldy, n_valid, accumulate);
}

template <class V, int MR>
void bf16_tile_fma_rows(int64_t mr, const float* X, int64_t ldx, const BF16Geometry& g, const uint8_t* tile, int h,
                        float* Y, int64_t ldy, int n_valid, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return bf16_tile_fma_rows<V, MR - 1>(mr, X, ldx, g, tile, h, Y, ldy, n_valid, accumulate);
    }
    bf16_tile_fma<V, MR>(X, ldx, g, tile, h, Y, ldy, n_valid, accumulate);
}

// MR activation rows, already bf16 pairs (xb + m * ldb dwords), against two tiles (t0 and t1 may
// be the same when only one is left): 2 * MR vdpbf16ps per chunk pair of loads.
template <class V, int MR>
void bf16_tiles_dot(const uint32_t* xb, int64_t ldb, const BF16Geometry& g, const uint8_t* tile0, const uint8_t* tile1,
                    float* Y, int64_t ldy, int n0_valid, int n1_valid, bool accumulate) {
    using reg = typename V::reg;
    reg a0[MR], a1[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) a0[m] = a1[m] = V::zero();
    for (int64_t p = 0; p < g.Kp / 2; ++p) {
        const auto w0 = V::iload(tile0 + 64 * p), w1 = V::iload(tile1 + 64 * p);
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
            const auto x = V::bcast32(xb + m * ldb + p);
            a0[m] = V::dpbf16(a0[m], w0, x);
            a1[m] = V::dpbf16(a1[m], w1, x);
        }
    }
    for (int m = 0; m < MR; ++m) {
        store_rows<V>(a0[m], Y + m * ldy, n0_valid, accumulate);
        if (n1_valid > 0) store_rows<V>(a1[m], Y + m * ldy + 16, n1_valid, accumulate);
    }
}

template <class V, int MR>
void bf16_tiles_dot_rows(int64_t mr, const uint32_t* xb, int64_t ldb, const BF16Geometry& g, const uint8_t* tile0,
                         const uint8_t* tile1, float* Y, int64_t ldy, int n0_valid, int n1_valid, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR)
            return bf16_tiles_dot_rows<V, MR - 1>(mr, xb, ldb, g, tile0, tile1, Y, ldy, n0_valid, n1_valid, accumulate);
    }
    bf16_tiles_dot<V, MR>(xb, ldb, g, tile0, tile1, Y, ldy, n0_valid, n1_valid, accumulate);
}

// Y[m, n] (+)= sum_k X[m, k] W[n, k] for the rows n of tiles [t0, t1).
template <class V>
void bf16_matmul(const float* X, int64_t ldx, int64_t M, const BF16Geometry& g, const uint8_t* w, float* Y, int64_t ldy,
                 int64_t t0, int64_t t1, bool accumulate) {
    if constexpr (V::W == 1) {
        bf16_matmul_ref(X, ldx, M, g, w, Y, ldy, t0, t1, accumulate);
    } else {
        auto valid = [&](int64_t n0) { return int(g.N - n0 < V::W ? g.N - n0 : V::W); };
        if constexpr (V::kBF16Dot) {
            if (M > 1) {
                // Each row of X rounded to bf16 pairs once (zeros past K), then 2 tiles x MR rows.
                constexpr int MR = V::BMR;
                const int64_t ldb = g.Kp / 2 + 16;  // off a multiple of 4 KiB: MR rows read side by side
                thread_local std::vector<uint32_t> buf;
                buf.resize(size_t(M * ldb));
                for (int64_t m = 0; m < M; ++m) V::to_bf16_pairs(X + m * ldx, g.K, g.Kp, buf.data() + m * ldb);
                for (int64_t t = t0; t < t1; t += 2) {
                    const uint8_t* tile0 = w + t * g.tile_bytes();
                    const bool two = t + 1 < t1;
                    const uint8_t* tile1 = two ? tile0 + g.tile_bytes() : tile0;
                    const int v0 = valid(t * 16), v1 = two ? valid(t * 16 + 16) : 0;
                    for (int64_t m = 0; m < M; m += MR)
                        bf16_tiles_dot_rows<V, MR>(imin(MR, M - m), buf.data() + m * ldb, ldb, g, tile0, tile1,
                                                   Y + m * ldy + t * 16, ldy, v0, v1, accumulate);
                }
                return;
            }
        }
        constexpr int MR = V::QMR;
        for (int64_t t = t0; t < t1; ++t)
            for (int h = 0; h < 16 / V::W; ++h) {
                const int64_t n0 = t * 16 + h * V::W;
                if (n0 >= g.N) break;
                for (int64_t m = 0; m < M; m += MR)
                    bf16_tile_fma_rows<V, MR>(imin(MR, M - m), X + m * ldx, ldx, g, w + t * g.tile_bytes(), h,
                                              Y + m * ldy + n0, ldy, valid(n0), accumulate);
            }
    }
}

}  // namespace
}  // namespace ll::cpu
