// The FP8 GEMM's work for one block (fp8_gemm.cu's kernels; the file comment there says how it
// cuts the product), W8A8's activation quantization for one row, and the choice of the kernel
// instance that runs a product. Device code, in a header of its own so that tests/cuda_emulation
// can run this very code on the host, with ptx.cuh's instructions emulated.
#pragma once
#include <cstdint>

#include "fp8_gemm_tiling.h"
#include "copy_pipeline.cuh"
#include "ptx.cuh"

namespace ll::cuda {
namespace {

enum class Fp8Act { E4M3, BF16, FP16 };  // the activations (and mma inputs) a kernel takes

struct Fp8Params {
    const uint8_t* a;  // codes [m, lda] (E4M3) or 16-bit X [m, lda halves]
    int64_t lda, m;
    const float* a_scales;  // W8A8 only: [m]
    const uint32_t* q;
    const float* scales;
    const float* mins;  // integer codes with mins only (kFoldMins), in the scales' layout
    Fp8TileGeometry g;
    int splits;
    uint16_t* y;
    int64_t ldy;
    float* partial;  // [splits, m, n] when splits > 1
};

// How a kernel applies the weight's scales: kNoFold once at the end (one scale per column);
// kFoldTiles into fp32 totals after the tiles fp8_fold_after names (W8A8; k-blocks of whole
// tiles); kFoldSteps after each k16 step, with the scales of its own 16-column block (integer
// codes in blocks of 16: GGUF Q6_K); kFoldMins as kFoldTiles, adding each block's mins times the
// activations' sums over the block (integer codes with mins: GGUF Q5_K, Q5_1):
//   sum_{k in b} x[m, k] (scale[n, b] u[n, k] + min[n, b]) = scale[n, b] sum x u + min[n, b] sum x
enum Fp8Fold { kNoFold = 0, kFoldTiles = 1, kFoldSteps = 2, kFoldMins = 3 };

template <Fp8Act kAct, int kFold, int kMFrags>
struct alignas(16) Fp8Smem {
    static constexpr int kStride = kAct == Fp8Act::E4M3 ? kFp8ActStrideW8A8 : kFp8ActStrideW8A16;  // bytes
    static constexpr int kScales = kFold >= kFoldSteps ? 2 * kFp8TileN : kFold ? kFp8TileN : 4;
    uint4 w[kFp8Stages][kGemmWarps][kFp8Chunks][32];  // each lane's 16 bytes of each chunk
    float s[kFp8Stages][kGemmWarps][kScales];  // a k-block's 64 scales per slab (steps: two blocks'; mins: then its mins)
    uint8_t x[kFp8Stages][16 * kMFrags][kStride];
};
static_assert(sizeof(Fp8Smem<Fp8Act::BF16, kNoFold, 3>) <= 48 * 1024 &&
                  sizeof(Fp8Smem<Fp8Act::BF16, kFoldSteps, 2>) <= 48 * 1024,
              "the pipeline's stages do not fit static shared memory");

template <Fp8Act kAct, bool kInt8, int kFold, int kMFrags>
__device__ __forceinline__ void fp8_block(const Fp8Params& p, Fp8Smem<kAct, kFold, kMFrags>& sm) {
    static_assert(kFold < kFoldSteps || (kInt8 && kAct != Fp8Act::E4M3), "16-column blocks, mins: integer codes only");
    constexpr bool kTileFold = kFold == kFoldTiles || kFold == kFoldMins;  // folds at fp8_fold_after
    constexpr bool kE4m3 = kAct == Fp8Act::E4M3, kBf16 = kAct != Fp8Act::FP16;
    constexpr int kPerRow = kE4m3 ? 2 : 4;            // 16-byte chunks of a row per tile
    constexpr int kTileBytes = kE4m3 ? kFp8TileK : 2 * kFp8TileK;
    const int warp = int(threadIdx.x >> 5), lane = int(threadIdx.x & 31);
    const int64_t nt = int64_t(blockIdx.x) * kGemmWarps + warp;
    const bool has_slab = nt < p.g.n_tiles;  // the last block's spare warps still copy X and sync
    const int64_t m0 = int64_t(blockIdx.y) * 16 * kMFrags;
    const StageRange range = splitk_range(p.g.k_tiles, p.splits, int(blockIdx.z));
    const int64_t n_tiles = range.end - range.begin;
    const int64_t row_bytes = kE4m3 ? p.lda : 2 * p.lda;

    auto load_tile = [&](int64_t kt, int buf) {
        if (has_slab) {
#pragma unroll
            for (int c = 0; c < kFp8Chunks; ++c)
                copy16(&sm.w[buf][warp][c][lane], p.q + fp8_w_offset(p.g, nt, kt, c, lane), 16);
            if (kFold == kFoldSteps && lane < 2 * kFp8TileN / 4)  // blocks 2 kt and 2 kt + 1, contiguous
                copy16(&sm.s[buf][warp][4 * lane], p.scales + fp8_scale_offset(p.g, nt, 2 * kt) + 4 * lane, 16);
            else if (kTileFold && lane < (kFold == kFoldMins ? 2 : 1) * kFp8TileN / 4 &&
                     fp8_fold_after(p.g, kt, range.end, kE4m3))  // (the mins' lanes: 16-31)
                copy16(&sm.s[buf][warp][4 * lane], (lane < kFp8TileN / 4 ? p.scales : p.mins) +
                           fp8_scale_offset(p.g, nt, kt / p.g.tiles_per_block) + 4 * (lane % (kFp8TileN / 4)), 16);
        }
        for (int c = int(threadIdx.x); c < 16 * kMFrags * kPerRow; c += kGemmThreads) {
            const FragCoord ch = fp8_act_chunk(c, kPerRow);
            const int64_t row = m0 + ch.row;
            int bytes = row < p.m ? 16 : 0;  // E4M3 rows hold zeros up to k_tiles * 32
            if (!kE4m3 && bytes) {           // X's tail: only the halves before K
                const int64_t left = p.g.k - (kt * kFp8TileK + ch.col / 2);
                bytes = left <= 0 ? 0 : left >= 8 ? 16 : int(left) * 2;
            }
            copy16(&sm.x[buf][ch.row][ch.col], bytes ? p.a + row * row_bytes + kt * kTileBytes + ch.col : p.a, bytes);
        }
    };

    float acc[kMFrags][kFp8SubTiles][4] = {};
    float tot[kFold ? kMFrags : 1][kFp8SubTiles][4] = {};  // folding kernels: the scaled fp32 totals
    // kFoldMins: each A row's sum over the block so far, as the C fragment of X times a B of ones
    // (every column the same sum; element i on the row of acc's element i)
    float xsum[kFold == kFoldMins ? kMFrags : 1][4] = {};
    const FragCoord lda = ldm::a_row(lane);
    // acc times the lane's 16 column scales sc (fp8_lane_scales) into tot, with kFoldMins the
    // row sums times the 16 mins 64 floats on; acc (and xsum) restart at 0.
    auto fold = [&](const float* sc) {
#pragma unroll
        for (int f = 0; f < kMFrags; ++f)
#pragma unroll
            for (int s = 0; s < kFp8SubTiles; ++s)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    float t = tot[kFold ? f : 0][s][i] + acc[f][s][i] * sc[2 * s + (i & 1)];
                    if constexpr (kFold == kFoldMins) t += xsum[f][i] * sc[kFp8TileN + 2 * s + (i & 1)];
                    tot[kFold ? f : 0][s][i] = t;
                    acc[f][s][i] = 0.0f;
                }
        if constexpr (kFold == kFoldMins)
#pragma unroll
            for (int f = 0; f < kMFrags; ++f) xsum[f][0] = xsum[f][1] = xsum[f][2] = xsum[f][3] = 0.0f;
    };

