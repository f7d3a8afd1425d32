// Flash attention on the CPU (kernels_impl.h's sibling, instantiated per ISA over a vector type V
// and per KV cache format): the rows of queries that share one KV head against a range of its
// cached positions, tile by tile, with an online softmax in fp32. Per tile of positions:
//   S = Q K^T            (Q pre-scaled by 1/sqrt(head_dim)),
//   causal mask, then per row: m' = max(m, max S), p = exp(S - m'), l = l e^(m - m') + sum p,
//                                O = O e^(m - m') + p V.
// No score row longer than a tile exists; O, m, l come out unnormalised so that the caller can
// merge ranges split across threads (flash-decoding) by their log-sum-exp.
//
// K is cached in transposed blocks of 16 positions (core/kv_format.h), V in rows. Two paths:
//   - few rows (decode: the g query heads of one token): scores straight from the cached K
//     blocks, each head_dim broadcast multiply-adds into 16 lanes of scores per row, and
//     O += p V straight from the cached V rows. Nothing is converted into a tile first: decode
//     reads each byte of a long cache once and must keep up with the memory.
//   - many rows (prefill): K and V of a tile are converted to fp32 once, then two products
//     (gemm_nn) serve every row.
#pragma once
#include <cstdint>

#include "../core/kv_format.h"
#include "kernels.h"

namespace ll::cpu {
namespace {

template <KVType T>
constexpr DType kv_dtype = T == KVType::F32 ? DType::F32 : T == KVType::F16 ? DType::F16 : DType::BF16;

// The K block that holds positions [16 b, 16 b + 16).
template <KVType T>
const uint8_t* k_block(const AttnArgs& a, int64_t b) {
    return a.k + b * kKVBlock * kv_row_bytes(T, a.hd);
}

// The V row of position j.
template <KVType T>
const uint8_t* v_row(const AttnArgs& a, int64_t j) {
    return a.v + j * kv_row_bytes(T, a.hd);
}

// A q8_0 K block's scales: [hd / 32][16] fp16, after its codes.
inline const uint16_t* k_scales(const uint8_t* blk, int64_t hd) {
    return reinterpret_cast<const uint16_t*>(blk + hd * kKVBlock);
}

// Lanes [e, e + W) of a K block as fp32 values; q8_0: its codes only (the caller scales).
template <class V, KVType T>
typename V::reg k_lanes(const uint8_t* blk, int64_t e) {
    if constexpr (T == KVType::Q8_0) return V::load_i8(blk + e);
    else return WeightLoad<V, kv_dtype<T>>::vec(blk, e);
}

// K of positions [16 b0, 16 (b0 + nb)) as fp32 [hd][ld] (value d of position 16 b0 + j at d * ld + j).
template <class V, KVType T>
void k_tile(const AttnArgs& a, int64_t b0, int64_t nb, float* dst, int64_t ld) {
    constexpr int NL = int(kKVBlock) / V::W;
    const int64_t hd = a.hd;
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = k_block<T>(a, b0 + b);
        for (int64_t d = 0; d < hd; ++d)
#pragma GCC unroll 16
            for (int l = 0; l < NL; ++l) {
                typename V::reg x = k_lanes<V, T>(blk, d * kKVBlock + l * V::W);
                if constexpr (T == KVType::Q8_0)
                    x = V::mul(x, V::load_f16(k_scales(blk, hd) + (d / kKVQBlock) * kKVBlock + l * V::W));
                V::store(dst + d * ld + b * kKVBlock + l * V::W, x);
            }
    }
}

// Scores of RB rows from r0 against the nb K blocks from b0: S[r][16 i + j] = q_r . k(16 (b0 + i) + j).
// q8_0 sums codes times q over each group of 32 values, then scales the 16 lanes at once.
template <class V, KVType T, int RB>
void block_scores(const AttnArgs& a, int64_t r0, int64_t b0, int64_t nb, float* S, int64_t ld) {
    using reg = typename V::reg;
    constexpr int NL = int(kKVBlock) / V::W;
    constexpr bool kQ8 = T == KVType::Q8_0;
    // With few chains (one register of lanes, a few rows) the dependent multiply-adds would wait
    // on each other: odd values of d go into a second set of sums.
    constexpr int NS = RB * NL <= 4 ? 2 : 1;
    const int64_t hd = a.hd;
    const int64_t group = kQ8 ? kKVQBlock : hd;
    const float* q = a.q + r0 * hd;
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = k_block<T>(a, b0 + b);
        reg s[RB][NL], t[NS][RB][NL];
#pragma GCC unroll 16
        for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
            for (int l = 0; l < NL; ++l) s[r][l] = V::zero();
        for (int64_t d0 = 0; d0 < hd; d0 += group) {
#pragma GCC unroll 2
            for (int h = 0; h < NS; ++h)
#pragma GCC unroll 16
                for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
                    for (int l = 0; l < NL; ++l) t[h][r][l] = V::zero();
            auto step = [&](int h, int64_t d) {
                reg kv[NL];
#pragma GCC unroll 16
                for (int l = 0; l < NL; ++l) kv[l] = k_lanes<V, T>(blk, d * kKVBlock + l * V::W);
#pragma GCC unroll 16
                for (int r = 0; r < RB; ++r) {
                    const reg qd = V::set1(q[r * hd + d]);
#pragma GCC unroll 16
                    for (int l = 0; l < NL; ++l) t[h][r][l] = V::fma(qd, kv[l], t[h][r][l]);
                }
            };
            int64_t d = d0;
            for (; d + NS <= d0 + group; d += NS)
#pragma GCC unroll 2
                for (int h = 0; h < NS; ++h) step(h, d + h);
            for (; d < d0 + group; ++d) step(0, d);
#pragma GCC unroll 16
            for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
                for (int l = 0; l < NL; ++l) {
                    const reg sum = NS == 2 ? V::add(t[0][r][l], t[NS - 1][r][l]) : t[0][r][l];
                    if constexpr (kQ8) {
                        const reg sc = V::load_f16(k_scales(blk, hd) + (d0 / kKVQBlock) * kKVBlock + l * V::W);
                        s[r][l] = V::fma(sum, sc, s[r][l]);
                    } else {
                        s[r][l] = sum;  // one group: all of head_dim
                    }
                }
        }
#pragma GCC unroll 16
        for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
            for (int l = 0; l < NL; ++l) V::store(S + r * ld + b * kKVBlock + l * V::W, s[r][l]);
    }
}

