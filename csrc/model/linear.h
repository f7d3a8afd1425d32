// A weight matrix y = x W^T and the threaded products over it.
//
// Today W is used as stored ([out, in] rows of fp32 / fp16 / bf16). Quantized formats add a
// format tag and a load-time repack into their kernel layout here, without touching the forward pass.
#pragma once
#include <cstdint>
#include <string>

#include "../core/dtype.h"
#include "../cpu/kernels.h"
#include "../cpu/thread_pool.h"

namespace ll {

struct Linear {
    const void* data = nullptr;
    DType dtype = DType::F32;
    int64_t out = 0, in = 0;

    size_t bytes() const { return size_t(out) * size_t(in) * size_t(dtype_size(dtype)); }
};

// The output columns [n0, n1) that chunk `chunk` of `n_chunks` computes.
void linear_rows(const Linear& w, int chunk, int n_chunks, int64_t& n0, int64_t& n1);

// Y[M, out] (+)= X[M, in] . W^T for one chunk's columns. Called from inside ThreadPool::run, so
// several products (Q, K, V; gate, up) can share one dispatch.
void linear_slice(const cpu::Kernels& k, const Linear& w, const float* X, int64_t ldx, float* Y,
                  int64_t ldy, int64_t M, bool accumulate, int chunk, int n_chunks);

}  // namespace ll
