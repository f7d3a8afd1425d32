// The GPU layout of FP8 E4M3 weights for the FP8 GEMM (fp8_gemm.cu), shared by its two paths:
//   W8A8   mma.sync.m16n8k32 e4m3 x e4m3 (sm_89, sm_90a, sm_120), activations quantized per row
//   W8A16  the codes expanded to bf16 (fp16 on sm_75) in registers, two mma.sync.m16n8k16
// and, on the W8A16 path, of INT8 codes: the same bytes in the same places, another expansion.
//
// One layout feeds both, because a product does not care in which order its k terms are summed,
// only that A and B agree. A lane's m16n8k16 B fragments of two k16 steps hold k {2t, 2t+1,
// 8+2t, 9+2t} and the same + 16 (t = lane % 4); those eight codes, in that order, are the lane's
// m16n8k32 B fragment, whose "slots" the hardware numbers 4t..4t+3 and 16+4t..19+4t
// (mma_b(M16N8K32)). So the weight is stored in the natural order of the bf16 mma, and W8A8
// stores each activation row's codes permuted the same way (the code of k at slot
// fp8_slot_of_k(k), written so by the quantization kernel): ldmatrix then hands each lane A's
// codes of exactly the k its B codes have.
//
// The weight W [N outputs, K inputs] is cut into tiles of 32 k x 64 n (2 KB): four chunks of
// 512 bytes, chunk c covering the n8 sub-tiles 2c and 2c + 1; lane L's 16 bytes of a chunk (one
// 128-bit load, lanes contiguous) are
//   word 2 (s % 2) + r, byte j  ->  sub-tile s, k16 step r, mma_b(M16N8K16) value j
//                              =   m16n8k32 B register r, byte j (slot mma_b(M16N8K32, L, 4r + j))
// Tiles are stored n-slab major (tile (nt, kt) at nt * k_tiles + kt), as int4_layout.h does, so a
// split-K range of a slab is one contiguous stream.
//
// Scales are fp32, one per output column and block of `block` k (block a multiple of 32, or all
// of K; for integer codes also 16, a k16 step of the bf16 mma), applied to the fp32 sums:
//   y[m, n] = sum_b scale[n, b] * sum_{k in b} x[m, k] w[n, k],
// the CPU kernels' order (csrc/cpu/fp8_impl.h). Stored per (slab nt, block b) as 64 values in the
// order the accumulators need them: lane L's C fragments of the 8 sub-tiles hold columns
// 8 s + 2 (L % 4) + j, j = 0, 1, whose scales sit together at [16 (L % 4) + 2 s + j].
#pragma once
#include <cstdint>

#include "half2_math.h"
#include "mma_frag.h"

