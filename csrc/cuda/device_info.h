// Host-side questions about CUDA devices; compiled only when the build has CUDA (LL_HAVE_CUDA).
#pragma once
#include <string>

namespace ll::cuda {

int device_count(std::string* why_none);
bool probe_device(int device, std::string* error);
std::string device_name(int device);

}  // namespace ll::cuda
