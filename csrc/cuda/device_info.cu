// The CUDA runtime probe: how many usable devices this machine has, and why none if none.
//
// cudart is linked statically, so importing llama_local needs no CUDA libraries; the runtime
// loads the driver (libcuda) itself on first use and reports its absence as an error code.
#include <cuda_runtime.h>

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
    static std::atomic<uint32_t> kept[kKeptDevices];  // cc << 16 | sms
    uint32_t v = 0;
    const cudaError_t err = kept_per_device(kept, &v, [](int dev, uint32_t* v) {
        int major = 0, minor = 0, sms = 0;
        cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        *v = uint32_t(10 * major + minor) << 16 | uint32_t(sms);
        return err;
    });
    if (err != cudaSuccess) return err;
    *facts = DeviceFacts{int(v >> 16), int(v & 0xFFFFu)};
    return cudaSuccess;
}

std::string device_name(int device) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
    return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")";
}

}  // namespace ll::cuda
