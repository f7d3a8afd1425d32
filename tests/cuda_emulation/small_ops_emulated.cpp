// small_ops.cu's kernels (small_ops_kernels.cuh) run on the host, blocks of 256 threads per row
// (the elementwise ops: several, column_blocks), as the *_on_device helpers of small_ops.cu
// launch them. tests/cuda_emulated.py builds and runs
// it; the tests compare the results with numpy.
//
//   small_ops_emulated DIR OP BF16 ARGS...
//     rmsnorm      T D EPS           DIR/x f32 [T, D], DIR/w f32 [D]          -> DIR/y u16 [T, D]
//     rope         T HQ HK HD N_POS P0  DIR/x u16 [T, (HQ + HK) HD] (HQ query heads, then HK key heads
//                                    in the same rows, as in the forward's qkv), DIR/cos, DIR/sin f32
//                                    [N_POS, HD / 2]                          -> DIR/y u16 [T, (HQ + HK) HD]
//     swiglu       T F               DIR/x u16 [T, 2F] (gate | up)           -> DIR/y u16 [T, F]
//     residual_add T D               DIR/x f32 [T, D], DIR/w u16 [T, D]       -> DIR/y f32 [T, D]
//     embed        V T D             DIR/x u16 [V, D], DIR/w i32 [T]          -> DIR/y f32 [T, D]
//     kv_append    T KH HD N_CTX P0  DIR/x, DIR/w u16 [T, KH HD] (k, v)       -> DIR/y u16 [2, KH, N_CTX, HD]
#include "driver_io.h"
#include "small_ops_kernels.cuh"

using namespace ll::cuda;

namespace {

// Blocks (0..T-1, 0..column_blocks - 1) of kRowThreads threads each (no copies to land).
template <class Body>
std::vector<std::string> rows(int T, Body body, unsigned column_blocks = 1) {
    return emu::run_grid(Dim3{unsigned(T), column_blocks, 1}, kRowThreads, emu::Copies::kAtIssue, 0, body);
}

template <bool kBf16>
std::vector<std::string> emulate_op(const std::string& dir, const std::string& op, char** a) {
    auto i = [&](int n) { return std::stoi(a[n]); };
    if (op == "rmsnorm") {
        const int T = i(0), D = i(1);
        const float eps = std::stof(a[2]);
        const auto x = emu::read_values<float>(dir + "/x", size_t(T) * D);
        const auto w = emu::read_values<float>(dir + "/w", size_t(D));
        std::vector<uint16_t> y(x.size(), 0xFFFF);
        auto errors = rows(T, [&] { rmsnorm_kernel<kBf16>(x.data(), D, w.data(), D, eps, y.data(), D); });
        if (errors.empty()) emu::write_values(dir + "/y", y);
        return errors;
    }
    if (op == "rope") {
        const int T = i(0), hq = i(1), hk = i(2), hd = i(3), n_pos = i(4), p0 = i(5);
        const int64_t ld = int64_t(hq + hk) * hd;
        auto x = emu::read_values<uint16_t>(dir + "/x", size_t(T * ld));
        const auto cos = emu::read_values<float>(dir + "/cos", size_t(n_pos) * (hd / 2));
        const auto sin = emu::read_values<float>(dir + "/sin", size_t(n_pos) * (hd / 2));
        if (p0 < 0 || p0 + T > n_pos) throw std::runtime_error("rope: positions past the tables");
        auto errors = rows(T, [&] {
            rope_kernel<kBf16>(x.data(), ld, hq, x.data() + int64_t(hq) * hd, ld, hk, hd, cos.data(), sin.data(), &p0);
        });
        if (errors.empty()) emu::write_values(dir + "/y", x);
        return errors;
    }
    if (op == "swiglu") {
        const int T = i(0), F = i(1);
        const auto gu = emu::read_values<uint16_t>(dir + "/x", size_t(T) * 2 * F);
        std::vector<uint16_t> y(size_t(T) * F, 0xFFFF);
        auto errors = rows(T, [&] { swiglu_kernel<kBf16>(gu.data(), F, y.data()); }, column_blocks(F));
        if (errors.empty()) emu::write_values(dir + "/y", y);
        return errors;
    }
    if (op == "residual_add") {
        const int T = i(0), D = i(1);
        auto x = emu::read_values<float>(dir + "/x", size_t(T) * D);
        const auto y = emu::read_values<uint16_t>(dir + "/w", size_t(T) * D);
        auto errors = rows(T, [&] { residual_add_kernel<kBf16>(x.data(), y.data(), D); }, column_blocks(D));
        if (errors.empty()) emu::write_values(dir + "/y", x);
        return errors;
    }
    if (op == "embed") {
        const int V = i(0), T = i(1), D = i(2);
        const auto table = emu::read_values<uint16_t>(dir + "/x", size_t(V) * D);
        const auto tokens = emu::read_values<int32_t>(dir + "/w", size_t(T));
        for (int32_t tok : tokens)
            if (tok < 0 || tok >= V) throw std::runtime_error("embed: token id outside the vocabulary");
        std::vector<float> x(size_t(T) * D, std::nanf(""));
        auto errors = rows(T, [&] { embed_kernel<kBf16>(table.data(), tokens.data(), D, x.data()); });
        if (errors.empty()) emu::write_values(dir + "/y", x);
        return errors;
    }
    if (op == "kv_append") {
        const int T = i(0), kh = i(1), hd = i(2), p0 = i(4);
        const int64_t n_ctx = std::stoll(a[3]), cache = int64_t(kh) * n_ctx * hd;
        if (p0 < 0 || p0 + T > n_ctx) throw std::runtime_error("kv_append: positions past the cache");
        const auto k = emu::read_values<uint16_t>(dir + "/x", size_t(T) * kh * hd);
        const auto v = emu::read_values<uint16_t>(dir + "/w", size_t(T) * kh * hd);
        std::vector<uint16_t> kv(size_t(2 * cache), 0);
        auto errors = rows(T, [&] {
            kv_append_kernel(k.data(), v.data(), int64_t(kh) * hd, kh, hd, kv.data(), kv.data() + cache, n_ctx, &p0);
        });
        if (errors.empty()) emu::write_values(dir + "/y", kv);
        return errors;
    }
    throw std::runtime_error("no op " + op);
}

}  // namespace

int main(int argc, char** argv) {
    // (ARGS vary with OP: at least DIR OP BF16)
    return emu::driver_main("small_ops_emulated", argc, argv, argc < 4 ? 3 : argc - 1, "DIR OP BF16 ARGS...",
                            [](char** args) {
                                const bool bf16 = std::string(args[3]) == "1";
                                return bf16 ? emulate_op<true>(args[1], args[2], args + 4)
                                            : emulate_op<false>(args[1], args[2], args + 4);
                            });
}
