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
#include "int4_gemm_block.cuh"
#include "ptx.cuh"
#include "splitk.cuh"

#include <stdexcept>

namespace ll::cuda {
namespace {

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
    with_m_frags(plan.m_frags, [&](auto frags) {
        int4_gemm_kernel<kBf16, kHasMin, decltype(frags)::value><<<grid, kGemmThreads, 0, stream>>>(p);
    });
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
    const GemmPlan plan = with_splits(int4_gemm_plan(M, g, device_sms()), splits);
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
