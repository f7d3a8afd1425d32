#include "kv_cache.h"

#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

namespace ll {

namespace {
uint8_t* alloc_zeroed(size_t n) {
    // calloc: the OS hands out zero pages lazily, so only the positions actually used cost RAM.
    void* p = std::calloc(n, 1);
    if (!p) throw std::bad_alloc();
    return static_cast<uint8_t*>(p);
}
}  // namespace

void KVCache::Free::operator()(uint8_t* p) const { std::free(p); }

KVCache::KVCache(int64_t n_layers, int64_t n_ctx, int64_t n_kv_heads, int64_t head_dim, KVType type)
    : n_layers_(n_layers), n_ctx_(n_ctx), n_blocks_((n_ctx + kKVBlock - 1) / kKVBlock), n_kv_heads_(n_kv_heads),
      head_dim_(head_dim), type_(type), head_row_bytes_(kv_row_bytes(type, head_dim)) {
    if (head_dim <= 0 || head_dim > 256)
        throw std::invalid_argument("the KV cache supports head_dim 1 to 256 (this model's: " +
                                    std::to_string(head_dim) + ")");
    if (type == KVType::Q8_0 && head_dim % kKVQBlock != 0)
        throw std::invalid_argument("a q8_0 KV cache needs a head_dim that is a multiple of 32 (this model's: " +
                                    std::to_string(head_dim) + "); use f16 or bf16");
    const size_t heads = size_t(n_layers * n_kv_heads) * head_row_bytes_;
    k_.reset(alloc_zeroed(heads * n_blocks_ * kKVBlock));
    v_.reset(alloc_zeroed(heads * n_ctx));
}

void KVCache::store(int64_t layer, int64_t pos, int64_t T, const float* K, const float* V) {
    uint8_t head_row[1024];  // one head's encoded K row (head_dim <= 256 values of at most 4 bytes)
    const int64_t kv_dim = n_kv_heads_ * head_dim_;
    for (int64_t t = 0; t < T; ++t) {
        const int64_t p = pos + t;
        for (int64_t h = 0; h < n_kv_heads_; ++h) {
            uint8_t* blk = k_.get() + k_offset(layer, h) + size_t(p / kKVBlock) * kKVBlock * head_row_bytes_;
            encode_kv_row(type_, K + t * kv_dim + h * head_dim_, head_dim_, head_row);
            scatter_k_lane(type_, head_row, head_dim_, p % kKVBlock, blk);
            encode_kv_row(type_, V + t * kv_dim + h * head_dim_, head_dim_,
                          v_.get() + v_offset(layer, h) + size_t(p) * head_row_bytes_);
        }
    }
}

}  // namespace ll
