// Load-time repack of INT4 group-wise weights into the GPU layout of int4_layout.h. Host code,
// compiled into every build (the repack runs on the CPU before the upload), CUDA or not.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "int4_layout.h"

namespace ll::cuda {

// A weight in the GPU layout, on the host.
//   q       uint32 [n_tiles, k_tiles, 32 lanes, 4]: the tiles (int4_q_offset)
//   scales  16-bit [n_tiles, groups, 8, 8]: rounded to the kernel's type (int4_scale_offset)
//   mins    the same for min formats, else empty
// Padding: columns k >= K hold code `zero` (zero-point formats: w = 0 exactly) or code 0 (min
// formats: w = m, finite); rows n >= N have scale 0 and min 0, so w = 0. Either way the kernel
// reads the activations of columns k >= K as zeros, so padding adds nothing to a product.
struct Int4GpuWeight {
    Int4Geometry g;
    bool bf16 = true;     // scales (and the kernel's activations) bf16, else fp16
    bool has_min = false;  // w = s * u + m, else w = s * (u - zero)
    int zero = 0;
    std::vector<uint32_t> q;
    std::vector<uint16_t> scales, mins;
};

// codes: u [N, K] (0..15, one per byte); scales, mins: fp32 [N, ceil(K / group)] (mins null for
// zero-point formats); group: a multiple of 16, or >= K for one scale per row. Throws FormatError
// naming the tensor for a bad shape, code, zero point or a scale the 16-bit type cannot hold.
Int4GpuWeight int4_repack(const std::string& name, const uint8_t* codes, int64_t N, int64_t K, const float* scales,
                          const float* mins, int64_t group, int zero, bool bf16);

// The geometry int4_repack gives a weight of this shape (validated as it does).
Int4Geometry int4_geometry(const std::string& name, int64_t N, int64_t K, int64_t group);

}  // namespace ll::cuda
