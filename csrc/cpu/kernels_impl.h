// The CPU kernels, written once over a vector type V (vec_scalar.h, vec_avx2.h, vec_avx512.h)
// and instantiated by each ISA's translation unit, which compiles them with its own flags.
//
// Everything here sits in an anonymous namespace and calls no inline library function (only
// compiler builtins), so no AVX-512 code can leak to callers through a shared inline symbol.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "kernels.h"

namespace ll::cpu {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// Loading K-contiguous weight elements of each storage type as fp32 (vector and scalar tail).
template <class V, DType WT> struct WeightLoad;
template <class V> struct WeightLoad<V, DType::F32> {
    static constexpr int64_t kSize = 4;
    static typename V::reg vec(const uint8_t* row, int64_t k) {
        return V::load(reinterpret_cast<const float*>(row) + k);
    }
    static float one(const uint8_t* row, int64_t k) { return reinterpret_cast<const float*>(row)[k]; }
};
template <class V> struct WeightLoad<V, DType::F16> {
    static constexpr int64_t kSize = 2;
    static typename V::reg vec(const uint8_t* row, int64_t k) {
        return V::load_f16(reinterpret_cast<const uint16_t*>(row) + k);
    }
    static float one(const uint8_t* row, int64_t k) {
        return fp16_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
    }
};
template <class V> struct WeightLoad<V, DType::BF16> {
    static constexpr int64_t kSize = 2;
    static typename V::reg vec(const uint8_t* row, int64_t k) {
        return V::load_bf16(reinterpret_cast<const uint16_t*>(row) + k);
    }
    static float one(const uint8_t* row, int64_t k) {
        return bf16_to_float(reinterpret_cast<const uint16_t*>(row)[k]);
    }
};

// One register tile: Y[0:MR, 0:NR] (+)= X[0:MR, :] . W[0:NR, :]^T, as MR*NR vector dot products
// accumulated over K and reduced once at the end. W rows are used in their stored layout
// ([N, K], K contiguous), so fp32/fp16/bf16 checkpoints need no repacking.
template <class V, DType WT, int MR, int NR>
void matmul_tile(const float* X, int64_t ldx, const uint8_t* W, int64_t K, float* Y, int64_t ldy,
                 bool accumulate) {
    using L = WeightLoad<V, WT>;
    using reg = typename V::reg;
    const int64_t wstride = K * L::kSize;
    reg c[MR][NR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 32
        for (int j = 0; j < NR; ++j) c[i][j] = V::zero();
    int64_t k = 0;
    for (; k + V::W <= K; k += V::W) {
        reg x[MR];
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) x[i] = V::load(X + i * ldx + k);
#pragma GCC unroll 32
        for (int j = 0; j < NR; ++j) {
            const reg w = L::vec(W + j * wstride, k);
#pragma GCC unroll 32
            for (int i = 0; i < MR; ++i) c[i][j] = V::fma(x[i], w, c[i][j]);
        }
    }
    for (int i = 0; i < MR; ++i) {
        for (int j = 0; j < NR; ++j) {
            float s = V::reduce_add(c[i][j]);
            for (int64_t kk = k; kk < K; ++kk) s += X[i * ldx + kk] * L::one(W + j * wstride, kk);
            float* y = Y + i * ldy + j;
            *y = accumulate ? *y + s : s;
        }
    }
}

// MR rows of X against weight rows [n0, n1): full NR tiles, then single rows.
template <class V, DType WT, int MR>
void matmul_panel(const float* X, int64_t ldx, const uint8_t* W, int64_t K, float* Y, int64_t ldy,
                  int64_t n0, int64_t n1, bool accumulate) {
    const int64_t wstride = K * WeightLoad<V, WT>::kSize;
    int64_t n = n0;
    for (; n + V::NR <= n1; n += V::NR)
        matmul_tile<V, WT, MR, V::NR>(X, ldx, W + n * wstride, K, Y + n, ldy, accumulate);
    for (; n < n1; ++n) matmul_tile<V, WT, MR, 1>(X, ldx, W + n * wstride, K, Y + n, ldy, accumulate);
}

template <class V, DType WT, int MR>
void matmul_rows(int64_t mr, const float* X, int64_t ldx, const uint8_t* W, int64_t K, float* Y,
                 int64_t ldy, int64_t n0, int64_t n1, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return matmul_rows<V, WT, MR - 1>(mr, X, ldx, W, K, Y, ldy, n0, n1, accumulate);
    }
    matmul_panel<V, WT, MR>(X, ldx, W, K, Y, ldy, n0, n1, accumulate);
}

