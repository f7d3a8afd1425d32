// The CPU kernels, written once over a vector type V (vec_scalar.h, vec_avx2.h, vec_avx512.h)
// and instantiated by each ISA's translation unit, which compiles them with its own flags.
//
// Everything here sits in an anonymous namespace and calls no inline library function (only
// compiler builtins), so no AVX-512 code can leak to callers through a shared inline symbol.
#pragma once
#include <cstdint>
#include <utility>

#include "../core/dtype.h"
#include "kernels.h"

namespace ll::cpu {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// exp(x) = 2^n * e^r with n = round(x / ln 2), |r| <= ln2 / 2, and e^r from Cephes' degree-6
// expf polynomial (~1 ulp); ln 2 split in two so r is exact. The scalar table uses libm.
template <class V>
typename V::reg vexp(typename V::reg x) {
    if constexpr (V::W == 1) {
        return __builtin_expf(x);
    } else {
        x = V::min(V::max(x, V::set1(-87.3f)), V::set1(88.3f));
        const typename V::reg n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
        typename V::reg r = V::fma(n, V::set1(-0.693359375f), x);
        r = V::fma(n, V::set1(2.12194440e-4f), r);
        typename V::reg p = V::set1(1.9875691500e-4f);
        p = V::fma(p, r, V::set1(1.3981999507e-3f));
        p = V::fma(p, r, V::set1(8.3334519073e-3f));
        p = V::fma(p, r, V::set1(4.1665795894e-2f));
        p = V::fma(p, r, V::set1(1.6666665459e-1f));
        p = V::fma(p, r, V::set1(5.0000001201e-1f));
        p = V::fma(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
        return V::mul_pow2(p, n);
    }
}

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

// One register tile: Y[0:MR, 0:NR] (+)= X[0:MR, 0:K] . W[0:NR, 0:K]^T, as MR*NR vector dot
// products accumulated over K and reduced once at the end. W rows are used in their stored layout
// (K contiguous, rows wstride bytes apart), so fp32/fp16/bf16 checkpoints need no repacking and
// the KV cache serves as W for attention scores.
template <class V, DType WT, int MR, int NR>
void matmul_tile(const float* X, int64_t ldx, const uint8_t* W, int64_t wstride, int64_t K, float* Y,
                 int64_t ldy, bool accumulate) {
    using L = WeightLoad<V, WT>;
    using reg = typename V::reg;
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
void matmul_panel(const float* X, int64_t ldx, const uint8_t* W, int64_t wstride, int64_t K, float* Y,
                  int64_t ldy, int64_t n0, int64_t n1, bool accumulate) {
    int64_t n = n0;
    for (; n + V::NR <= n1; n += V::NR)
        matmul_tile<V, WT, MR, V::NR>(X, ldx, W + n * wstride, wstride, K, Y + n, ldy, accumulate);
    for (; n < n1; ++n)
        matmul_tile<V, WT, MR, 1>(X, ldx, W + n * wstride, wstride, K, Y + n, ldy, accumulate);
}

template <class V, DType WT, int MR>
void matmul_rows(int64_t mr, const float* X, int64_t ldx, const uint8_t* W, int64_t wstride, int64_t K,
                 float* Y, int64_t ldy, int64_t n0, int64_t n1, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return matmul_rows<V, WT, MR - 1>(mr, X, ldx, W, wstride, K, Y, ldy, n0, n1, accumulate);
    }
    matmul_panel<V, WT, MR>(X, ldx, W, wstride, K, Y, ldy, n0, n1, accumulate);
}

// Decode (M == 1): one weight row at a time with four accumulators, so the weights stream through
// memory strictly in order -- the access pattern hardware prefetchers follow best -- while four
// independent FMA chains hide the FMA latency.
template <class V, DType WT, int64_t PF = 1024>
void matvec(const float* x, const uint8_t* W, int64_t wstride, int64_t K, float* y, int64_t n0, int64_t n1,
            bool accumulate) {
    using L = WeightLoad<V, WT>;
    using reg = typename V::reg;
    for (int64_t n = n0; n < n1; ++n) {
        const uint8_t* row = W + n * wstride;
        reg a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
        int64_t k = 0;
        for (; k + 4 * V::W <= K; k += 4 * V::W) {
            // Hardware prefetchers stop at 4 KiB pages -- one bf16 row of a 2048-wide matrix --
            // and retrain on each new one; asking for the bytes PF ahead keeps the stream going
            // across rows.
#pragma GCC unroll 8
            for (int64_t b = 0; b < 4 * V::W * L::kSize; b += 64) __builtin_prefetch(row + (k + PF) * L::kSize + b);
            a0 = V::fma(V::load(x + k), L::vec(row, k), a0);
            a1 = V::fma(V::load(x + k + V::W), L::vec(row, k + V::W), a1);
            a2 = V::fma(V::load(x + k + 2 * V::W), L::vec(row, k + 2 * V::W), a2);
            a3 = V::fma(V::load(x + k + 3 * V::W), L::vec(row, k + 3 * V::W), a3);
        }
        for (; k + V::W <= K; k += V::W) a0 = V::fma(V::load(x + k), L::vec(row, k), a0);
        float s = V::reduce_add(V::add(V::add(a0, a1), V::add(a2, a3)));
        for (; k < K; ++k) s += x[k] * L::one(row, k);
        y[n] = accumulate ? y[n] + s : s;
    }
}

template <class V, DType WT>
void matmul(const float* X, int64_t ldx, const void* Wv, int64_t ldw, int64_t K, float* Y, int64_t ldy,
            int64_t M, int64_t n0, int64_t n1, bool accumulate) {
    const uint8_t* W = static_cast<const uint8_t*>(Wv);
    const int64_t wstride = ldw * WeightLoad<V, WT>::kSize;
    if (M == 1) return matvec<V, WT>(X, W, wstride, K, Y, n0, n1, accumulate);
    // Prefill, blocked for the caches: K in slices of KC, so MR rows of X (MR * KC * 4 bytes) stay
    // in L1; and weight rows in blocks of about 256 KiB that stay in L2 while all of X passes by.
    constexpr int64_t KC = 2048;
    for (int64_t kb = 0; kb < K; kb += KC) {
        const int64_t kc = imin(KC, K - kb);
        const bool acc = accumulate || kb > 0;
        const uint8_t* Wk = W + kb * WeightLoad<V, WT>::kSize;
        const int64_t block = imax(V::NR, (256 * 1024 / (kc * WeightLoad<V, WT>::kSize)) / V::NR * V::NR);
        for (int64_t nb = n0; nb < n1; nb += block) {
            const int64_t ne = imin(nb + block, n1);
            for (int64_t m = 0; m < M; m += V::MR)
                matmul_rows<V, WT, V::MR>(imin(V::MR, M - m), X + m * ldx + kb, ldx, Wk, wstride, kc,
                                          Y + m * ldy, ldy, nb, ne, acc);
        }
    }
}

// Y[0:MR, 0:NV*W] (+)= A[0:MR, 0:K] . B[0:K, 0:NV*W]: outer products of broadcast A elements with
// B rows. B rows are contiguous (the V rows of the KV cache), so nothing is transposed.
template <class V, int MR, int NV>
void gemm_nn_tile(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* Y,
                  int64_t ldy, bool accumulate) {
    using reg = typename V::reg;
    reg c[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 32
        for (int v = 0; v < NV; ++v) c[i][v] = V::zero();
    for (int64_t k = 0; k < K; ++k) {
        reg b[NV];
#pragma GCC unroll 32
        for (int v = 0; v < NV; ++v) b[v] = V::load(B + k * ldb + v * V::W);
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) {
            const reg a = V::set1(A[i * lda + k]);
#pragma GCC unroll 32
            for (int v = 0; v < NV; ++v) c[i][v] = V::fma(a, b[v], c[i][v]);
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) {
            float* y = Y + i * ldy + v * V::W;
            V::store(y, accumulate ? V::add(V::load(y), c[i][v]) : c[i][v]);
        }
}

template <class V, int MR>
void gemm_nn_rows(int64_t mr, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K,
                  float* Y, int64_t ldy, int64_t N, bool accumulate) {
    if constexpr (MR > 1) {
        if (mr < MR) return gemm_nn_rows<V, MR - 1>(mr, A, lda, B, ldb, K, Y, ldy, N, accumulate);
    }
    constexpr int NV = V::GEMM_NN_NV;
    int64_t n = 0;
    for (; n + NV * V::W <= N; n += NV * V::W)
        gemm_nn_tile<V, MR, NV>(A, lda, B + n, ldb, K, Y + n, ldy, accumulate);
    for (; n + V::W <= N; n += V::W) gemm_nn_tile<V, MR, 1>(A, lda, B + n, ldb, K, Y + n, ldy, accumulate);
    for (; n < N; ++n)  // columns past the last whole vector
        for (int64_t i = 0; i < mr; ++i) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; ++k) s += A[i * lda + k] * B[k * ldb + n];
            Y[i * ldy + n] = accumulate ? Y[i * ldy + n] + s : s;
        }
}

template <class V>
void gemm_nn(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* Y, int64_t ldy,
             int64_t M, int64_t N, bool accumulate) {
    for (int64_t m = 0; m < M; m += V::GEMM_NN_MR)
        gemm_nn_rows<V, V::GEMM_NN_MR>(imin(V::GEMM_NN_MR, M - m), A + m * lda, lda, B, ldb, K,
                                       Y + m * ldy, ldy, N, accumulate);
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
        const typename V::reg silu = V::div(gv, V::add(one, vexp<V>(V::sub(zero, gv))));
        V::store(out + i, V::mul(silu, V::load(u + i)));
    }
    for (; i < n; ++i) out[i] = g[i] / (1.0f + __builtin_expf(-g[i])) * u[i];
}

