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
    : n_layers_(n_layers), n_ctx_(n_ctx), kv_dim_(n_kv_heads * head_dim), type_(type),
      row_bytes_(kv_row_bytes(type, kv_dim_)) {
    if (type == KVType::Q8_0 && head_dim % kKVQBlock != 0)
        throw std::invalid_argument("a q8_0 KV cache needs a head_dim that is a multiple of 32 (this model's: " +
                                    std::to_string(head_dim) + "); use f16 or bf16");
    k_.reset(alloc_zeroed(size_t(n_layers) * n_ctx * row_bytes_));
    v_.reset(alloc_zeroed(size_t(n_layers) * n_ctx * row_bytes_));
}

void KVCache::store(int64_t layer, int64_t pos, int64_t T, const float* K, const float* V) {
    for (int64_t t = 0; t < T; ++t) {
        encode_kv_row(type_, K + t * kv_dim_, kv_dim_, k(layer, pos + t));
        encode_kv_row(type_, V + t * kv_dim_, kv_dim_, v(layer, pos + t));
    }
}

}  // namespace ll
