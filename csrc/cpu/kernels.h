// The CPU kernel table: one instance per instruction set, chosen once by CPUID (or LLAMA_LOCAL_ISA).
//
// Every kernel takes raw pointers and sizes and works on a slice the caller hands it; threading,
// shape checks and dtype dispatch live above (model/ and bindings.cpp), so kernels stay branch-free.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "../core/kv_format.h"
#include "../weights/bf16_tiles.h"
#include "../weights/fp8_tiles.h"
#include "quant_kinds.h"

namespace ll::cpu {

// AVX512: F/BW/VL/DQ + VNNI. AVX512_BF16: the same with AVX512-BF16 dot products for bf16 weights.
// NEON: AArch64 with the dot-product extension (ARMv8.2-A).
enum class Isa : int { Scalar = 0, AVX2 = 1, AVX512 = 2, AVX512_BF16 = 3, NEON = 4 };
constexpr int kNumIsas = 5;

// Y[m, n] = sum_k X[m, k] * W[n, k]   (or += when accumulate), m in [0, M), n in [n0, n1), k < K.
// X: fp32 rows of stride ldx; W: rows of the table's dtype, ldw elements apart; Y: fp32, stride ldy.
using MatmulFn = void (*)(const float* X, int64_t ldx, const void* W, int64_t ldw, int64_t K, float* Y,
                          int64_t ldy, int64_t M, int64_t n0, int64_t n1, bool accumulate);

// Integer weight kernels (quant_impl.h): Y[m, n] (+)= X[m, :] . W[n, :] for the rows of tiles
// [t0, t1) of a packed weight, X given as quantized activations.
using QMatmulFn = void (*)(const QActs& x, const QuantGeometry& g, const uint8_t* w, float* Y, int64_t ldy,
                           int64_t t0, int64_t t1, bool accumulate);
// bf16 tile kernels (bf16_impl.h): Y[m, n] (+)= X[m, :] . W[n, :] for the rows of tiles [t0, t1).
using BMatmulFn = void (*)(const float* X, int64_t ldx, int64_t M, const BF16Geometry& g, const uint8_t* w, float* Y,
                           int64_t ldy, int64_t t0, int64_t t1, bool accumulate);
// FP8 tile kernels (fp8_impl.h): the same over FP8 E4M3 tiles. With AVX512-BF16, kFP8DotMinRows
// activation rows or more are rounded to bf16 for vdpbf16ps (fewer keep fp32: the expansion costs
// about as much as 8 rows' dot products).
constexpr int64_t kFP8DotMinRows = 16;
using FMatmulFn = void (*)(const float* X, int64_t ldx, int64_t M, const FP8Geometry& g, const uint8_t* w, float* Y,
                           int64_t ldy, int64_t t0, int64_t t1, bool accumulate);
// One row of K floats -> int8 blocks of 32 over Kp columns (zeros past K), scales and sums.
using QuantizeActsFn = void (*)(const float* x, int64_t K, int64_t Kp, int8_t* q, float* d, float* s, int32_t* isum);

// Flash attention (attention_impl.h) of R query rows sharing one KV head against its cached
// positions [j0, j1): row r is query r / g (g heads share the KV head) and sees positions up to
// p0 + r / g. Writes O [R, hd] = sum_j exp(s_j - m) v_j, m and l = sum_j exp(s_j - m) per row,
// unnormalised (m = -inf, l = 0, O = 0 for a row that sees no position in the range).
constexpr int64_t kAttnTile = 64;        // KV positions per tile (prefill: many rows)
constexpr int64_t kAttnTileFew = 256;    // ... with at most kAttnFewRows rows (decode): fewer calls per byte
constexpr int64_t kAttnFewRows = 16;
constexpr int64_t kAttnMaxRows = 64;     // query rows per call
struct AttnArgs {
    const float* q;                 // [R, hd], pre-scaled by 1 / sqrt(hd)
    int64_t R, hd, g, p0;
    const uint8_t* k;               // the KV head's K blocks (KVCache layout: core/kv_format.h)
    const uint8_t* v;               // the KV head's V rows
    int64_t j0, j1;
    float* o;
    float* m;
    float* l;
    float* scratch;                 // attn_scratch_floats(hd)
};
static_assert(kAttnFewRows * kAttnTileFew <= kAttnMaxRows * kAttnTile, "the scores scratch fits either shape");
// Scores, then prefill's K and V tiles and their q8_0 V scales (decode's, kAttnTileFew * hd / 32,
// fit in the tiles' place).
constexpr int64_t attn_scratch_floats(int64_t hd) {
    return kAttnMaxRows * kAttnTile + 2 * kAttnTile * hd + kAttnTile * (hd / kKVQBlock);
}
using AttnFn = void (*)(const AttnArgs&);

struct Kernels {
    Isa isa;
    const char* name;
    MatmulFn matmul[kNumDTypes];  // indexed by DType
    // y = x / sqrt(mean(x^2) + eps) * w
    void (*rmsnorm)(const float* x, const float* w, float* y, int64_t n, float eps);
    // Rotate-half RoPE in place on one head: (x[i], x[i + half]) rotated by (cos[i], sin[i]).
    void (*rope)(float* x, const float* cos, const float* sin, int64_t half);
    // out = silu(gate) * up
    void (*swiglu)(const float* gate, const float* up, float* out, int64_t n);
    // Y[M, N] (+)= A[M, K] . B[K, N], all fp32, B rows contiguous (attention's P . V).
    void (*gemm_nn)(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, float* Y,
                    int64_t ldy, int64_t M, int64_t N, bool accumulate);
    // In place: s[0:n] = softmax(scale * s[0:n]), fp32.
    void (*softmax)(float* s, int64_t n, float scale);
    // dst[i] = float(src[i]) for a row of weights (embedding lookup)
    void (*to_f32[kNumDTypes])(const void* src, float* dst, int64_t n);
    BMatmulFn bf16_matmul;
    FMatmulFn fp8_matmul;
    QuantizeActsFn quantize_acts;
    QMatmulFn qmatmul[kNumQKinds];  // indexed by qkind_index()
    AttnFn flash_attention[kNumKVTypes];  // indexed by KVType
};

bool isa_supported(Isa isa);   // CPU and OS support it, and this build compiled it
Isa best_isa();
const char* isa_name(Isa isa);
Isa parse_isa(const char* name);   // throws std::invalid_argument on an unknown name
const Kernels& kernels_for(Isa isa);  // throws std::invalid_argument when not supported

// The ISA chosen at load: LLAMA_LOCAL_ISA when set (must be supported), else best_isa().
Isa default_isa();

// Defined in each ISA's own translation unit.
const Kernels& kernels_scalar();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();
const Kernels& kernels_avx512_bf16();
const Kernels& kernels_neon();

}  // namespace ll::cpu
