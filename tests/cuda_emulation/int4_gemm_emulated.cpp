// int4_gemm.cu's block code (int4_gemm_block.cuh) run on the host over the plan's whole grid,
// block by block, as int4_gemm_on_device runs it on a GPU: the same repack, plan and split-K sum.
// tests/cuda_emulated.py builds and runs it; the tests compare y with numpy.
//
//   int4_gemm_emulated DIR M N K GROUP ZERO HAS_MIN BF16 SPLITS SMS COPIES SEED
// reads DIR/x (uint16 [M, K]), DIR/codes (uint8 [N, K]), DIR/scales (and DIR/mins with HAS_MIN:
// float32 [N, groups]) and writes DIR/y (uint16 [M, N]). SPLITS 0: the plan's; COPIES: at-issue,
// at-wait or random (cuda_host_emulation.h). Exit status 1 with what went wrong on stderr.
#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "int4_gemm_block.cuh"
#include "int4_repack.h"

using namespace ll::cuda;

namespace {

template <class T>
std::vector<T> read_file(const std::string& path, size_t n) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!f.good() && !f.eof()) throw std::runtime_error("cannot read " + path);
    if (bytes.size() != n * sizeof(T)) throw std::runtime_error(path + " does not hold " + std::to_string(n) + " values");
    std::vector<T> v(n);
    std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
}

template <class T>
void readable(const std::vector<T>& v) {
    emu::g_readable.push_back({reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)});
}

emu::Copies copies_named(const std::string& s) {
    if (s == "at-issue") return emu::Copies::kAtIssue;
    if (s == "at-wait") return emu::Copies::kAtWait;
    if (s == "random") return emu::Copies::kRandom;
    throw std::runtime_error("COPIES is at-issue, at-wait or random, not " + s);
}

// Every block of the grid, one after another, each with fresh shared memory full of NaN.
template <bool kBf16, bool kHasMin, int kMFrags>
std::vector<std::string> run_grid(const GemmParams& p, const GemmPlan& plan, emu::Copies copies, uint32_t seed) {
    for (unsigned z = 0; z < unsigned(plan.splits); ++z)
        for (unsigned y = 0; y < unsigned(plan.grid_m); ++y)
            for (unsigned x = 0; x < unsigned(plan.grid_n); ++x) {
                auto sm = std::make_unique<GemmSmem<kMFrags>>();
                std::memset(static_cast<void*>(sm.get()), 0xFF, sizeof(*sm));
                std::vector<std::string> errors = emu::run_block(Dim3{x, y, z}, copies, seed++, [&] {
                    gemm_block<kBf16, kHasMin, kMFrags>(p, *sm);
                });
                if (!errors.empty()) return errors;
            }
    return {};
}

template <bool kBf16, bool kHasMin>
std::vector<std::string> run(const GemmParams& p, const GemmPlan& plan, emu::Copies copies, uint32_t seed) {
    if (plan.m_frags == 1) return run_grid<kBf16, kHasMin, 1>(p, plan, copies, seed);
    if (plan.m_frags == 2) return run_grid<kBf16, kHasMin, 2>(p, plan, copies, seed);
    return run_grid<kBf16, kHasMin, 3>(p, plan, copies, seed);
}

int main_(int argc, char** argv) {
    if (argc != 13) throw std::runtime_error("usage: int4_gemm_emulated DIR M N K GROUP ZERO HAS_MIN BF16 SPLITS SMS COPIES SEED");
    const std::string dir = argv[1];
    const int64_t M = std::stoll(argv[2]), N = std::stoll(argv[3]), K = std::stoll(argv[4]), group = std::stoll(argv[5]);
    const int zero = std::stoi(argv[6]), splits = std::stoi(argv[9]), sms = std::stoi(argv[10]);
    const bool has_min = std::string(argv[7]) == "1", bf16 = std::string(argv[8]) == "1";
    const emu::Copies copies = copies_named(argv[11]);
    const uint32_t seed = uint32_t(std::stoul(argv[12]));
    const int64_t groups = (K + group - 1) / group;

    const std::vector<uint16_t> x = read_file<uint16_t>(dir + "/x", size_t(M * K));
    const std::vector<uint8_t> codes = read_file<uint8_t>(dir + "/codes", size_t(N * K));
    const std::vector<float> scales = read_file<float>(dir + "/scales", size_t(N * groups));
    const std::vector<float> mins = has_min ? read_file<float>(dir + "/mins", size_t(N * groups)) : std::vector<float>();
    const Int4GpuWeight w =
        int4_repack("w", codes.data(), N, K, scales.data(), has_min ? mins.data() : nullptr, group, zero, bf16);

    // As int4_gemm_on_device: X rows padded to a multiple of 8 halves, the plan for this M.
    const int64_t ldx = (K + 7) / 8 * 8;
    std::vector<uint16_t> xp(size_t(M * ldx), 0);
    for (int64_t m = 0; m < M; ++m) std::memcpy(&xp[size_t(m * ldx)], &x[size_t(m * K)], size_t(K) * 2);
    GemmPlan plan = int4_gemm_plan(M, w.g, sms);
    if (splits > 0) plan.splits = int(splits < plan.k_stages ? splits : plan.k_stages);

    std::vector<uint16_t> y(size_t(M * N), 0xFFFF);
    std::vector<float> partial(plan.splits > 1 ? size_t(plan.splits * M * N) : 0, std::nanf(""));
    readable(w.q);
    readable(w.scales);
    if (has_min) readable(w.mins);
    readable(xp);
    const GemmParams p{xp.data(), ldx, M, w.q.data(), w.scales.data(), has_min ? w.mins.data() : nullptr, w.g, zero,
                       plan.splits, plan.k_stages, y.data(), N, partial.data()};
    std::vector<std::string> errors;
    if (bf16) errors = has_min ? run<true, true>(p, plan, copies, seed) : run<true, false>(p, plan, copies, seed);
    else errors = has_min ? run<false, true>(p, plan, copies, seed) : run<false, false>(p, plan, copies, seed);
    for (const std::string& e : errors) std::fprintf(stderr, "emulation: %s\n", e.c_str());
    if (!errors.empty()) return 1;

    // splitk.cuh's splitk_reduce: the partials added in split order, rounded once.
    if (plan.splits > 1)
        for (int64_t i = 0; i < M * N; ++i) {
            float sum = 0.0f;
            for (int s = 0; s < plan.splits; ++s) sum += partial[size_t(s * M * N + i)];
            y[size_t(i)] = bf16 ? float_to_half_bits<true>(sum) : float_to_half_bits<false>(sum);
        }
    std::ofstream out(dir + "/y", std::ios::binary);
    out.write(reinterpret_cast<const char*>(y.data()), std::streamsize(y.size() * 2));
    std::printf("m_frags %d grid %lld x %lld splits %d\n", plan.m_frags, (long long)plan.grid_n, (long long)plan.grid_m,
                plan.splits);
    return out.good() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return main_(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "int4_gemm_emulated: %s\n", e.what());
        return 1;
    }
}
