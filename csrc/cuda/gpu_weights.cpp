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

bool fp8_spec(const TensorSpec& s) { return s.kind == TensorSpec::Kind::FP8 && s.qk_heads == 0; }

void check_shape(const TensorSpec& s, int64_t out, int64_t in) {
    if (s.shape != std::vector<int64_t>{out, in})
        throw FormatError("tensor '" + s.name + "' is not [" + std::to_string(out) + ", " + std::to_string(in) + "]");
}

// A weight as unsigned integer codes [out, in] with a scale (and a min, or a zero point) per group
// of columns: w = scale * (u - zero), or scale * u + min.
struct GroupForm {
    std::vector<uint8_t> codes;
    std::vector<float> scales, mins;  // [out, ceil(in / group)]; mins empty for zero-point forms
    int64_t group = 0;
    int zero = 0, bits = 0;
    std::string source;  // "" for an Int spec, else the GGUF type
    bool same_kind(const GroupForm& o) const {
        return group == o.group && zero == o.zero && bits == o.bits && mins.empty() == o.mins.empty();
    }
    // What the GPU kernels take (their layouts hold groups of whole k tiles, or one per row):
    // 4-bit codes in groups of 16 columns (INT4 GEMM); for the 8-bit GEMM's integer codes
    // (fp8_repack.h), codes whose u - zero is a signed byte, in groups of 32, or of 16 when the rows
    // are whole 32-column tiles, and min codes (u itself a signed byte) in groups of 32 shorter
    // than the row, whose mins the kernel adds where it folds their scales in.
    bool int4(int64_t in) const { return bits == 4 && (group % 16 == 0 || group >= in); }
    bool int8(int64_t in) const {
        if (!mins.empty()) return bits <= 7 && group % 32 == 0 && group < in;
        return bits <= 8 && zero >= 0 && zero <= 128 && (1 << bits) - 1 - zero <= 127 &&
               (group % 32 == 0 || group >= in || (group == 16 && in % 32 == 0));
    }
};

// An Int spec's form: its codes and scales as they are.
GroupForm group_form_of_spec(const TensorSpec& s, int64_t out, int64_t in) {
    check_shape(s, out, in);
    GroupForm f;
    f.group = s.group;
    f.zero = s.mins ? 0 : s.zero;  // (min forms: w = scale u + min, as the CPU reads them)
    f.bits = s.bits;
    const int64_t groups = (in + s.group - 1) / s.group;
    const auto* c = static_cast<const uint8_t*>(s.data);
    f.codes.assign(c, c + out * in);
    f.scales.assign(s.scales, s.scales + out * groups);
    if (s.mins) f.mins.assign(s.mins, s.mins + out * groups);
    return f;
}

// The form of a CPU weight the CPU keeps as integer codes with per-group scales (GGUF Q4_0, Q4_1,
// Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, ...), read back from its packed rows, so llama.cpp's q/k
// permutation is already undone; each group's scale and min come from group_scale, the CPU's own
// dequantization's. A code book's indices (IQ4_NL, IQ4_XS) become the book's values, which are
// 8-bit codes (kIQ4Values, zero 128). False for any other weight.
bool group_form_of_weight(const Linear& w, GroupForm& f) {
    if (w.kind() != Linear::Kind::Quant) return false;
    const PackedQuant& q = w.packed();
    const QuantLayout& L = q.g.layout;
    const int64_t out = w.out(), in = w.in(), groups = (in + L.group - 1) / L.group;
    f.group = L.group;
    f.zero = L.has_min ? 0 : L.zero;
    f.bits = L.lut ? 8 : L.bits;
    f.source = w.format();
    f.codes.resize(size_t(out * in));
    f.scales.resize(size_t(out * groups));
    if (L.has_min) f.mins.resize(size_t(out * groups));
    RowFields row;
    row.resize(L, q.g.Kp);
    for (int64_t r = 0; r < out; ++r) {
        q.unpack_row(r, row);
        for (int64_t c = 0; c < in; ++c) f.codes[size_t(r * in + c)] = uint8_t(code_value(L, row.u[size_t(c)]));
        for (int64_t gi = 0; gi < groups; ++gi) {
            float scale, min;
            group_scale(L, row, gi, scale, min);
            f.scales[size_t(r * groups + gi)] = scale;
            if (L.has_min) f.mins[size_t(r * groups + gi)] = min;
        }
    }
    return true;
}

// What one part is on its own: E4M3 codes for the FP8 tiles, integer codes for the INT4 or INT8
// tiles, or neither (16-bit rows). Parts stack into one product when their forms do.
struct PartForm {
    enum Kind { Fp8, Group, Rows } kind = Rows;
    int64_t fp8_block = 0;  // Fp8: the columns per scale (in: one per row)
    GroupForm g;            // Group
    bool stacks_with(const PartForm& o) const {
        return kind != Rows && kind == o.kind && (kind == Fp8 ? fp8_block == o.fp8_block : g.same_kind(o.g));
    }
};

PartForm part_form(const TensorSpec& s, int64_t out, int64_t in) {
    PartForm f;
    // (the FP8 layout takes blocks of whole 32-column steps, or one per row)
    const int64_t block = s.block <= 0 || s.block >= in ? in : s.block;
    if (fp8_spec(s) && (block == in || block % 32 == 0)) {
        check_shape(s, out, in);
        f.kind = PartForm::Fp8;
        f.fp8_block = block;
        return f;
    }
    if (s.kind == TensorSpec::Kind::Int && s.qk_heads == 0) {
        f.g = group_form_of_spec(s, out, in);
    } else if (s.kind == TensorSpec::Kind::GGUF) {
        if (!group_form_of_weight(Linear::build(s, out, in, nullptr), f.g)) return f;
    } else {
        return f;  // 16-bit rows, which build() dequantizes when it makes them
    }
    if (f.g.int4(in) || f.g.int8(in)) f.kind = PartForm::Group;
    return f;
}

