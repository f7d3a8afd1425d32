// FP8 E4M3 weights with fp32 scales per row and block of columns, repacked into 16-row tiles.
//
// w[n, k] = scale[n, k / block] * e4m3(code[n, k])  (block = K: one scale per row), in fp32, as
// the sources (Meta's FP8 release, compressed-tensors) dequantize. A tile is a sequence of units,
// one per block of columns: the 16 rows' scales (fp32, 64 bytes), then for each column of the
// block the 16 rows' codes (16 bytes), so that one 16-byte load widens to one register of rows.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/aligned_buffer.h"

namespace ll {
namespace cpu { class ThreadPool; }

struct FP8Geometry {
    int64_t N = 0, K = 0;
    int64_t block = 0;        // columns per scale (K: per-channel)
    int64_t n_blocks = 0;     // per row
    int64_t n_tiles = 0;
    int64_t unit_bytes(int64_t cols) const { return 64 + 16 * cols; }
    int64_t tile_bytes = 0;
    static FP8Geometry make(int64_t N, int64_t K, int64_t block);
};

struct PackedFP8 {
    FP8Geometry g;
    AlignedBuffer data;
    void dequantize_row(int64_t n, float* out) const;
};

// codes: [N, K] bytes (row stride K); scales: [N, n_blocks] fp32. Output row n is source row
// row_of[n] (or n). The pool's threads split the tiles.
PackedFP8 pack_fp8(const uint8_t* codes, const float* scales, int64_t N, int64_t K, int64_t block,
                   const std::vector<int64_t>& row_of, cpu::ThreadPool* pool);

}  // namespace ll
