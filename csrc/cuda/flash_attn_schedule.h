// flash_attn.cu's schedule run on the host in fp32, through the same attention_plan.h functions
// the kernels call: which blocks exist, which KV tiles each visits, where the mask applies, how
// decode splits positions over blocks and warps, and the order partials merge in. Only the
// arithmetic inside a tile (the mma products) is plain loops here. Compiled into every build, so
// that the tests prove the index math on machines with no GPU (tests/test_cuda_attention_plan.py).
#pragma once
#include <cstdint>

namespace ll::cuda {

struct FaHostShape {
    int T;           // new query rows, positions [p0, p0 + T)
    int p0;          // positions already cached before them
    int n_heads;
    int n_kv_heads;
    int head_dim;
};

// q: [T, n_heads * head_dim]; k, v: [p0 + T, n_kv_heads * head_dim]; out: like q. T == 1 takes
// the decode schedule with `splits` ranges per KV head (fa_num_splits for n_sms SMs when 0);
// otherwise the prefill schedule.
void flash_attention_schedule(const float* q, const float* k, const float* v, const FaHostShape& s, int splits,
                              int n_sms, float* out);

}  // namespace ll::cuda
