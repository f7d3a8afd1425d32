// Host-side questions about CUDA devices; compiled only when the build has CUDA (LL_HAVE_CUDA).
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace ll::cuda {

// What the launchers check on every call: the current device's compute capability (10 major +
// minor: 89 for sm_89), SM count, and the compute capability of the code this build runs on it
// (code_cc). The two differ when LLAMA_LOCAL_CUDA_ARCHS leaves out the GPU's arch: the driver then
// compiles the PTX of an older arch, where the kernels that need a newer one are traps. Every .cu
// file is built for the same archs, so one kernel's answer holds for all. Read from the driver once
// per device and kept, so that an eager prefill, which runs every launcher once per layer, does not
// ask the driver each time.
struct DeviceFacts {
    int cc = 0, sms = 0, code_cc = 0;
    // Whether kernels that need compute capability min_cc run here: the GPU has it and so does the
    // code the driver picked for it.
    bool runs(int min_cc) const { return cc >= min_cc && code_cc >= min_cc; }
};
cudaError_t current_device(DeviceFacts* facts);

// Whether the current device runs `feature`, which needs compute capability min_cc in the GPU and in
// the code built for it: cudaSuccess if so, else cudaErrorInvalidValue and, in *error, "who: feature
// needs ..." saying which of the two is missing (with what to do `instead` when the GPU is too old),
// or the driver's error.
cudaError_t require_cc(int min_cc, const char* feature, const char* instead, const char* who, std::string* error);

int device_count(std::string* why_none);
bool probe_device(int device, std::string* error);
std::string device_name(int device);

}  // namespace ll::cuda
