#include "attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>

namespace ll {

void Attention::run(const cpu::Kernels& k, cpu::ThreadPool& pool, const KVCache& cache, int64_t layer,
                    const AttentionShape& s, const float* q, int64_t T, int64_t p0, float* out, int64_t splits) {
    const int64_t hd = s.head_dim, g = s.n_heads / s.n_kv_heads, qdim = s.n_heads * hd;
    const int64_t qb = std::max<int64_t>(1, cpu::kAttnMaxRows / g);  // queries per block
    const int64_t blocks = (T + qb - 1) / qb, n_pos = p0 + T;
    const int64_t units = s.n_kv_heads * blocks;
    const int nt = pool.size();
    if (splits <= 0) {
        // Enough items for every thread twice over, each range at least a few tiles long.
        const int64_t want = (2 * nt + units - 1) / units;
        splits = std::clamp<int64_t>(want, 1, std::max<int64_t>(1, n_pos / (4 * cpu::kAttnTile)));
    }
    splits = std::min(splits, n_pos);
    const int64_t R_max = qb * g;
    const int64_t per_thread = 2 * R_max * hd + 2 * R_max + cpu::attn_scratch_floats(hd);
    if (scratch_.size() < size_t(nt * per_thread)) scratch_.resize(size_t(nt * per_thread));
    const int64_t part_stride = R_max * (hd + 2);
    if (splits > 1 && partial_.size() < size_t(units * splits * part_stride))
        partial_.resize(size_t(units * splits * part_stride));
    const float scale = 1.0f / std::sqrt(float(hd));
    const cpu::AttnFn kernel = k.flash_attention[int(cache.type())];
    const int64_t items = units * splits;

    // Items are claimed from a shared counter: causal blocks differ in length.
    std::atomic<int64_t> next{0};
    pool.run(nt, [&](int chunk, int) {
        float* Q = scratch_.data() + chunk * per_thread;
        float* O = Q + R_max * hd;
        float* m = O + R_max * hd;
        float* l = m + R_max;
        float* ks = l + R_max;
        for (int64_t it = next.fetch_add(1); it < items; it = next.fetch_add(1)) {
            const int64_t split = it % splits, unit = it / splits;
            const int64_t kvh = unit % s.n_kv_heads, b = unit / s.n_kv_heads;
            const int64_t t0 = b * qb, M = std::min(qb, T - t0), R = M * g;
            // Rows in query-major order (row = t * g + head within the group), pre-scaled.
            for (int64_t t = 0; t < M; ++t)
                for (int64_t h = 0; h < g; ++h) {
                    const float* src = q + (t0 + t) * qdim + (kvh * g + h) * hd;
                    float* dst = Q + (t * g + h) * hd;
                    for (int64_t i = 0; i < hd; ++i) dst[i] = src[i] * scale;
                }
            cpu::AttnArgs a{};
            a.q = Q;
            a.R = R;
            a.hd = hd;
            a.g = g;
            a.p0 = p0 + t0;
            a.k = cache.k(layer, kvh);
            a.v = cache.v(layer, kvh);
            a.j0 = n_pos * split / splits;
            a.j1 = n_pos * (split + 1) / splits;
            a.scratch = ks;
            if (splits == 1) {
                a.o = O, a.m = m, a.l = l;
                kernel(a);
                for (int64_t r = 0; r < R; ++r) {
                    const float inv = 1.0f / l[r];   // every row sees position 0
                    float* dst = out + (t0 + r / g) * qdim + (kvh * g + r % g) * hd;
                    for (int64_t i = 0; i < hd; ++i) dst[i] = O[r * hd + i] * inv;
                }
            } else {
                float* p = partial_.data() + it * part_stride;
                a.o = p, a.m = p + R_max * hd, a.l = a.m + R_max;
                kernel(a);
            }
        }
    });
    if (splits == 1) return;
    // Merge each unit's ranges: out = sum_s e^(m_s - M) O_s / sum_s e^(m_s - M) l_s.
    for (int64_t unit = 0; unit < units; ++unit) {
        const int64_t kvh = unit % s.n_kv_heads, b = unit / s.n_kv_heads;
        const int64_t t0 = b * qb, M = std::min(qb, T - t0), R = M * g;
        for (int64_t r = 0; r < R; ++r) {
            float mx = -INFINITY;
            for (int64_t sp = 0; sp < splits; ++sp)
                mx = std::max(mx, partial_[(unit * splits + sp) * part_stride + R_max * hd + r]);
            float* dst = out + (t0 + r / g) * qdim + (kvh * g + r % g) * hd;
            std::fill(dst, dst + hd, 0.0f);
            float denom = 0.0f;
            for (int64_t sp = 0; sp < splits; ++sp) {
                const float* p = partial_.data() + (unit * splits + sp) * part_stride;
                const float ms = p[R_max * hd + r], ls = p[R_max * hd + R_max + r];
                if (ls == 0.0f) continue;   // a range this row does not reach
                const float w = std::exp(ms - mx);
                denom += w * ls;
                for (int64_t i = 0; i < hd; ++i) dst[i] += w * p[r * hd + i];
            }
            const float inv = 1.0f / denom;
            for (int64_t i = 0; i < hd; ++i) dst[i] *= inv;
        }
    }
}

}  // namespace ll
