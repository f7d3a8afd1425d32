// The FP8 (and INT8) GPU repack: every code written through fp8_tile_coord, the map the kernel reads by.
#include "fp8_repack.h"

#include <cmath>

#include "../core/errors.h"

namespace ll::cuda {

Fp8TileGeometry fp8_geometry(const std::string& name, int64_t N, int64_t K, int64_t block, bool int8) {
    const std::string where = "tensor '" + name + "': ";
    if (N <= 0 || K <= 0)
        throw FormatError(where + "FP8 weight shape [" + std::to_string(N) + ", " + std::to_string(K) + "] is empty");
    const bool steps = int8 && block == 16 && K % kFp8TileK == 0;  // integer codes: one block per k16 step
    if (block <= 0 || block >= K) block = K;  // one scale per row, as the CPU format reads it
    else if (block % kFp8TileK != 0 && !steps)
        throw FormatError(where + "FP8 scale block of " + std::to_string(block) +
                          " columns is not a multiple of 32 (the GPU kernels scale whole k32 tiles; integer codes "
                          "also take 16 when K is a multiple of 32)");
    Fp8TileGeometry g;
    g.n = N;
    g.k = K;
    g.n_tiles = (N + kFp8TileN - 1) / kFp8TileN;
    g.k_tiles = (K + kFp8TileK - 1) / kFp8TileK;
    g.block = block;
    g.blocks = (K + block - 1) / block;
    g.tiles_per_block = block == K ? g.k_tiles : steps ? 1 : block / kFp8TileK;
    return g;
}

Fp8GpuWeight fp8_repack(const std::string& name, const uint8_t* codes, int64_t N, int64_t K, const float* scales,
                        int64_t block, bool int8, const float* mins) {
    Fp8GpuWeight w;
    w.g = fp8_geometry(name, N, K, block, int8);
    w.int8 = int8;
    const Fp8TileGeometry& g = w.g;
    if (mins && (!int8 || !fp8_takes_mins(g)))
        throw FormatError("tensor '" + name + "': mins are taken only with integer codes in blocks of a multiple of " +
                          "32 columns, shorter than the row (not " + std::to_string(g.block) + " of " +
                          std::to_string(K) + ")");
    for (int64_t i = 0; i < N * K && !int8; ++i)
        if ((codes[i] & 0x7F) == 0x7F)
            throw FormatError("tensor '" + name + "': E4M3 code at [" + std::to_string(i / K) + ", " +
                              std::to_string(i % K) + "] is NaN");
    w.q.assign(size_t(g.n_tiles * g.k_tiles * kFp8TileWords), 0);
    for (int64_t nt = 0; nt < g.n_tiles; ++nt)
        for (int64_t kt = 0; kt < g.k_tiles; ++kt)
            for (int c = 0; c < kFp8Chunks; ++c)
                for (int lane = 0; lane < 32; ++lane) {
                    uint32_t* dst = w.q.data() + fp8_w_offset(g, nt, kt, c, lane);
                    for (int word = 0; word < 4; ++word)
                        for (int j = 0; j < 4; ++j) {
                            const FragCoord t = fp8_tile_coord(lane, c, word, j);
                            const int64_t n = nt * kFp8TileN + t.col, k = kt * kFp8TileK + t.row;
                            if (n < N && k < K) dst[word] |= uint32_t(codes[n * K + k]) << (8 * j);
                        }
                }
    // [N, blocks] -> the lanes' order (fp8_scale_offset, fp8_lane_scales), every value finite
    auto place = [&](const float* src, const char* what, std::vector<float>& dst) {
        dst.assign(size_t(g.n_tiles * g.blocks * kFp8TileN), 0.0f);
        for (int64_t nt = 0; nt < g.n_tiles; ++nt)
            for (int64_t b = 0; b < g.blocks; ++b)
                for (int lane = 0; lane < 4; ++lane)
                    for (int i = 0; i < 16; ++i) {
                        const int64_t n = nt * kFp8TileN + fp8_scale_col(lane, i);
                        if (n >= N) continue;
                        const float v = src[n * g.blocks + b];
                        if (!std::isfinite(v))
                            throw FormatError("tensor '" + name + "': FP8 " + what + " [" + std::to_string(n) + ", " +
                                              std::to_string(b) + "] = " + std::to_string(v) + " is not finite");
                        dst[size_t(fp8_scale_offset(g, nt, b) + fp8_lane_scales(lane) + i)] = v;
                    }
    };
    place(scales, "scale", w.scales);
    if (mins) place(mins, "min", w.mins);
    return w;
}

}  // namespace ll::cuda
