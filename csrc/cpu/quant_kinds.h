// The integer layouts that have CPU kernels: one row per kernel instantiation.
//
// A layout's group size (32/64/128 for the F16 and F32 kinds) and zero point are runtime fields of
// the geometry; what changes the kernel's code (code width, how scales are stored, min or zero
// point, a code book, groups of 16) is a row here.
#pragma once
#include <cstdint>

#include "../weights/quant_layout.h"

namespace ll::cpu {

struct QKind {
    int bits;
    ScaleKind scale;
    bool has_min;
    bool lut;
    bool g16;
    const char* sources;  // what maps onto it (documentation and error messages)
};

inline constexpr QKind kQKinds[] = {
    {4, ScaleKind::F16, false, false, false, "Q4_0"},
    {4, ScaleKind::F16, true, false, false, "Q4_1"},
    {4, ScaleKind::F16, false, true, false, "IQ4_NL"},
    {4, ScaleKind::Super, true, false, false, "Q4_K"},
    {4, ScaleKind::Super, false, true, false, "IQ4_XS"},
    {4, ScaleKind::Super, true, false, true, "Q2_K"},
    {4, ScaleKind::Super, false, false, true, "Q3_K"},
    {8, ScaleKind::F16, false, false, false, "Q8_0"},
    {6, ScaleKind::F16, false, false, false, "Q5_0"},
    {6, ScaleKind::F16, true, false, false, "Q5_1"},
    {6, ScaleKind::Super, true, false, false, "Q5_K"},
    {6, ScaleKind::Super, false, false, true, "Q6_K"},
    {4, ScaleKind::F32, false, false, false, "int4 symmetric / zero point"},
    {4, ScaleKind::F32, true, false, false, "int4 with min"},
    {8, ScaleKind::F32, false, false, false, "int8 symmetric"},
    {8, ScaleKind::F32, true, false, false, "int8 with min"},
};
inline constexpr int kNumQKinds = int(sizeof(kQKinds) / sizeof(kQKinds[0]));

// The kernel row for a layout, or -1 when none exists.
inline int qkind_index(const QuantLayout& L) {
    for (int i = 0; i < kNumQKinds; ++i) {
        const QKind& q = kQKinds[i];
        if (q.bits == L.bits && q.scale == L.scale && q.has_min == L.has_min && q.lut == L.lut &&
            q.g16 == (L.group == 16))
            return i;
    }
    return -1;
}

// Activations quantized for the integer kernels, once per matmul input and shared by every
// weight row: int8 codes in blocks of 32 with a scale each (llama.cpp's Q8_0 rounding).
//
// int8 alone rounds each activation by up to half a step of its block's largest value, and blocks
// holding an outlier channel carry most of that error: on SmolLM2 it costs ~3.5% top-1 agreement
// with fp32. So one block in kResidualShare, those with the largest scales, also gets a second
// int8 plane, the rounding residual in steps of d / 256 (about 16 bits in all for those blocks,
// which brings the agreement back above 98%), and the kernels make one extra pass over just
// those blocks. The blocks are chosen per group of kResidualRows rows (tokens) by the group's
// largest scale: outlier channels are the same from token to token, so this loses nothing, and a
// prefill micro-tile (whose height divides the group) makes its extra pass over those blocks only.
constexpr int kResidualShare = 8;
constexpr int kResidualRows = 8;

struct QActs {
    const int8_t* q = nullptr;       // [M, ld] codes
    const float* d = nullptr;        // [M, ld / 32] block scales
    const float* s = nullptr;        // [M, ld / 16] per half-block: sum of its dequantized values
    const float* s32 = nullptr;      // [M, ld / 32] per block: the two halves' sums added
    const int32_t* isum = nullptr;   // [M, ld / 16] per half-block: the codes' sum; in residual
                                     // blocks (sum << 8) + the residual codes' sum
    const int8_t* r = nullptr;       // [M, ld] residual codes (scale d / 256), zero outside flagged blocks
    const uint64_t* flags = nullptr; // [M, fw] bit b set: block b has a residual
    int64_t ld = 0;                  // row stride in codes: a multiple of 32, past K rounded up to 256 (zeros)
    int64_t fw = 0;                  // flag words per row
    int64_t M = 0;
};

// After the main pass (quantize_acts) over rows [0, M) (at most one group): picks their residual
// blocks, writes the residual codes and flags, and adds the residuals to the half-block sums.
// Row m's arrays are at q + m * ld, d + m * ld / 32, s and isum + m * ld / 16, r + m * ld, flags + m * fw.
// Compiled once for every ISA, so that the quantized activations are bit-identical whichever
// kernels run.
void add_residuals(const float* x, int64_t ldx, int64_t M, int64_t K, int64_t ld, const int8_t* q, const float* d,
                   float* s, int32_t* isum, int8_t* r, uint64_t* flags);

}  // namespace ll::cpu
