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

// ---- ldmatrix (m8n8, 16-bit elements): how fragments come out of shared memory.
//
// ldmatrix.x4 loads four 8 x 8 matrices: lane l gives the address of row l % 8 of matrix l / 8,
// and register i of every lane receives two elements of matrix i: without .trans those of row
// lane / 4, columns 2 (lane % 4) and + 1; with .trans those of column lane / 4, rows 2 (lane % 4)
// and + 1 (PTX ISA, "Warp-level matrix load instruction: ldmatrix").
namespace ldm {

// Element j (0, 1) of a lane's register within its 8 x 8 matrix.
LL_HOST_DEVICE FragCoord element(int lane, int j, bool trans) {
    const int a = lane >> 2, b = 2 * (lane & 3) + j;
    return trans ? FragCoord{b, a} : FragCoord{a, b};
}

// The row address each lane gives (row, col of the 16 x 16 tile's first element in that row),
// for the three ways the kernels load a 16 x 16 tile of a row-major shared-memory array:
//
// A operand (16 rows x k16), no .trans: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7),
//   (rows 0-7, k 8-15), (rows 8-15, k 8-15) land in A's registers 0..3 in mma_a's order.
LL_HOST_DEVICE FragCoord a_row(int lane) { return FragCoord{(lane & 7) + 8 * ((lane >> 3) & 1), 8 * (lane >> 4)}; }

// B operand stored as [n][k] (B "col": e.g. K rows [position][head_dim] for Q K^T), no .trans:
//   registers 0, 1 are B's two registers for n 0-7, registers 2, 3 those for n 8-15.
LL_HOST_DEVICE FragCoord b_nk_row(int lane) { return FragCoord{(lane & 7) + 8 * (lane >> 4), 8 * ((lane >> 3) & 1)}; }

// B operand stored as [k][n] (e.g. V rows [position][head_dim] for P V), with .trans:
//   registers 0, 1 are B's two registers for n 0-7, registers 2, 3 those for n 8-15.
LL_HOST_DEVICE FragCoord b_kn_row(int lane) { return FragCoord{(lane & 7) + 8 * ((lane >> 3) & 1), 8 * (lane >> 4)}; }

}  // namespace ldm

// A C/D fragment pair as an A fragment (m16n8k16): the fp32 results of two adjacent n8 tiles
// (columns 0-7 and 8-15 of a 16 x 16 block, e.g. attention scores P) are, rounded to 16 bits,
// exactly the A operand of the next product (P V) with no data movement: A's value i is value
// i % 4 of the C fragment of tile i / 4.
LL_HOST_DEVICE int c_to_a_tile(int i) { return i >> 2; }
LL_HOST_DEVICE int c_to_a_value(int i) { return i & 3; }

}  // namespace ll::cuda
