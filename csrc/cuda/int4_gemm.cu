// W4A16 GEMM/GEMV: Y [M, N] = X [M, K] . W^T with W INT4 (int4_layout.h), X and Y bf16 (sm_80+)
// or fp16, fp32 accumulation on mma.sync tensor cores.
//
// One kernel family from decode (M = 1) to prefill: a block is 4 warps; warp w owns the 64-column
// slab 4 blockIdx.x + w and 16 m_frags rows of X (blockIdx.y), over the k stages of split
// blockIdx.z (int4_gemm_tiling.h). Per stage of 32 k, each lane copies its own 16 bytes of each
// weight tile and its quad's scales into shared memory with cp.async (sm_80+; a plain copy on
// sm_75) and the block copies the X rows; a 4-stage pipeline keeps 3 stages in flight while one is
// multiplied. The weight tile becomes B fragments in registers (int4_tile_fragments), X fragments
// come from ldmatrix, and each lane accumulates 8 n8 sub-tiles x m_frags in fp32. Split-K blocks
// write fp32 partials that splitk_reduce (splitk.cuh) adds in split order.
#include "int4_gemm.h"
#include "device_buffers.h"
#include "ptx.cuh"
#include "splitk.cuh"

#include <stdexcept>

namespace ll::cuda {
namespace {

// ---- the kernel

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

    // Every iteration commits one group (empty past the end), so "all but kGemmStages - 2 groups
    // done" always means "this iteration's stage has landed".
    for (int s = 0; s < kGemmStages - 1; ++s) {
        if (s < n_stages) load_stage(range.begin + s, s);
        copy_commit();
    }
    for (int64_t it = 0; it < n_stages; ++it) {
        copy_wait<kGemmStages - 2>();
        __syncthreads();  // the stage is visible to all, and the buffer refilled below is free
        const int64_t next = it + kGemmStages - 1;
        if (next < n_stages) load_stage(range.begin + next, int(next % kGemmStages));
        copy_commit();

        const int buf = int(it % kGemmStages);
        if (!has_slab) continue;
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
    }

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

// Register budget: gemm_min_blocks (int4_gemm_tiling.h) says why.
template <bool kBf16, bool kHasMin, int kMFrags>
__global__ void __launch_bounds__(kGemmThreads, gemm_min_blocks(kMFrags)) int4_gemm_kernel(const GemmParams p) {
    __shared__ GemmSmem<kMFrags> sm;
    if constexpr (kBf16 && !kDeviceHasBf16) {
        __trap();  // never launched: int4_gemm refuses bf16 below sm_80
    } else {
        gemm_block<kBf16, kHasMin, kMFrags>(p, sm);
    }
}

template <bool kBf16, bool kHasMin>
cudaError_t launch(const GemmParams& p, const GemmPlan& plan, cudaStream_t stream) {
    const dim3 grid(unsigned(plan.grid_n), unsigned(plan.grid_m), unsigned(plan.splits));
    if (plan.m_frags == 1) int4_gemm_kernel<kBf16, kHasMin, 1><<<grid, kGemmThreads, 0, stream>>>(p);
    else if (plan.m_frags == 2) int4_gemm_kernel<kBf16, kHasMin, 2><<<grid, kGemmThreads, 0, stream>>>(p);
    else int4_gemm_kernel<kBf16, kHasMin, 3><<<grid, kGemmThreads, 0, stream>>>(p);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess || plan.splits == 1) return err;
    return launch_splitk_reduce<kBf16>(p.partial, plan.splits, p.m, p.g.n, nullptr, p.y, p.ldy, stream);
}

}  // namespace

size_t int4_gemm_workspace_bytes(const GemmPlan& plan, int64_t M, int64_t N) {
    return plan.splits > 1 ? size_t(plan.splits) * size_t(M) * size_t(N) * sizeof(float) : 0;
}

cudaError_t int4_gemm(const uint16_t* x, int64_t ldx, int64_t M, const Int4DeviceWeight& w, uint16_t* y,
                      int64_t ldy, const GemmPlan& plan, float* workspace, size_t workspace_bytes,
                      cudaStream_t stream, std::string* error) {
    auto refuse = [&](const std::string& why) {
        if (error) *error = "int4_gemm: " + why;
        return cudaErrorInvalidValue;
    };
    if (M <= 0) return refuse("M must be positive");
    if (reinterpret_cast<uintptr_t>(x) % 16 || ldx % 8 || ldx < w.g.k)
        return refuse("X must be 16-byte aligned with a row stride >= K and a multiple of 8 halves");
    if (ldy < w.g.n) return refuse("Y's row stride is below N");
    if (w.has_min != (w.mins != nullptr)) return refuse("mins are given exactly for min formats");
    if (plan.splits < 1 || plan.splits > plan.k_stages || plan.m_frags < 1 || plan.m_frags > 3 ||
        plan.m_frags * 16 * plan.grid_m < M || plan.grid_n * kGemmWarps < w.g.n_tiles ||
        plan.k_stages != (w.g.k_tiles + kGemmStageTiles - 1) / kGemmStageTiles)
        return refuse("the plan does not cover this product");
    if (workspace_bytes < int4_gemm_workspace_bytes(plan, M, w.g.n)) return refuse("the split-K workspace is too small");
    if (w.bf16)
        if (const cudaError_t err = require_cc(80, "bf16", "use fp16 on this GPU", "int4_gemm", error)) return err;
    const GemmParams p{x, ldx, M, w.q, w.scales, w.mins, w.g, w.zero, plan.splits, plan.k_stages, y, ldy, workspace};
    if (w.bf16) return w.has_min ? launch<true, true>(p, plan, stream) : launch<true, false>(p, plan, stream);
    return w.has_min ? launch<false, true>(p, plan, stream) : launch<false, false>(p, plan, stream);
}

std::vector<uint16_t> int4_gemm_on_device(const Int4GpuWeight& w, const uint16_t* x, int64_t M, int splits) {
    const Int4Geometry& g = w.g;
    const int64_t ldx = (g.k + 7) / 8 * 8;
    const std::vector<uint16_t> xp = pad_rows(x, M, g.k, ldx);
    GemmPlan plan = int4_gemm_plan(M, g, device_sms());
    if (splits > 0) plan.splits = int(splits < plan.k_stages ? splits : plan.k_stages);
    DeviceBuffers b;
    const Int4DeviceWeight dw{g, w.bf16, w.has_min, w.zero, b.upload(w.q), b.upload(w.scales),
                              w.has_min ? b.upload(w.mins) : nullptr};
    const uint16_t* dx = b.upload(xp);
    uint16_t* dy = b.alloc<uint16_t>(size_t(M * g.n));
    const size_t ws = int4_gemm_workspace_bytes(plan, M, g.n);
    float* dws = b.alloc<float>(ws / sizeof(float));
    std::string why;
    launch_check(int4_gemm(dx, ldx, M, dw, dy, g.n, plan, dws, ws, nullptr, &why), why, "INT4 GEMM");
    return download(dy, size_t(M * g.n));
}

}  // namespace ll::cuda
