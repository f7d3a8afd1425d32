// The KV cache: per layer, K and V as [n_ctx, row] in one of the formats of core/kv_format.h
// (f16 by default; bf16, q8_0, f32), K after RoPE.
//
// Position-major rows: a new token's K and V rows are encoded once, at their positions, and
// attention streams one head's slice of consecutive rows. The memory is calloc'ed, so the OS
// commits pages only as positions are written: a long n_ctx costs what is used.
#pragma once
#include <cstdint>
#include <memory>

#include "../core/kv_format.h"

namespace ll {

class KVCache {
public:
    // Rows of n_kv_heads * head_dim values; q8_0 needs head_dim to be a multiple of its blocks (32),
    // so that each head's codes and scales stand on their own.
    KVCache(int64_t n_layers, int64_t n_ctx, int64_t n_kv_heads, int64_t head_dim, KVType type);
    uint8_t* k(int64_t layer, int64_t pos) { return k_.get() + size_t(layer * n_ctx_ + pos) * row_bytes_; }
    uint8_t* v(int64_t layer, int64_t pos) { return v_.get() + size_t(layer * n_ctx_ + pos) * row_bytes_; }
    const uint8_t* k(int64_t layer, int64_t pos) const { return k_.get() + size_t(layer * n_ctx_ + pos) * row_bytes_; }
    const uint8_t* v(int64_t layer, int64_t pos) const { return v_.get() + size_t(layer * n_ctx_ + pos) * row_bytes_; }
    // Encodes T rows of fp32 K and V (kv_dim apart) at positions [pos, pos + T) of a layer.
    void store(int64_t layer, int64_t pos, int64_t T, const float* K, const float* V);
    KVType type() const { return type_; }
    int64_t n_ctx() const { return n_ctx_; }
    int64_t kv_dim() const { return kv_dim_; }
    int64_t row_bytes() const { return row_bytes_; }
    size_t bytes() const { return size_t(2) * n_layers_ * n_ctx_ * row_bytes_; }

private:
    struct Free { void operator()(uint8_t* p) const; };
    int64_t n_layers_, n_ctx_, kv_dim_;
    KVType type_;
    int64_t row_bytes_;
    std::unique_ptr<uint8_t[], Free> k_, v_;
};

}  // namespace ll
