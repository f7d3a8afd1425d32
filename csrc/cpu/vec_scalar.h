// One-lane "vector" for the scalar path: the same kernel templates, no intrinsics.
// The scalar table is both the fallback and the reference the SIMD paths are tested against.
#pragma once
#include <cstdint>

#include "../core/dtype.h"

namespace ll::cpu {
namespace {

struct VecScalar {
    using reg = float;
    static constexpr int W = 1;
    static constexpr int MR = 2, NR = 2;     // prefill tile
    // P.V in attention: MR rows x NV vectors of accumulators.
    static constexpr int GEMM_NN_MR = 4, GEMM_NN_NV = 2;
    static reg zero() { return 0.0f; }
    static reg set1(float a) { return a; }
    static reg load(const float* p) { return *p; }
    static void store(float* p, reg v) { *p = v; }
    static reg add(reg a, reg b) { return a + b; }
    static reg sub(reg a, reg b) { return a - b; }
    static reg mul(reg a, reg b) { return a * b; }
    static reg div(reg a, reg b) { return a / b; }
    static reg fma(reg a, reg b, reg c) { return a * b + c; }
    static reg max(reg a, reg b) { return a > b ? a : b; }
    static float reduce_add(reg a) { return a; }
    static float reduce_max(reg a) { return a; }
    static reg load_f16(const uint16_t* p) { return fp16_to_float(*p); }
    static reg load_bf16(const uint16_t* p) { return bf16_to_float(*p); }
    static reg load_i8(const uint8_t* p) { return float(int8_t(*p)); }
    static constexpr bool kBF16Dot = false;
};

}  // namespace
}  // namespace ll::cpu
