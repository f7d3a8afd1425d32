// 16-bit-weight GEMM/GEMV (bf16_gemm.h). Per stage of 32 k, the block copies its 128 W rows and its
// 16 m_frags X rows into shared memory with cp.async (a plain copy on sm_75), 3 stages deep; each
// warp then takes, per k16, A fragments of X and B fragments of its 32 W rows by ldmatrix and
// accumulates 4 n8 sub-tiles x m_frags in fp32. Split-K blocks write fp32 partials that
// splitk_reduce (splitk.cuh) adds in split order.
#include "bf16_gemm.h"
#include "device_buffers.h"

#include <stdexcept>

#include "half2_math.h"
#include "mma_frag.h"
#include "ptx.cuh"
#include "splitk.cuh"

namespace ll::cuda {
namespace {

struct B16Params {
    const uint16_t* x;
    int64_t ldx;
    const uint16_t* w;
    int64_t ldw;
    int64_t m, n, k;
    int splits;
    int64_t k_stages;
    void* y;
    int64_t ldy;
    float* partial;  // [splits, m, n] when splits > 1
};

template <int kMFrags>
struct alignas(16) B16Smem {
    uint16_t w[kB16Stages][kB16BlockN][kB16Stride];
    uint16_t x[kB16Stages][16 * kMFrags][kB16Stride];
};
static_assert(sizeof(B16Smem<3>) <= 48 * 1024, "the pipeline's stages do not fit static shared memory");

template <bool kBf16, bool kOutF32, int kMFrags>
__device__ __forceinline__ void b16_block(const B16Params& p, B16Smem<kMFrags>& sm) {
    const int warp = int(threadIdx.x >> 5), lane = int(threadIdx.x & 31);
    const int64_t n0 = int64_t(blockIdx.x) * kB16BlockN, m0 = int64_t(blockIdx.y) * 16 * kMFrags;
    const StageRange range = splitk_range(p.k_stages, p.splits, int(blockIdx.z));
    const int64_t n_stages = range.end - range.begin;

    // Rows past N or M and columns past K are zero-filled: they add nothing.
    auto load_stage = [&](int64_t stage, int buf) {
        for (int c = int(threadIdx.x); c < 4 * kB16BlockN; c += kB16Threads) {
            const FragCoord a = b16_chunk(c);
            const int64_t row = n0 + a.row, k = stage * kB16StageK + a.col;
            const int bytes = row < p.n ? b16_chunk_bytes(k, p.k) : 0;
            copy16(&sm.w[buf][a.row][a.col], bytes ? p.w + row * p.ldw + k : p.w, bytes);
        }
        for (int c = int(threadIdx.x); c < 4 * 16 * kMFrags; c += kB16Threads) {
            const FragCoord a = b16_chunk(c);
            const int64_t row = m0 + a.row, k = stage * kB16StageK + a.col;
            const int bytes = row < p.m ? b16_chunk_bytes(k, p.k) : 0;
            copy16(&sm.x[buf][a.row][a.col], bytes ? p.x + row * p.ldx + k : p.x, bytes);
        }
    };

    float acc[kMFrags][kB16WarpN / 8][4];
#pragma unroll
    for (int f = 0; f < kMFrags; ++f)
#pragma unroll
        for (int s = 0; s < kB16WarpN / 8; ++s)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[f][s][i] = 0.0f;
    const FragCoord lda = ldm::a_row(lane), ldb = ldm::b_nk_row(lane);

    // Every iteration commits one group (empty past the end), so "all but kB16Stages - 2 groups
    // done" always means "this iteration's stage has landed".
    for (int s = 0; s < kB16Stages - 1; ++s) {
        if (s < n_stages) load_stage(range.begin + s, s);
        copy_commit();
    }
    for (int64_t it = 0; it < n_stages; ++it) {
        copy_wait<kB16Stages - 2>();
        __syncthreads();  // the stage is visible to all, and the buffer refilled below is free
        const int64_t next = it + kB16Stages - 1;
        if (next < n_stages) load_stage(range.begin + next, int(next % kB16Stages));
        copy_commit();
        const int buf = int(it % kB16Stages);
#pragma unroll
        for (int kk = 0; kk < kB16StageK / 16; ++kk) {
            uint32_t a[kMFrags][4];
#pragma unroll
            for (int f = 0; f < kMFrags; ++f) ldmatrix_x4(a[f], &sm.x[buf][16 * f + lda.row][16 * kk + lda.col]);
#pragma unroll
            for (int np = 0; np < kB16WarpN / 16; ++np) {
                uint32_t b[4];
                ldmatrix_x4(b, &sm.w[buf][kB16WarpN * warp + 16 * np + ldb.row][16 * kk + ldb.col]);
#pragma unroll
                for (int f = 0; f < kMFrags; ++f) {
                    mma_16816<kBf16>(acc[f][2 * np], a[f], b);
                    mma_16816<kBf16>(acc[f][2 * np + 1], a[f], b + 2);
                }
            }
        }
    }

#pragma unroll
    for (int f = 0; f < kMFrags; ++f)
#pragma unroll
        for (int s = 0; s < kB16WarpN / 8; ++s)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const FragCoord c = mma_c(lane, i);
                const int64_t row = m0 + 16 * f + c.row, n = n0 + kB16WarpN * warp + 8 * s + c.col;
                if (row >= p.m || n >= p.n) continue;
                if (p.splits > 1) p.partial[(int64_t(blockIdx.z) * p.m + row) * p.n + n] = acc[f][s][i];
                else if constexpr (kOutF32) static_cast<float*>(p.y)[row * p.ldy + n] = acc[f][s][i];
                else static_cast<uint16_t*>(p.y)[row * p.ldy + n] = float_to_half_bits<kBf16>(acc[f][s][i]);
            }
}

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
    if (plan.m_frags == 1) bf16_gemm_kernel<kBf16, kOutF32, 1><<<grid, kB16Threads, 0, stream>>>(p);
    else if (plan.m_frags == 2) bf16_gemm_kernel<kBf16, kOutF32, 2><<<grid, kB16Threads, 0, stream>>>(p);
    else bf16_gemm_kernel<kBf16, kOutF32, 3><<<grid, kB16Threads, 0, stream>>>(p);
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
    GemmPlan plan = bf16_gemm_plan(M, N, K, device_sms());
    if (splits > 0) plan.splits = int(splits < plan.k_stages ? splits : plan.k_stages);
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
