#include "fp8_tiles.h"

#include <algorithm>
#include <cstring>

#include "../core/dtype.h"
#include "../cpu/thread_pool.h"

namespace ll {

FP8Geometry FP8Geometry::make(int64_t N, int64_t K, int64_t block) {
    FP8Geometry g;
    g.N = N;
    g.K = K;
    g.block = block > 0 && block < K ? block : K;
    g.n_blocks = (K + g.block - 1) / g.block;
    g.n_tiles = (N + 15) / 16;
    g.tile_bytes = (g.n_blocks - 1) * g.unit_bytes(g.block) + g.unit_bytes(K - (g.n_blocks - 1) * g.block);
    g.tile_bytes = (g.tile_bytes + 63) / 64 * 64;
    return g;
}

PackedFP8 pack_fp8(const uint8_t* codes, const float* scales, int64_t N, int64_t K, int64_t block,
                   const std::vector<int64_t>& row_of, cpu::ThreadPool* pool) {
    PackedFP8 p;
    p.g = FP8Geometry::make(N, K, block);
    p.data = AlignedBuffer(size_t(p.g.n_tiles * p.g.tile_bytes));
    const FP8Geometry& g = p.g;
    auto work = [&](int chunk, int n_chunks) {
        int64_t t0, t1;
        cpu::ThreadPool::split(g.n_tiles, chunk, n_chunks, 1, t0, t1);
        for (int64_t t = t0; t < t1; ++t) {
            uint8_t* u = p.data.get() + t * g.tile_bytes;
            for (int64_t b = 0; b < g.n_blocks; ++b) {
                const int64_t k0 = b * g.block, cols = std::min(g.block, K - k0);
                for (int r = 0; r < 16 && t * 16 + r < N; ++r) {
                    const int64_t src = row_of.empty() ? t * 16 + r : row_of[t * 16 + r];
                    std::memcpy(u + 4 * r, scales + src * g.n_blocks + b, 4);
                    for (int64_t k = 0; k < cols; ++k) u[64 + 16 * k + r] = codes[src * K + k0 + k];
                }
                u += g.unit_bytes(cols);
            }
        }
    };
    if (pool && pool->size() > 1) pool->run(pool->size(), work);
    else work(0, 1);
    return p;
}

void PackedFP8::dequantize_row(int64_t n, float* out) const {
    const uint8_t* u = data.get() + (n / 16) * g.tile_bytes;
    const int r = int(n % 16);
    for (int64_t b = 0; b < g.n_blocks; ++b) {
        const int64_t k0 = b * g.block, cols = std::min(g.block, g.K - k0);
        float s;
        std::memcpy(&s, u + 4 * r, 4);
        for (int64_t k = 0; k < cols; ++k) out[k0 + k] = s * fp8_e4m3_to_float(u[64 + 16 * k + r]);
        u += g.unit_bytes(cols);
    }
}

}  // namespace ll
