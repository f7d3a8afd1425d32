// The CUDA runtime probe: how many usable devices this machine has, and why none if none.
//
// cudart is linked statically, so importing llama_local needs no CUDA libraries; the runtime
// loads the driver (libcuda) itself on first use and reports its absence as an error code.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "device_info.h"

namespace ll::cuda {

namespace {
// A device is only reported usable once a kernel has run on it and written back.
__global__ void probe_kernel(int* out) { *out = 0x11a7a; }
}  // namespace

int device_count(std::string* why_none) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        if (why_none) *why_none = std::string("CUDA runtime: ") + cudaGetErrorString(err);
        return 0;
    }
    if (n == 0 && why_none) *why_none = "no CUDA device found";
    return n;
}

bool probe_device(int device, std::string* error) {
    int* d = nullptr;
    int h = 0;
    cudaError_t err = cudaSetDevice(device);
    if (err == cudaSuccess) err = cudaMalloc(&d, sizeof(int));
    if (err == cudaSuccess) {
        probe_kernel<<<1, 1>>>(d);
        err = cudaGetLastError();
    }
    if (err == cudaSuccess) err = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
    if (d) cudaFree(d);
    if (err != cudaSuccess) {
        if (error) *error = cudaGetErrorString(err);
        return false;
    }
    return h == 0x11a7a;
}

cudaError_t current_device(DeviceFacts* facts) {
    constexpr int kKept = 64;                  // devices whose facts are kept; any more are read each time
    static std::atomic<uint32_t> kept[kKept];  // cc << 24 | code_cc << 16 | sms, 0 until read
    int dev = 0;
    if (const cudaError_t err = cudaGetDevice(&dev)) return err;
    uint32_t v = dev < kKept ? kept[dev].load(std::memory_order_relaxed) : 0;
    if (!v) {
        int major = 0, minor = 0, sms = 0;
        cudaFuncAttributes code{};  // ptxVersion: the virtual arch of the code the driver picked
        cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        if (err == cudaSuccess) err = cudaFuncGetAttributes(&code, probe_kernel);
        if (err != cudaSuccess) return err;
        v = uint32_t(10 * major + minor) << 24 | uint32_t(code.ptxVersion & 0xFF) << 16 | uint32_t(sms & 0xFFFF);
        if (dev < kKept) kept[dev].store(v, std::memory_order_relaxed);
    }
    *facts = DeviceFacts{int(v >> 24), int(v & 0xFFFFu), int(v >> 16 & 0xFFu)};
    return cudaSuccess;
}

cudaError_t require_cc(int min_cc, const char* feature, const char* instead, const char* who, std::string* error) {
    DeviceFacts d;
    if (const cudaError_t err = current_device(&d)) return err;
    if (d.runs(min_cc)) return cudaSuccess;
    const std::string needs = std::string(who) + ": " + feature + " needs ", sm = "sm_" + std::to_string(min_cc);
    if (error)
        *error = d.cc < min_cc ? needs + sm + " or newer; " + instead
                               : needs + "code built for " + sm + " or newer, and this build has only compute_" +
                                     std::to_string(d.code_cc) + " code for this sm_" + std::to_string(d.cc) +
                                     " GPU: rebuild with its arch in LLAMA_LOCAL_CUDA_ARCHS";
    return cudaErrorInvalidValue;
}

std::string device_name(int device) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
    return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")";
}

}  // namespace ll::cuda
