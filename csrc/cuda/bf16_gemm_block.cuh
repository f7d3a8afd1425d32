// The 16-bit-weight GEMM's work for one block (bf16_gemm.cu's kernel; the file comment there says
// how it cuts the product). Device code, in a header of its own so that tests/cuda_emulation can
// run this very code on the host, with ptx.cuh's instructions emulated.
#pragma once
#include <cstdint>

#include "bf16_gemm_tiling.h"
#include "copy_pipeline.cuh"
#include "half2_math.h"
#include "mma_frag.h"
#include "ptx.cuh"

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

    copy_pipeline<kB16Stages>(range.begin, n_stages, load_stage, [&](int64_t, int buf) {
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
    });

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

}  // namespace
}  // namespace ll::cuda