// parts [i, j), whose forms stack, as one product.
GpuLinearHost build(const std::vector<TensorSpec>& parts, const std::vector<int64_t>& outs, int64_t in, bool bf16,
                    std::vector<PartForm>& forms, size_t i, size_t j) {
    GpuLinearHost g;
    g.in = in;
    std::string names;
    for (size_t p = i; p < j; ++p) {
        g.out += outs[p];
        names += (names.empty() ? "" : " + ") + parts[p].name;
    }
    if (forms[i].kind == PartForm::Fp8) {  // the same stacking: codes [out, in] and scales [out, blocks] per part
        const int64_t block = forms[i].fp8_block;
        const int64_t blocks = (in + block - 1) / block;
        std::vector<uint8_t> codes;
        std::vector<float> scales;
        g.act_ub = parts[i].act_ub;
        for (size_t p = i; p < j; ++p) {
            const TensorSpec& s = parts[p];
            const auto* c = static_cast<const uint8_t*>(s.data);
            codes.insert(codes.end(), c, c + outs[p] * in);
            scales.insert(scales.end(), s.scales, s.scales + outs[p] * blocks);
            if (s.act_ub != g.act_ub) g.act_ub = 0;
        }
        g.fp8 = true;
        g.f = fp8_repack(names, codes.data(), g.out, in, scales.data(), block);
        g.format = block == in ? "fp8 per channel" : "fp8 blocks of " + std::to_string(block);
        return g;
    }
    if (forms[i].kind == PartForm::Group) {  // stack the parts' rows: the form is per row
        GroupForm all = std::move(forms[i].g);
        for (size_t p = i + 1; p < j; ++p) {
            const GroupForm& f = forms[p].g;
            all.codes.insert(all.codes.end(), f.codes.begin(), f.codes.end());
            all.scales.insert(all.scales.end(), f.scales.begin(), f.scales.end());
            all.mins.insert(all.mins.end(), f.mins.begin(), f.mins.end());
        }
        const std::string from = all.source.empty() ? "" : " (from " + all.source + ")";
        if (all.int4(in)) {
            g.int4 = true;
            const float* mins = all.mins.empty() ? nullptr : all.mins.data();
            g.q = int4_repack(names, all.codes.data(), g.out, in, all.scales.data(), mins, all.group, all.zero, bf16);
            g.format = "int4 g" + std::to_string(all.group) + from;
            return g;
        }
        for (uint8_t& c : all.codes) c = uint8_t(int(c) - all.zero);  // the signed code, as a byte
        g.fp8 = true;
        g.f = fp8_repack(names, all.codes.data(), g.out, in, all.scales.data(), all.group, /*int8=*/true,
                         all.mins.empty() ? nullptr : all.mins.data());
        g.format = "int8 g" + std::to_string(all.group) + from;
        return g;
    }
    g.ld = padded(in);
    g.half.assign(size_t(g.out * g.ld), 0);
    int64_t row0 = 0;
    std::string from;
    for (size_t p = i; p < j; ++p) {  // one CPU copy at a time
        const Linear w = Linear::build(parts[p], outs[p], in, nullptr);
        append_rows(w, outs[p], in, g.ld, bf16, g.half.data() + row0 * g.ld);
        row0 += outs[p];
        if (from.find(w.format()) == std::string::npos) from += (from.empty() ? "" : ", ") + w.format();
    }
    g.format = std::string(bf16 ? "bf16" : "fp16") + " (from " + from + ")";
    return g;
}

std::vector<PartForm> part_forms(const std::vector<TensorSpec>& parts, const std::vector<int64_t>& outs, int64_t in) {
    if (parts.empty() || parts.size() != outs.size()) throw std::invalid_argument("gpu_linear: parts and outs differ");
    std::vector<PartForm> forms;
    for (size_t i = 0; i < parts.size(); ++i) forms.push_back(part_form(parts[i], outs[i], in));
    return forms;
}

}  // namespace

GpuLinearHost gpu_linear(const std::vector<TensorSpec>& parts, const std::vector<int64_t>& outs, int64_t in,
                         bool bf16) {
    std::vector<PartForm> forms = part_forms(parts, outs, in);
    bool stack = true;
    for (const PartForm& f : forms) stack = stack && f.stacks_with(forms[0]);
    if (!stack)
        for (PartForm& f : forms) f.kind = PartForm::Rows;
    return build(parts, outs, in, bf16, forms, 0, parts.size());
}

std::vector<GpuLinearHost> gpu_linear_pieces(const std::vector<TensorSpec>& parts, const std::vector<int64_t>& outs,
                                             int64_t in, bool bf16) {
    std::vector<PartForm> forms = part_forms(parts, outs, in);
    std::vector<GpuLinearHost> pieces;
    for (size_t i = 0, j; i < parts.size(); i = j) {  // runs of neighbours that stack, and of 16-bit rows
        for (j = i + 1; j < parts.size(); ++j)
            if (forms[i].kind == PartForm::Rows ? forms[j].kind != PartForm::Rows : !forms[j].stacks_with(forms[i]))
                break;
        pieces.push_back(build(parts, outs, in, bf16, forms, i, j));
    }
    return pieces;
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
