// How the W4A16 GEMM (int4_gemm.cu) cuts its work, as plain functions the host tests run:
// which activation element each lane's ldmatrix address names, which k range a split-K block
// takes, how many splits and which fragment count a shape gets.
//
// A block is 4 warps; warp w owns the 64-column slab 4 * blockIdx.x + w (one int4_layout.h tile
// column), all warps share one m range of 16 * m_frags rows and one split's k range. The k range
// is streamed in stages of kGemmStageTiles tiles (32 k) through a kGemmStages-deep pipeline.
#pragma once
#include <cstdint>
#include <type_traits>

#include "int4_layout.h"

namespace ll::cuda {

constexpr int kGemmWarps = 4;
constexpr int kGemmThreads = 32 * kGemmWarps;
constexpr int kGemmStageTiles = 2;                        // k16 tiles per pipeline stage
constexpr int kGemmStageK = kGemmStageTiles * kInt4TileK;  // 32 activation columns per stage
constexpr int kGemmStages = 4;
// Activation rows in shared memory are 40 halves (80 bytes) apart, not 32: the 8 row addresses of
// one ldmatrix 8x8 matrix then start on banks 0, 20, 8, 28, 16, 4, 24, 12 (4 banks each), so the
// load is conflict-free; 80 is a multiple of 16 as cp.async and ldmatrix need.
constexpr int kGemmActStride = kGemmStageK + 8;

// Stage range [begin, end) of split `split` out of `splits` over k_stages stages: contiguous,
// disjoint, covering, sizes differing by at most one (the first k_stages % splits get one more).
struct StageRange {
    int64_t begin, end;
};
LL_HOST_DEVICE StageRange splitk_range(int64_t k_stages, int splits, int split) {
    const int64_t base = k_stages / splits, extra = k_stages % splits;
    const int64_t begin = split * base + (split < extra ? split : extra);
    return StageRange{begin, begin + base + (split < extra ? 1 : 0)};
}

// The launch of one product Y [M, N] = X [M, K] . W^T.
struct GemmPlan {
    int m_frags;       // 16-row A fragments per block: 1, 2 or 3
    int splits;        // split-K factor (1: no partial sums)
    int64_t grid_n;    // blocks along N: ceil(n_tiles / 4)
    int64_t grid_m;    // blocks along M: ceil(M / (16 m_frags))
    int64_t k_stages;  // ceil(k_tiles / kGemmStageTiles)
};

// Small M (decode) leaves most SMs idle with one block per output slab: split K until there are
// about `blocks_per_sm` blocks per SM, keeping at least `min_stages` stages (of 32 k) per split, and
// at most `max_splits` splits. The split-K partial sums cost splits x M x N fp32 more traffic, small
// beside the weights' at these M.
struct SplitRule {
    int blocks_per_sm, min_stages, max_splits;
};
// The 16-bit and FP8 GEMMs, and INT4 beyond 16 rows: two blocks per SM, 8 stages (256 k) a split
// so that the pipeline fills, at most 16 splits.
LL_HOST_DEVICE constexpr SplitRule fill_splits() { return SplitRule{2, 8, 16}; }
// INT4 up to 16 rows (m_frags 1; decode): four blocks per SM, down to 2 stages a split, at most 64.
// Its GEMV is bound by latency, not bandwidth: per weight byte it does four times the 16-bit
// GEMM's tensor-core and dequantization work, and on an H200 at two blocks per SM the schedulers
// found an eligible warp in 42% of cycles at 15% of the memory bandwidth (ncu). In a sweep of
// split factors 1 to 64 (tools/gpu/profile_step.py) on Llama-3.2-1B's and 3.1-8B's products, this
// rule came within 8% of the best factor at M = 1 (1.1 to 1.7 times faster than fill_splits) and
// within 18% at M = 16 (0.96 to 1.23 times fill_splits' speed).
LL_HOST_DEVICE constexpr SplitRule int4_decode_splits() { return SplitRule{4, 2, 64}; }

LL_HOST_DEVICE int gemm_splits(int64_t blocks, int64_t k_stages, int sms, SplitRule rule) {
    const int64_t want = int64_t(rule.blocks_per_sm) * sms;
    int64_t splits = blocks >= want ? 1 : (want + blocks - 1) / blocks;
    const int64_t by_depth = k_stages / rule.min_stages > 0 ? k_stages / rule.min_stages : 1;
    if (splits > by_depth) splits = by_depth;
    if (splits > rule.max_splits) splits = rule.max_splits;
    return int(splits);
}

// m_frags by M: one 16-row fragment up to 16 rows, two up to 32, three beyond.
LL_HOST_DEVICE int gemm_m_frags(int64_t M) { return M <= 16 ? 1 : M <= 32 ? 2 : 3; }

// f(std::integral_constant<int, m_frags>()) for a plan's m_frags (1, 2 or 3): how a launch picks
// the kernel instance built for its A fragments (host code: the launchers, the tests' emulation).
template <class F>
auto with_m_frags(int m_frags, F f) {
    if (m_frags == 1) return f(std::integral_constant<int, 1>());
    if (m_frags == 2) return f(std::integral_constant<int, 2>());
    return f(std::integral_constant<int, 3>());
}

// The launch of a GEMM over 64-column slabs (n_tiles of them, kGemmWarps per block) and k_stages
// stages of 32 k; max_m_frags: the largest kernel built.
LL_HOST_DEVICE GemmPlan gemm_plan(int64_t M, int64_t n_tiles, int64_t k_stages, int max_m_frags, int sms,
                                  SplitRule rule) {
    GemmPlan p;
    p.m_frags = gemm_m_frags(M);
    if (p.m_frags > max_m_frags) p.m_frags = max_m_frags;
    p.grid_n = (n_tiles + kGemmWarps - 1) / kGemmWarps;
    p.grid_m = (M + 16 * p.m_frags - 1) / (16 * p.m_frags);
    p.k_stages = k_stages;
    p.splits = gemm_splits(p.grid_n * p.grid_m, p.k_stages, sms, rule);
    return p;
}

// `plan` with split-K factor `splits` where splits > 0 (at most its k stages: one each), else as
// planned: how the tests and benches run a chosen split (host code).
inline GemmPlan with_splits(GemmPlan plan, int splits) {
    if (splits > 0) plan.splits = int(splits < plan.k_stages ? splits : plan.k_stages);
    return plan;
}

LL_HOST_DEVICE GemmPlan int4_gemm_plan(int64_t M, const Int4Geometry& g, int sms) {
    return gemm_plan(M, g.n_tiles, (g.k_tiles + kGemmStageTiles - 1) / kGemmStageTiles, 3, sms,
                     M <= 16 ? int4_decode_splits() : fill_splits());
}

// Blocks per SM each kernel is built for (__launch_bounds__): 4 (16 warps, at most 128 registers
// a thread) while a lane holds 1 or 2 fragments' accumulators, 32 or 64 fp32 (decode and small
// batches: enough warps in flight to hide the weight stream's latency); 3 (12 warps, 168
// registers) for 3 fragments' 96 (prefill, where tensor-core work per weight byte is high). Four
// fragments would need more than 255 registers and spill. On the GPUs with 100 KB of shared
// memory per SM (sm_86, 89, 120) the 30-40 KB per block allows one block fewer.
LL_HOST_DEVICE constexpr int gemm_min_blocks(int m_frags) { return m_frags <= 2 ? 4 : 3; }

// The activation chunk (16 bytes: 8 consecutive k) that thread chunk c of a stage copies:
// row c / 4, columns 8 (c % 4). A stage holds 16 m_frags rows x 32 k = 64 m_frags chunks.
LL_HOST_DEVICE FragCoord act_chunk(int c) { return FragCoord{c >> 2, 8 * (c & 3)}; }

}  // namespace ll::cuda