    copy_pipeline<kFp8Stages>(range.begin, n_tiles, load_tile, [&](int64_t it, int buf) {  // a stage: one tile
        if (!has_slab) return;
        if constexpr (kE4m3) {
            uint32_t a[kMFrags][4];
#pragma unroll
            for (int f = 0; f < kMFrags; ++f) ldmatrix_x4(a[f], &sm.x[buf][16 * f + lda.row][2 * lda.col]);
#pragma unroll
            for (int c = 0; c < kFp8Chunks; ++c) {
                const uint4 v = sm.w[buf][warp][c][lane];
                const uint32_t q[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    uint32_t b[2];
                    fp8_e4m3_fragment(q, 2 * c + h, b);
#pragma unroll
                    for (int f = 0; f < kMFrags; ++f) mma_16832_e4m3(acc[f][2 * c + h], a[f], b);
                }
            }
        } else {
            // Step by step (k 0-15, then 16-31): one step's A fragments live at a time, and each
            // chunk is read from shared memory twice, to stay within the register budget.
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                uint32_t a[kMFrags][4];
#pragma unroll
                for (int f = 0; f < kMFrags; ++f)
                    ldmatrix_x4(a[f], &sm.x[buf][16 * f + lda.row][2 * (16 * r + lda.col)]);
#pragma unroll
                for (int c = 0; c < kFp8Chunks; ++c) {
                    const uint4 v = sm.w[buf][warp][c][lane];
                    const uint32_t q[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                    for (int h = 0; h < 2; ++h) {  // word 2h + r: sub-tile 2c + h, step r
                        uint32_t b[2];
                        w8_word_fragment<kBf16, kInt8>(q[2 * h + r], b);
#pragma unroll
                        for (int f = 0; f < kMFrags; ++f) mma_16816<kBf16>(acc[f][2 * c + h], a[f], b);
                    }
                }
                if constexpr (kFold == kFoldMins) {  // the step's row sums: A times ones
                    const uint32_t ones[2] = {half2_one<kBf16>(), half2_one<kBf16>()};
#pragma unroll
                    for (int f = 0; f < kMFrags; ++f) mma_16816<kBf16>(xsum[f], a[f], ones);
                }
                // step r covers k [16 r, 16 r + 16) of the tile: block 2 kt + r
                if constexpr (kFold == kFoldSteps) fold(&sm.s[buf][warp][kFp8TileN * r + fp8_lane_scales(lane)]);
            }
        }
        if constexpr (kTileFold) {
            if (fp8_fold_after(p.g, range.begin + it, range.end, kE4m3)) fold(&sm.s[buf][warp][fp8_lane_scales(lane)]);
        }
    });

