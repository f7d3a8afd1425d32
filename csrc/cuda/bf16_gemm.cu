// 16-bit-weight GEMM/GEMV (bf16_gemm.h). Per stage of 32 k, the block copies its 128 W rows and its
// 16 m_frags X rows into shared memory with cp.async (a plain copy on sm_75), 3 stages deep; each
// warp then takes, per k16, A fragments of X and B fragments of its 32 W rows by ldmatrix and
// accumulates 4 n8 sub-tiles x m_frags in fp32. Split-K blocks write fp32 partials that
// splitk_reduce (splitk.cuh) adds in split order.
#include "bf16_gemm.h"
#include "device_buffers.h"

#include <stdexcept>

#include "bf16_gemm_block.cuh"
#include "ptx.cuh"
#include "splitk.cuh"

namespace ll::cuda {
namespace {

// Registers: m_frags x 16 accumulators and 4 m_frags + 4 fragment registers; the same occupancy
// targets as the INT4 GEMM (gemm_min_blocks).
template <bool kBf16, bool kOutF32, int kMFrags>
__global__ void __launch_bounds__(kB16Threads, gemm_min_blocks(kMFrags)) bf16_gemm_kernel(const B16Params p) {
    __shared__ B16Smem<kMFrags> sm;
    if constexpr (kBf16 && !kDeviceHasBf16) __trap();  // never launched: bf16_gemm refuses bf16 below sm_80
    else b16_block<kBf16, kOutF32, kMFrags>(p, sm);
}

template <bool kBf16, bool kOutF32>
cudaError_t launch(const B16Params& p, const GemmPlan& plan, cudaStream_t stream) {
    const dim3 grid(unsigned(plan.grid_n), unsigned(plan.grid_m), unsigned(plan.splits));
    with_m_frags(plan.m_frags, [&](auto frags) {
        bf16_gemm_kernel<kBf16, kOutF32, decltype(frags)::value><<<grid, kB16Threads, 0, stream>>>(p);
    });
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess || plan.splits == 1) return err;
    if constexpr (kOutF32)
        return launch_splitk_reduce<kBf16>(p.partial, plan.splits, p.m, p.n, nullptr, static_cast<float*>(p.y), p.ldy,
                                           stream);
    else
        return launch_splitk_reduce<kBf16>(p.partial, plan.splits, p.m, p.n, nullptr, static_cast<uint16_t*>(p.y),
                                           p.ldy, stream);
}

}  // namespace

size_t bf16_gemm_workspace_bytes(const GemmPlan& plan, int64_t M, int64_t N) {
    return plan.splits > 1 ? size_t(plan.splits) * size_t(M) * size_t(N) * sizeof(float) : 0;
}

cudaError_t bf16_gemm(const Bf16GemmArgs& a, cudaStream_t stream, std::string* error) {
    auto refuse = [&](const std::string& why) {
        if (error) *error = "bf16_gemm: " + why;
        return cudaErrorInvalidValue;
    };
    const GemmPlan& plan = a.plan;
    if (a.M <= 0 || a.N <= 0 || a.K <= 0) return refuse("M, N and K must be positive");
    if (reinterpret_cast<uintptr_t>(a.x) % 16 || reinterpret_cast<uintptr_t>(a.w) % 16 || a.ldx % 8 || a.ldw % 8 ||
        a.ldx < a.K || a.ldw < a.K)
        return refuse("X and W must be 16-byte aligned with row strides >= K and a multiple of 8");
    if (a.ldy < a.N) return refuse("Y's row stride is below N");
    if (plan.splits < 1 || plan.splits > plan.k_stages || plan.m_frags * 16 * plan.grid_m < a.M ||
        plan.grid_n * kB16BlockN < a.N || plan.k_stages * kB16StageK < a.K)
        return refuse("the plan does not cover this product");
    if (a.workspace_bytes < bf16_gemm_workspace_bytes(plan, a.M, a.N)) return refuse("the split-K workspace is too small");
    if (a.bf16)
        if (const cudaError_t err = require_cc(80, "bf16", "use fp16 on this GPU", "bf16_gemm", error)) return err;
    const B16Params p{a.x, a.ldx, a.w, a.ldw, a.M, a.N, a.K, plan.splits, plan.k_stages, a.y, a.ldy, a.workspace};
    if (a.bf16) return a.y_f32 ? launch<true, true>(p, plan, stream) : launch<true, false>(p, plan, stream);
    return a.y_f32 ? launch<false, true>(p, plan, stream) : launch<false, false>(p, plan, stream);
}

std::vector<float> bf16_gemm_on_device(const uint16_t* x, const uint16_t* w, int64_t M, int64_t N, int64_t K,
                                       bool bf16, bool y_f32, int splits) {
    const int64_t ld = (K + 7) / 8 * 8;
    const GemmPlan plan = with_splits(bf16_gemm_plan(M, N, K, device_sms()), splits);
    DeviceBuffers b;
    const uint16_t* dx = b.upload(pad_rows(x, M, K, ld));
    const uint16_t* dw = b.upload(pad_rows(w, N, K, ld));
    void* dy = y_f32 ? static_cast<void*>(b.alloc<float>(size_t(M * N))) : b.alloc<uint16_t>(size_t(M * N));
    const size_t ws = bf16_gemm_workspace_bytes(plan, M, N);
    float* dws = b.alloc<float>(ws / sizeof(float));
    std::string why;
    launch_check(bf16_gemm(Bf16GemmArgs{dx, ld, dw, ld, M, N, K, bf16, dy, N, y_f32, plan, dws, ws}, nullptr, &why), why,
                 "16-bit GEMM");
    if (y_f32) return download(static_cast<float*>(dy), size_t(M * N));
    const std::vector<uint16_t> h = download(static_cast<uint16_t*>(dy), size_t(M * N));
    std::vector<float> y(h.size());
    for (size_t i = 0; i < h.size(); ++i) y[i] = bf16 ? bf16_to_float(h[i]) : fp16_to_float(h[i]);
    return y;
}

}  // namespace ll::cuda
