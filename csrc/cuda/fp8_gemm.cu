// FP8 GEMM/GEMV: Y [M, N] = X [M, K] . W^T with W E4M3 (fp8_layout.h), fp32 accumulation on
// mma.sync tensor cores: W8A8 on e4m3 mma (sm_89+), W8A16 on bf16 / fp16 mma (fp8_gemm.h).
//
// The W4A16 kernel's shape (int4_gemm.cu): a block is 4 warps; warp w owns the 64-column slab
// 4 blockIdx.x + w and 16 m_frags rows of X (blockIdx.y), over the k tiles of split blockIdx.z.
// Per tile of 32 k, each lane copies its own four 16-byte chunks of the weight tile (and, at the
// end of a scale block, the warp copies that block's 64 scales) into shared memory with cp.async
// (a plain copy on sm_75) and the block copies the X rows; a 3-stage pipeline keeps 2 tiles in
// flight while one is multiplied. X fragments come from ldmatrix; the weight chunks are B
// fragments as they are (W8A8) or after the exact E4M3 (or INT8) -> 16-bit expansion (W8A16). Each lane
// accumulates 8 n8 sub-tiles x m_frags; W8A8 (whose mma accumulates in 22 bits) and block-scaled
// weights fold the partial sums into a second set of fp32 totals, times the k-block's scales, at
// least every 4 tiles (fp8_fold_after); integer codes with mins (w = scale code + min) also sum
// each row's activations over the block, with one more mma against a B of ones, and add that sum
// times the block's mins where they fold. Split-K blocks write fp32 partials that splitk_reduce
// (splitk.cuh) adds in split order. A block's code, and which kernel runs a product, are
// fp8_gemm_block.cuh's (so that tests/cuda_emulation runs them on the host).
#include "fp8_gemm.h"
#include "device_buffers.h"
#include "fp8_gemm_block.cuh"
#include "ptx.cuh"
#include "splitk.cuh"

#include <stdexcept>

namespace ll::cuda {
namespace {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
constexpr bool kSm90 = true;
#else
constexpr bool kSm90 = false;
#endif

// Register budget: fp8_gemm_min_blocks (fp8_gemm_tiling.h) says why. kInt8 (W8A16 only): the
// weight bytes are integer codes.
template <Fp8Act kAct, bool kInt8, int kFold, int kMFrags>
__global__ void __launch_bounds__(kGemmThreads, fp8_gemm_min_blocks(kMFrags, kFold != kNoFold, kAct != Fp8Act::E4M3, kSm90)) fp8_gemm_kernel(const Fp8Params p) {
    static_assert(!(kInt8 && kAct == Fp8Act::E4M3), "integer codes take the W8A16 path");
    __shared__ Fp8Smem<kAct, kFold, kMFrags> sm;
    if constexpr ((kAct == Fp8Act::E4M3 && !kDeviceHasFp8Mma) || (kAct == Fp8Act::BF16 && !kDeviceHasBf16)) {
        __trap();  // never launched: the launchers refuse these paths below sm_89 / sm_80
    } else {
        fp8_block<kAct, kInt8, kFold, kMFrags>(p, sm);
    }
}

// One block of 128 threads per row (fp8_quantize_row_block).
__global__ void __launch_bounds__(128) fp8_quantize_kernel(const uint16_t* x, int64_t ldx, int64_t K, float ub,
                                                           uint8_t* codes, int64_t ldq, float* scales) {
    __shared__ float warp_max[4];
    fp8_quantize_row_block(x, ldx, K, ub, codes, ldq, scales, warp_max);
}

// Launches the instance fp8_gemm_dispatch picks (C++17: a struct, not a templated lambda).
struct LaunchGemm {
    const Fp8Params& p;
    dim3 grid;
    cudaStream_t stream;
    template <Fp8Act kAct, bool kInt8, int kFold, int kMFrags>
    void operator()() const {
        fp8_gemm_kernel<kAct, kInt8, kFold, kMFrags><<<grid, kGemmThreads, 0, stream>>>(p);
    }
};

cudaError_t launch(const Fp8Params& p, Fp8Act act, bool int8, const GemmPlan& plan, cudaStream_t stream) {
    const dim3 grid(unsigned(plan.grid_n), unsigned(plan.grid_m), unsigned(plan.splits));
    if (!fp8_gemm_dispatch(act, int8, p.g, p.mins != nullptr, plan.m_frags, LaunchGemm{p, grid, stream}))
        return cudaErrorInvalidConfiguration;  // (check_gemm refuses such plans first)
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess || plan.splits == 1) return err;
    if (act == Fp8Act::FP16)
        return launch_splitk_reduce<false>(p.partial, plan.splits, p.m, p.g.n, nullptr, p.y, p.ldy, stream);
    return launch_splitk_reduce<true>(p.partial, plan.splits, p.m, p.g.n, act == Fp8Act::E4M3 ? p.a_scales : nullptr,
                                      p.y, p.ldy, stream);
}

// The checks both paths share; empty when the arguments are fine.
std::string check_gemm(int64_t M, const Fp8DeviceWeight& w, int64_t ldy, const GemmPlan& plan,
                       size_t workspace_bytes, bool w8a8) {
    if (M <= 0) return "M must be positive";
    if (ldy < w.g.n) return "Y's row stride is below N";
    if (plan.splits < 1 || plan.splits > plan.k_stages || plan.k_stages != w.g.k_tiles ||
        plan.m_frags * 16 * plan.grid_m < M || plan.grid_n * kGemmWarps < w.g.n_tiles ||
        plan.m_frags < 1 || plan.m_frags > (w8a8 || w.g.blocks > 1 ? 2 : 3))  // the kernels built
        return "the plan does not cover this product";
    if (workspace_bytes < fp8_gemm_workspace_bytes(plan, M, w.g.n)) return "the split-K workspace is too small";
    if (w.mins && (!w.int8 || !fp8_takes_mins(w.g)))
        return "mins are taken only with integer codes in blocks of whole tiles shorter than the row";
    return "";
}

}  // namespace