namespace ll::cuda {

constexpr int kFp8TileK = 32;
constexpr int kFp8TileN = 64;
constexpr int kFp8Chunks = 4;                        // 128-bit loads per lane per tile
constexpr int kFp8TileWords = kFp8Chunks * 32 * 4;  // uint32 per tile
constexpr int kFp8SubTiles = kFp8TileN / 8;

// ---- k order

// The real k (0..31 within a tile) whose code sits at slot v: slots 16h + 4q + j hold k
// 16h + 2q + (j % 2) + 8 (j / 2), i.e. within each 16 k the pairs (2q, 2q + 1) and (8 + 2q, 9 + 2q)
// interleave.
LL_HOST_DEVICE int fp8_k_of_slot(int v) {
    const int j = v & 3;
    return (v & 16) + 2 * ((v >> 2) & 3) + (j & 1) + 8 * (j >> 1);
}
// Its inverse.
LL_HOST_DEVICE int fp8_slot_of_k(int k) {
    const int r = k & 15;
    return (k & 16) + 4 * ((r & 7) >> 1) + (r & 1) + 2 * (r >> 3);
}

// (k, n) within the 32 x 64 tile of byte j (0..3) of word w (0..3) of lane's load of chunk c.
LL_HOST_DEVICE FragCoord fp8_tile_coord(int lane, int c, int w, int j) {
    const int s = 2 * c + (w >> 1), r = w & 1;
    const FragCoord b = mma_b(MmaShape::M16N8K16, lane, j);
    return FragCoord{b.row + 16 * r, b.col + 8 * s};
}

// The column (within the slab) of scale i (0..15) of lane's 16.
LL_HOST_DEVICE int fp8_scale_col(int lane, int i) { return 8 * (i >> 1) + 2 * (lane & 3) + (i & 1); }

// ---- the whole weight's geometry and offsets

struct Fp8TileGeometry {
    int64_t n, k;              // the weight's shape [N, K]
    int64_t n_tiles, k_tiles;  // ceil(N / 64), ceil(K / 32): padded with code 0 (w = 0)
    int64_t block;             // k per scale: a multiple of 32, or K (one scale per column), or 16
                               // (integer codes, K a multiple of 32: two blocks a tile)
    int64_t blocks;            // scales per column: ceil(K / block)
    int64_t tiles_per_block;   // block / 32 (1 for 16), or k_tiles for one block
};

// Blocks of 16 columns: k16 step r of tile kt is block 2 kt + r, and the W8A16 kernel scales each
// step's products by its own block's scales (fp8_gemm.cu's kFoldSteps).
LL_HOST_DEVICE bool fp8_step_blocks(const Fp8TileGeometry& g) { return g.block == 16 && g.blocks > 1; }

// Whether integer codes of this geometry may carry a min per block (w = scale code + min): the
// kernel adds them where it folds whole-tile blocks, so blocks of a multiple of 32, more than one.
LL_HOST_DEVICE bool fp8_takes_mins(const Fp8TileGeometry& g) { return g.blocks > 1 && g.block % 32 == 0; }

// Offset in uint32 words of lane's 16 bytes of chunk c of tile (nt, kt).
LL_HOST_DEVICE int64_t fp8_w_offset(const Fp8TileGeometry& g, int64_t nt, int64_t kt, int c, int lane) {
    return (((nt * g.k_tiles + kt) * kFp8Chunks + c) * 32 + lane) * 4;
}
// Offset in floats of the 64 scales of slab nt, block b, and of lane's 16 among them.
LL_HOST_DEVICE int64_t fp8_scale_offset(const Fp8TileGeometry& g, int64_t nt, int64_t b) {
    return (nt * g.blocks + b) * kFp8TileN;
}
LL_HOST_DEVICE int fp8_lane_scales(int lane) { return 16 * (lane & 3); }

// ---- fragments

// prmt: the bytes 2p and 2p + 1 of q, each sign-extended to 16 bits, as a pair (low first).
LL_HOST_DEVICE uint32_t sext_byte_pair(uint32_t q, int p) {
#if defined(__CUDA_ARCH__)
    uint32_t d;
    // Selector nibbles: byte i of q, or with bit 3 set the sign of byte i replicated.
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(d) : "r"(q), "r"(p ? 0xB3A2u : 0x9180u));
    return d;
#else
    const uint32_t lo = uint32_t(int32_t(int8_t(q >> (16 * p)))) & 0xFFFFu;
    const uint32_t hi = uint32_t(int32_t(int8_t(q >> (16 * p + 8)))) & 0xFFFFu;
    return lo | hi << 16;
#endif
}

// Codes 2p and 2p + 1 of q as a pair of bf16 (or fp16) values, exactly (every e4m3 value is one).
// Sign-extend, shift, mask, as the CPU widens E4M3 (csrc/cpu/vec_avx512.h): the code's exponent
// and mantissa land in the 16-bit type's low exponent bits and top mantissa bits, the sign in the
// sign bit (the shift also carries sign copies into the pair's other half, where the mask's zeros
// take them away), giving w * 2^-120 (bf16, subnormal for small codes) or w * 2^-8 (fp16); one
// fma by 2^120 or 2^8 makes it w, exactly. The NaN codes would become +-480: the repack refuses them.
template <bool kBf16>
LL_HOST_DEVICE uint32_t e4m3x2_to_half2(uint32_t q, int p) {
    const uint32_t x = sext_byte_pair(q, p);
    const uint32_t h = kBf16 ? (x << 4) & 0x87F087F0u : (x << 7) & 0xBF80BF80u;
    return half2_fma<kBf16>(h, kBf16 ? 0x7B807B80u : 0x5C005C00u, kHalf2NegZero);
}

