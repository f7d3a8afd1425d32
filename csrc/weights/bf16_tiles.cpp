#include "bf16_tiles.h"

#include <algorithm>

#include "../core/dtype.h"
#include "../cpu/thread_pool.h"

namespace ll {

PackedBF16 pack_bf16(const uint16_t* src, int64_t ld, int64_t N, int64_t K, const std::vector<int64_t>& row_of,
                     cpu::ThreadPool* pool) {
    PackedBF16 p;
    p.g = BF16Geometry::make(N, K);
    p.data = AlignedBuffer(size_t(p.g.n_tiles * p.g.tile_bytes()));
    const BF16Geometry& g = p.g;
    auto work = [&](int chunk, int n_chunks) {
        int64_t t0, t1;
        cpu::ThreadPool::split(g.n_tiles, chunk, n_chunks, 1, t0, t1);
        for (int64_t t = t0; t < t1; ++t) {
            uint16_t* tile = reinterpret_cast<uint16_t*>(p.data.get() + t * g.tile_bytes());
            for (int r = 0; r < 16 && t * 16 + r < N; ++r) {
                const int64_t n = t * 16 + r;
                const uint16_t* row = src + (row_of.empty() ? n : row_of[n]) * ld;
                for (int64_t k = 0; k < K; ++k) tile[(k / 2) * 32 + 2 * r + k % 2] = row[k];
            }
        }
    };
    if (pool && pool->size() > 1) pool->run(pool->size(), work);
    else work(0, 1);
    return p;
}

void PackedBF16::dequantize_row(int64_t n, float* out) const {
    const uint16_t* tile = reinterpret_cast<const uint16_t*>(data.get() + (n / 16) * g.tile_bytes());
    const int64_t r = n % 16;
    for (int64_t k = 0; k < g.K; ++k) out[k] = bf16_to_float(tile[(k / 2) * 32 + 2 * r + k % 2]);
}

}  // namespace ll
