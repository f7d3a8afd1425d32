// The RoPE cos/sin tables [n_ctx][head_dim / 2] of a model, shared by the CPU and CUDA forward
// passes. The angle is formed in fp32 exactly as transformers does (inv_freq * pos), and its cosine
// and sine taken in double so the table adds no error of its own.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace ll {

inline void rope_tables(const std::vector<float>& inv_freq, int64_t n_ctx, std::vector<float>& cos_t,
                        std::vector<float>& sin_t) {
    const int64_t half = int64_t(inv_freq.size());
    cos_t.resize(size_t(n_ctx * half));
    sin_t.resize(size_t(n_ctx * half));
    for (int64_t pos = 0; pos < n_ctx; ++pos)
        for (int64_t i = 0; i < half; ++i) {
            const float angle = float(pos) * inv_freq[size_t(i)];
            cos_t[size_t(pos * half + i)] = float(std::cos(double(angle)));
            sin_t[size_t(pos * half + i)] = float(std::sin(double(angle)));
        }
}

}  // namespace ll
