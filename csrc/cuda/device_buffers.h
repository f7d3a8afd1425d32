// Host code's device memory and CUDA errors, in one place: a set of device buffers freed together
// on every path out (exceptions included), and errors turned into std::runtime_error. Used by the
// model (llama_cuda.cu), the timing (kernel_timing.cu) and each kernel's test helper.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "device_info.h"

namespace ll::cuda {

// Throws "CUDA (what): <the error's text>" unless err is cudaSuccess.
inline void cuda_check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA (") + what + "): " + cudaGetErrorString(err));
}

// After a launcher that explains a refused argument in `why` (cudaErrorInvalidValue): that
// explanation, else the error's text.
inline void launch_check(cudaError_t err, const std::string& why, const char* what) {
    if (err == cudaErrorInvalidValue && !why.empty()) throw std::runtime_error(why);
    cuda_check(err, what);
}

class DeviceBuffers {
public:
    DeviceBuffers() = default;
    DeviceBuffers(const DeviceBuffers&) = delete;
    DeviceBuffers& operator=(const DeviceBuffers&) = delete;
    ~DeviceBuffers() {
        for (void* p : ptrs_) cudaFree(p);
    }

    // count Ts, not initialized; 16 bytes of slack past the end, so that an empty buffer is still a
    // pointer a kernel's zero-byte copy may name.
    template <class T>
    T* alloc(size_t count) {
        void* d = nullptr;
        const size_t bytes = count * sizeof(T) + 16;
        cuda_check(cudaMalloc(&d, bytes), "allocating device memory");
        ptrs_.push_back(d);
        bytes_ += bytes;
        return static_cast<T*>(d);
    }
    template <class T>
    T* zeros(size_t count) {
        T* d = alloc<T>(count);
        cuda_check(cudaMemset(d, 0, count * sizeof(T)), "zeroing device memory");
        return d;
    }
    template <class T>
    T* upload(const T* host, size_t count) {
        T* d = alloc<T>(count);
        cuda_check(cudaMemcpy(d, host, count * sizeof(T), cudaMemcpyHostToDevice), "copying to the device");
        return d;
    }
    template <class T>
    T* upload(const std::vector<T>& host) {
        return upload(host.data(), host.size());
    }
    size_t bytes() const { return bytes_; }

private:
    std::vector<void*> ptrs_;
    size_t bytes_ = 0;
};

// count Ts copied back to the host once the device has finished its work.
template <class T>
std::vector<T> download(const T* dev, size_t count) {
    cuda_check(cudaDeviceSynchronize(), "running the kernels");
    std::vector<T> out(count);
    cuda_check(cudaMemcpy(out.data(), dev, count * sizeof(T), cudaMemcpyDeviceToHost), "copying from the device");
    return out;
}

// A row-major [rows, cols] matrix of 16-bit values with its rows padded to ld (zeros past cols):
// the kernels read rows in 16-byte chunks, so ld is cols rounded up to 8.
inline std::vector<uint16_t> pad_rows(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld) {
    std::vector<uint16_t> out(size_t(rows * ld), 0);
    for (int64_t r = 0; r < rows; ++r) std::copy(src + r * cols, src + (r + 1) * cols, out.begin() + r * ld);
    return out;
}

// The current device's SM count.
inline int device_sms() {
    DeviceFacts d;
    cuda_check(current_device(&d), "reading the device");
    return d.sms;
}

}  // namespace ll::cuda
