// Flash attention on the device (flash_attn.h). Every index below comes from attention_plan.h
// (tiles, masks, splits, swizzle) or mma_frag.h (fragments, ldmatrix addresses); the schedule
// they make is run on the host by flash_attn_schedule.cpp and held to numpy there.
//
// Prefill block: 4 warps, 64 query rows of one head (16 per warp, one m16 tile), for each K/V
// tile it sees: K and V copied into shared memory (cp.async, V's copy in flight while S = Q K^T
// is computed), S in fp32 fragments, the mask where the tile crosses the diagonal, the online
// softmax per row (a quad of lanes holds a row), P rounded to 16 bits straight into the A
// fragment of P V. Decode block: the query heads of one KV head (up to 16) as the m16 tile, one
// range of positions; each warp takes 16 positions of every tile and keeps its own partial, the
// block merges its warps in order, and a second kernel merges the ranges in order.
#include "flash_attn.h"
#include "device_buffers.h"

#include <cmath>
#include <stdexcept>

#include "attention_plan.h"
#include "flash_attn_block.cuh"
#include "ptx.cuh"

namespace ll::cuda {
namespace {

// Register budgets (blocks of 4 warps per SM, enforced by __launch_bounds__ and checked in
// tests/test_cuda_static.py): prefill keeps Q (HD / 4), S (32) and O (HD / 2) fragments in
// registers, so head_dim 128 gets two blocks per SM (255 registers at most; its 48 KB of shared
// memory allows no more on sm_86/89/120 anyway) and 64 three (170); decode holds a 16-position
// slice of S: three (170) and four (128).
constexpr int fa_prefill_blocks(int hd) { return hd == 128 ? 2 : 3; }
constexpr int fa_decode_blocks(int hd) { return hd == 128 ? 3 : 4; }

template <bool kBf16, int HD>
__global__ void __launch_bounds__(kFaThreads, fa_prefill_blocks(HD)) fa_prefill_kernel(const FaParams p) {
    if constexpr (kBf16 && !kDeviceHasBf16) __trap();  // never launched: flash_attention refuses
    else prefill_block<kBf16, HD>(p);
}

template <bool kBf16, int HD>
__global__ void __launch_bounds__(kFaThreads, fa_decode_blocks(HD)) fa_decode_kernel(const FaParams p) {
    if constexpr (kBf16 && !kDeviceHasBf16) __trap();
    else decode_block<kBf16, HD>(p);
}

template <bool kBf16, int HD>
__global__ void __launch_bounds__(HD) fa_decode_merge_kernel(const FaParams p) {
    if constexpr (kBf16 && !kDeviceHasBf16) __trap();
    else decode_merge_block<kBf16, HD>(p);
}

template <bool kBf16, int HD>
cudaError_t launch(const FaParams& p, cudaStream_t stream) {
    if (p.T > 1) {
        const dim3 grid(unsigned((p.T + kFaQRows - 1) / kFaQRows), unsigned(p.n_heads));
        fa_prefill_kernel<kBf16, HD><<<grid, kFaThreads, 0, stream>>>(p);
        return cudaGetLastError();
    }
    fa_decode_kernel<kBf16, HD><<<dim3(unsigned(p.n_splits), unsigned(p.n_kv_heads)), kFaThreads, 0, stream>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    fa_decode_merge_kernel<kBf16, HD><<<unsigned(p.n_heads), HD, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

size_t flash_attention_workspace_bytes(int T, int n_heads, int head_dim, int splits) {
    return T == 1 ? size_t(n_heads) * size_t(splits) * size_t(2 + head_dim) * sizeof(float) : 0;
}

cudaError_t flash_attention(const FlashAttentionArgs& a, cudaStream_t stream, std::string* error) {
    auto refuse = [&](const std::string& why) {
        if (error) *error = "flash_attention: " + why;
        return cudaErrorInvalidValue;
    };
    if (a.head_dim != 64 && a.head_dim != 128) return refuse("head_dim must be 64 or 128");
    if (a.T < 1 || a.p0.host < 0 || int64_t(a.p0.host) + a.T > a.n_ctx)
        return refuse("positions [p0, p0 + T) must lie in n_ctx");
    if (a.n_kv_heads < 1 || a.n_heads % a.n_kv_heads) return refuse("n_kv_heads must divide n_heads");
    if (a.T == 1 && a.n_heads / a.n_kv_heads > 16) return refuse("decode takes at most 16 query heads per KV head");
    if (reinterpret_cast<uintptr_t>(a.q) % 16 || reinterpret_cast<uintptr_t>(a.k) % 16 ||
        reinterpret_cast<uintptr_t>(a.v) % 16 || reinterpret_cast<uintptr_t>(a.out) % 4 || a.ldq % 8 || a.ldo % 2)
        return refuse("q, k and v must be 16-byte aligned with q's row stride a multiple of 8");
    if (a.bf16)
        if (const cudaError_t err = require_cc(80, "bf16", "use fp16 on this GPU", "flash_attention", error))
            return err;
    DeviceFacts d;
    if (const cudaError_t err = current_device(&d)) return err;
    const int splits = fa_call_splits(a.T, a.p0.host + a.T, a.n_kv_heads, a.splits, d.sms);
    if (a.workspace_bytes < flash_attention_workspace_bytes(a.T, a.n_heads, a.head_dim, splits))
        return refuse("the decode workspace is too small");
    const FaParams p{a.q, a.ldq, a.k, a.v, a.n_ctx, a.out, a.ldo, a.T, a.p0.device, a.n_heads, a.n_kv_heads, splits,
                     1.0f / sqrtf(float(a.head_dim)), a.workspace};
    if (a.bf16) return a.head_dim == 64 ? launch<true, 64>(p, stream) : launch<true, 128>(p, stream);
    return a.head_dim == 64 ? launch<false, 64>(p, stream) : launch<false, 128>(p, stream);
}

std::vector<uint16_t> flash_attention_on_device(const uint16_t* q, const uint16_t* k, const uint16_t* v, int T, int p0,
                                                int n_heads, int n_kv_heads, int head_dim, bool bf16, int splits) {
    const int n_pos = p0 + T, hd = head_dim;
    const int64_t n_ctx = n_pos + 5;  // a cache longer than the positions in use, as in the engine
    const std::vector<uint16_t> kc = fa_device_cache(k, n_pos, n_kv_heads, hd, n_ctx, 0);
    const std::vector<uint16_t> vc = fa_device_cache(v, n_pos, n_kv_heads, hd, n_ctx, 0);
    const size_t q_count = size_t(T) * n_heads * hd;
    const int used = fa_call_splits(T, n_pos, n_kv_heads, splits, device_sms());
    const size_t ws = flash_attention_workspace_bytes(T, n_heads, hd, used);
    DeviceBuffers b;
    const uint16_t* dq = b.upload(q, q_count);
    const uint16_t* dk = b.upload(kc);
    const uint16_t* dv = b.upload(vc);
    uint16_t* dout = b.alloc<uint16_t>(q_count);
    float* dws = b.alloc<float>(ws / sizeof(float));
    const FirstPos pos{p0, b.upload(&p0, 1)};
    const FlashAttentionArgs a{dq, int64_t(n_heads) * hd, dk, dv, n_ctx, dout, int64_t(n_heads) * hd, T, pos,
                               n_heads, n_kv_heads, hd, bf16, used, dws, ws};
    std::string why;
    launch_check(flash_attention(a, nullptr, &why), why, "flash attention");
    return download(dout, q_count);
}

}  // namespace ll::cuda
