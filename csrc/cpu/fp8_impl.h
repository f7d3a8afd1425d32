// Kernels for FP8 E4M3 weights in 16-row tiles (weights/fp8_tiles.h), over V: fp32 activations
// (W8A16), a column's 16 codes widened to fp32 in one register, exact.
//
// A code's exponent and mantissa go into an fp16's with a shift and a mask (so the fp16 holds
// w / 256, subnormals included) and vcvtph2ps widens it; the 256 is folded into the block's scale.
//
// Prefill with AVX512-BF16 (V::kBF16Dot, kFP8DotMinRows rows or more): E4M3 is a subset of bf16,
// so each pair of tiles is expanded once, exactly, into bf16 column pairs (bf16_impl.h's tile
// layout) and every micro-tile of activation rows, rounded to bf16 as the BF16 prefill rounds them,
// runs vdpbf16ps against it: 32 multiply-adds per instruction instead of an FMA's 16, and the
// widening done once per tile instead of once per micro-tile.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/aligned_buffer.h"
#include "../core/dtype.h"
#include "../weights/fp8_tiles.h"
#include "kernels.h"

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

// A tile expanded for vdpbf16ps: pairs[p] (64 bytes) holds the 16 rows' columns 2p and 2p + 1 as
// bf16, over all of K (zero past it); scale[16 b + r] is row r's scale of block b, times 256.
struct FP8XTile {
    const uint32_t* pairs;
    const float* scale;
};

// Blocks of an even number of columns (or one block) keep each column pair inside one block.
inline bool fp8_pairs_fit(const FP8Geometry& g) { return g.n_blocks == 1 || g.block % 2 == 0; }

template <class V>
void fp8_expand_tile(const FP8Geometry& g, const uint8_t* u, uint32_t* pairs, float* scale) {
    for (int64_t b = 0; b < g.n_blocks; ++b) {
        const int64_t k0 = b * g.block, cols = g.K - k0 < g.block ? g.K - k0 : g.block;
        V::store(scale + 16 * b, V::mul(V::load(reinterpret_cast<const float*>(u)), V::set1(256.0f)));
        const uint8_t* c = u + 64;
        uint32_t* out = pairs + 16 * (k0 / 2);
        int64_t k = 0;
        for (; k + 2 <= cols; k += 2, c += 32, out += 16) V::istore(reinterpret_cast<uint8_t*>(out), V::fp8_pairs(c));
        if (k < cols) V::istore(reinterpret_cast<uint8_t*>(out), V::fp8_pair_last(c));
        u += g.unit_bytes(cols);
    }
}

// MR activation rows (bf16 pairs, xb + m * ldb dwords) against two expanded tiles (the same one
// twice when only one is left), block by block: each block's sums scaled into the accumulators.
template <class V, int MR>
void fp8_tiles_dot(const uint32_t* xb, int64_t ldb, const FP8Geometry& g, FP8XTile e0, FP8XTile e1, float* Y,
                   int64_t ldy, int n0_valid, int n1_valid, bool accumulate) {
    using reg = typename V::reg;
    reg a0[MR], a1[MR];
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) a0[m] = a1[m] = V::zero();
    for (int64_t b = 0; b < g.n_blocks; ++b) {
        const int64_t k0 = b * g.block, k1 = g.K < k0 + g.block ? g.K : k0 + g.block;
        reg p0[MR], p1[MR];
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) p0[m] = p1[m] = V::zero();
        for (int64_t p = k0 / 2; p < (k1 + 1) / 2; ++p) {
            const auto w0 = V::iload(reinterpret_cast<const uint8_t*>(e0.pairs + 16 * p));
            const auto w1 = V::iload(reinterpret_cast<const uint8_t*>(e1.pairs + 16 * p));
#pragma GCC unroll 16
            for (int m = 0; m < MR; ++m) {
                const auto x = V::bcast32(xb + m * ldb + p);
                p0[m] = V::dpbf16(p0[m], w0, x);
                p1[m] = V::dpbf16(p1[m], w1, x);
            }
        }
        const reg s0 = V::load(e0.scale + 16 * b), s1 = V::load(e1.scale + 16 * b);
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) {
            a0[m] = V::fma(p0[m], s0, a0[m]);
            a1[m] = V::fma(p1[m], s1, a1[m]);
        }
    }
    for (int m = 0; m < MR; ++m) {
        store_rows<V>(a0[m], Y + m * ldy, n0_valid, accumulate);
        if (n1_valid > 0) store_rows<V>(a1[m], Y + m * ldy + 16, n1_valid, accumulate);
    }
}

