// bf16_gemm.cu's block code (bf16_gemm_block.cuh) run on the host over the plan's whole grid,
// block by block, as bf16_gemm_on_device runs it on a GPU: the same padding, plan and split-K sum.
// tests/cuda_emulated.py builds and runs it; the tests compare y with numpy.
//
//   bf16_gemm_emulated DIR M N K BF16 Y_F32 SPLITS SMS COPIES SEED
// reads DIR/x (uint16 [M, K]) and DIR/w (uint16 [N, K]) and writes DIR/y (float32 [M, N]: the
// 16-bit results widened exactly, or the fp32 ones with Y_F32). SPLITS 0: the plan's; COPIES:
// at-issue, at-wait or random (cuda_host_emulation.h).
#include "bf16_gemm_block.cuh"
#include "driver_io.h"

using namespace ll::cuda;

namespace {

template <bool kBf16, bool kOutF32>
std::vector<std::string> run(const B16Params& p, const GemmPlan& plan, emu::Copies copies, uint32_t seed) {
    return with_m_frags(plan.m_frags, [&](auto frags) {
        constexpr int kMFrags = decltype(frags)::value;
        return emu::run_gemm_grid<B16Smem<kMFrags>>(plan, kB16Threads, copies, seed, [&](B16Smem<kMFrags>& sm) {
            b16_block<kBf16, kOutF32, kMFrags>(p, sm);
        });
    });
}

std::vector<std::string> emulate(char** argv) {
    const std::string dir = argv[1];
    const int64_t M = std::stoll(argv[2]), N = std::stoll(argv[3]), K = std::stoll(argv[4]);
    const bool bf16 = std::string(argv[5]) == "1", y_f32 = std::string(argv[6]) == "1";
    const int splits = std::stoi(argv[7]), sms = std::stoi(argv[8]);
    const emu::Copies copies = emu::copies_named(argv[9]);
    const uint32_t seed = uint32_t(std::stoul(argv[10]));

    // As bf16_gemm_on_device: rows padded to a multiple of 8 halves, the plan for this product.
    const int64_t ld = (K + 7) / 8 * 8;
    const std::vector<uint16_t> x = emu::pad_rows(emu::read_values<uint16_t>(dir + "/x", size_t(M * K)), M, K, ld);
    const std::vector<uint16_t> w = emu::pad_rows(emu::read_values<uint16_t>(dir + "/w", size_t(N * K)), N, K, ld);
    const GemmPlan plan = with_splits(bf16_gemm_plan(M, N, K, sms), splits);

    std::vector<uint16_t> y16(y_f32 ? 0 : size_t(M * N), 0xFFFF);
    std::vector<float> y32(y_f32 ? size_t(M * N) : 0, std::nanf(""));
    std::vector<float> partial(plan.splits > 1 ? size_t(plan.splits * M * N) : 0, std::nanf(""));
    emu::readable(x);
    emu::readable(w);
    void* y = y_f32 ? static_cast<void*>(y32.data()) : y16.data();
    const B16Params p{x.data(), ld, w.data(), ld, M, N, K, plan.splits, plan.k_stages, y, N, partial.data()};
    std::vector<std::string> errors;
    if (bf16) errors = y_f32 ? run<true, true>(p, plan, copies, seed) : run<true, false>(p, plan, copies, seed);
    else errors = y_f32 ? run<false, true>(p, plan, copies, seed) : run<false, false>(p, plan, copies, seed);
    if (!errors.empty()) return errors;

    // The result as float32: splitk.cuh's splitk_reduce's sums (rounded once to 16 bits unless the
    // output is fp32), or the kernel's own output, widened.
    const auto widen = [&](uint16_t h) { return bf16 ? ll::bf16_to_float(h) : ll::fp16_to_float(h); };
    std::vector<float> out;
    if (plan.splits > 1) {
        out = emu::splitk_sums(partial, plan.splits, M, N);
        if (!y_f32)
            for (float& v : out) v = widen(bf16 ? float_to_half_bits<true>(v) : float_to_half_bits<false>(v));
    } else if (y_f32) {
        out = y32;
    } else {
        for (uint16_t h : y16) out.push_back(widen(h));
    }
    emu::write_values(dir + "/y", out);
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    return emu::driver_main("bf16_gemm_emulated", argc, argv, 10, "DIR M N K BF16 Y_F32 SPLITS SMS COPIES SEED", emulate);
}
