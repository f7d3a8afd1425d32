#include "linear.h"

namespace ll {

void linear_rows(const Linear& w, int chunk, int n_chunks, int64_t& n0, int64_t& n1) {
    // 48 rows: a multiple of every tile's NR, so chunk boundaries never split a tile.
    cpu::ThreadPool::split(w.out, chunk, n_chunks, 48, n0, n1);
}

void linear_slice(const cpu::Kernels& k, const Linear& w, const float* X, int64_t ldx, float* Y,
                  int64_t ldy, int64_t M, bool accumulate, int chunk, int n_chunks) {
    int64_t n0, n1;
    linear_rows(w, chunk, n_chunks, n0, n1);
    if (n0 < n1) k.matmul[int(w.dtype)](X, ldx, w.data, w.in, w.in, Y, ldy, M, n0, n1, accumulate);
}

}  // namespace ll
