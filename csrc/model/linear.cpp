#include "linear.h"

namespace ll {

void linear_slice(const cpu::Kernels& k, const Linear& w, const float* X, int64_t ldx, float* Y,
                  int64_t ldy, int64_t M, bool accumulate, int tid, int nth) {
    // 48 rows = a multiple of every tile's NR, so thread boundaries never split a tile.
    int64_t n0, n1;
    cpu::ThreadPool::split(w.out, tid, nth, 48, n0, n1);
    if (n0 < n1) k.matmul[int(w.dtype)](X, ldx, w.data, w.in, Y, ldy, M, n0, n1, accumulate);
}

}  // namespace ll