    if (!has_slab) return;
    float sw[16] = {};  // per-column scales: the lane's 16 (fp8_lane_scales), applied once here
    if constexpr (!kFold) {
        const float4* sp = reinterpret_cast<const float4*>(p.scales + fp8_scale_offset(p.g, nt, 0) + fp8_lane_scales(lane));
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float4 v = sp[j];
            sw[4 * j] = v.x, sw[4 * j + 1] = v.y, sw[4 * j + 2] = v.z, sw[4 * j + 3] = v.w;
        }
    }
#pragma unroll
    for (int f = 0; f < kMFrags; ++f)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const FragCoord c = mma_c(lane, i);
            const int64_t row = m0 + 16 * f + c.row;
            if (row >= p.m) continue;
            const float sa = kE4m3 && p.splits == 1 ? p.a_scales[row] : 1.0f;
#pragma unroll
            for (int s = 0; s < kFp8SubTiles; ++s) {
                const int64_t n = nt * kFp8TileN + 8 * s + c.col;
                if (n >= p.g.n) continue;
                float v;
                if constexpr (kFold) v = tot[f][s][i];
                else v = acc[f][s][i] * sw[2 * s + (i & 1)];
                if (p.splits == 1) p.y[row * p.ldy + n] = float_to_half_bits<kBf16>(kE4m3 ? v * sa : v);
                else p.partial[(int64_t(blockIdx.z) * p.m + row) * p.g.n + n] = v;
            }
        }
}