template <class V, DType WT>
void matmul(const float* X, int64_t ldx, const void* Wv, int64_t K, float* Y, int64_t ldy, int64_t M,
            int64_t n0, int64_t n1, bool accumulate) {
    const uint8_t* W = static_cast<const uint8_t*>(Wv);
    const int64_t wstride = K * WeightLoad<V, WT>::kSize;
    if (M == 1) {
        // Decode: memory-bound; NR_DECODE weight rows streamed side by side keep loads in flight.
        int64_t n = n0;
        for (; n + V::NR_DECODE <= n1; n += V::NR_DECODE)
            matmul_tile<V, WT, 1, V::NR_DECODE>(X, ldx, W + n * wstride, K, Y + n, ldy, accumulate);
        for (; n < n1; ++n) matmul_tile<V, WT, 1, 1>(X, ldx, W + n * wstride, K, Y + n, ldy, accumulate);
        return;
    }
    // Prefill: a block of weight rows (about 256 KiB) stays in L2 while every row of X passes it.
    const int64_t block = imax(V::NR, (256 * 1024 / wstride) / V::NR * V::NR);
    for (int64_t nb = n0; nb < n1; nb += block) {
        const int64_t ne = imin(nb + block, n1);
        for (int64_t m = 0; m < M; m += V::MR)
            matmul_rows<V, WT, V::MR>(imin(V::MR, M - m), X + m * ldx, ldx, W, K, Y + m * ldy, ldy,
                                      nb, ne, accumulate);
    }
}

