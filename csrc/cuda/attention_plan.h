// The index math of the CUDA flash attention (flash_attn.cu), shared with the host tests: which
// query rows a thread block takes, which KV tiles it must visit under the causal mask, which of
// those need the mask at all, how decode splits a KV head's positions (flash-decoding), where a
// query head finds its KV head, and the shared-memory swizzle of K/V tiles.
//
// Positions: the T new query rows are positions [p0, p0 + T); the device KV cache already holds
// K and V of positions [0, p0 + T). Query row t sees positions [0, p0 + t].
#pragma once
#include <cstdint>
#include <vector>

#include "device_math.h"

namespace ll::cuda {

constexpr int kFaWarps = 4;                    // warps per prefill thread block
constexpr int kFaQRows = 16 * kFaWarps;        // query rows per prefill block: one m16 tile per warp
constexpr int kFaKvTile = 64;                  // positions per K/V tile in shared memory

LL_HOST_DEVICE int fa_min(int a, int b) { return a < b ? a : b; }

// GQA: the query heads of one KV head are consecutive (Llama's repeat_kv).
LL_HOST_DEVICE int fa_kv_head(int head, int n_heads, int n_kv_heads) { return head / (n_heads / n_kv_heads); }

LL_HOST_DEVICE bool fa_visible(int t, int pos, int p0) { return pos <= p0 + t; }

// KV tiles a prefill block of query rows [q0, q0 + kFaQRows) visits: those holding a position its
// last valid row sees.
LL_HOST_DEVICE int fa_kv_tiles(int q0, int T, int p0) {
    const int last = fa_min(q0 + kFaQRows, T) - 1;
    return (p0 + last + 1 + kFaKvTile - 1) / kFaKvTile;
}

// Whether tile j (positions [j kFaKvTile, (j + 1) kFaKvTile)) is visible whole to every row of
// the block, so the kernel may skip the mask there: its last position is seen by the first row.
// Every other visited tile is masked per element with fa_visible (which also cuts positions past
// p0 + T - 1, those of no row).
LL_HOST_DEVICE bool fa_tile_unmasked(int j, int q0, int p0) { return (j + 1) * kFaKvTile - 1 <= p0 + q0; }

// ---- a query row's online softmax across tiles (FA2): the kernel keeps m (largest score so
// far) and l, o unnormalized; after each tile, with the tile's largest visible score, the row's
// new max, the factor its old l and o take, and each visible score's weight. A row that has
// seen no visible position yet has m = -inf and l = o = 0: its factor is 1 and its weights 0,
// never exp(-inf + inf) = NaN.
LL_HOST_DEVICE float fa_neg_inf() { return bits_to_float(0xFF800000u); }
LL_HOST_DEVICE float fa_new_max(float m, float tile_max) { return m > tile_max ? m : tile_max; }
LL_HOST_DEVICE float fa_rescale(float m_old, float m_new) {
    return m_new == fa_neg_inf() ? 1.0f : softmax_exp(m_old - m_new);
}
LL_HOST_DEVICE float fa_weight(float s, float m_new) { return m_new == fa_neg_inf() ? 0.0f : softmax_exp(s - m_new); }

// ---- decode (one query row per head): a KV head's n_pos positions in n_splits ranges of whole
// tiles, one thread block each, as even as whole tiles allow (counts differ by at most one);
// their partials merge with softmax_merge. With more splits than tiles some ranges are empty
// (begin == end): their partial is the merge identity.
// In a decode block the 4 warps share each K/V tile: warp w takes its kFaWarpCols positions
// from j0 + w kFaWarpCols, keeps its own partial, and the block merges them in warp order.
constexpr int kFaWarpCols = kFaKvTile / kFaWarps;

struct KvRange {
    int begin;
    int end;
};

LL_HOST_DEVICE KvRange fa_split(int s, int n_splits, int n_pos) {
    const int tiles = (n_pos + kFaKvTile - 1) / kFaKvTile;
    const int t0 = int(int64_t(s) * tiles / n_splits), t1 = int(int64_t(s + 1) * tiles / n_splits);
    return KvRange{fa_min(n_pos, t0 * kFaKvTile), fa_min(n_pos, t1 * kFaKvTile)};
}

// Splits for a decode step: enough blocks to give every SM two (n_kv_heads blocks alone leave
// most of a GPU idle), but never a split shorter than 4 tiles (each block's fixed cost and the
// merge would dominate) and never more than kFaMaxSplits (the merge kernel folds a head's
// partials one after another).
constexpr int kFaMaxSplits = 64;
LL_HOST_DEVICE int fa_num_splits(int n_pos, int n_kv_heads, int n_sms) {
    const int tiles = (n_pos + kFaKvTile - 1) / kFaKvTile;
    int s = (2 * n_sms + n_kv_heads - 1) / n_kv_heads;
    s = fa_min(s, tiles / 4);
    s = fa_min(s, kFaMaxSplits);
    return s < 1 ? 1 : s;
}

// The splits a call of T query rows over n_pos positions takes: 1 for prefill (T > 1); for decode,
// `splits` ranges per KV head where splits > 0, else fa_num_splits's.
LL_HOST_DEVICE int fa_call_splits(int T, int n_pos, int n_kv_heads, int splits, int n_sms) {
    return T > 1 ? 1 : splits > 0 ? splits : fa_num_splits(n_pos, n_kv_heads, n_sms);
}

// The device KV cache's layout [kv head][n_ctx][hd] from rows [position][kv head][hd] of n_pos
// positions (the CPU's, and the kernel bindings' arguments); positions n_pos.. hold `fill`. Host
// code: how the tests' binding and the emulation build a cache, as the engine keeps one.
inline std::vector<uint16_t> fa_device_cache(const uint16_t* rows, int n_pos, int n_kv_heads, int hd, int64_t n_ctx,
                                             uint16_t fill) {
    std::vector<uint16_t> cache(size_t(n_kv_heads) * size_t(n_ctx) * size_t(hd), fill);
    for (int h = 0; h < n_kv_heads; ++h)
        for (int pos = 0; pos < n_pos; ++pos)
            for (int d = 0; d < hd; ++d)
                cache[(size_t(h) * size_t(n_ctx) + size_t(pos)) * size_t(hd) + size_t(d)] =
                    rows[(size_t(pos) * size_t(n_kv_heads) + size_t(h)) * size_t(hd) + size_t(d)];
    return cache;
}

// ---- shared memory: a K or V tile is kFaKvTile rows of head_dim 16-bit values. ldmatrix reads 8
// rows' 16-byte chunks at once; rows 128 or 256 bytes long would put all 8 in the same banks, so
// chunk c of row r is stored at chunk c ^ (r % 8) (a permutation of each row's chunks when the row
// has a multiple of 8 chunks, i.e. head_dim a multiple of 64).
LL_HOST_DEVICE int fa_swizzle(int row, int chunk) { return chunk ^ (row & 7); }
// Offset in 16-bit elements of element (row, col) of a tile with `cols` columns.
LL_HOST_DEVICE int fa_smem_offset(int row, int col, int cols) {
    return row * cols + 8 * fa_swizzle(row, col >> 3) + (col & 7);
}

}  // namespace ll::cuda