bool fp8_w8a8_supported() {
    DeviceFacts d;
    return current_device(&d) == cudaSuccess && d.runs(89);
}

size_t fp8_gemm_workspace_bytes(const GemmPlan& plan, int64_t M, int64_t N) {
    return plan.splits > 1 ? size_t(plan.splits) * size_t(M) * size_t(N) * sizeof(float) : 0;
}

cudaError_t fp8_quantize_activations(const uint16_t* x, int64_t ldx, int64_t M, int64_t K, float ub, uint8_t* codes,
                                     int64_t ldq, float* scales, cudaStream_t stream, std::string* error) {
    if (M <= 0 || K <= 0 || ldx < K || ldq % 16 || ldq < (K + kFp8TileK - 1) / kFp8TileK * kFp8TileK ||
        reinterpret_cast<uintptr_t>(codes) % 16) {
        if (error) *error = "fp8_quantize_activations: need M, K > 0, ldx >= K, 16-byte aligned codes and ldq a "
                            "multiple of 16 of at least K rounded up to 32";
        return cudaErrorInvalidValue;
    }
    fp8_quantize_kernel<<<unsigned(M), 128, 0, stream>>>(x, ldx, K, ub, codes, ldq, scales);
    return cudaGetLastError();
}

cudaError_t fp8_gemm_w8a8(const uint8_t* codes, int64_t ldq, const float* a_scales, int64_t M,
                          const Fp8DeviceWeight& w, uint16_t* y, int64_t ldy, const GemmPlan& plan, float* workspace,
                          size_t workspace_bytes, cudaStream_t stream, std::string* error) {
    auto refuse = [&](const std::string& why) {
        if (error) *error = "fp8_gemm_w8a8: " + why;
        return cudaErrorInvalidValue;
    };
    std::string why = check_gemm(M, w, ldy, plan, workspace_bytes, true);
    if (!why.empty()) return refuse(why);
    if (w.int8) return refuse("integer codes take the W8A16 path");
    if (reinterpret_cast<uintptr_t>(codes) % 16 || ldq % 16 || ldq < w.g.k_tiles * kFp8TileK)
        return refuse("the codes must be 16-byte aligned with a row stride >= K rounded up to 32, a multiple of 16");
    if (const cudaError_t err =
            require_cc(89, "the e4m3 mma", "use the W8A16 path on this GPU", "fp8_gemm_w8a8", error))
        return err;
    const Fp8Params p{codes, ldq, M, a_scales, w.q, w.scales, nullptr, w.g, plan.splits, y, ldy, workspace};
    return launch(p, Fp8Act::E4M3, false, plan, stream);
}

