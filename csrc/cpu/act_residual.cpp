// The residual plane of quantized activations (quant_kinds.h: QActs).
// Built with the baseline ISA and without FMA contraction: every kernel table shares its result.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "quant_kinds.h"

namespace ll::cpu {

void add_residuals(const float* x, int64_t ldx, int64_t M, int64_t K, int64_t ld, const int8_t* q, const float* d,
                   float* s, int32_t* isum, int8_t* r, uint64_t* flags) {
    const int64_t nb = (K + 31) / 32, fw = (ld / 32 + 63) / 64;
    const int64_t n_sel = (nb + kResidualShare - 1) / kResidualShare;
    // The group's largest scale per block; the n_sel largest of those, ties to the lower index.
    std::vector<float> top(static_cast<size_t>(nb), 0.0f);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t b = 0; b < nb; ++b) top[b] = std::max(top[b], d[m * (ld / 32) + b]);
    std::vector<int64_t> order(static_cast<size_t>(nb));
    for (int64_t b = 0; b < nb; ++b) order[b] = b;
    std::nth_element(order.begin(), order.begin() + (n_sel - 1), order.end(), [&](int64_t a, int64_t b) {
        return top[a] > top[b] || (top[a] == top[b] && a < b);
    });
    order.resize(static_cast<size_t>(n_sel));
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * ldx;
        const int8_t* qm = q + m * ld;
        const float* dm = d + m * (ld / 32);
        float* sm = s + m * (ld / 16);
        int32_t* im = isum + m * (ld / 16);
        int8_t* rm = r + m * ld;
        uint64_t* fm = flags + m * fw;
        std::memset(rm, 0, static_cast<size_t>(ld));
        std::memset(fm, 0, static_cast<size_t>(fw) * 8);
        for (const int64_t b : order) {
            if (top[b] == 0.0f) continue;
            fm[b / 64] |= uint64_t(1) << (b % 64);
            im[2 * b] <<= 8;  // the kernels take this block's sums as (sum << 8) + residual sum
            im[2 * b + 1] <<= 8;
            if (dm[b] == 0.0f) continue;  // an all-zero block of this row: its residual is zero
            const float d2 = dm[b] * (1.0f / 256.0f), id2 = 1.0f / d2;
            int sum[2] = {0, 0};
            for (int j = 0; j < 32 && b * 32 + j < K; ++j) {
                const int64_t k = b * 32 + j;
                const float res = xm[k] - dm[b] * float(qm[k]);
                const int v = std::clamp(int(std::nearbyint(res * id2)), -127, 127);
                rm[k] = int8_t(v);
                sum[j / 16] += v;
            }
            sm[2 * b] += d2 * float(sum[0]);
            sm[2 * b + 1] += d2 * float(sum[1]);
            im[2 * b] += sum[0];
            im[2 * b + 1] += sum[1];
        }
    }
}

}  // namespace ll::cpu