// Word w of a lane's chunk load as the 16-bit B fragment of its sub-tile's k16 step w % 2:
// frag[0] holds mma_b(M16N8K16) values 0, 1 and frag[1] values 2, 3.
template <bool kBf16>
LL_HOST_DEVICE void fp8_word_fragment(uint32_t q, uint32_t frag[2]) {
    frag[0] = e4m3x2_to_half2<kBf16>(q, 0);
    frag[1] = e4m3x2_to_half2<kBf16>(q, 1);
}

// ---- INT8 codes in the same layout (GGUF Q8_0 and Q5_0, 8-bit group-wise checkpoints), for the
// W8A16 path only: each byte a signed integer code, w = scale * code.

// Codes 2p and 2p + 1 of q as a pair of bf16 (or fp16) values, exactly. fp16: code + 128 as the low
// mantissa byte of 1024 (0x6400 | u is 1024 + u), then one fma subtracting 1152. bf16's 7 mantissa
// bits cannot hold u so; the same trick runs in fp32 instead (0x4B000000 | u is 2^23 + u, less
// 2^23 + 128), and the float's top half is the bf16 value (|code| <= 128 has 8 significant bits).
template <bool kBf16>
LL_HOST_DEVICE uint32_t i8x2_to_half2(uint32_t q, int p) {
    const uint32_t u = (q >> (16 * p)) ^ 0x8080u;  // the pair's codes + 128 as unsigned bytes
    if constexpr (kBf16) {
        const float lo = bits_to_float(0x4B000000u | (u & 0xFFu)) - 8388736.0f;
        const float hi = bits_to_float(0x4B000000u | (u >> 8 & 0xFFu)) - 8388736.0f;
        return float_to_bits(lo) >> 16 | (float_to_bits(hi) & 0xFFFF0000u);
    } else {
        return half2_fma<false>(0x64006400u | (u & 0xFFu) | (u & 0xFF00u) << 8, 0x3C003C00u, 0xE480E480u);
    }
}

// A lane's word as the W8A16 B fragment for E4M3 or INT8 codes.
template <bool kBf16, bool kInt8>
LL_HOST_DEVICE void w8_word_fragment(uint32_t q, uint32_t frag[2]) {
    if constexpr (kInt8) {
        frag[0] = i8x2_to_half2<kBf16>(q, 0);
        frag[1] = i8x2_to_half2<kBf16>(q, 1);
    } else {
        fp8_word_fragment<kBf16>(q, frag);
    }
}

// Sub-tile s's m16n8k32 e4m3 B fragment within a lane's chunk load q (chunk s / 2): two words as
// they are.
LL_HOST_DEVICE void fp8_e4m3_fragment(const uint32_t q[4], int s, uint32_t frag[2]) {
    frag[0] = q[2 * (s & 1)];
    frag[1] = q[2 * (s & 1) + 1];
}

// ---- per-token activation quantization (W8A8)

// One row x [K] (the 16-bit activations, widened) -> its scale and codes [ldq] in slot order,
// zeros from K on: the quantization kernel's arithmetic, run by the host tests. ldq: a multiple of
// 32. The kernel finds absmax in parallel (a max, so in any order the same).
LL_HOST_DEVICE float fp8_quantize_row(const float* x, int64_t K, int64_t ldq, float ub, uint8_t* codes) {
    float absmax = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
        const float a = x[k] < 0.0f ? -x[k] : x[k];
        absmax = a > absmax ? a : absmax;
    }
    const float s = e4m3_act_scale(absmax, ub);
    for (int64_t k = 0; k < ldq; ++k)
        codes[(k & ~int64_t(31)) + fp8_slot_of_k(int(k & 31))] = k < K ? e4m3_act_code(x[k], s) : uint8_t(0);
    return s;
}

}  // namespace ll::cuda