cudaError_t fp8_gemm_w8a16(const uint16_t* x, int64_t ldx, int64_t M, const Fp8DeviceWeight& w, bool bf16,
                           uint16_t* y, int64_t ldy, const GemmPlan& plan, float* workspace, size_t workspace_bytes,
                           cudaStream_t stream, std::string* error) {
    auto refuse = [&](const std::string& why) {
        if (error) *error = "fp8_gemm_w8a16: " + why;
        return cudaErrorInvalidValue;
    };
    std::string why = check_gemm(M, w, ldy, plan, workspace_bytes, false);
    if (!why.empty()) return refuse(why);
    if (reinterpret_cast<uintptr_t>(x) % 16 || ldx % 8 || ldx < w.g.k)
        return refuse("X must be 16-byte aligned with a row stride >= K and a multiple of 8 halves");
    if (bf16)
        if (const cudaError_t err = require_cc(80, "bf16", "use fp16 on this GPU", "fp8_gemm_w8a16", error)) return err;
    const Fp8Params p{reinterpret_cast<const uint8_t*>(x), ldx, M, nullptr, w.q, w.scales, w.mins, w.g, plan.splits,
                      y, ldy, workspace};
    return launch(p, bf16 ? Fp8Act::BF16 : Fp8Act::FP16, w.int8, plan, stream);
}

std::vector<uint16_t> fp8_gemm_on_device(const Fp8GpuWeight& w, const uint16_t* x, int64_t M, bool w8a8, bool bf16,
                                         int splits, float ub) {
    const Fp8TileGeometry& g = w.g;
    const int64_t ldx = (g.k + 7) / 8 * 8, ldq = g.k_tiles * kFp8TileK;
    const std::vector<uint16_t> xp = pad_rows(x, M, g.k, ldx);
    const GemmPlan plan = with_splits(fp8_gemm_plan(M, g, device_sms(), w8a8), splits);
    DeviceBuffers b;
    const Fp8DeviceWeight dw{g, b.upload(w.q), b.upload(w.scales), w.int8, w.mins.empty() ? nullptr : b.upload(w.mins)};
    const uint16_t* dx = b.upload(xp);
    uint16_t* dy = b.alloc<uint16_t>(size_t(M * g.n));
    const size_t ws = fp8_gemm_workspace_bytes(plan, M, g.n);
    float* dws = b.alloc<float>(ws / sizeof(float));
    std::string why;
    if (w8a8) {
        uint8_t* codes = b.alloc<uint8_t>(size_t(M * ldq));
        float* sa = b.alloc<float>(size_t(M));
        launch_check(fp8_quantize_activations(dx, ldx, M, g.k, ub, codes, ldq, sa, nullptr, &why), why,
                     "FP8 activation quantization");
        launch_check(fp8_gemm_w8a8(codes, ldq, sa, M, dw, dy, g.n, plan, dws, ws, nullptr, &why), why, "FP8 GEMM");
    } else {
        launch_check(fp8_gemm_w8a16(dx, ldx, M, dw, bf16, dy, g.n, plan, dws, ws, nullptr, &why), why, "FP8 GEMM");
    }
    return download(dy, size_t(M * g.n));
}

void fp8_quantize_on_device(const uint16_t* x, int64_t M, int64_t K, float ub, std::vector<uint8_t>* codes,
                            std::vector<float>* scales) {
    const int64_t ldq = (K + kFp8TileK - 1) / kFp8TileK * kFp8TileK;
    DeviceBuffers b;
    const uint16_t* dx = b.upload(x, size_t(M * K));
    uint8_t* dc = b.alloc<uint8_t>(size_t(M * ldq));
    float* ds = b.alloc<float>(size_t(M));
    std::string why;
    launch_check(fp8_quantize_activations(dx, K, M, K, ub, dc, ldq, ds, nullptr, &why), why,
                 "FP8 activation quantization");
    *codes = download(dc, size_t(M * ldq));
    *scales = download(ds, size_t(M));
}

}  // namespace ll::cuda
