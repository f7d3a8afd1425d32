// The forward pass's small ops (small_ops.h): memory-bound loops over rows, coalesced (consecutive
// threads take consecutive elements), fp32 arithmetic from small_ops_math.h, one rounding to 16 bits
// where a value leaves for a GEMM or the cache.
#include "small_ops.h"
#include "device_buffers.h"

#include <stdexcept>

#include "small_ops_kernels.cuh"

namespace ll::cuda {
namespace {

// bf16 before sm_80 is refused here, once, for every op that rounds to 16 bits.
cudaError_t check_bf16(bool bf16) {
    if (!bf16) return cudaSuccess;
    DeviceFacts d;
    if (const cudaError_t err = current_device(&d)) return err;
    return d.runs(80) ? cudaSuccess : cudaErrorNotSupported;
}

}  // namespace

cudaError_t rmsnorm_to_half(const float* x, int64_t ldx, const float* w, int T, int D, float eps, uint16_t* y,
                            int64_t ldy, bool bf16, cudaStream_t stream) {
    if (const cudaError_t e = check_bf16(bf16)) return e;
    if (T <= 0) return cudaSuccess;
    if (bf16) rmsnorm_kernel<true><<<T, kRowThreads, 0, stream>>>(x, ldx, w, D, eps, y, ldy);
    else rmsnorm_kernel<false><<<T, kRowThreads, 0, stream>>>(x, ldx, w, D, eps, y, ldy);
    return cudaGetLastError();
}

cudaError_t rope_qk(uint16_t* q, int64_t ldq, int n_heads, uint16_t* k, int64_t ldk, int n_kv_heads, int hd, int T,
                    const float* cos, const float* sin, FirstPos p0, bool bf16, cudaStream_t stream) {
    if (const cudaError_t e = check_bf16(bf16)) return e;
    if (p0.host < 0) return cudaErrorInvalidValue;
    if (T <= 0) return cudaSuccess;
    const int* pos = p0.device;
    if (bf16) rope_kernel<true><<<T, kRowThreads, 0, stream>>>(q, ldq, n_heads, k, ldk, n_kv_heads, hd, cos, sin, pos);
    else rope_kernel<false><<<T, kRowThreads, 0, stream>>>(q, ldq, n_heads, k, ldk, n_kv_heads, hd, cos, sin, pos);
    return cudaGetLastError();
}

cudaError_t kv_append(const uint16_t* k, const uint16_t* v, int64_t ld, int T, int n_kv_heads, int hd,
                      uint16_t* cache_k, uint16_t* cache_v, int64_t n_ctx, FirstPos p0, cudaStream_t stream) {
    if (p0.host < 0 || int64_t(p0.host) + T > n_ctx) return cudaErrorInvalidValue;
    if (T <= 0) return cudaSuccess;
    kv_append_kernel<<<T, kRowThreads, 0, stream>>>(k, v, ld, n_kv_heads, hd, cache_k, cache_v, n_ctx, p0.device);
    return cudaGetLastError();
}

cudaError_t swiglu(const uint16_t* gu, int T, int F, uint16_t* out, bool bf16, cudaStream_t stream) {
    if (const cudaError_t e = check_bf16(bf16)) return e;
    if (T <= 0) return cudaSuccess;
    const dim3 grid(unsigned(T), column_blocks(F));
    if (bf16) swiglu_kernel<true><<<grid, kRowThreads, 0, stream>>>(gu, F, out);
    else swiglu_kernel<false><<<grid, kRowThreads, 0, stream>>>(gu, F, out);
    return cudaGetLastError();
}

cudaError_t residual_add(float* x, const uint16_t* y, int T, int D, bool bf16, cudaStream_t stream) {
    if (T <= 0) return cudaSuccess;
    const dim3 grid(unsigned(T), column_blocks(D));
    if (bf16) residual_add_kernel<true><<<grid, kRowThreads, 0, stream>>>(x, y, D);
    else residual_add_kernel<false><<<grid, kRowThreads, 0, stream>>>(x, y, D);
    return cudaGetLastError();
}

cudaError_t embed(const uint16_t* table, int64_t vocab, const int32_t* tokens, int T, int D, float* x, bool bf16,
                  cudaStream_t stream) {
    (void)vocab;  // the forward pass checks token ids against the vocabulary before any launch
    if (T <= 0) return cudaSuccess;
    if (bf16) embed_kernel<true><<<T, kRowThreads, 0, stream>>>(table, tokens, D, x);
    else embed_kernel<false><<<T, kRowThreads, 0, stream>>>(table, tokens, D, x);
    return cudaGetLastError();
}

// ---- test helpers: upload, run, copy back

std::vector<uint16_t> rmsnorm_on_device(const float* x, const float* w, int T, int D, float eps, bool bf16) {
    DeviceBuffers b;
    uint16_t* y = b.zeros<uint16_t>(size_t(T) * D);
    cuda_check(rmsnorm_to_half(b.upload(x, size_t(T) * D), D, b.upload(w, size_t(D)), T, D, eps, y, D, bf16, nullptr),
               "RMSNorm");
    return download(y, size_t(T) * D);
}

std::vector<uint16_t> rope_on_device(const uint16_t* qk, int T, int n_heads, int hd, const float* cos, const float* sin,
                                     int n_pos, int p0, bool bf16) {
    if (p0 < 0 || p0 + T > n_pos) throw std::invalid_argument("rope: positions past the tables");
    DeviceBuffers b;
    uint16_t* x = b.upload(qk, size_t(T) * n_heads * hd);
    const size_t tab = size_t(n_pos) * (hd / 2);
    // All heads as query heads (k: none): the kernel's head loop covers both the same way.
    cuda_check(rope_qk(x, int64_t(n_heads) * hd, n_heads, nullptr, 0, 0, hd, T, b.upload(cos, tab), b.upload(sin, tab),
                       FirstPos{p0, b.upload(&p0, 1)}, bf16, nullptr),
               "RoPE");
    return download(x, size_t(T) * n_heads * hd);
}

std::vector<uint16_t> swiglu_on_device(const uint16_t* gu, int T, int F, bool bf16) {
    DeviceBuffers b;
    uint16_t* out = b.zeros<uint16_t>(size_t(T) * F);
    cuda_check(swiglu(b.upload(gu, size_t(T) * 2 * F), T, F, out, bf16, nullptr), "SwiGLU");
    return download(out, size_t(T) * F);
}

std::vector<float> residual_add_on_device(const float* x, const uint16_t* y, int T, int D, bool bf16) {
    DeviceBuffers b;
    float* dx = b.upload(x, size_t(T) * D);
    cuda_check(residual_add(dx, b.upload(y, size_t(T) * D), T, D, bf16, nullptr), "residual add");
    return download(dx, size_t(T) * D);
}

std::vector<float> embed_on_device(const uint16_t* table, int64_t vocab, const int32_t* tokens, int T, int D,
                                   bool bf16) {
    for (int t = 0; t < T; ++t)
        if (tokens[t] < 0 || tokens[t] >= vocab) throw std::invalid_argument("embed: token id outside the vocabulary");
    DeviceBuffers b;
    float* x = b.zeros<float>(size_t(T) * D);
    cuda_check(embed(b.upload(table, size_t(vocab) * D), vocab, b.upload(tokens, size_t(T)), T, D, x, bf16, nullptr),
               "embedding");
    return download(x, size_t(T) * D);
}

std::vector<uint16_t> kv_append_on_device(const uint16_t* k, const uint16_t* v, int T, int n_kv_heads, int hd,
                                          int64_t n_ctx, int p0) {
    DeviceBuffers b;
    const size_t rows = size_t(T) * n_kv_heads * hd, cache = size_t(n_kv_heads) * n_ctx * hd;
    uint16_t* ck = b.zeros<uint16_t>(cache);
    uint16_t* cv = b.zeros<uint16_t>(cache);
    cuda_check(kv_append(b.upload(k, rows), b.upload(v, rows), int64_t(n_kv_heads) * hd, T, n_kv_heads, hd, ck, cv,
                         n_ctx, FirstPos{p0, b.upload(&p0, 1)}, nullptr),
               "KV append");
    std::vector<uint16_t> out = download(ck, cache), vv = download(cv, cache);
    out.insert(out.end(), vv.begin(), vv.end());
    return out;
}

}  // namespace ll::cuda
