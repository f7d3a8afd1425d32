// Timing of the CUDA kernels on their own, for bench/bench_gpu.py: inputs made and uploaded once,
// then the launcher timed with CUDA events over repeated launches. Compiled only in CUDA builds.
#pragma once
#include <cstdint>
#include <string>

namespace ll::cuda {

struct DeviceSpec {
    std::string name;
    int sms = 0;
    int cc_major = 0, cc_minor = 0;
    double sm_clock_ghz = 0;     // the SMs' peak clock
    double mem_spec_gbps = 0;    // memory clock x bus width x 2 (DDR): the datasheet bandwidth
    double copy_gbps = 0;        // measured: a device-to-device copy of 1 GiB, bytes read + written
};

// The current device, with its copy bandwidth measured (best of 5).
DeviceSpec device_spec();

// Seconds per call, best of `repeats` rounds of `iters` launches each.
// splits > 0: that split-K factor (at most the product's k stages) instead of the plan's.
double time_bf16_gemm(int64_t M, int64_t N, int64_t K, bool bf16, bool y_f32, int iters, int repeats, int splits);
double time_int4_gemm(int64_t M, int64_t N, int64_t K, int64_t group, bool bf16, int iters, int repeats,
                      int splits);
double time_flash_attention(int T, int p0, int n_heads, int n_kv_heads, int head_dim, bool bf16, int iters,
                            int repeats);

}  // namespace ll::cuda
