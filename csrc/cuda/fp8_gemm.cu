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
// (splitk.cuh) adds in split order.
#include "fp8_gemm.h"
#include "device_buffers.h"
#include "ptx.cuh"
#include "splitk.cuh"

#include <stdexcept>

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

    // Every iteration commits one group (empty past the end), so "all but kFp8Stages - 2 groups
    // done" always means "this iteration's tile has landed".
    for (int s = 0; s < kFp8Stages - 1; ++s) {
        if (s < n_tiles) load_tile(range.begin + s, s);
        copy_commit();
    }
    for (int64_t it = 0; it < n_tiles; ++it) {
        copy_wait<kFp8Stages - 2>();
        __syncthreads();  // the tile is visible to all, and the buffer refilled below is free
        const int64_t next = it + kFp8Stages - 1;
        if (next < n_tiles) load_tile(range.begin + next, int(next % kFp8Stages));
        copy_commit();

        const int buf = int(it % kFp8Stages);
        if (!has_slab) continue;
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
    }

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

// One block of 128 threads per row: the row's absmax (a max: the same in any order, so the
// host's fp8_quantize_row gives the same scale), then whole 16-code chunks in slot order.
__global__ void __launch_bounds__(128) fp8_quantize_kernel(const uint16_t* x, int64_t ldx, int64_t K, float ub,
                                                           uint8_t* codes, int64_t ldq, float* scales) {
    __shared__ float warp_max[4];
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

// False where no kernel of this kind has plan.m_frags A fragments (check_gemm refuses such plans).
template <Fp8Act kAct, bool kInt8, int kFold>
bool launch_gemm(const Fp8Params& p, const GemmPlan& plan, cudaStream_t stream) {
    const dim3 grid(unsigned(plan.grid_n), unsigned(plan.grid_m), unsigned(plan.splits));
    if (plan.m_frags == 1) fp8_gemm_kernel<kAct, kInt8, kFold, 1><<<grid, kGemmThreads, 0, stream>>>(p);
    else if (plan.m_frags == 2) fp8_gemm_kernel<kAct, kInt8, kFold, 2><<<grid, kGemmThreads, 0, stream>>>(p);
    else if constexpr (!kFold) fp8_gemm_kernel<kAct, kInt8, kFold, 3><<<grid, kGemmThreads, 0, stream>>>(p);
    else return false;
    return true;
}

template <Fp8Act kAct, bool kInt8 = false>
cudaError_t launch(const Fp8Params& p, const GemmPlan& plan, cudaStream_t stream) {
    bool launched;
    if constexpr (kAct == Fp8Act::E4M3) {
        launched = launch_gemm<kAct, false, kFoldTiles>(p, plan, stream);  // W8A8 always folds
    } else if (p.g.blocks == 1) {
        launched = launch_gemm<kAct, kInt8, kNoFold>(p, plan, stream);
    } else if constexpr (kInt8) {
        if (p.mins) launched = launch_gemm<kAct, true, kFoldMins>(p, plan, stream);
        else if (fp8_step_blocks(p.g)) launched = launch_gemm<kAct, true, kFoldSteps>(p, plan, stream);
        else launched = launch_gemm<kAct, true, kFoldTiles>(p, plan, stream);
    } else {
        launched = launch_gemm<kAct, false, kFoldTiles>(p, plan, stream);
    }
    if (!launched) return cudaErrorInvalidConfiguration;
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess || plan.splits == 1) return err;
    if (kAct == Fp8Act::FP16)
        return launch_splitk_reduce<false>(p.partial, plan.splits, p.m, p.g.n, nullptr, p.y, p.ldy, stream);
    return launch_splitk_reduce<true>(p.partial, plan.splits, p.m, p.g.n, kAct == Fp8Act::E4M3 ? p.a_scales : nullptr,
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
    return current_device(&d) == cudaSuccess && d.cc >= 89 && d.code_cc >= 89;
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
    return launch<Fp8Act::E4M3>(p, plan, stream);
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
    if (w.int8) return bf16 ? launch<Fp8Act::BF16, true>(p, plan, stream) : launch<Fp8Act::FP16, true>(p, plan, stream);
    return bf16 ? launch<Fp8Act::BF16>(p, plan, stream) : launch<Fp8Act::FP16>(p, plan, stream);
}

std::vector<uint16_t> fp8_gemm_on_device(const Fp8GpuWeight& w, const uint16_t* x, int64_t M, bool w8a8, bool bf16,
                                         int splits, float ub) {
    const Fp8TileGeometry& g = w.g;
    const int64_t ldx = (g.k + 7) / 8 * 8, ldq = g.k_tiles * kFp8TileK;
    const std::vector<uint16_t> xp = pad_rows(x, M, g.k, ldx);
    GemmPlan plan = fp8_gemm_plan(M, g, device_sms(), w8a8);
    if (splits > 0) plan.splits = int(splits < plan.k_stages ? splits : plan.k_stages);
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
