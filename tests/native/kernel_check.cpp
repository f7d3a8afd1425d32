// Every kernel of one ISA's table against the scalar reference, without Python: for ISAs this
// machine cannot run natively (NEON, cross-compiled and run under qemu-aarch64 by
// tests/test_kernels_neon.py). Prints one line per check; exits non-zero if any fails.
//
//   kernel_check ISA
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/core/dtype.h"
#include "../../csrc/cpu/kernels.h"
#include "../../csrc/cpu/thread_pool.h"
#include "../../csrc/weights/gguf_blocks.h"
#include "../../csrc/weights/linear.h"

using namespace ll;

namespace {

int failures = 0;
std::mt19937 rng(1234);

std::vector<float> normal(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// |a - b| <= tol * max|b| over all elements.
void check(const std::string& what, const std::vector<float>& a, const std::vector<float>& b, float tol) {
    float worst = 0.0f, scale = 1e-30f;
    for (size_t i = 0; i < a.size(); ++i) {
        worst = std::fmax(worst, std::fabs(a[i] - b[i]));
        scale = std::fmax(scale, std::fabs(b[i]));
    }
    const bool ok = worst <= tol * scale && a.size() == b.size();
    if (!ok) ++failures;
    std::printf("%-44s %s (max err %.2e of %.2e)\n", what.c_str(), ok ? "ok" : "FAILED", worst, scale);
}

// Y = X W^T through a Linear built from `spec` on kernel table k (activations quantized when needed).
std::vector<float> product(const cpu::Kernels& k, const Linear& w, const std::vector<float>& x, int64_t M) {
    const int64_t N = w.out(), K = w.in();
    std::vector<float> y(size_t(M * N));
    QActBuffer qb(M, K);
    const cpu::QActs* q8 = w.wants_q8() ? qb.quantize(k, x.data(), K, M, K, nullptr) : nullptr;
    const LinearInput in{x.data(), K, M, q8};
    for (int c = 0; c < 3; ++c) linear_slice(k, w, in, y.data(), N, false, c, 3);
    return y;
}

void check_linear(const std::string& what, const cpu::Kernels& k, const cpu::Kernels& ref, const TensorSpec& s) {
    const Linear w = Linear::build(s, s.shape[0], s.shape[1], nullptr);
    for (int64_t M : {1, 5, 40}) {  // 40: the prefill kernel (quant_prefill_impl.h)
        const auto x = normal(size_t(M * s.shape[1]));
        check(what + " M=" + std::to_string(M), product(k, w, x, M), product(ref, w, x, M), 2e-5f);
    }
}

void check_float_kernels(const cpu::Kernels& k, const cpu::Kernels& ref) {
    const int64_t M = 5, K = 100, N = 23;
    const auto x = normal(M * K), wf = normal(N * K);
    std::vector<uint16_t> wh(N * K), wb(N * K);
    for (size_t i = 0; i < wf.size(); ++i) {
        wh[i] = uint16_t((rng() & 0x8000) | ((10 + rng() % 10) << 10) | (rng() & 0x3FF));  // normal halves
        wb[i] = float_to_bf16(wf[i]);
    }
    const void* ws[] = {wf.data(), wh.data(), wb.data()};
    const char* names[] = {"matmul f32", "matmul f16", "matmul bf16"};
    for (int dt = 0; dt < kNumDTypes; ++dt) {
        std::vector<float> a(M * N), b(M * N);
        k.matmul[dt](x.data(), K, ws[dt], K, K, a.data(), N, M, 0, N, false);
        ref.matmul[dt](x.data(), K, ws[dt], K, K, b.data(), N, M, 0, N, false);
        check(names[dt], a, b, 2e-5f);
    }
    std::vector<float> a(K), b(K);
    const auto g = normal(K, 3.0f), u = normal(K), nw = normal(K);
    k.rmsnorm(x.data(), nw.data(), a.data(), K, 1e-5f);
    ref.rmsnorm(x.data(), nw.data(), b.data(), K, 1e-5f);
    check("rmsnorm", a, b, 1e-5f);
    k.swiglu(g.data(), u.data(), a.data(), K);
    ref.swiglu(g.data(), u.data(), b.data(), K);
    check("swiglu", a, b, 1e-5f);
    a = g;
    b = g;
    k.softmax(a.data(), K, 0.7f);
    ref.softmax(b.data(), K, 0.7f);
    check("softmax", a, b, 1e-5f);
    const auto c = normal(K / 2), sn = normal(K / 2);
    a = x;
    b = x;
    k.rope(a.data(), c.data(), sn.data(), K / 2);
    ref.rope(b.data(), c.data(), sn.data(), K / 2);
    check("rope", std::vector<float>(a.begin(), a.begin() + K), std::vector<float>(b.begin(), b.begin() + K), 1e-5f);
    std::vector<float> ga(M * 37), gb(M * 37);
    const auto bm = normal(K * 37);
    k.gemm_nn(x.data(), K, bm.data(), 37, K, ga.data(), 37, M, 37, false);
    ref.gemm_nn(x.data(), K, bm.data(), 37, K, gb.data(), 37, M, 37, false);
    check("gemm_nn", ga, gb, 2e-5f);
}

void check_activations(const cpu::Kernels& k, const cpu::Kernels& ref) {
    const int64_t M = 9, K = 300;
    const auto x = normal(M * K);
    QActBuffer a(M, K), b(M, K);
    const cpu::QActs& qa = *a.quantize(k, x.data(), K, M, K, nullptr);
    const cpu::QActs& qb = *b.quantize(ref, x.data(), K, M, K, nullptr);
    const size_t n = size_t(M * qa.ld);
    const bool same = std::memcmp(qa.q, qb.q, n) == 0 && std::memcmp(qa.r, qb.r, n) == 0 &&
                      std::memcmp(qa.d, qb.d, n / 32 * 4) == 0 && std::memcmp(qa.isum, qb.isum, n / 16 * 4) == 0;
    if (!same) ++failures;
    std::printf("%-44s %s\n", "quantized activations bit-identical", same ? "ok" : "FAILED");
}

void check_quant(const cpu::Kernels& k, const cpu::Kernels& ref) {
    // Every GGUF block type, random blocks with finite fp16 fields; 37 rows (tile tails).
    const int ids[] = {2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23};
    for (int id : ids) {
        const gguf::BlockType* bt = gguf::block_type(id);
        const int64_t N = 37, K = bt->block == 32 ? 96 : 512;
        std::vector<uint8_t> raw(size_t(N * K / bt->block * bt->bytes));
        for (auto& byte : raw) byte = uint8_t(rng());
        // the fp16 fields: d (and m / dmin) at the offsets gguf_blocks.cpp reads them
        const int f16_at[][2] = {{2, 0}, {3, 0}, {6, 0}, {7, 0}, {8, 0}, {10, 80}, {11, 108}, {12, 0}, {13, 0},
                                 {14, 208}, {20, 0}, {23, 0}};
        for (auto& fa : f16_at)
            if (fa[0] == id)
                for (size_t b = 0; b < raw.size() / bt->bytes; ++b) {
                    for (int o : {fa[1], fa[1] + 2}) {
                        if (o + 2 > bt->bytes) continue;
                        const uint16_t h = 0x2000 | (rng() & 0x3FF);  // ~0.0078..0.0156
                        std::memcpy(&raw[b * bt->bytes + o], &h, 2);
                    }
                }
        TensorSpec s;
        s.name = bt->name;
        s.kind = TensorSpec::Kind::GGUF;
        s.ggml_type = id;
        s.shape = {N, K};
        s.data = raw.data();
        s.nbytes = raw.size();
        check_linear(std::string("quant ") + bt->name, k, ref, s);
    }
}

void check_tiles(const cpu::Kernels& k, const cpu::Kernels& ref) {
    const int64_t N = 37, K = 99;
    const auto wf = normal(N * K);
    std::vector<uint16_t> wb(N * K);
    for (size_t i = 0; i < wf.size(); ++i) wb[i] = float_to_bf16(wf[i]);
    TensorSpec s;
    s.name = "bf16";
    s.kind = TensorSpec::Kind::Float;
    s.dtype = DType::BF16;
    s.shape = {N, K};
    s.data = wb.data();
    s.nbytes = wb.size() * 2;
    check_linear("bf16 tiles", k, ref, s);
    std::vector<uint8_t> codes(N * K);
    for (auto& c : codes) c = uint8_t((rng() & 0x7F) == 0x7F ? 0x3C : rng());
    std::vector<float> scales(N * 2, 0.01f);
    TensorSpec f;
    f.name = "fp8";
    f.kind = TensorSpec::Kind::FP8;
    f.shape = {N, K};
    f.data = codes.data();
    f.nbytes = codes.size();
    f.scales = scales.data();
    f.block = 64;
    check_linear("fp8 tiles", k, ref, f);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: kernel_check ISA\n");
        return 2;
    }
    const cpu::Isa isa = cpu::parse_isa(argv[1]);
    if (!cpu::isa_supported(isa)) {
        std::printf("%s: not supported on this CPU (or not built)\n", argv[1]);
        return 3;
    }
    const cpu::Kernels& k = cpu::kernels_for(isa);
    const cpu::Kernels& ref = cpu::kernels_for(cpu::Isa::Scalar);
    std::printf("kernel table %s against scalar\n", k.name);
    check_float_kernels(k, ref);
    check_activations(k, ref);
    check_quant(k, ref);
    check_tiles(k, ref);
    std::printf("%s\n", failures ? "FAILED" : "all ok");
    return failures ? 1 : 0;
}
