// Load-time repack of FP8 E4M3 weights into the GPU layout of fp8_layout.h. Host code, compiled
// into every build (the repack runs on the CPU before the upload), CUDA or not.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "fp8_layout.h"

namespace ll::cuda {

// A weight in the GPU layout, on the host.
//   q       uint32 [n_tiles, k_tiles, 4 chunks, 32 lanes, 4]: the tiles (fp8_w_offset)
//   scales  fp32 [n_tiles, blocks, 64] (fp8_scale_offset), copied bit for bit
//   mins    integer codes with a min per block (w = scale * code + min: GGUF Q5_K, Q5_1): fp32 in
//           the scales' layout; empty for every other weight
// Padding: columns k >= K and rows n >= N hold code 0 (+0.0); rows n >= N have scale and min 0.
struct Fp8GpuWeight {
    Fp8TileGeometry g;
    std::vector<uint32_t> q;
    std::vector<float> scales, mins;
    bool int8 = false;  // the bytes are signed integer codes (W8A16 only), not E4M3
};

// codes: E4M3 [N, K] (row-major bytes); scales: fp32 [N, ceil(K / block)] as the CPU format holds
// them (csrc/weights/fp8_tiles.h: block <= 0 or >= K is one scale per row; a checkpoint's
// [N/bn, K/bk] blocks arrive repeated over their rows). Throws FormatError naming the tensor for a
// bad shape, a block the GPU layout cannot hold (not a multiple of 32, or for integer codes 16
// with K a multiple of 32), a NaN code or a non-finite scale. int8: the codes are signed integers
// (int8_t bytes), every byte a value. mins (integer codes only; fp32 [N, blocks] as scales): each
// block's min, for blocks of whole 32-column tiles shorter than the row (the kernel adds them where
// it folds the blocks' scales in).
Fp8GpuWeight fp8_repack(const std::string& name, const uint8_t* codes, int64_t N, int64_t K, const float* scales,
                        int64_t block, bool int8 = false, const float* mins = nullptr);

// The geometry fp8_repack gives a weight of this shape (validated as it does).
Fp8TileGeometry fp8_geometry(const std::string& name, int64_t N, int64_t K, int64_t block, bool int8 = false);

}  // namespace ll::cuda
