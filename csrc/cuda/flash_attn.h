// Causal GQA flash attention on the device, over the device KV cache of one layer: K and V as
// [n_kv_heads][n_ctx][head_dim] 16-bit values (bf16 on sm_80+, fp16 anywhere), K after RoPE.
// Prefill (T > 1) is FA2: blocks of 64 query rows of one head stream the K/V tiles they see,
// online softmax in fp32, no score matrix in memory. Decode (T == 1) is flash-decoding: each KV
// head's positions are split over blocks (attention_plan.h: fa_split), whose fp32 partials a
// second kernel merges in split order. Compiled only in CUDA builds (LL_HAVE_CUDA); the index math
// is attention_plan.h's, which tests/test_cuda_attention_plan.py proves on the host.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "first_position.h"

namespace ll::cuda {

struct FlashAttentionArgs {
    const uint16_t* q;   // [T][ldq]: query head h at columns [h hd, (h + 1) hd), after RoPE
    int64_t ldq;
    const uint16_t* k;   // the layer's cache: [n_kv_heads][n_ctx][head_dim]
    const uint16_t* v;
    int64_t n_ctx;
    uint16_t* out;       // [T][ldo], like q
    int64_t ldo;
    int T;               // new rows: positions [p0, p0 + T), already in the cache
    FirstPos p0;
    int n_heads;
    int n_kv_heads;
    int head_dim;        // 64 or 128
    bool bf16;
    int splits;          // decode: ranges per KV head (0: fa_num_splits for this GPU)
    float* workspace;    // decode: flash_attention_workspace_bytes
    size_t workspace_bytes;
};

// fp32 partials decode needs for `splits` ranges (0 for prefill).
size_t flash_attention_workspace_bytes(int T, int n_heads, int head_dim, int splits);

// Launches on `stream`. Returns the launch error, or cudaErrorInvalidValue with `error` saying
// which argument was wrong (head_dim, a query-head group over 16 for decode, bf16 before sm_80,
// alignment, positions past n_ctx, a short workspace).
cudaError_t flash_attention(const FlashAttentionArgs& a, cudaStream_t stream, std::string* error);

// For tests: q [T, n_heads hd], k and v [p0 + T, n_kv_heads hd] (16-bit bits, row-major as the
// CPU cache's rows come), uploaded into a device cache, attention run with `splits` (decode) ->
// out [T, n_heads hd] bits. Throws std::runtime_error with the CUDA error's text.
std::vector<uint16_t> flash_attention_on_device(const uint16_t* q, const uint16_t* k, const uint16_t* v, int T, int p0,
                                                int n_heads, int n_kv_heads, int head_dim, bool bf16, int splits);

}  // namespace ll::cuda
