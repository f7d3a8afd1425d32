// The GPU layout of INT4 group-wise weights for the W4A16 mma.sync.m16n8k16 kernels (Marlin's idea,
// our own arithmetic), and the in-register dequantization that turns it into B fragments.
//
// The weight W [N outputs, K inputs] is the mma's B operand (K x N, "col"). It is cut into tiles of
// 16 k x 64 n. A tile is 512 contiguous bytes: lane L's 16 bytes (one 128-bit load) at byte 16 L
// are exactly the nibbles of L's B fragments of the tile's eight n8 sub-tiles:
//
//   word w (0..3) of the load, nibble j (0..7) of the word (bits 4j..4j+3)
//     -> register r = j % 4, half h = j / 4 of dequant_int4x8(word)   (the bit tricks decide this)
//     -> sub-tile s = 2w + r / 2, fragment value i = 2 (r % 2) + h    (mma_b's numbering: b0..b3)
//     -> (k, n) = mma_b(M16N8K16, L, i) + (0, 8 s)
//
// int4_tile_coord() is that chain; the packer (int4_repack.cpp) writes through it and the kernel
// reads through int4_tile_fragments(), which uses the same pieces. Tiles are stored n-slab major:
// tile (nt, kt) at index nt * k_tiles + kt, so one 64-column slab is one contiguous stream along K
// (a split-K range of a slab is one contiguous range of memory).
//
// Scales (and mins) are 16-bit (the kernel's activation type), per group of `group` k and per
// column, stored per (slab nt, group g) as 64 values: lane L needs the scales of its columns
// n = 8 s + L / 4, s = 0..7, which sit together at [8 (L / 4) + s], one 128-bit load (the four
// lanes of a quad load the same 16 bytes: a broadcast).
//
// Numerics (u the nibble, s and m the group's scale and min rounded to the 16-bit type):
//   zero-point formats:  w = rn16((u - zero) * s)      u - zero is exact in 16 bits
//   min formats:         w = rn16(u * s + m)           one fma, one rounding
// i.e. one rounding to the 16-bit type after the exact arithmetic, which the tensor core then
// multiplies exactly and accumulates in fp32. The CPU path computes these in fp32; the two differ
// by the 16-bit rounding of s, m and w (less than 2^-8 relative for bf16, 2^-11 for fp16).
#pragma once
#include <cstdint>

#include "half2_math.h"
#include "mma_frag.h"

// Unrolled in device code; host compilers (nvcc's host pass included) know no such pragma.
#if defined(__CUDA_ARCH__)
#define LL_UNROLL _Pragma("unroll")
#else
#define LL_UNROLL
#endif

namespace ll::cuda {

constexpr int kInt4TileK = 16;
constexpr int kInt4TileN = 64;
constexpr int kInt4TileWords = 32 * 4;  // uint32 per tile: 32 lanes x 128 bits
constexpr int kInt4SubTiles = kInt4TileN / 8;

// (x & mask) | bits in one instruction (lop3's table for a & b | c is 0xEA).
LL_HOST_DEVICE uint32_t lop3_and_or(uint32_t x, uint32_t mask, uint32_t bits) {
#if defined(__CUDA_ARCH__)
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(x), "r"(mask), "r"(bits));
    return d;
#else
    return (x & mask) | bits;
#endif
}

// ---- where each nibble of a lane's load goes

// The register and half of dequant_int4x8's output that nibble j of a word becomes.
LL_HOST_DEVICE int int4_nibble_reg(int j) { return j & 3; }
LL_HOST_DEVICE int int4_nibble_half(int j) { return j >> 2; }
// The n8 sub-tile that register r of word w feeds (each word feeds two: 2w and 2w + 1), and which
// of that sub-tile's two B registers it is.
LL_HOST_DEVICE int int4_word_subtile(int r) { return r >> 1; }
LL_HOST_DEVICE int int4_subtile(int w, int r) { return 2 * w + int4_word_subtile(r); }
LL_HOST_DEVICE int int4_frag_reg(int r) { return r & 1; }

// (k, n) within the 16 x 64 tile of nibble j of word w of lane's load (row = k, col = n).
LL_HOST_DEVICE FragCoord int4_tile_coord(int lane, int w, int j) {
    const int r = int4_nibble_reg(j);
    const int i = 2 * int4_frag_reg(r) + int4_nibble_half(j);
    const FragCoord c = mma_b(MmaShape::M16N8K16, lane, i);
    return FragCoord{c.row, c.col + 8 * int4_subtile(w, r)};
}

// The column that scale s (0..7) of lane's 8 scales belongs to, within the 64-column slab.
LL_HOST_DEVICE int int4_scale_col(int lane, int s) { return 8 * s + (lane >> 2); }

// ---- the whole weight's geometry and offsets

struct Int4Geometry {
    int64_t n, k;             // the weight's shape [N, K]
    int64_t n_tiles, k_tiles;  // ceil(N / 64), ceil(K / 16): padded with zeros (see int4_repack.h)
    int64_t groups;            // scale groups per row: ceil(K / group); 1 when per channel
    int64_t tiles_per_group;   // k tiles sharing one scale: group / 16, or k_tiles when per channel
};

// Offset in uint32 words of lane's 16 bytes of tile (nt, kt).
LL_HOST_DEVICE int64_t int4_q_offset(const Int4Geometry& g, int64_t nt, int64_t kt, int lane) {
    return ((nt * g.k_tiles + kt) * 32 + lane) * 4;
}
// Offset in 16-bit values of lane's 8 scales (or mins) for k tile kt of slab nt.
LL_HOST_DEVICE int64_t int4_scale_offset(const Int4Geometry& g, int64_t nt, int64_t kt, int lane) {
    return ((nt * g.groups + kt / g.tiles_per_group) * 8 + (lane >> 2)) * 8;
}

