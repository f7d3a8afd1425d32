// Flash attention on the CPU (kernels_impl.h's sibling, instantiated per ISA over a vector type V
// and per KV cache format): the rows of queries that share one KV head against a range of its
// cached positions, tile by tile, with an online softmax in fp32. Per tile of kAttnTile positions
// (kAttnTileFew when few rows share it, as in decode):
//   K and V rows -> fp32 tiles (one conversion serves every row),
//   S = Q K^T            (Q pre-scaled by 1/sqrt(head_dim); the matmul kernel, K rows as weights),
//   causal mask, then per row: m' = max(m, max S), p = exp(S - m'), l = l e^(m - m') + sum p,
//                                O = O e^(m - m') + p V   (gemm_nn over the V tile).
// No score row longer than a tile exists; O, m, l come out unnormalised so that the caller can
// merge ranges split across threads (flash-decoding) by their log-sum-exp.
#pragma once
#include <cstdint>

#include "../core/kv_format.h"
#include "kernels.h"

namespace ll::cpu {
namespace {

// Values [head * hd, head * hd + hd) of n consecutive cached rows, as fp32 rows of hd.
template <class V, KVType T>
void kv_tile(const uint8_t* rows, int64_t row_bytes, int64_t kv_dim, int64_t head, int64_t hd, int64_t n,
             float* dst) {
    for (int64_t j = 0; j < n; ++j) {
        const uint8_t* row = rows + j * row_bytes;
        float* out = dst + j * hd;
        if constexpr (T == KVType::Q8_0) {
            const uint8_t* codes = row + head * hd;
            const uint8_t* scales = row + kv_dim + 2 * (head * hd / kKVQBlock);
            for (int64_t b = 0; b < hd / kKVQBlock; ++b) {
                uint16_t h;
                __builtin_memcpy(&h, scales + 2 * b, 2);
                const typename V::reg d = V::set1(fp16_to_float(h));
                for (int64_t i = 0; i < kKVQBlock; i += V::W)
                    V::store(out + b * kKVQBlock + i, V::mul(d, V::load_i8(codes + b * kKVQBlock + i)));
            }
        } else {
            constexpr DType D = T == KVType::F32 ? DType::F32 : T == KVType::F16 ? DType::F16 : DType::BF16;
            using L = WeightLoad<V, D>;
            const uint8_t* src = row + head * hd * L::kSize;
            int64_t i = 0;
            for (; i + V::W <= hd; i += V::W) V::store(out + i, L::vec(src, i));
            for (; i < hd; ++i) out[i] = L::one(src, i);
        }
    }
}

template <class V, KVType T>
void flash_attention(const AttnArgs& a) {
    const int64_t R = a.R, hd = a.hd;
    const int64_t tile = R <= kAttnFewRows ? kAttnTileFew : kAttnTile, ld = tile;
    float* S = a.scratch;
    float* Kt = S + kAttnMaxRows * kAttnTile;
    float* Vt = Kt + kAttnTileFew * hd;
    for (int64_t r = 0; r < R; ++r) {
        a.m[r] = -__builtin_inff();
        a.l[r] = 0.0f;
        for (int64_t i = 0; i < hd; ++i) a.o[r * hd + i] = 0.0f;
    }
    // No row sees a position past its query's: the last row bounds the range.
    const int64_t end = imin(a.j1, a.p0 + (R - 1) / a.g + 1);
    for (int64_t jb = a.j0; jb < end; jb += tile) {
        const int64_t n = imin(tile, end - jb);
        kv_tile<V, T>(a.k + jb * a.row_bytes, a.row_bytes, a.kv_dim, a.head, hd, n, Kt);
        kv_tile<V, T>(a.v + jb * a.row_bytes, a.row_bytes, a.kv_dim, a.head, hd, n, Vt);
        matmul<V, DType::F32>(a.q, hd, Kt, hd, hd, S, ld, R, 0, n, false);
        for (int64_t r = 0; r < R; ++r) {
            float* s = S + r * ld;
            const int64_t lim = imin(n, a.p0 + r / a.g + 1 - jb);  // causal: positions this row sees
            if (lim <= 0) {
                for (int64_t i = 0; i < n; ++i) s[i] = 0.0f;
                continue;
            }
            const float mx = row_max<V>(s, lim);
            const float m_new = mx > a.m[r] ? mx : a.m[r];
            const float alpha = __builtin_expf(a.m[r] - m_new);   // 0 on the first visible tile
            a.l[r] = a.l[r] * alpha + exp_shifted<V>(s, lim, n, m_new);
            a.m[r] = m_new;
            if (alpha != 1.0f) {
                float* o = a.o + r * hd;
                const typename V::reg va = V::set1(alpha);
                int64_t i = 0;
                for (; i + V::W <= hd; i += V::W) V::store(o + i, V::mul(V::load(o + i), va));
                for (; i < hd; ++i) o[i] *= alpha;
            }
        }
        gemm_nn<V>(S, ld, Vt, hd, n, a.o, hd, R, hd, true);
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
