// The W4A16 GEMM's work for one block (int4_gemm.cu's kernel; the file comment there says how it
// cuts the product). Device code, in a header of its own so that tests/cuda_emulation can run
// this very code on the host, with ptx.cuh's instructions emulated.
#pragma once
#include <cstdint>

#include "int4_gemm_tiling.h"
#include "copy_pipeline.cuh"
#include "ptx.cuh"

namespace ll::cuda {
namespace {

struct GemmParams {
    const uint16_t* x;
    int64_t ldx, m;
    const uint32_t* q;
    const uint16_t* scales;
    const uint16_t* mins;
    Int4Geometry g;
    int zero;
    int splits;
    int64_t k_stages;
    uint16_t* y;
    int64_t ldy;
    float* partial;  // [splits, m, n] when splits > 1
};

template <int kMFrags>
struct alignas(16) GemmSmem {
    uint4 w[kGemmStages][kGemmStageTiles][kGemmWarps][32];  // each lane's 16 bytes of each tile
    uint4 s[kGemmStages][kGemmStageTiles][kGemmWarps][8];   // each quad's 8 scales
    uint4 mn[kGemmStages][kGemmStageTiles][kGemmWarps][8];  // and mins
    uint16_t x[kGemmStages][16 * kMFrags][kGemmActStride];
};
// Static shared memory stops at 48 KB a block (the largest plan uses 39 KB).
static_assert(sizeof(GemmSmem<3>) <= 48 * 1024, "the pipeline's stages do not fit static shared memory");

template <bool kBf16, bool kHasMin, int kMFrags>
__device__ __forceinline__ void gemm_block(const GemmParams& p, GemmSmem<kMFrags>& sm) {
    const int warp = int(threadIdx.x >> 5), lane = int(threadIdx.x & 31);
    const int64_t nt = int64_t(blockIdx.x) * kGemmWarps + warp;
    const bool has_slab = nt < p.g.n_tiles;  // the last block's spare warps still copy X and sync
    const int64_t m0 = int64_t(blockIdx.y) * 16 * kMFrags;
    const StageRange range = splitk_range(p.k_stages, p.splits, int(blockIdx.z));
    const int64_t n_stages = range.end - range.begin;

    auto load_stage = [&](int64_t stage, int buf) {
        if (has_slab)
            for (int t = 0; t < kGemmStageTiles; ++t) {
                const int64_t kt = stage * kGemmStageTiles + t;
                if (kt >= p.g.k_tiles) break;
                copy16(&sm.w[buf][t][warp][lane], p.q + int4_q_offset(p.g, nt, kt, lane), 16);
                if ((lane & 3) == 0) {
                    const int64_t so = int4_scale_offset(p.g, nt, kt, lane);
                    copy16(&sm.s[buf][t][warp][lane >> 2], p.scales + so, 16);
                    if (kHasMin) copy16(&sm.mn[buf][t][warp][lane >> 2], p.mins + so, 16);
                }
            }
        for (int c = int(threadIdx.x); c < 64 * kMFrags; c += kGemmThreads) {
            const FragCoord a = act_chunk(c);
            const int64_t row = m0 + a.row, k = stage * kGemmStageK + a.col, left = p.g.k - k;
            const int bytes = row < p.m && left > 0 ? (left >= 8 ? 16 : int(left) * 2) : 0;
            copy16(&sm.x[buf][a.row][a.col], bytes ? p.x + row * p.ldx + k : p.x, bytes);
        }
    };

    float acc[kMFrags][kInt4SubTiles][4];
#pragma unroll
    for (int f = 0; f < kMFrags; ++f)
#pragma unroll
        for (int s = 0; s < kInt4SubTiles; ++s)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[f][s][i] = 0.0f;
    const Int4Bias bias = int4_bias<kBf16>(p.zero);
    const FragCoord lda = ldm::a_row(lane);

    copy_pipeline<kGemmStages>(range.begin, n_stages, load_stage, [&](int64_t it, int buf) {
        if (!has_slab) return;
#pragma unroll 1
        for (int t = 0; t < kGemmStageTiles; ++t) {
            if ((range.begin + it) * kGemmStageTiles + t >= p.g.k_tiles) break;
            const uint4 qv = sm.w[buf][t][warp][lane], sv = sm.s[buf][t][warp][lane >> 2];
            const uint4 mv = kHasMin ? sm.mn[buf][t][warp][lane >> 2] : make_uint4(0, 0, 0, 0);
            const uint32_t q[4] = {qv.x, qv.y, qv.z, qv.w}, sc[4] = {sv.x, sv.y, sv.z, sv.w};
            const uint32_t mn[4] = {mv.x, mv.y, mv.z, mv.w};
            uint32_t a[kMFrags][4];
#pragma unroll
            for (int f = 0; f < kMFrags; ++f) ldmatrix_x4(a[f], &sm.x[buf][16 * f + lda.row][kInt4TileK * t + lda.col]);
            // Word by word: two sub-tiles' fragments live at a time, not eight (registers at m_frags 4).
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                uint32_t frag[2][2];
                int4_word_fragments<kBf16, kHasMin>(w, q[w], sc, mn, bias, frag);
#pragma unroll
                for (int j = 0; j < 2; ++j)
#pragma unroll
                    for (int f = 0; f < kMFrags; ++f) mma_16816<kBf16>(acc[f][int4_subtile(w, 2 * j)], a[f], frag[j]);
            }
        }
    });

    if (!has_slab) return;
#pragma unroll
    for (int f = 0; f < kMFrags; ++f)
#pragma unroll
        for (int s = 0; s < kInt4SubTiles; ++s)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const FragCoord c = mma_c(lane, i);
                const int64_t row = m0 + 16 * f + c.row, n = nt * kInt4TileN + 8 * s + c.col;
                if (row >= p.m || n >= p.g.n) continue;
                if (p.splits == 1) p.y[row * p.ldy + n] = float_to_half_bits<kBf16>(acc[f][s][i]);
                else p.partial[(int64_t(blockIdx.z) * p.m + row) * p.g.n + n] = acc[f][s][i];
            }
}

}  // namespace
}  // namespace ll::cuda
