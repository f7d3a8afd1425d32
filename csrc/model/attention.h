// Causal self-attention over the KV cache: the threaded driver around the flash-attention kernel.
//
// Work items are (KV head, block of queries, range of cached positions): the g query heads that
// share a KV head go through one kernel call together, so every K/V byte is read once per block.
// When there are too few items to keep the threads busy (decode: one query), each KV head's
// positions are split into ranges whose partial results are merged by their log-sum-exp
// (flash-decoding), so every core streams part of one long sequence.
#pragma once
#include <cstdint>
#include <vector>

#include "../cpu/kernels.h"
#include "../cpu/thread_pool.h"
#include "kv_cache.h"

namespace ll {

struct AttentionShape {
    int64_t n_heads, n_kv_heads, head_dim;
};

class Attention {
public:
    // q: [T, n_heads * head_dim] (after RoPE), for positions [p0, p0 + T), whose K and V rows the
    // cache already holds. out: [T, n_heads * head_dim]. splits > 0 forces that many ranges per
    // KV head (tests); 0 chooses.
    void run(const cpu::Kernels& k, cpu::ThreadPool& pool, const KVCache& cache, int64_t layer,
             const AttentionShape& s, const float* q, int64_t T, int64_t p0, float* out, int64_t splits = 0);
    size_t bytes() const { return sizeof(float) * (scratch_.size() + partial_.size()); }

private:
    std::vector<float> scratch_;   // per thread: Q rows, O rows, m, l, kernel scratch
    std::vector<float> partial_;   // split ranges' O, m, l, merged after the parallel pass
};

}  // namespace ll
