// Host-side questions about CUDA devices; compiled only when the build has CUDA (LL_HAVE_CUDA).
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace ll::cuda {

// What the launchers check on every call: the current device's compute capability (10 major +
// minor: 89 for sm_89) and SM count. Read from the driver once per device and kept, so that an
// eager prefill, which runs every launcher once per layer, does not ask the driver each time.
struct DeviceFacts {
    int cc = 0, sms = 0;
};
cudaError_t current_device(DeviceFacts* facts);

// The current device's answer to a question whose answer does not change while the process runs:
// read(dev, &v) asks the driver (v must come out nonzero), then v is kept in kept[dev] (0: not
// asked yet) and given from there; ordinals from kKeptDevices on are asked each time.
constexpr int kKeptDevices = 64;
template <class Read>
cudaError_t kept_per_device(std::atomic<uint32_t> (&kept)[kKeptDevices], uint32_t* v, Read read) {
    int dev = 0;
    if (const cudaError_t err = cudaGetDevice(&dev)) return err;
    if (dev < kKeptDevices && (*v = kept[dev].load(std::memory_order_relaxed)) != 0) return cudaSuccess;
    if (const cudaError_t err = read(dev, v)) return err;
    if (dev < kKeptDevices) kept[dev].store(*v, std::memory_order_relaxed);
    return cudaSuccess;
}

int device_count(std::string* why_none);
bool probe_device(int device, std::string* error);
std::string device_name(int device);

}  // namespace ll::cuda