template <class V, KVType T, int RB>
void block_scores_rows(int64_t rb, const AttnArgs& a, int64_t r0, int64_t b0, int64_t nb, float* S, int64_t ld) {
    if constexpr (RB > 1) {
        if (rb < RB) return block_scores_rows<V, T, RB - 1>(rb, a, r0, b0, nb, S, ld);
    }
    block_scores<V, T, RB>(a, r0, b0, nb, S + r0 * ld, ld);
}

// W values of a cached V row from `dim`, as fp32. For q8_0, `sc` holds the row's group scales
// as fp32 (v_scales converts them once per tile).
template <class V, KVType T>
typename V::reg v_lanes(const uint8_t* row, int64_t dim, const float* sc) {
    if constexpr (T == KVType::Q8_0) return V::mul(V::load_i8(row + dim), V::set1(sc[dim / kKVQBlock]));
    else return WeightLoad<V, kv_dtype<T>>::vec(row, dim);
}
template <KVType T>
float v_one(const uint8_t* row, int64_t dim, const float* sc) {
    if constexpr (T == KVType::Q8_0) return float(int8_t(row[dim])) * sc[dim / kKVQBlock];
    else if constexpr (T == KVType::F32) return reinterpret_cast<const float*>(row)[dim];
    else if constexpr (T == KVType::F16) return fp16_to_float(reinterpret_cast<const uint16_t*>(row)[dim]);
    else return bf16_to_float(reinterpret_cast<const uint16_t*>(row)[dim]);
}