// max(s[0:n]), n >= 1.
template <class V>
float row_max(const float* s, int64_t n) {
    typename V::reg vmax = V::set1(s[0]);
    int64_t j = 0;
    for (; j + V::W <= n; j += V::W) vmax = V::max(vmax, V::load(s + j));
    float mx = V::reduce_max(vmax);
    for (; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
    return mx;
}

// In place: s[0:lim] = exp(s - m), s[lim:n] = 0; returns the sum.
template <class V>
float exp_shifted(float* s, int64_t lim, int64_t n, float m) {
    const typename V::reg vm = V::set1(m);
    typename V::reg vsum = V::zero();
    int64_t i = 0;
    for (; i + V::W <= lim; i += V::W) {
        const typename V::reg e = vexp<V>(V::sub(V::load(s + i), vm));
        V::store(s + i, e);
        vsum = V::add(vsum, e);
    }
    float sum = V::reduce_add(vsum);
    for (; i < lim; ++i) {
        s[i] = __builtin_expf(s[i] - m);
        sum += s[i];
    }
    for (; i < n; ++i) s[i] = 0.0f;
    return sum;
}

// In place over n scores: p = exp(scale * s - max) / sum (fp32 throughout).
template <class V>
void softmax(float* s, int64_t n, float scale) {
    const typename V::reg vscale = V::set1(scale);
    int64_t j = 0;
    for (; j + V::W <= n; j += V::W) V::store(s + j, V::mul(V::load(s + j), vscale));
    for (; j < n; ++j) s[j] *= scale;
    const float inv = 1.0f / exp_shifted<V>(s, n, n, row_max<V>(s, n));
    const typename V::reg vinv = V::set1(inv);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(s + i, V::mul(V::load(s + i), vinv));
    for (; i < n; ++i) s[i] *= inv;
}

template <class V, DType WT>
void to_f32(const void* src, float* dst, int64_t n) {
    const uint8_t* row = static_cast<const uint8_t*>(src);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(dst + i, WeightLoad<V, WT>::vec(row, i));
    for (; i < n; ++i) dst[i] = WeightLoad<V, WT>::one(row, i);
}

}  // namespace
}  // namespace ll::cpu

#include "bf16_impl.h"
#include "fp8_impl.h"
#include "quant_impl.h"
#include "attention_impl.h"

namespace ll::cpu {
namespace {

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
    k.gemm_nn = gemm_nn<V>;
    k.softmax = softmax<V>;
    k.to_f32[int(DType::F32)] = to_f32<V, DType::F32>;
    k.to_f32[int(DType::F16)] = to_f32<V, DType::F16>;
    k.to_f32[int(DType::BF16)] = to_f32<V, DType::BF16>;
    k.bf16_matmul = bf16_matmul<V>;
    k.fp8_matmul = fp8_matmul<V>;
    fill_quant_kernels<V>(k);
    fill_attention_kernels<V>(k);
    return k;
}

}  // namespace
}  // namespace ll::cpu