// ---- dequantization

// The bias words of dequant_int4x8 for a zero point (0 for min formats): what is subtracted, per
// half, from the magic-number values to leave u - zero.
struct Int4Bias {
    uint32_t mul_hi;  // fp16's high nibbles arrive as 1024 + 16 u: times 1/16 (1.0 for bf16)
    uint32_t lo;      // -(magic + zero): bf16 -(128 + zero), fp16 -(1024 + zero)
    uint32_t hi;      // bf16 -(128 + zero); fp16 -(64 + zero) (after the 1/16)
};

template <bool kBf16>
LL_HOST_DEVICE Int4Bias int4_bias(int zero) {
    // 128 + z (bf16) and 1024 + z (fp16) have an ulp of 1, 64 + z (fp16) one of 1/16: each bias is
    // the magic's bit pattern plus z in ulps, with the sign bit set.
    const uint32_t z = uint32_t(zero);
    if (kBf16) {
        const uint32_t b = 0xC300u + z;
        return Int4Bias{half2_one<true>(), b | b << 16, b | b << 16};
    }
    const uint32_t lo = 0xE400u + z, hi = 0xD400u + 16 * z;
    return Int4Bias{0x2C002C00u, lo | lo << 16, hi | hi << 16};
}

// The 8 nibbles of q as 4 registers of 16-bit pairs holding u - zero exactly; register r, half h
// takes nibble 4h + r (int4_nibble_reg / _half). The nibble is OR-ed into the mantissa of a
// "magic" number whose ulp is 1 (bf16 128.0 = 0x4300, fp16 1024.0 = 0x6400), making magic + u,
// and one fma takes magic + zero away. fp16 also takes each byte's high nibble in place (magic +
// 16 u, exact) and scales it by 1/16 in the same fma, saving the shifts; bf16 has too few mantissa
// bits for that and shifts instead.
template <bool kBf16>
LL_HOST_DEVICE void dequant_int4x8(uint32_t q, const Int4Bias& b, uint32_t out[4]) {
    if (kBf16) {
        out[0] = lop3_and_or(q, 0x000F000Fu, 0x43004300u);
        out[1] = lop3_and_or(q >> 4, 0x000F000Fu, 0x43004300u);
        out[2] = lop3_and_or(q >> 8, 0x000F000Fu, 0x43004300u);
        out[3] = lop3_and_or(q >> 12, 0x000F000Fu, 0x43004300u);
    } else {
        out[0] = lop3_and_or(q, 0x000F000Fu, 0x64006400u);
        out[1] = lop3_and_or(q, 0x00F000F0u, 0x64006400u);
        out[2] = lop3_and_or(q >> 8, 0x000F000Fu, 0x64006400u);
        out[3] = lop3_and_or(q >> 8, 0x00F000F0u, 0x64006400u);
    }
    out[0] = half2_fma<kBf16>(out[0], half2_one<kBf16>(), b.lo);
    out[1] = half2_fma<kBf16>(out[1], b.mul_hi, b.hi);
    out[2] = half2_fma<kBf16>(out[2], half2_one<kBf16>(), b.lo);
    out[3] = half2_fma<kBf16>(out[3], b.mul_hi, b.hi);
}

// The B fragments of the two sub-tiles that word w (q) of a lane's load feeds: frag[j] holds the
// two registers of sub-tile int4_subtile(w, r) for the r with int4_word_subtile(r) = j, ready for
// mma.sync.m16n8k16. scales, mins: the lane's 8 scales and mins as 4 words of pairs
// (int4_scale_offset; mins unused unless kHasMin). A kernel can dequantize word by word, holding
// two sub-tiles' fragments at a time instead of eight.
template <bool kBf16, bool kHasMin>
LL_HOST_DEVICE void int4_word_fragments(int w, uint32_t q, const uint32_t scales[4], const uint32_t mins[4],
                                        const Int4Bias& bias, uint32_t frag[2][2]) {
    uint32_t v[4];
    dequant_int4x8<kBf16>(q, bias, v);
LL_UNROLL
    for (int r = 0; r < 4; ++r) {
        const int s = int4_subtile(w, r);
        const uint32_t scale = half2_broadcast(scales[s >> 1], s & 1);
        const uint32_t add = kHasMin ? half2_broadcast(mins[s >> 1], s & 1) : kHalf2NegZero;
        frag[int4_word_subtile(r)][int4_frag_reg(r)] = half2_fma<kBf16>(v[r], scale, add);
    }
}

// Lane's B fragments of a whole tile: frag[s] = the two registers of n8 sub-tile s. q: the lane's
// 4 words (int4_q_offset).
template <bool kBf16, bool kHasMin>
LL_HOST_DEVICE void int4_tile_fragments(const uint32_t q[4], const uint32_t scales[4], const uint32_t mins[4],
                                        const Int4Bias& bias, uint32_t frag[kInt4SubTiles][2]) {
LL_UNROLL
    for (int w = 0; w < 4; ++w) {
        uint32_t f[2][2];
        int4_word_fragments<kBf16, kHasMin>(w, q[w], scales, mins, bias, f);
LL_UNROLL
        for (int j = 0; j < 2; ++j) {
            frag[int4_subtile(w, 2 * j)][0] = f[j][0];
            frag[int4_subtile(w, 2 * j)][1] = f[j][1];
        }
    }
}

}  // namespace ll::cuda
