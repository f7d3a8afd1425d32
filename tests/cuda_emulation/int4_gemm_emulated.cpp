// int4_gemm.cu's block code (int4_gemm_block.cuh) run on the host over the plan's whole grid,
// block by block, as int4_gemm_on_device runs it on a GPU: the same repack, plan and split-K sum.
// tests/cuda_emulated.py builds and runs it; the tests compare y with numpy.
//
//   int4_gemm_emulated DIR M N K GROUP ZERO HAS_MIN BF16 SPLITS SMS COPIES SEED
// reads DIR/x (uint16 [M, K]), DIR/codes (uint8 [N, K]), DIR/scales (and DIR/mins with HAS_MIN:
// float32 [N, groups]) and writes DIR/y (uint16 [M, N]). SPLITS 0: the plan's; COPIES: at-issue,
// at-wait or random (cuda_host_emulation.h).
#include "driver_io.h"
#include "int4_gemm_block.cuh"
#include "int4_repack.h"

using namespace ll::cuda;

namespace {

template <bool kBf16, bool kHasMin>
std::vector<std::string> run(const GemmParams& p, const GemmPlan& plan, emu::Copies copies, uint32_t seed) {
    return with_m_frags(plan.m_frags, [&](auto frags) {
        constexpr int kMFrags = decltype(frags)::value;
        return emu::run_gemm_grid<GemmSmem<kMFrags>>(plan, kGemmThreads, copies, seed, [&](GemmSmem<kMFrags>& sm) {
            gemm_block<kBf16, kHasMin, kMFrags>(p, sm);
        });
    });
}

std::vector<std::string> emulate(char** argv) {
    const std::string dir = argv[1];
    const int64_t M = std::stoll(argv[2]), N = std::stoll(argv[3]), K = std::stoll(argv[4]), group = std::stoll(argv[5]);
    const int zero = std::stoi(argv[6]), splits = std::stoi(argv[9]), sms = std::stoi(argv[10]);
    const bool has_min = std::string(argv[7]) == "1", bf16 = std::string(argv[8]) == "1";
    const emu::Copies copies = emu::copies_named(argv[11]);
    const uint32_t seed = uint32_t(std::stoul(argv[12]));
    const int64_t groups = (K + group - 1) / group;

    const auto x = emu::read_values<uint16_t>(dir + "/x", size_t(M * K));
    const auto codes = emu::read_values<uint8_t>(dir + "/codes", size_t(N * K));
    const auto scales = emu::read_values<float>(dir + "/scales", size_t(N * groups));
    const auto mins = has_min ? emu::read_values<float>(dir + "/mins", size_t(N * groups)) : std::vector<float>();
    const Int4GpuWeight w =
        int4_repack("w", codes.data(), N, K, scales.data(), has_min ? mins.data() : nullptr, group, zero, bf16);

    // As int4_gemm_on_device: X rows padded to a multiple of 8 halves, the plan for this M.
    const int64_t ldx = (K + 7) / 8 * 8;
    const std::vector<uint16_t> xp = emu::pad_rows(x, M, K, ldx);
    const GemmPlan plan = with_splits(int4_gemm_plan(M, w.g, sms), splits);

    std::vector<uint16_t> y(size_t(M * N), 0xFFFF);
    std::vector<float> partial(plan.splits > 1 ? size_t(plan.splits * M * N) : 0, std::nanf(""));
    emu::readable(w.q);
    emu::readable(w.scales);
    if (has_min) emu::readable(w.mins);
    emu::readable(xp);
    const GemmParams p{xp.data(), ldx, M, w.q.data(), w.scales.data(), has_min ? w.mins.data() : nullptr, w.g, zero,
                       plan.splits, plan.k_stages, y.data(), N, partial.data()};
    std::vector<std::string> errors;
    if (bf16) errors = has_min ? run<true, true>(p, plan, copies, seed) : run<true, false>(p, plan, copies, seed);
    else errors = has_min ? run<false, true>(p, plan, copies, seed) : run<false, false>(p, plan, copies, seed);
    if (!errors.empty()) return errors;

    if (plan.splits > 1) emu::round_to_half(emu::splitk_sums(partial, plan.splits, M, N), bf16, y.data());
    emu::write_values(dir + "/y", y);
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    return emu::driver_main("int4_gemm_emulated", argc, argv, 12,
                            "DIR M N K GROUP ZERO HAS_MIN BF16 SPLITS SMS COPIES SEED", emulate);
}