// W8A8's activations, row blockIdx.x of X by a block of 128 threads (fp8_quantize_kernel): the
// row's absmax (a max: the same in any order, so the host's fp8_quantize_row gives the same
// scale), then whole 16-code chunks in slot order. warp_max: the block's shared memory.
__device__ __forceinline__ void fp8_quantize_row_block(const uint16_t* x, int64_t ldx, int64_t K, float ub,
                                                       uint8_t* codes, int64_t ldq, float* scales,
                                                       float (&warp_max)[4]) {
    const int64_t row = blockIdx.x;
    const uint16_t* xr = x + row * ldx;
    float amax = 0.0f;
    for (int64_t k = threadIdx.x; k < K; k += 128) amax = fmaxf(amax, fabsf(bf16_to_float(xr[k])));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, o));
    if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = amax;
    __syncthreads();
    amax = fmaxf(fmaxf(warp_max[0], warp_max[1]), fmaxf(warp_max[2], warp_max[3]));
    const float s = e4m3_act_scale(amax, ub);
    if (threadIdx.x == 0) scales[row] = s;
    for (int64_t c = threadIdx.x; c < ldq / 16; c += 128) {
        uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
        for (int v = 0; v < 16; ++v) {
            const int64_t k = (16 * c & ~int64_t(31)) + fp8_k_of_slot(int((16 * c + v) & 31));
            const uint32_t code = k < K ? e4m3_act_code(bf16_to_float(xr[k]), s) : 0u;
            w[v >> 2] |= code << (8 * (v & 3));
        }
        *reinterpret_cast<uint4*>(codes + row * ldq + 16 * c) = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// ---- which kernel instance runs a product: written once, for fp8_gemm.cu's launcher and the
// tests' host emulation. Each calls run.template operator()<kAct, kInt8, kFold, kMFrags>() for the
// instance, or returns false where no kernel is built for the product.

template <Fp8Act kAct, bool kInt8, int kFold, class Run>
bool fp8_gemm_m_frags(int m_frags, const Run& run) {
    if (m_frags == 1) run.template operator()<kAct, kInt8, kFold, 1>();
    else if (m_frags == 2) run.template operator()<kAct, kInt8, kFold, 2>();
    else if constexpr (!kFold) {  // folding kernels hold a second set of accumulators: 2 at most
        if (m_frags != 3) return false;
        run.template operator()<kAct, kInt8, kFold, 3>();
    } else {
        return false;
    }
    return true;
}

template <Fp8Act kAct, bool kInt8, class Run>
bool fp8_gemm_fold(const Fp8TileGeometry& g, bool mins, int m_frags, const Run& run) {
    if (mins && !(kInt8 && fp8_takes_mins(g))) return false;  // only kFoldMins adds them
    if constexpr (kAct == Fp8Act::E4M3) {
        return fp8_gemm_m_frags<kAct, false, kFoldTiles>(m_frags, run);  // W8A8 always folds
    } else if (g.blocks == 1) {
        return fp8_gemm_m_frags<kAct, kInt8, kNoFold>(m_frags, run);
    } else if constexpr (kInt8) {
        if (mins) return fp8_gemm_m_frags<kAct, true, kFoldMins>(m_frags, run);
        if (fp8_step_blocks(g)) return fp8_gemm_m_frags<kAct, true, kFoldSteps>(m_frags, run);
        return fp8_gemm_m_frags<kAct, true, kFoldTiles>(m_frags, run);
    } else {
        return fp8_gemm_m_frags<kAct, false, kFoldTiles>(m_frags, run);
    }
}

// The instance for activations `act`, integer codes (W8A16 only), the weight's geometry, whether
// it has mins, and the plan's A fragments.
template <class Run>
bool fp8_gemm_dispatch(Fp8Act act, bool int8, const Fp8TileGeometry& g, bool mins, int m_frags, const Run& run) {
    switch (act) {
    case Fp8Act::E4M3:
        return !int8 && fp8_gemm_fold<Fp8Act::E4M3, false>(g, mins, m_frags, run);
    case Fp8Act::BF16:
        return int8 ? fp8_gemm_fold<Fp8Act::BF16, true>(g, mins, m_frags, run)
                    : fp8_gemm_fold<Fp8Act::BF16, false>(g, mins, m_frags, run);
    case Fp8Act::FP16:
        return int8 ? fp8_gemm_fold<Fp8Act::FP16, true>(g, mins, m_frags, run)
                    : fp8_gemm_fold<Fp8Act::FP16, false>(g, mins, m_frags, run);
    }
    return false;
}

}  // namespace
}  // namespace ll::cuda
