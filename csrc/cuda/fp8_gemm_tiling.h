// How the FP8 GEMM (fp8_gemm.cu) cuts its work, as plain functions the host tests run. The block
// shape and the split-K policy are the W4A16 GEMM's (int4_gemm_tiling.h): 4 warps, warp w owns
// the 64-column slab 4 blockIdx.x + w, all warps share 16 m_frags rows and one split's k range;
// here a stage is one 32 x 64 FP8 tile per warp (2 KB, twice INT4's bytes per k).
#pragma once
#include <cstdint>

#include "fp8_layout.h"
#include "int4_gemm_tiling.h"

namespace ll::cuda {

// Three stages, two in flight while one is multiplied: 16 KB of weights in flight per block, and
// the largest kernel's 36 KB stays under the 48 KB of static shared memory.
constexpr int kFp8Stages = 3;
// Activation rows in shared memory: W8A8 32 codes + 16 bytes of padding (48 bytes: the 8 row
// addresses of an ldmatrix 8x8 matrix start on banks 0, 12, 24, 4, 16, 28, 8, 20, 4 banks each:
// conflict-free); W8A16 32 halves + 8 (80 bytes, as int4_gemm_tiling.h's kGemmActStride).
constexpr int kFp8ActStrideW8A8 = kFp8TileK + 16;
constexpr int kFp8ActStrideW8A16 = 2 * kFp8TileK + 16;

// W8A8 promotes its sums to fp32 every 4 tiles (128 k, as DeepGEMM does): Ada's and Hopper's
// e4m3 mma keeps its accumulator in a 22-bit float (13 mantissa bits, truncated; SageAttention 2
// measured it), so a running sum fed back as C for all of K would lose its low bits at every
// instruction. Each tile's first mma starts a fresh partial sum instead, and the partials of at
// most 4 tiles are added into fp32 totals on the CUDA cores.
constexpr int kFp8PromoteTiles = 4;

// The launch of Y [M, N] = X [M, K] . W^T. Kernels that fold partial sums into totals (W8A8, and
// W8A16 on block-scaled weights) keep two sets of accumulators, so their largest kernel takes 2 A
// fragments, not 3.
LL_HOST_DEVICE GemmPlan fp8_gemm_plan(int64_t M, const Fp8TileGeometry& g, int sms, bool w8a8) {
    return gemm_plan(M, g.n_tiles, g.k_tiles, w8a8 || g.blocks > 1 ? 2 : 3, sms, fill_splits());
}

// Blocks per SM each kernel is built for (__launch_bounds__), from a lane's fp32 accumulators,
// 32 per A fragment (8 sub-tiles x 4), twice that where partial sums are folded into totals:
//   W8A8   (always folding) 64: 4 blocks (16 warps to hide the weight stream at decode; 128
//          registers a thread); 128: 3 blocks (168 registers), but 2 (255) on sm_90, where ptxas
//          takes about 30 more registers for the same e4m3 mma code (one fragment: 112 against
//          sm_89's 85) and 168 would spill. (Hopper's own FP8 path is wgmma.)
//   W8A16  the expansion's temporaries and the second k16 step's A fragments take about 30 more
//          registers: 4 blocks for 32, 3 for 64 and 96, 2 (255 registers) for 128.
// On the GPUs with 100 KB of shared memory per SM (sm_86, 89, 120) the 27-36 KB per block
// allows 3 blocks, one fewer than the registers would.
LL_HOST_DEVICE constexpr int fp8_gemm_min_blocks(int m_frags, bool fold, bool w8a16, bool sm90) {
    const int acc = 32 * m_frags * (fold ? 2 : 1);
    if (!w8a16) return acc <= 64 ? 4 : sm90 ? 2 : 3;
    return acc <= 32 ? 4 : acc <= 96 ? 3 : 2;
}

// Whether a kernel that folds (W8A8, or block-scaled weights) adds its partial sums into the
// totals, times the k-block's scales, after tile kt of a split that ends before tile `end`: at the
// end of every k-block and of the split, so that each tile's products meet their own block's
// scale exactly once (folding a block in pieces is the same sum: each piece takes the same
// scale), and for W8A8 also every kFp8PromoteTiles tiles.
LL_HOST_DEVICE bool fp8_fold_after(const Fp8TileGeometry& g, int64_t kt, int64_t end, bool w8a8) {
    return (kt + 1) % g.tiles_per_block == 0 || kt + 1 == end || (w8a8 && (kt + 1) % kFp8PromoteTiles == 0);
}

// The 16-byte activation chunk c of a stage: row c / per_row, byte offset 16 (c % per_row) in
// the row (per_row = 2 for W8A8's 32 codes, 4 for W8A16's 32 halves).
LL_HOST_DEVICE FragCoord fp8_act_chunk(int c, int per_row) { return FragCoord{c / per_row, 16 * (c % per_row)}; }

}  // namespace ll::cuda
