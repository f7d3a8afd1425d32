// The KV cache: per layer, K and V as [n_ctx, n_kv_heads * head_dim] fp32.
//
// Position-major rows are exactly the rows the K/V projections produce, so the projections write
// straight into the cache; attention reads one head's keys at a constant stride.
#pragma once
#include <cstdint>
#include <memory>

namespace ll {

class KVCache {
public:
    KVCache(int64_t n_layers, int64_t n_ctx, int64_t kv_dim);
    float* k(int64_t layer, int64_t pos) { return k_.get() + (layer * n_ctx_ + pos) * kv_dim_; }
    float* v(int64_t layer, int64_t pos) { return v_.get() + (layer * n_ctx_ + pos) * kv_dim_; }
    int64_t n_ctx() const { return n_ctx_; }
    int64_t row_stride() const { return kv_dim_; }
    size_t bytes() const { return size_t(2) * n_layers_ * n_ctx_ * kv_dim_ * sizeof(float); }

private:
    struct Free { void operator()(float* p) const; };
    int64_t n_layers_, n_ctx_, kv_dim_;
    std::unique_ptr<float[], Free> k_, v_;
};

}  // namespace ll
