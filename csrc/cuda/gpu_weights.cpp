#include "gpu_weights.h"

#include <stdexcept>

#include "../core/errors.h"
#include "../cpu/kernels.h"
#include "half2_math.h"

namespace ll::cuda {
namespace {

int64_t padded(int64_t in) { return (in + 7) / 8 * 8; }

// Rounded to nearest even, as the device's cvt.rn would.
uint16_t to_half(float x, bool bf16) { return host_round_to_half(double(x), bf16); }

// Rows [0, rows) of a CPU weight, dequantized and rounded, into out (row stride ld).
void append_rows(const Linear& w, int64_t rows, int64_t in, int64_t ld, bool bf16, uint16_t* out) {
    const cpu::Kernels& k = cpu::kernels_for(cpu::best_isa());
    std::vector<float> row(static_cast<size_t>(in));
    for (int64_t r = 0; r < rows; ++r) {
        w.dequantize_row(k, r, row.data());
        for (int64_t c = 0; c < in; ++c) out[r * ld + c] = to_half(row[size_t(c)], bf16);
    }
}

bool int4_spec(const TensorSpec& s) { return s.kind == TensorSpec::Kind::Int && s.bits == 4 && s.qk_heads == 0; }
bool fp8_spec(const TensorSpec& s) { return s.kind == TensorSpec::Kind::FP8 && s.qk_heads == 0; }

// Whether every part is what `is` accepts, with the fields `same` compares equal to the first's.
template <class Is, class Same>
bool all_parts(const std::vector<TensorSpec>& parts, Is is, Same same) {
    for (const TensorSpec& s : parts)
        if (!is(s) || !same(s, parts[0])) return false;
    return true;
}

void check_shape(const TensorSpec& s, int64_t out, int64_t in) {
    if (s.shape != std::vector<int64_t>{out, in})
        throw FormatError("tensor '" + s.name + "' is not [" + std::to_string(out) + ", " + std::to_string(in) + "]");
}

}  // namespace

GpuLinearHost gpu_linear(const std::vector<TensorSpec>& parts, const std::vector<int64_t>& outs, int64_t in,
                         bool bf16) {
    if (parts.empty() || parts.size() != outs.size()) throw std::invalid_argument("gpu_linear: parts and outs differ");
    GpuLinearHost g;
    g.in = in;
    for (int64_t o : outs) g.out += o;
    std::string names;
    for (const TensorSpec& s : parts) names += (names.empty() ? "" : " + ") + s.name;
    const bool int4 = all_parts(parts, int4_spec, [](const TensorSpec& a, const TensorSpec& b) {
        return a.group == b.group && (a.mins != nullptr) == (b.mins != nullptr) && a.zero == b.zero;
    });
    // (the FP8 layout takes blocks of whole 32-column steps, or one per row)
    auto fp8_block = [in](const TensorSpec& s) { return s.block <= 0 || s.block >= in ? in : s.block; };
    const bool fp8 = all_parts(parts, fp8_spec, [&](const TensorSpec& a, const TensorSpec& b) {
        return fp8_block(a) == fp8_block(b) && (fp8_block(a) == in || fp8_block(a) % 32 == 0);
    });
    if (int4) {
        // Stack codes, scales and mins row-wise: the group-wise form is per row.
        const int64_t group = parts[0].group, groups = (in + group - 1) / group;
        std::vector<uint8_t> codes;
        std::vector<float> scales, mins;
        for (size_t i = 0; i < parts.size(); ++i) {
            const TensorSpec& s = parts[i];
            check_shape(s, outs[i], in);
            const auto* c = static_cast<const uint8_t*>(s.data);
            codes.insert(codes.end(), c, c + outs[i] * in);
            scales.insert(scales.end(), s.scales, s.scales + outs[i] * groups);
            if (s.mins) mins.insert(mins.end(), s.mins, s.mins + outs[i] * groups);
        }
        g.int4 = true;
        g.q = int4_repack(names, codes.data(), g.out, in, scales.data(), mins.empty() ? nullptr : mins.data(), group,
                          parts[0].zero, bf16);
        g.format = "int4 g" + std::to_string(group);
        return g;
    }
    if (fp8) {  // the same stacking: codes [out, in] and scales [out, blocks] per part
        const int64_t block = fp8_block(parts[0]);
        const int64_t blocks = (in + block - 1) / block;
        std::vector<uint8_t> codes;
        std::vector<float> scales;
        for (size_t i = 0; i < parts.size(); ++i) {
            const TensorSpec& s = parts[i];
            check_shape(s, outs[i], in);
            const auto* c = static_cast<const uint8_t*>(s.data);
            codes.insert(codes.end(), c, c + outs[i] * in);
            scales.insert(scales.end(), s.scales, s.scales + outs[i] * blocks);
        }
        g.fp8 = true;
        g.f = fp8_repack(names, codes.data(), g.out, in, scales.data(), block);
        g.format = block == in ? "fp8 per channel" : "fp8 blocks of " + std::to_string(block);
        return g;
    }
    g.ld = padded(in);
    g.half.assign(size_t(g.out * g.ld), 0);
    int64_t row0 = 0;
    std::string from;
    for (size_t i = 0; i < parts.size(); ++i) {
        const Linear w = Linear::build(parts[i], outs[i], in, nullptr);
        append_rows(w, outs[i], in, g.ld, bf16, g.half.data() + row0 * g.ld);
        row0 += outs[i];
        if (from.find(w.format()) == std::string::npos) from += (from.empty() ? "" : ", ") + w.format();
    }
    g.format = std::string(bf16 ? "bf16" : "fp16") + " (from " + from + ")";
    return g;
}

GpuLinearHost gpu_table(const TensorSpec& spec, int64_t rows, int64_t cols, bool bf16) {
    GpuLinearHost g;
    g.out = rows;
    g.in = cols;
    g.ld = padded(cols);
    g.half.assign(size_t(rows * g.ld), 0);
    const Linear w = Linear::lookup_table(spec, rows, cols, nullptr);
    append_rows(w, rows, cols, g.ld, bf16, g.half.data());
    g.format = std::string(bf16 ? "bf16" : "fp16") + " (from " + w.format() + ")";
    return g;
}

}  // namespace ll::cuda
