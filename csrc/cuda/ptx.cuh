// The PTX instructions the CUDA kernels share (int4_gemm.cu, fp8_gemm.cu, flash_attn.cu), each
// written once: cp.async copies, ldmatrix, the 16 x 8 x 16 tensor-core product with its sm_75
// fallback, and the 16 x 8 x 32 E4M3 product of sm_89+.
// Device code; which element each lane holds is mma_frag.h's, tested on the host. The tests' host
// build swaps these for an emulation (tests/cuda_emulation) to run the kernels' block code.
#pragma once
#include <cstdint>

namespace ll::cuda {
namespace {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
constexpr bool kDeviceHasBf16 = false;  // sm_75: fp16 mma only, and no cp.async
#else
constexpr bool kDeviceHasBf16 = true;
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
constexpr bool kDeviceHasFp8Mma = false;  // Ada (sm_89) brought the e4m3 / e5m2 mma
#else
constexpr bool kDeviceHasFp8Mma = true;
#endif

}  // namespace
}  // namespace ll::cuda

#if defined(LL_CUDA_HOST_EMULATION)
// The tests' host build (tests/cuda_emulation): the same functions, emulated for a host thread per
// CUDA thread, so that the kernels' own block code runs on a machine without a GPU.
#include "cuda_host_emulation.h"
#else
namespace ll::cuda {
namespace {

// 16 bytes global -> shared, of which the first `bytes` (0..16) are read and the rest zeroed.
__device__ __forceinline__ void copy16(void* smem, const void* gmem, int bytes) {
#if __CUDA_ARCH__ >= 800
    const uint32_t dst = uint32_t(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(bytes));
#else
    uint4 v = make_uint4(0, 0, 0, 0);
    if (bytes == 16) {
        v = *static_cast<const uint4*>(gmem);
    } else {  // an X row's tail: only the halves before K are read
        const uint16_t* h = static_cast<const uint16_t*>(gmem);
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
            w[i] = (4 * i < bytes ? h[2 * i] : 0u) | (4 * i + 2 < bytes ? uint32_t(h[2 * i + 1]) << 16 : 0u);
        v = make_uint4(w[0], w[1], w[2], w[3]);
    }
    *static_cast<uint4*>(smem) = v;
#endif
}

__device__ __forceinline__ void copy_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}

// Wait until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void copy_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(kPending));
#endif
}

// Four 8x8 matrices of 16-bit values: register j of a lane gets matrix j's values at row
// lane / 4, columns 2 (lane % 4) and + 1 (mma_frag.h: ldm::a_row says which rows the lanes name).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem) {
    const uint32_t a = uint32_t(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// The same with .trans: register j gets matrix j's values at column lane / 4, rows 2 (lane % 4)
// and + 1 (a B operand stored [k][n], mma_frag.h: ldm::b_kn_row).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem) {
    const uint32_t a = uint32_t(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// Two fp32 values rounded to nearest even into a 16-bit pair, lo in the low half: one cvt on
// sm_80+, two before.
template <bool kBf16>
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    uint32_t d;
#if __CUDA_ARCH__ >= 800
    if constexpr (kBf16) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
#else
    static_assert(!kBf16, "bf16 needs sm_80");
    uint16_t a, b;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(a) : "f"(lo));
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(b) : "f"(hi));
    d = uint32_t(a) | uint32_t(b) << 16;
#endif
    return d;
}

// c += a . b for one m16n8k16 tile (fragments as mma_frag.h numbers them). sm_75 has no m16n8k16
// for fp16: two m16n8k8 halves (k 0-7 are a0 a1 and b0, k 8-15 are a2 a3 and b1).
template <bool kBf16>
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if __CUDA_ARCH__ >= 800
    if constexpr (kBf16) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
#else
    static_assert(!kBf16, "bf16 mma needs sm_80");
    for (int h = 0; h < 2; ++h)
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
                     "{%0, %1, %2, %3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[2 * h]), "r"(a[2 * h + 1]), "r"(b[h]));
#endif
}

// c += a . b for one m16n8k32 tile of E4M3 codes (fragments as mma_frag.h numbers them: A 4
// registers of 4 codes, B 2), products exact and summed in fp32. sm_89+ only: kernels that call
// it are built only where kDeviceHasFp8Mma.
__device__ __forceinline__ void mma_16832_e4m3(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if __CUDA_ARCH__ >= 890
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

}  // namespace
}  // namespace ll::cuda
#endif