template <class V, int MR>
void fp8_tiles_dot_rows(int64_t mr, const uint32_t* xb, int64_t ldb, const FP8Geometry& g, FP8XTile e0, FP8XTile e1,
                        float* Y, int64_t ldy, int n0_valid, int n1_valid, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return fp8_tiles_dot_rows<V, MR - 1>(mr, xb, ldb, g, e0, e1, Y, ldy, n0_valid, n1_valid, accumulate);
    }
    fp8_tiles_dot<V, MR>(xb, ldb, g, e0, e1, Y, ldy, n0_valid, n1_valid, accumulate);
}

// The vdpbf16ps prefill (header comment) over tiles [t0, t1), two at a time.
template <class V>
void fp8_matmul_bf16(const float* X, int64_t ldx, int64_t M, const FP8Geometry& g, const uint8_t* w, float* Y,
                     int64_t ldy, int64_t t0, int64_t t1, bool accumulate) {
    constexpr int MR = V::BMR;
    const int64_t Kp = g.K + g.K % 2, n_pairs = Kp / 2;
    const int64_t ldb = n_pairs + 16;  // off a multiple of 4 KiB: MR rows read side by side
    thread_local std::vector<uint32_t> xbuf;
    xbuf.resize(size_t(M * ldb));
    for (int64_t m = 0; m < M; ++m) V::to_bf16_pairs(X + m * ldx, g.K, Kp, xbuf.data() + m * ldb);
    // Two expanded tiles: pairs (n_pairs x 64 bytes), then scales (n_blocks x 64 bytes), each.
    const int64_t tile_floats = 16 * (n_pairs + g.n_blocks);
    thread_local AlignedBuffer tbuf;
    if (tbuf.size() < size_t(2 * tile_floats * 4)) tbuf = AlignedBuffer(size_t(2 * tile_floats * 4));
    auto pairs_of = [&](int i) { return reinterpret_cast<uint32_t*>(tbuf.get()) + i * tile_floats; };
    auto scales_of = [&](int i) { return reinterpret_cast<float*>(pairs_of(i) + 16 * n_pairs); };
    auto valid = [&](int64_t n0) { return int(g.N - n0 < 16 ? g.N - n0 : 16); };
    for (int64_t t = t0; t < t1; t += 2) {
        const bool two = t + 1 < t1;
        for (int i = 0; i < (two ? 2 : 1); ++i) fp8_expand_tile<V>(g, w + (t + i) * g.tile_bytes, pairs_of(i), scales_of(i));
        const FP8XTile e0{pairs_of(0), scales_of(0)}, e1 = two ? FP8XTile{pairs_of(1), scales_of(1)} : e0;
        const int v0 = valid(t * 16), v1 = two ? valid(t * 16 + 16) : 0;
        for (int64_t m = 0; m < M; m += MR)
            fp8_tiles_dot_rows<V, MR>(imin(MR, M - m), xbuf.data() + m * ldb, ldb, g, e0, e1, Y + m * ldy + t * 16,
                                      ldy, v0, v1, accumulate);
    }
}

// Y[m, n] (+)= sum_k X[m, k] W[n, k] for the rows n of tiles [t0, t1).
template <class V>
void fp8_matmul(const float* X, int64_t ldx, int64_t M, const FP8Geometry& g, const uint8_t* w, float* Y, int64_t ldy,
                int64_t t0, int64_t t1, bool accumulate) {
    if constexpr (V::W == 1) {
        fp8_matmul_ref(X, ldx, M, g, w, Y, ldy, t0, t1, accumulate);
    } else {
        if constexpr (V::kBF16Dot) {
            if (M >= kFP8DotMinRows && fp8_pairs_fit(g)) return fp8_matmul_bf16<V>(X, ldx, M, g, w, Y, ldy, t0, t1, accumulate);
        }
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
