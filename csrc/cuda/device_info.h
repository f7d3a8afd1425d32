// Host-side questions about CUDA devices; compiled only when the build has CUDA (LL_HAVE_CUDA).
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace ll::cuda {

// What the launchers check on every call: the current device's compute capability (10 major +
// minor: 89 for sm_89) and SM count. Read from the driver once per device and kept, so that an
// eager prefill, which runs every launcher once per layer, does not ask the driver each time.
struct DeviceFacts {
    int cc = 0, sms = 0;
};
cudaError_t current_device(DeviceFacts* facts);

int device_count(std::string* why_none);
bool probe_device(int device, std::string* error);
std::string device_name(int device);

}  // namespace ll::cuda