// O[r0 + r, c0 : c0 + NV W] += sum over i in [lo, hi) of P[r][i] v(ts + i), for RB rows. vs: the
// q8_0 group scales of the tile's positions, [i][hd / 32].
template <class V, KVType T, int RB, int NV>
void pv_block(const AttnArgs& a, int64_t r0, int64_t ts, int64_t lo, int64_t hi, const float* P, int64_t ld,
              const float* vs, int64_t c0) {
    using reg = typename V::reg;
    const int64_t hd = a.hd, ng = hd / kKVQBlock;
    float* O = a.o + r0 * hd + c0;
    reg o[RB][NV];
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) o[r][v] = V::load(O + r * hd + v * V::W);
    for (int64_t i = lo; i < hi; ++i) {
        const uint8_t* row = v_row<T>(a, ts + i);
        reg vv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) vv[v] = v_lanes<V, T>(row, c0 + v * V::W, vs + i * ng);
#pragma GCC unroll 16
        for (int r = 0; r < RB; ++r) {
            const reg p = V::set1(P[(r0 + r) * ld + i]);
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) o[r][v] = V::fma(p, vv[v], o[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) V::store(O + r * hd + v * V::W, o[r][v]);
}

// O[r0 .. r0 + rb) += P V over [lo, hi): whole registers of NV, then of one, then single values.
template <class V, KVType T, int RB>
void pv_rows(int64_t rb, const AttnArgs& a, int64_t r0, int64_t ts, int64_t lo, int64_t hi, const float* P,
             int64_t ld, const float* vs) {
    if constexpr (RB > 1) {
        if (rb < RB) return pv_rows<V, T, RB - 1>(rb, a, r0, ts, lo, hi, P, ld, vs);
    }
    constexpr int NV = V::W == 8 ? 2 : 4;  // AVX2 has 16 registers, the others 32
    const int64_t hd = a.hd, ng = hd / kKVQBlock;
    int64_t c = 0;
    for (; c + NV * V::W <= hd; c += NV * V::W) pv_block<V, T, RB, NV>(a, r0, ts, lo, hi, P, ld, vs, c);
    for (; c + V::W <= hd; c += V::W) pv_block<V, T, RB, 1>(a, r0, ts, lo, hi, P, ld, vs, c);
    for (; c < hd; ++c)  // values past the last whole register (head_dim not a multiple of W)
        for (int r = 0; r < RB; ++r) {
            float acc = a.o[(r0 + r) * hd + c];
            for (int64_t i = lo; i < hi; ++i)
                acc += P[(r0 + r) * ld + i] * v_one<T>(v_row<T>(a, ts + i), c, vs + i * ng);
            a.o[(r0 + r) * hd + c] = acc;
        }
}

// The q8_0 group scales of V rows [j0, j0 + n) as fp32, [j][hd / 32].
template <KVType T>
void v_scales(const AttnArgs& a, int64_t j0, int64_t n, float* vs) {
    if constexpr (T == KVType::Q8_0) {
        const int64_t ng = a.hd / kKVQBlock;
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* sc = v_row<T>(a, j0 + j) + a.hd;
            for (int64_t c = 0; c < ng; ++c) {
                uint16_t h;
                __builtin_memcpy(&h, sc + 2 * c, 2);
                vs[j * ng + c] = fp16_to_float(h);
            }
        }
    }
}

// V rows [j0, j0 + n) as fp32 rows of hd. vs: their q8_0 scales (v_scales).
template <class V, KVType T>
void v_tile(const AttnArgs& a, int64_t j0, int64_t n, const float* vs, float* dst) {
    const int64_t hd = a.hd, ng = hd / kKVQBlock;
    for (int64_t j = 0; j < n; ++j) {
        const uint8_t* row = v_row<T>(a, j0 + j);
        float* out = dst + j * hd;
        const float* sc = vs + j * ng;
        int64_t i = 0;
        for (; i + V::W <= hd; i += V::W) V::store(out + i, v_lanes<V, T>(row, i, sc));
        for (; i < hd; ++i) out[i] = v_one<T>(row, i, sc);
    }
}

