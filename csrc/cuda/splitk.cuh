// The split-K reduction the GEMMs share: y = the split partials added in split order, the same
// sum whatever order the blocks ran in (results do not depend on timing), times the row's scale
// when there is one (W8A8's per-token activation scale). Output 16-bit (bf16 or fp16 bits, rounded
// once) or fp32 (logits).
#pragma once
#include <cstdint>

#include "half2_math.h"
#include "ptx.cuh"

namespace ll::cuda {
namespace {

template <bool kBf16, class Out>
__global__ void splitk_reduce(const float* partial, int splits, int64_t m, int64_t n, const float* row_scales, Out* y,
                              int64_t ldy) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= m * n) return;
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += partial[s * m * n + i];
    if (row_scales) sum *= row_scales[i / n];
    Out* out = y + (i / n) * ldy + i % n;
    if constexpr (sizeof(Out) == 4) {
        *out = sum;
    } else if constexpr (kBf16 && !kDeviceHasBf16) {
        __trap();  // never launched: bf16 is refused below sm_80
    } else {
        *out = float_to_half_bits<kBf16>(sum);
    }
}

template <bool kBf16, class Out>
cudaError_t launch_splitk_reduce(const float* partial, int splits, int64_t m, int64_t n, const float* row_scales, Out* y,
                                 int64_t ldy, cudaStream_t stream) {
    const int64_t total = m * n;
    splitk_reduce<kBf16, Out><<<unsigned((total + 255) / 256), 256, 0, stream>>>(partial, splits, m, n, row_scales, y,
                                                                                 ldy);
    return cudaGetLastError();
}

}  // namespace
}  // namespace ll::cuda
