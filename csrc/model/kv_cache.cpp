#include "kv_cache.h"

#include <cstdlib>
#include <new>

namespace ll {

namespace {
float* alloc_floats(size_t n) {
    // calloc: the OS hands out zero pages lazily, so only the positions actually used cost RAM.
    void* p = std::calloc(n, sizeof(float));
    if (!p) throw std::bad_alloc();
    return static_cast<float*>(p);
}
}  // namespace

void KVCache::Free::operator()(float* p) const { std::free(p); }

KVCache::KVCache(int64_t n_layers, int64_t n_ctx, int64_t kv_dim)
    : n_layers_(n_layers), n_ctx_(n_ctx), kv_dim_(kv_dim),
      k_(alloc_floats(size_t(n_layers) * n_ctx * kv_dim)),
      v_(alloc_floats(size_t(n_layers) * n_ctx * kv_dim)) {}

}  // namespace ll
