// fp8_gemm.cu's block code (fp8_gemm_block.cuh) run on the host over the plan's whole grid,
// block by block, as fp8_gemm_on_device runs it on a GPU: the same repack, W8A8's activations
// quantized by the quantization kernel's block code, the same plan, the same choice of kernel
// (fp8_gemm_dispatch) and split-K sum. tests/cuda_emulated.py builds and runs it; the tests
// compare y with numpy.
//
//   fp8_gemm_emulated DIR M N K BLOCK W8A8 BF16 INT8 HAS_MIN SPLITS UB SMS COPIES SEED
// reads DIR/x (uint16 [M, K]), DIR/codes (uint8 [N, K]), DIR/scales (and DIR/mins with HAS_MIN:
// float32 [N, blocks]) and writes DIR/y (uint16 [M, N]). SPLITS 0: the plan's; UB: W8A8's
// activation bound (inf for none); COPIES: at-issue, at-wait or random (cuda_host_emulation.h).
#include <cmath>
#include <memory>

#include "driver_io.h"
#include "fp8_gemm_block.cuh"
#include "fp8_repack.h"

using namespace ll::cuda;

namespace {

// The grid of the instance fp8_gemm_dispatch picks (emu::run_gemm_grid).
struct RunGrid {
    const Fp8Params& p;
    const GemmPlan& plan;
    emu::Copies copies;
    uint32_t seed;
    std::vector<std::string>& errors;

    template <Fp8Act kAct, bool kInt8, int kFold, int kMFrags>
    void operator()() const {
        using Smem = Fp8Smem<kAct, kFold, kMFrags>;
        errors = emu::run_gemm_grid<Smem>(plan, kGemmThreads, copies, seed,
                                          [&](Smem& sm) { fp8_block<kAct, kInt8, kFold, kMFrags>(p, sm); });
    }
};

std::vector<std::string> emulate(char** argv) {
    const std::string dir = argv[1];
    const int64_t M = std::stoll(argv[2]), N = std::stoll(argv[3]), K = std::stoll(argv[4]), block = std::stoll(argv[5]);
    auto flag = [&](int i) { return std::string(argv[i]) == "1"; };
    const bool w8a8 = flag(6), bf16 = flag(7), int8 = flag(8), has_min = flag(9);
    const int splits = std::stoi(argv[10]), sms = std::stoi(argv[12]);
    const float ub = std::stof(argv[11]);
    const emu::Copies copies = emu::copies_named(argv[13]);
    uint32_t seed = uint32_t(std::stoul(argv[14]));

    // As the binding: the geometry (refusing a block the layout cannot hold) says how many scales.
    const Fp8TileGeometry g = fp8_geometry("fp8_gemm", N, K, block, int8);
    const auto x = emu::read_values<uint16_t>(dir + "/x", size_t(M * K));
    const auto codes = emu::read_values<uint8_t>(dir + "/codes", size_t(N * K));
    const auto scales = emu::read_values<float>(dir + "/scales", size_t(N * g.blocks));
    const auto mins = has_min ? emu::read_values<float>(dir + "/mins", size_t(N * g.blocks)) : std::vector<float>();
    const Fp8GpuWeight w =
        fp8_repack("fp8_gemm", codes.data(), N, K, scales.data(), block, int8, has_min ? mins.data() : nullptr);
    if (w8a8 && int8) throw std::runtime_error("fp8_gemm_w8a8: integer codes take the W8A16 path");

    // As fp8_gemm_on_device: X rows padded to a multiple of 8 halves (with NaN, not zeros: X's
    // columns from K on are never read, fp8_gemm.h says), W8A8's codes to whole tiles, the plan.
    const int64_t ldx = (K + 7) / 8 * 8, ldq = g.k_tiles * kFp8TileK;
    const std::vector<uint16_t> xp = emu::pad_rows(x, M, K, ldx, 0xFFFF);
    const GemmPlan plan = with_splits(fp8_gemm_plan(M, g, sms, w8a8), splits);

    std::vector<uint16_t> y(size_t(M * N), 0xFFFF);
    std::vector<float> partial(plan.splits > 1 ? size_t(plan.splits * M * N) : 0, std::nanf(""));
    std::vector<uint8_t> a_codes(w8a8 ? size_t(M * ldq) : 0, 0x7F);  // NaN codes until quantized
    std::vector<float> a_scales(w8a8 ? size_t(M) : 0, std::nanf(""));
    std::vector<std::string> errors;
    if (w8a8)  // fp8_quantize_activations: one block per row, its warp_max NaN until written
        for (unsigned row = 0; row < unsigned(M) && errors.empty(); ++row) {
            float warp_max[4] = {std::nanf(""), std::nanf(""), std::nanf(""), std::nanf("")};
            errors = emu::run_block(Dim3{row, 0, 0}, copies, seed++, [&] {
                fp8_quantize_row_block(xp.data(), ldx, K, ub, a_codes.data(), ldq, a_scales.data(), warp_max);
            });
        }
    if (!errors.empty()) return errors;

    emu::readable(w.q);
    emu::readable(w.scales);
    if (has_min) emu::readable(w.mins);
    if (w8a8) emu::readable(a_codes);  // (X itself only the quantization reads)
    else emu::readable(xp);
    const Fp8Params p{w8a8 ? a_codes.data() : reinterpret_cast<const uint8_t*>(xp.data()), w8a8 ? ldq : ldx, M,
                      w8a8 ? a_scales.data() : nullptr, w.q.data(), w.scales.data(), has_min ? w.mins.data() : nullptr,
                      g, plan.splits, y.data(), N, partial.data()};
    const Fp8Act act = w8a8 ? Fp8Act::E4M3 : bf16 ? Fp8Act::BF16 : Fp8Act::FP16;
    if (!fp8_gemm_dispatch(act, int8, g, has_min, plan.m_frags, RunGrid{p, plan, copies, seed, errors}))
        return {"no kernel is built for this plan (m_frags " + std::to_string(plan.m_frags) + ")"};
    if (!errors.empty()) return errors;

    if (plan.splits > 1)  // times W8A8's row scale
        emu::round_to_half(emu::splitk_sums(partial, plan.splits, M, N, w8a8 ? a_scales.data() : nullptr), bf16,
                           y.data());
    emu::write_values(dir + "/y", y);
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    return emu::driver_main("fp8_gemm_emulated", argc, argv, 14,
                            "DIR M N K BLOCK W8A8 BF16 INT8 HAS_MIN SPLITS UB SMS COPIES SEED", emulate);
}
