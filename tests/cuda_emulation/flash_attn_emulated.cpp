// flash_attn.cu's block code (flash_attn_block.cuh) run on the host over the launch's whole grid,
// block by block, as flash_attention_on_device runs it on a GPU: the same cache layout and split
// count; prefill blocks for T > 1, else the decode blocks and then the merge blocks.
// tests/cuda_emulated.py builds and runs it; the tests compare the output with numpy.
//
//   flash_attn_emulated DIR T P0 N_HEADS N_KV_HEADS HEAD_DIM BF16 SPLITS SMS COPIES SEED
// reads DIR/q (uint16 [T, N_HEADS HEAD_DIM]), DIR/k and DIR/v (uint16 [P0 + T, N_KV_HEADS
// HEAD_DIM]) and writes DIR/y (uint16 [T, N_HEADS HEAD_DIM]). SPLITS 0: fa_num_splits's choice
// for SMS; COPIES: at-issue, at-wait or random (cuda_host_emulation.h). Cache rows past the
// positions in use hold NaN: a kernel that reads them gives NaN.
#include "driver_io.h"
#include "flash_attn_block.cuh"

using namespace ll::cuda;

namespace {

template <bool kBf16, int HD>
std::vector<std::string> run(const FaParams& p, emu::Copies copies, uint32_t seed) {
    if (p.T > 1)
        return emu::run_grid(Dim3{unsigned((p.T + kFaQRows - 1) / kFaQRows), unsigned(p.n_heads), 1}, kFaThreads,
                             copies, seed, [&] { prefill_block<kBf16, HD>(p); });
    std::vector<std::string> errors = emu::run_grid(Dim3{unsigned(p.n_splits), unsigned(p.n_kv_heads), 1}, kFaThreads,
                                                    copies, seed, [&] { decode_block<kBf16, HD>(p); });
    if (!errors.empty()) return errors;
    return emu::run_grid(Dim3{unsigned(p.n_heads), 1, 1}, HD, copies, seed, [&] { decode_merge_block<kBf16, HD>(p); });
}

std::vector<std::string> emulate(char** argv) {
    const std::string dir = argv[1];
    const int T = std::stoi(argv[2]), p0 = std::stoi(argv[3]), H = std::stoi(argv[4]), KH = std::stoi(argv[5]);
    const int hd = std::stoi(argv[6]), splits = std::stoi(argv[8]), sms = std::stoi(argv[9]);
    const bool bf16 = std::string(argv[7]) == "1";
    const emu::Copies copies = emu::copies_named(argv[10]);
    const uint32_t seed = uint32_t(std::stoul(argv[11]));
    if (hd != 64 && hd != 128) throw std::runtime_error("HEAD_DIM is 64 or 128");
    if (T < 1 || p0 < 0 || KH < 1 || H % KH) throw std::runtime_error("bad shape");
    const int n_pos = p0 + T;

    const std::vector<uint16_t> q = emu::read_values<uint16_t>(dir + "/q", size_t(T) * H * hd);
    const std::vector<uint16_t> k = emu::read_values<uint16_t>(dir + "/k", size_t(n_pos) * KH * hd);
    const std::vector<uint16_t> v = emu::read_values<uint16_t>(dir + "/v", size_t(n_pos) * KH * hd);

    // As flash_attention_on_device: the device cache's layout, longer than the positions in use
    // (here NaN past them).
    const int64_t n_ctx = n_pos + 5;
    const std::vector<uint16_t> kc = fa_device_cache(k.data(), n_pos, KH, hd, n_ctx, 0x7FFF);
    const std::vector<uint16_t> vc = fa_device_cache(v.data(), n_pos, KH, hd, n_ctx, 0x7FFF);
    const int used = fa_call_splits(T, n_pos, KH, splits, sms);
    std::vector<float> partial(T == 1 ? size_t(H) * used * (2 + hd) : 0, std::nanf(""));
    std::vector<uint16_t> out(q.size(), 0xFFFF);
    emu::readable(q);
    emu::readable(kc);
    emu::readable(vc);
    const FaParams p{q.data(), int64_t(H) * hd, kc.data(), vc.data(), n_ctx, out.data(), int64_t(H) * hd, T, &p0,
                     H, KH, used, 1.0f / std::sqrt(float(hd)), partial.data()};
    std::vector<std::string> errors;
    if (bf16) errors = hd == 64 ? run<true, 64>(p, copies, seed) : run<true, 128>(p, copies, seed);
    else errors = hd == 64 ? run<false, 64>(p, copies, seed) : run<false, 128>(p, copies, seed);
    if (errors.empty()) emu::write_values(dir + "/y", out);
    return errors;
}

}  // namespace

int main(int argc, char** argv) {
    return emu::driver_main("flash_attn_emulated", argc, argv, 11,
                            "DIR T P0 N_HEADS N_KV_HEADS HEAD_DIM BF16 SPLITS SMS COPIES SEED", emulate);
}
