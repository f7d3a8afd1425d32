// The KV cache: per layer and KV head, V as rows of head_dim values, one per position, and K as
// transposed blocks of 16 positions (core/kv_format.h has both layouts), in one of its formats
// (f16 by default; bf16, q8_0, f32), K after RoPE.
//
// A new token's K and V are encoded once, at their position. Each head's positions are
// contiguous, so attention reads one head's K and V as two sequential streams, which the
// hardware prefetchers keep up with. The memory is calloc'ed, so the OS commits pages only as
// positions are written: a long n_ctx costs what is used.
#pragma once
#include <cstdint>
#include <memory>

#include "../core/kv_format.h"

namespace ll {

class KVCache {
public:
    // q8_0 needs head_dim to be a multiple of its blocks (32), so that each head's codes and
    // scales stand on their own.
    KVCache(int64_t n_layers, int64_t n_ctx, int64_t n_kv_heads, int64_t head_dim, KVType type);
    // A head's K blocks (block b, positions [16 b, 16 b + 16), at b * kKVBlock * head_row_bytes()).
    const uint8_t* k(int64_t layer, int64_t head) const { return k_.get() + k_offset(layer, head); }
    // A head's V rows (position p at p * head_row_bytes()).
    const uint8_t* v(int64_t layer, int64_t head) const { return v_.get() + v_offset(layer, head); }
    // Encodes T rows of fp32 K and V (n_kv_heads * head_dim values each) at positions [pos, pos + T) of a layer.
    void store(int64_t layer, int64_t pos, int64_t T, const float* K, const float* V);
    KVType type() const { return type_; }
    int64_t n_ctx() const { return n_ctx_; }
    int64_t head_row_bytes() const { return head_row_bytes_; }   // one position of one head
    size_t bytes() const { return size_t(n_layers_ * n_kv_heads_) * (n_ctx_ + n_blocks_ * kKVBlock) * head_row_bytes_; }

private:
    struct Free { void operator()(uint8_t* p) const; };
    // Where a head's K blocks and V rows start: each head holds n_blocks_ * kKVBlock K rows' bytes
    // and n_ctx_ V rows.
    size_t region(int64_t layer, int64_t head) const { return size_t(layer * n_kv_heads_ + head) * head_row_bytes_; }
    size_t k_offset(int64_t layer, int64_t head) const { return region(layer, head) * n_blocks_ * kKVBlock; }
    size_t v_offset(int64_t layer, int64_t head) const { return region(layer, head) * n_ctx_; }
    int64_t n_layers_, n_ctx_, n_blocks_, n_kv_heads_, head_dim_;
    KVType type_;
    int64_t head_row_bytes_;
    std::unique_ptr<uint8_t[], Free> k_, v_;
};

}  // namespace ll
