// How the 16-bit-weight GEMM (bf16_gemm.cu: bf16 or fp16 checkpoints, and the tied LM head) cuts
// its work, as plain functions the host tests run.
//
// A block is 4 warps; warp w owns 32 output columns (4 n8 sub-tiles) of the block's 128, all warps
// share 16 m_frags rows and one split's k range, streamed in stages of 32 k through a 3-stage
// cp.async pipeline. W stays row-major [N][K] as checkpoints store it (B "col" for mma.sync), so
// B fragments come straight from ldmatrix (mma_frag.h: ldm::b_nk_row), no repack.
#pragma once
#include <cstdint>

#include "int4_gemm_tiling.h"

namespace ll::cuda {

constexpr int kB16Warps = 4;
constexpr int kB16Threads = 32 * kB16Warps;
constexpr int kB16WarpN = 32;                         // output columns per warp
constexpr int kB16BlockN = kB16Warps * kB16WarpN;     // 128 per block
constexpr int kB16StageK = 32;
constexpr int kB16Stages = 3;
// Shared-memory rows of 32 k padded to 40 halves (80 bytes): an ldmatrix phase's 8 row addresses
// then fall in 8 different 16-byte bank groups (as int4_gemm_tiling.h's activation rows).
constexpr int kB16Stride = kB16StageK + 8;

// The 16-byte chunk (8 consecutive k) that copy c of a stage moves, for an operand of `rows` rows:
// row c / 4, k 8 (c % 4).
LL_HOST_DEVICE FragCoord b16_chunk(int c) { return FragCoord{c >> 2, 8 * (c & 3)}; }

// Bytes of the chunk at k (of K) that exist: 16, fewer at the end of a row, 0 past it (zero-filled).
LL_HOST_DEVICE int b16_chunk_bytes(int64_t k, int64_t K) {
    const int64_t left = K - k;
    return left <= 0 ? 0 : left >= 8 ? 16 : int(left) * 2;
}

LL_HOST_DEVICE GemmPlan bf16_gemm_plan(int64_t M, int64_t N, int64_t K, int sms) {
    GemmPlan p;
    p.m_frags = gemm_m_frags(M);
    p.grid_n = (N + kB16BlockN - 1) / kB16BlockN;
    p.grid_m = (M + 16 * p.m_frags - 1) / (16 * p.m_frags);
    p.k_stages = (K + kB16StageK - 1) / kB16StageK;
    p.splits = gemm_splits(p.grid_n * p.grid_m, p.k_stages, sms, fill_splits());
    return p;
}

}  // namespace ll::cuda