template <class V, KVType T>
void flash_attention(const AttnArgs& a) {
    const int64_t R = a.R, hd = a.hd;
    const bool few = R <= kAttnFewRows;
    const int64_t tile = few ? kAttnTileFew : kAttnTile, ld = tile;
    float* S = a.scratch;
    // Prefill: K [hd][tile] and V [tile][hd] tiles, then V's q8_0 scales; decode: V's q8_0 scales.
    float* Kt = S + kAttnMaxRows * kAttnTile;
    float* Vt = Kt + kAttnTile * hd;
    for (int64_t r = 0; r < R; ++r) {
        a.m[r] = -__builtin_inff();
        a.l[r] = 0.0f;
        for (int64_t i = 0; i < hd; ++i) a.o[r * hd + i] = 0.0f;
    }
    // No row sees a position past its query's: the last row bounds the range. Tiles start on K
    // block boundaries; positions before j0 in the first one are masked.
    const int64_t end = imin(a.j1, a.p0 + (R - 1) / a.g + 1);
    for (int64_t ts = a.j0 / kKVBlock * kKVBlock; ts < end; ts += tile) {
        const int64_t n = imin(tile, end - ts), nb = (n + kKVBlock - 1) / kKVBlock;
        const int64_t lo = a.j0 > ts ? a.j0 - ts : 0;  // the tile's first position in the range
        if (few) {
            // Rows per pass: AVX2's 16 registers hold fewer q8_0 sums.
            constexpr int RB = V::W == 8 && T == KVType::Q8_0 ? 2 : 4;
            for (int64_t r = 0; r < R; r += RB) block_scores_rows<V, T, RB>(imin(RB, R - r), a, r, ts / kKVBlock, nb, S, ld);
        } else {
            k_tile<V, T>(a, ts / kKVBlock, nb, Kt, nb * kKVBlock);
            gemm_nn<V>(a.q, hd, Kt, nb * kKVBlock, hd, S, ld, R, n, false);
        }
        int64_t hi_max = lo;  // past the last position any row sees
        for (int64_t r = 0; r < R; ++r) {
            float* s = S + r * ld;
            const int64_t hi = imin(n, a.p0 + r / a.g + 1 - ts);  // causal: positions this row sees
            for (int64_t i = 0; i < lo && i < n; ++i) s[i] = 0.0f;
            if (hi <= lo) {
                for (int64_t i = lo; i < n; ++i) s[i] = 0.0f;
                continue;
            }
            hi_max = hi > hi_max ? hi : hi_max;
            const float mx = row_max<V>(s + lo, hi - lo);
            const float m_new = mx > a.m[r] ? mx : a.m[r];
            const float alpha = __builtin_expf(a.m[r] - m_new);   // 0 on the first visible tile
            a.l[r] = a.l[r] * alpha + exp_shifted<V>(s + lo, hi - lo, n - lo, m_new);
            a.m[r] = m_new;
            if (alpha != 1.0f) {
                float* o = a.o + r * hd;
                const typename V::reg va = V::set1(alpha);
                int64_t i = 0;
                for (; i + V::W <= hd; i += V::W) V::store(o + i, V::mul(V::load(o + i), va));
                for (; i < hd; ++i) o[i] *= alpha;
            }
        }
        if (hi_max <= lo) continue;
        if (few) {
            v_scales<T>(a, ts, hi_max, Kt);
            constexpr int RB = 4;
            for (int64_t r = 0; r < R; r += RB) pv_rows<V, T, RB>(imin(RB, R - r), a, r, ts, lo, hi_max, S, ld, Kt);
        } else {
            float* vs = Vt + kAttnTile * hd;  // past the V tile: the q8_0 scales
            v_scales<T>(a, ts + lo, hi_max - lo, vs);
            v_tile<V, T>(a, ts + lo, hi_max - lo, vs, Vt);
            gemm_nn<V>(S + lo, ld, Vt, hd, hi_max - lo, a.o, hd, R, hd, true);
        }
    }
}

template <class V>
void fill_attention_kernels(Kernels& k) {
    k.flash_attention[int(KVType::F32)] = flash_attention<V, KVType::F32>;
    k.flash_attention[int(KVType::F16)] = flash_attention<V, KVType::F16>;
    k.flash_attention[int(KVType::BF16)] = flash_attention<V, KVType::BF16>;
    k.flash_attention[int(KVType::Q8_0)] = flash_attention<V, KVType::Q8_0>;
}

}  // namespace
}  // namespace ll::cpu
