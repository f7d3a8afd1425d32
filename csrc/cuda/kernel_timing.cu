#include "kernel_timing.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <vector>

#include "attention_plan.h"
#include "bf16_gemm.h"
#include "device_buffers.h"
#include "flash_attn.h"
#include "int4_gemm.h"
#include "int4_repack.h"

namespace ll::cuda {
namespace {

// Random 16-bit values of magnitude in [0.5, 1) (bf16 or fp16 bits): finite inputs, no NaN.
std::vector<uint16_t> random_half(size_t n, bool bf16, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<uint16_t> v(n);
    for (auto& x : v) {
        const uint32_t r = rng();
        // random sign and mantissa, the exponent of 0.5
        x = bf16 ? uint16_t((r & 0x8000u) | 0x3F00u | (r & 0x7Fu)) : uint16_t((r & 0x8000u) | 0x3800u | (r & 0x3FFu));
    }
    return v;
}

// Best seconds per launch of f over `repeats` rounds of `iters`, after one warm-up launch.
template <class F>
double best_time(F f, int iters, int repeats) {
    cudaEvent_t a, b;
    cuda_check(cudaEventCreate(&a), "timing");
    cuda_check(cudaEventCreate(&b), "timing");
    f();
    cuda_check(cudaDeviceSynchronize(), "timing");
    float best = 1e30f;
    for (int r = 0; r < repeats; ++r) {
        cuda_check(cudaEventRecord(a), "timing");
        for (int i = 0; i < iters; ++i) f();
        cuda_check(cudaEventRecord(b), "timing");
        cuda_check(cudaEventSynchronize(b), "timing");
        float ms = 0;
        cuda_check(cudaEventElapsedTime(&ms, a, b), "timing");
        best = std::min(best, ms / float(iters));
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return double(best) * 1e-3;
}

}  // namespace

DeviceSpec device_spec() {
    int dev = 0;
    cuda_check(cudaGetDevice(&dev), "timing");
    cudaDeviceProp p{};
    cuda_check(cudaGetDeviceProperties(&p, dev), "timing");
    DeviceSpec s;
    s.name = p.name;
    int clock_khz = 0, mem_khz = 0, bus_bits = 0;
    cuda_check(cudaDeviceGetAttribute(&s.sms, cudaDevAttrMultiProcessorCount, dev), "timing");
    cuda_check(cudaDeviceGetAttribute(&s.cc_major, cudaDevAttrComputeCapabilityMajor, dev), "timing");
    cuda_check(cudaDeviceGetAttribute(&s.cc_minor, cudaDevAttrComputeCapabilityMinor, dev), "timing");
    cuda_check(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev), "timing");
    cuda_check(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev), "timing");
    cuda_check(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev), "timing");
    s.sm_clock_ghz = clock_khz * 1e-6;
    s.mem_spec_gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8) * 1e-9;
    const size_t bytes = size_t(1) << 30;
    DeviceBuffers b;
    char* src = b.alloc<char>(bytes);
    char* dst = b.alloc<char>(bytes);
    cuda_check(cudaMemset(src, 1, bytes), "timing");
    const double t = best_time(
        [&] { cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice), "copy bandwidth"); }, 3, 5);
    s.copy_gbps = 2.0 * double(bytes) / t * 1e-9;
    return s;
}

double time_bf16_gemm(int64_t M, int64_t N, int64_t K, bool bf16, bool y_f32, int iters, int repeats, int splits) {
    const int sms = device_sms();
    const GemmPlan plan = with_splits(bf16_gemm_plan(M, N, K, sms), splits);
    const int64_t ld = (K + 7) / 8 * 8;
    DeviceBuffers b;
    const uint16_t* x = b.upload(random_half(size_t(M * ld), bf16, 6));
    const uint16_t* w = b.upload(random_half(size_t(N * ld), bf16, 7));
    void* y = b.alloc<float>(size_t(M * N));
    const size_t ws = bf16_gemm_workspace_bytes(plan, M, N);
    float* work = b.alloc<float>(ws / sizeof(float));
    const Bf16GemmArgs a{x, ld, w, ld, M, N, K, bf16, y, N, y_f32, plan, work, ws};
    std::string why;
    return best_time([&] {
        launch_check(bf16_gemm(a, nullptr, &why), why, "bf16_gemm");
    }, iters, repeats);
}

double time_int4_gemm(int64_t M, int64_t N, int64_t K, int64_t group, bool bf16, int iters, int repeats,
                      int splits) {
    std::mt19937 rng(1);
    std::vector<uint8_t> codes(size_t(N * K));
    for (auto& c : codes) c = uint8_t(rng() & 15);
    const int64_t groups = (K + group - 1) / group;
    std::vector<float> scales(size_t(N * groups), 0.01f);
    const Int4GpuWeight w = int4_repack("bench", codes.data(), N, K, scales.data(), nullptr, group, 8, bf16);
    const int sms = device_sms();
    const GemmPlan plan = with_splits(int4_gemm_plan(M, w.g, sms), splits);
    DeviceBuffers b;
    const int64_t ldx = (K + 7) / 8 * 8;
    const Int4DeviceWeight dw{w.g, bf16, false, 8, b.upload(w.q), b.upload(w.scales), nullptr};
    const uint16_t* x = b.upload(random_half(size_t(M * ldx), bf16, 2));
    uint16_t* y = b.alloc<uint16_t>(size_t(M * N));
    const size_t ws = int4_gemm_workspace_bytes(plan, M, N);
    float* work = b.alloc<float>(ws / sizeof(float));
    std::string why;
    return best_time([&] {
        launch_check(int4_gemm(x, ldx, M, dw, y, N, plan, work, ws, nullptr, &why), why, "int4_gemm");
    }, iters, repeats);
}

double time_flash_attention(int T, int p0, int n_heads, int n_kv_heads, int head_dim, bool bf16, int iters,
                            int repeats) {
    const int64_t n_ctx = int64_t(p0) + T, hd = head_dim;
    DeviceBuffers b;
    const uint16_t* q = b.upload(random_half(size_t(T * n_heads * hd), bf16, 3));
    const uint16_t* k = b.upload(random_half(size_t(n_kv_heads * n_ctx * hd), bf16, 4));
    const uint16_t* v = b.upload(random_half(size_t(n_kv_heads * n_ctx * hd), bf16, 5));
    uint16_t* out = b.alloc<uint16_t>(size_t(T * n_heads * hd));
    const int sms = device_sms();
    const int splits = fa_call_splits(T, p0 + T, n_kv_heads, 0, sms);
    const size_t ws = flash_attention_workspace_bytes(T, n_heads, head_dim, splits);
    float* work = b.alloc<float>(ws / sizeof(float));
    const FirstPos pos{p0, b.upload(&p0, 1)};
    const FlashAttentionArgs a{q, int64_t(n_heads) * hd, k, v, n_ctx, out, int64_t(n_heads) * hd, T, pos,
                               n_heads, n_kv_heads, head_dim, bf16, splits, work, ws};
    std::string why;
    return best_time([&] {
        launch_check(flash_attention(a, nullptr, &why), why, "flash_attention");
    }, iters, repeats);
}

}  // namespace ll::cuda
