#include "flash_attn_schedule.h"

#include <cmath>
#include <stdexcept>
#include <vector>

#include "attention_plan.h"

namespace ll::cuda {
namespace {

// One query row's running state: m, l and the unnormalized output o.
struct RowState {
    float m;
    float l;
    std::vector<float> o;
};

// The kernels' per-tile step for one row: scores of the tile's positions [j0, j1) (masked ones
// -inf), the new max, the rescale of l and o, then the weighted V rows. `masked` is false where
// fa_tile_unmasked lets the kernel skip the mask.
// Positions at or past n_pos read as zeros, as the kernels zero-fill those rows of a tile.
void tile_step(RowState& r, const float* qrow, const float* k, const float* v, int ld, int hd, float scale, int j0,
               int j1, int n_pos, int t, int p0, bool masked) {
    std::vector<float> sc(size_t(j1 - j0));
    float tile_max = fa_neg_inf();
    for (int p = j0; p < j1; ++p) {
        float s = 0.0f;
        if (p < n_pos)
            for (int d = 0; d < hd; ++d) s += qrow[d] * k[int64_t(p) * ld + d];
        s *= scale;
        if (masked && !fa_visible(t, p, p0)) s = fa_neg_inf();
        sc[size_t(p - j0)] = s;
        tile_max = tile_max > s ? tile_max : s;
    }
    const float m_new = fa_new_max(r.m, tile_max);
    const float f = fa_rescale(r.m, m_new);
    r.l *= f;
    for (float& x : r.o) x *= f;
    for (int p = j0; p < j1; ++p) {
        const float w = fa_weight(sc[size_t(p - j0)], m_new);
        r.l += w;
        if (p < n_pos)
            for (int d = 0; d < hd; ++d) r.o[size_t(d)] += w * v[int64_t(p) * ld + d];
    }
    r.m = m_new;
}

}  // namespace

void flash_attention_schedule(const float* q, const float* k, const float* v, const FaHostShape& s, int splits,
                              int n_sms, float* out) {
    if (s.T < 1 || s.p0 < 0 || s.n_kv_heads < 1 || s.n_heads % s.n_kv_heads != 0 || s.head_dim < 1)
        throw std::invalid_argument("flash_attention_schedule: bad shape");
    const int hd = s.head_dim, ldq = s.n_heads * hd, ldk = s.n_kv_heads * hd, n_pos = s.p0 + s.T;
    const float scale = 1.0f / std::sqrt(float(hd));
    auto fresh = [&]() { return RowState{fa_neg_inf(), 0.0f, std::vector<float>(size_t(hd), 0.0f)}; };

    if (s.T == 1) {  // decode: blocks (split, KV head); each tile's positions split over the warps
        // (split bounds are whole tiles, so only the last tile reaches past n_pos, into zero rows
        // that the mask cuts)
        const int n_splits = splits > 0 ? splits : fa_num_splits(n_pos, s.n_kv_heads, n_sms);
        for (int h = 0; h < s.n_heads; ++h) {
            const int kvh = fa_kv_head(h, s.n_heads, s.n_kv_heads);
            const float* kh = k + int64_t(kvh) * hd;
            const float* vh = v + int64_t(kvh) * hd;
            SoftmaxPartial total{fa_neg_inf(), 0.0f};
            std::vector<float> acc(size_t(hd), 0.0f);
            auto merge = [&](SoftmaxPartial& into, std::vector<float>& o_into, const RowState& r) {
                float wa, wb;
                into = softmax_merge(into, SoftmaxPartial{r.m, r.l}, &wa, &wb);
                for (int d = 0; d < hd; ++d) o_into[size_t(d)] = wa * o_into[size_t(d)] + wb * r.o[size_t(d)];
            };
            for (int sp = 0; sp < n_splits; ++sp) {
                const KvRange range = fa_split(sp, n_splits, n_pos);
                RowState block = fresh();  // the block's warps merged in warp order
                for (int w = 0; w < kFaWarps; ++w) {
                    RowState r = fresh();
                    for (int j0 = range.begin; j0 < range.end; j0 += kFaKvTile) {
                        const int c0 = j0 + w * kFaWarpCols;
                        tile_step(r, q + int64_t(h) * hd, kh, vh, ldk, hd, scale, c0, c0 + kFaWarpCols, n_pos, 0, s.p0,
                                  true);
                    }
                    SoftmaxPartial bp{block.m, block.l};
                    merge(bp, block.o, r);
                    block.m = bp.m;
                    block.l = bp.l;
                }
                merge(total, acc, block);
            }
            for (int d = 0; d < hd; ++d) out[int64_t(h) * hd + d] = softmax_finish(acc[size_t(d)], total);
        }
        return;
    }

    // prefill: blocks (query rows [q0, q0 + kFaQRows), head), each over its KV tiles in order
    for (int h = 0; h < s.n_heads; ++h) {
        const int kvh = fa_kv_head(h, s.n_heads, s.n_kv_heads);
        for (int q0 = 0; q0 < s.T; q0 += kFaQRows) {
            const int tiles = fa_kv_tiles(q0, s.T, s.p0);
            for (int t = q0; t < fa_min(q0 + kFaQRows, s.T); ++t) {
                RowState r = fresh();
                for (int j = 0; j < tiles; ++j) {
                    // The last tile may run past the cached positions (zero rows in the kernel):
                    // only the mask keeps them out.
                    const int j0 = j * kFaKvTile;
                    tile_step(r, q + int64_t(t) * ldq + int64_t(h) * hd, k + int64_t(kvh) * hd, v + int64_t(kvh) * hd,
                              ldk, hd, scale, j0, j0 + kFaKvTile, n_pos, t, s.p0, !fa_tile_unmasked(j, q0, s.p0));
                }
                for (int d = 0; d < hd; ++d)
                    out[int64_t(t) * ldq + int64_t(h) * hd + d] = softmax_finish(r.o[size_t(d)], SoftmaxPartial{r.m, r.l});
            }
        }
    }
}

}  // namespace ll::cuda
