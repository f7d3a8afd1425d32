// The INT4 GPU repack: every nibble written through int4_tile_coord, the map the kernel reads by.
#include "int4_repack.h"

#include <cmath>

#include "../core/errors.h"

namespace ll::cuda {

Int4Geometry int4_geometry(const std::string& name, int64_t N, int64_t K, int64_t group) {
    const std::string where = "tensor '" + name + "': ";
    if (N <= 0 || K <= 0)
        throw FormatError(where + "INT4 weight shape [" + std::to_string(N) + ", " + std::to_string(K) +
                          "] is empty");
    if (group <= 0 || (group < K && group % kInt4TileK != 0))
        throw FormatError(where + "INT4 group size " + std::to_string(group) +
                          " is neither a multiple of 16 nor >= K = " + std::to_string(K) +
                          " (the GPU layout gives each 16-column tile one scale)");
    Int4Geometry g;
    g.n = N;
    g.k = K;
    g.n_tiles = (N + kInt4TileN - 1) / kInt4TileN;
    g.k_tiles = (K + kInt4TileK - 1) / kInt4TileK;
    g.groups = group >= K ? 1 : (K + group - 1) / group;
    g.tiles_per_group = group >= K ? g.k_tiles : group / kInt4TileK;
    return g;
}

namespace {

// The 16-bit scales in slab-major lane order: value [nt][g][8 * (lane / 4) + s] is column
// nt * 64 + int4_scale_col(lane, s) of group g; rows past N get 0.
std::vector<uint16_t> permute_scales(const std::string& name, const char* what, const float* src,
                                     const Int4Geometry& g, bool bf16) {
    std::vector<uint16_t> out(size_t(g.n_tiles * g.groups * 64), 0);
    for (int64_t nt = 0; nt < g.n_tiles; ++nt)
        for (int64_t gi = 0; gi < g.groups; ++gi)
            for (int lane = 0; lane < 32; lane += 4)
                for (int s = 0; s < 8; ++s) {
                    const int64_t n = nt * kInt4TileN + int4_scale_col(lane, s);
                    if (n >= g.n) continue;
                    const float v = src[n * g.groups + gi];
                    const uint16_t h = host_round_to_half(double(v), bf16);
                    if (!std::isfinite(v) || (h & 0x7FFF) >= (bf16 ? 0x7F80 : 0x7C00))
                        throw FormatError("tensor '" + name + "': " + what + " [" + std::to_string(n) + ", " +
                                          std::to_string(gi) + "] = " + std::to_string(v) + " is not finite as " +
                                          (bf16 ? "bfloat16" : "float16"));
                    out[size_t(((nt * g.groups + gi) * 8 + lane / 4) * 8 + s)] = h;
                }
    return out;
}

}  // namespace

Int4GpuWeight int4_repack(const std::string& name, const uint8_t* codes, int64_t N, int64_t K, const float* scales,
                          const float* mins, int64_t group, int zero, bool bf16) {
    Int4GpuWeight w;
    w.g = int4_geometry(name, N, K, group);
    const Int4Geometry& g = w.g;
    if (zero < 0 || zero > 15)
        throw FormatError("tensor '" + name + "': INT4 zero point " + std::to_string(zero) + " is not in 0..15");
    if (mins && zero != 0)
        throw FormatError("tensor '" + name + "': an INT4 weight has either mins or a zero point, not both (zero = " +
                          std::to_string(zero) + ")");
    w.bf16 = bf16;
    w.has_min = mins != nullptr;
    w.zero = zero;
    for (int64_t i = 0; i < N * K; ++i)
        if (codes[i] > 15)
            throw FormatError("tensor '" + name + "': code " + std::to_string(codes[i]) + " at [" +
                              std::to_string(i / K) + ", " + std::to_string(i % K) + "] is not a 4-bit value");

    // Padding columns decode to 0 for zero-point formats and to the (finite) min otherwise.
    const uint32_t pad = uint32_t(zero);
    w.q.assign(size_t(g.n_tiles * g.k_tiles * kInt4TileWords), 0);
    for (int64_t nt = 0; nt < g.n_tiles; ++nt)
        for (int64_t kt = 0; kt < g.k_tiles; ++kt)
            for (int lane = 0; lane < 32; ++lane) {
                uint32_t* dst = w.q.data() + int4_q_offset(g, nt, kt, lane);
                for (int word = 0; word < 4; ++word)
                    for (int j = 0; j < 8; ++j) {
                        const FragCoord c = int4_tile_coord(lane, word, j);
                        const int64_t n = nt * kInt4TileN + c.col, k = kt * kInt4TileK + c.row;
                        const uint32_t u = n < N && k < K ? codes[n * K + k] : pad;
                        dst[word] |= u << (4 * j);
                    }
            }
    w.scales = permute_scales(name, "scale", scales, g, bf16);
    if (mins) w.mins = permute_scales(name, "min", mins, g, bf16);
    return w;
}

}  // namespace ll::cuda