template <class V>
float dot(const float* a, const float* b, int64_t n) {
    typename V::reg acc0 = V::zero(), acc1 = V::zero();
    int64_t i = 0;
    for (; i + 2 * V::W <= n; i += 2 * V::W) {
        acc0 = V::fma(V::load(a + i), V::load(b + i), acc0);
        acc1 = V::fma(V::load(a + i + V::W), V::load(b + i + V::W), acc1);
    }
    for (; i + V::W <= n; i += V::W) acc0 = V::fma(V::load(a + i), V::load(b + i), acc0);
    float s = V::reduce_add(V::add(acc0, acc1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

// y += a * x
template <class V>
void axpy(float a, const float* x, float* y, int64_t n) {
    const typename V::reg va = V::set1(a);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(y + i, V::fma(va, V::load(x + i), V::load(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}

template <class V>
void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
    const float ms = dot<V>(x, x, n) / float(n);
    const float inv = 1.0f / __builtin_sqrtf(ms + eps);
    const typename V::reg vinv = V::set1(inv);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W)
        V::store(y + i, V::mul(V::mul(V::load(x + i), vinv), V::load(w + i)));
    for (; i < n; ++i) y[i] = (x[i] * inv) * w[i];
}

template <class V>
void rope(float* x, const float* cos, const float* sin, int64_t half) {
    float* x2 = x + half;
    int64_t i = 0;
    for (; i + V::W <= half; i += V::W) {
        const typename V::reg a = V::load(x + i), b = V::load(x2 + i);
        const typename V::reg c = V::load(cos + i), s = V::load(sin + i);
        V::store(x + i, V::sub(V::mul(a, c), V::mul(b, s)));
        V::store(x2 + i, V::fma(a, s, V::mul(b, c)));
    }
    for (; i < half; ++i) {
        const float a = x[i], b = x2[i];
        x[i] = a * cos[i] - b * sin[i];
        x2[i] = a * sin[i] + b * cos[i];
    }
}

template <class V>
void swiglu(const float* g, const float* u, float* out, int64_t n) {
    const typename V::reg one = V::set1(1.0f), zero = V::zero();
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) {
        const typename V::reg gv = V::load(g + i);
        const typename V::reg silu = V::div(gv, V::add(one, V::exp(V::sub(zero, gv))));
        V::store(out + i, V::mul(silu, V::load(u + i)));
    }
    for (; i < n; ++i) out[i] = g[i] / (1.0f + __builtin_expf(-g[i])) * u[i];
}

// In place: s[i] = exp(s[i] - max); returns the sum.
template <class V>
float softmax_numerators(float* s, int64_t n) {
    float mx = s[0];
    for (int64_t i = 1; i < n; ++i) mx = s[i] > mx ? s[i] : mx;
    const typename V::reg vmx = V::set1(mx);
    typename V::reg vsum = V::zero();
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) {
        const typename V::reg e = V::exp(V::sub(V::load(s + i), vmx));
        V::store(s + i, e);
        vsum = V::add(vsum, e);
    }
    float sum = V::reduce_add(vsum);
    for (; i < n; ++i) {
        s[i] = __builtin_expf(s[i] - mx);
        sum += s[i];
    }
    return sum;
}

// The g query heads of one KV group against the same K/V rows: each K and V row is read once
// for all g heads (the GQA saving), scores kept in fp32.
template <class V>
void attention(const float* Q, int64_t g, const float* K, const float* Vv, int64_t kv_stride,
               int64_t n_kv, int64_t hd, float scale, float* S, float* O) {
    for (int64_t j = 0; j < n_kv; ++j) {
        const float* k = K + j * kv_stride;
        for (int64_t h = 0; h < g; ++h) S[h * n_kv + j] = dot<V>(Q + h * hd, k, hd) * scale;
    }
    for (int64_t h = 0; h < g; ++h) {
        float* s = S + h * n_kv;
        const float inv = 1.0f / softmax_numerators<V>(s, n_kv);
        for (int64_t j = 0; j < n_kv; ++j) s[j] *= inv;
        float* o = O + h * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] = 0.0f;
    }
    for (int64_t j = 0; j < n_kv; ++j) {
        const float* v = Vv + j * kv_stride;
        for (int64_t h = 0; h < g; ++h) axpy<V>(S[h * n_kv + j], v, O + h * hd, hd);
    }
}

template <class V, DType WT>
void to_f32(const void* src, float* dst, int64_t n) {
    const uint8_t* row = static_cast<const uint8_t*>(src);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(dst + i, WeightLoad<V, WT>::vec(row, i));
    for (; i < n; ++i) dst[i] = WeightLoad<V, WT>::one(row, i);
}

template <class V>
Kernels make_kernels(Isa isa, const char* name) {
    Kernels k{};
    k.isa = isa;
    k.name = name;
    k.matmul[int(DType::F32)] = matmul<V, DType::F32>;
    k.matmul[int(DType::F16)] = matmul<V, DType::F16>;
    k.matmul[int(DType::BF16)] = matmul<V, DType::BF16>;
    k.rmsnorm = rmsnorm<V>;
    k.rope = rope<V>;
    k.swiglu = swiglu<V>;
    k.attention = attention<V>;
    k.to_f32[int(DType::F32)] = to_f32<V, DType::F32>;
    k.to_f32[int(DType::F16)] = to_f32<V, DType::F16>;
    k.to_f32[int(DType::BF16)] = to_f32<V, DType::BF16>;
    return k;
}

}  // namespace
}  // namespace ll::cpu
