// Which element of an mma.sync tile each thread of a warp holds: the fragment layouts of the PTX
// ISA ("Matrix fragments for mma.m16n8k16" and "... mma.m16n8k32"), as functions of (lane, index of
// the element within the thread's registers). The kernels load and store fragments through these
// functions, never through their own copies of the arithmetic; the host tests check that each
// layout is a one-to-one map onto its tile and that an mma emulated through them multiplies
// matrices (tests/test_cuda_device_math.py).
//
// In every layout a warp's 32 lanes form 8 groups of 4: group = lane / 4 picks the row (A, C) or
// the column (B), and the lane's place in its group picks consecutive columns (A, C) or rows (B).
#pragma once
#include "device_math.h"

namespace ll::cuda {

struct FragCoord {
    int row;
    int col;
};

// The shapes the kernels use: m16n8k16 with 16-bit inputs (fp16 on sm_75, bf16 on sm_80+; A holds
// 8 values, B 4, in 32-bit registers of 2) and m16n8k32 with 8-bit inputs (e4m3 on sm_89+; A holds
// 16 values, B 8, 4 per register). C and D are fp32 16 x 8 in both: 4 values per thread.
enum class MmaShape { M16N8K16, M16N8K32 };

LL_HOST_DEVICE constexpr int mma_k(MmaShape s) { return s == MmaShape::M16N8K16 ? 16 : 32; }
LL_HOST_DEVICE constexpr int mma_a_count(MmaShape s) { return s == MmaShape::M16N8K16 ? 8 : 16; }
LL_HOST_DEVICE constexpr int mma_b_count(MmaShape s) { return s == MmaShape::M16N8K16 ? 4 : 8; }
constexpr int kMmaCCount = 4;

// A: 16 x K, row-major; element i of the lane's registers. The first half of the values covers
// columns [0, K/2), rows group and group + 8 alternating per register; the second half the same
// rows at columns [K/2, K).
LL_HOST_DEVICE FragCoord mma_a(MmaShape s, int lane, int i) {
    const int group = lane >> 2, t = lane & 3;
    if (s == MmaShape::M16N8K16) return FragCoord{group + 8 * ((i >> 1) & 1), 2 * t + (i & 1) + 8 * (i >> 2)};
    return FragCoord{group + 8 * ((i >> 2) & 1), 4 * t + (i & 3) + 16 * (i >> 3)};
}

// B: K x 8, stored column by column ("col"): row = k, col = n.
LL_HOST_DEVICE FragCoord mma_b(MmaShape s, int lane, int i) {
    const int group = lane >> 2, t = lane & 3;
    if (s == MmaShape::M16N8K16) return FragCoord{2 * t + (i & 1) + 8 * (i >> 1), group};
    return FragCoord{4 * t + (i & 3) + 16 * (i >> 2), group};
}

// C and D: 16 x 8 fp32.
LL_HOST_DEVICE FragCoord mma_c(int lane, int i) {
    const int group = lane >> 2, t = lane & 3;
    return FragCoord{group + 8 * (i >> 1), 2 * t + (i & 1)};
}

}  // namespace ll::cuda
