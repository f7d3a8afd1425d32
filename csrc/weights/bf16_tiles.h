// bf16 weights repacked into 16-row tiles of column pairs, for the vdpbf16ps prefill kernel and a
// one-stream decode kernel.
//
// A tile is rows [16t, 16t + 16) over all columns (zero past K): chunk p (64 bytes) holds, in
// 32-bit lane r, row r's columns 2p (low half) and 2p + 1 (high half) -- the pair vdpbf16ps
// multiplies against a broadcast pair of activations, and the halves an fp32 kernel widens with
// one shift or one mask. The repack only moves bytes: the weights are bit-identical.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/aligned_buffer.h"

namespace ll {
namespace cpu { class ThreadPool; }

struct BF16Geometry {
    int64_t N = 0, K = 0, Kp = 0;   // Kp: K rounded up to 32 (zeros beyond K)
    int64_t n_tiles = 0;
    int64_t tile_bytes() const { return 16 * Kp * 2; }
    static BF16Geometry make(int64_t N, int64_t K) {
        BF16Geometry g;
        g.N = N;
        g.K = K;
        g.Kp = (K + 31) / 32 * 32;
        g.n_tiles = (N + 15) / 16;
        return g;
    }
};

struct PackedBF16 {
    BF16Geometry g;
    AlignedBuffer data;
    void dequantize_row(int64_t n, float* out) const;
};

// Rows of `src` (bf16 bits, row stride `ld` elements); output row n is source row row_of[n]
// (or n). The pool's threads split the tiles.
PackedBF16 pack_bf16(const uint16_t* src, int64_t ld, int64_t N, int64_t K, const std::vector<int64_t>& row_of,
                     cpu::ThreadPool* pool);

}  // namespace ll
