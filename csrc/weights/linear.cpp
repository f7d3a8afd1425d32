#include "linear.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "../core/errors.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace ll {

namespace {

const char* dtype_label(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

std::string shape_str(const std::vector<int64_t>& s) {
    std::ostringstream o;
    o << "[";
    for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
    o << "]";
    return o.str();
}

void check_shape(const TensorSpec& s, int64_t out, int64_t in) {
    if (s.shape != std::vector<int64_t>{out, in})
        throw FormatError("tensor '" + s.name + "' has shape " + shape_str(s.shape) + ", expected " +
                          shape_str({out, in}));
}

// Output row n of a q/k projection is source row row_of[n]: llama.cpp's converter stores each
// head's rows with the two rotary halves interleaved ([heads, hd/2, 2]); HF keeps them split.
std::vector<int64_t> qk_row_order(const TensorSpec& s, int64_t out) {
    if (s.qk_heads <= 0) return {};
    const int64_t hd = out / s.qk_heads;
    if (out % s.qk_heads || hd % 2)
        throw FormatError("tensor '" + s.name + "': " + std::to_string(out) + " rows do not split into " +
                          std::to_string(s.qk_heads) + " heads of even size");
    std::vector<int64_t> row_of(out);
    for (int64_t n = 0; n < out; ++n) {
        const int64_t h = n / hd, i = n % hd, half = hd / 2;
        row_of[n] = h * hd + 2 * (i % half) + i / half;
    }
    return row_of;
}

// The pages of a read-only file mapping that only `p[0:n)` uses go back to the page cache: once a
// weight is repacked its source is not needed, and keeping both would hold it twice.
void release_pages(const void* p, size_t n) {
#if defined(__unix__) || defined(__APPLE__)
    const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uintptr_t begin = (a + page - 1) & ~(page - 1), end = (a + n) & ~(page - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
#endif
}

const gguf::BlockType& gguf_type(const TensorSpec& s, int64_t in) {
    const gguf::BlockType* bt = gguf::block_type(s.ggml_type);
    if (!bt)
        throw FormatError("tensor '" + s.name + "' has GGML type " + std::to_string(s.ggml_type) +
                          ", which llama_local cannot load");
    if (in % bt->block)
        throw FormatError("tensor '" + s.name + "' (" + bt->name + ") has rows of " + std::to_string(in) +
                          " elements, not a multiple of its block size " + std::to_string(bt->block));
    return *bt;
}

gguf::RowSource gguf_rows(const TensorSpec& s, const gguf::BlockType& bt, int64_t out, int64_t in) {
    const int64_t row_bytes = in / bt.block * bt.bytes;
    if (int64_t(s.nbytes) != out * row_bytes)
        throw FormatError("tensor '" + s.name + "' (" + bt.name + " " + shape_str(s.shape) + ") has " +
                          std::to_string(s.nbytes) + " bytes of data, but its type and shape need " +
                          std::to_string(out * row_bytes));
    return gguf::RowSource{&bt, static_cast<const uint8_t*>(s.data), row_bytes, in};
}

// Canonical group-wise integers (TensorSpec::Kind::Int) as a row decoder.
struct IntSource {
    const TensorSpec* s;
    int64_t in;
};
void decode_int_row(const void* ctx, int64_t row, RowFields& f) {
    const IntSource& src = *static_cast<const IntSource*>(ctx);
    const TensorSpec& s = *src.s;
    const int64_t ng = (src.in + s.group - 1) / s.group;
    std::memcpy(f.u.data(), static_cast<const uint8_t*>(s.data) + row * src.in, size_t(src.in));
    std::memcpy(f.s32.data(), s.scales + row * ng, size_t(ng) * 4);
    if (s.mins) std::memcpy(f.m32.data(), s.mins + row * ng, size_t(ng) * 4);
}

QuantLayout int_layout(const TensorSpec& s) {
    if (s.bits != 4 && s.bits != 8)
        throw FormatError("tensor '" + s.name + "': " + std::to_string(s.bits) + "-bit integers are not supported (4 or 8)");
    if (s.group != 32 && s.group != 64 && s.group != 128)
        throw FormatError("tensor '" + s.name + "': group size " + std::to_string(s.group) +
                          " is not supported (32, 64 or 128)");
    QuantLayout L;
    L.bits = s.bits;
    L.group = s.group;
    L.scale = ScaleKind::F32;
    L.has_min = s.mins != nullptr;
    L.zero = s.mins ? 0 : s.zero;
    return L;
}

}  // namespace

Linear Linear::view(const void* data, DType dt, int64_t out, int64_t in, int64_t ld) {
    Linear w;
    w.kind_ = Kind::Float;
    w.out_ = out;
    w.in_ = in;
    w.data_ = data;
    w.dtype_ = dt;
    w.ld_ = ld;
    w.bytes_ = size_t(out) * size_t(in) * size_t(dtype_size(dt));
    w.format_ = dtype_label(dt);
    return w;
}

Linear Linear::build(const TensorSpec& s, int64_t out, int64_t in, cpu::ThreadPool* pool) {
    check_shape(s, out, in);
    const std::vector<int64_t> row_of = qk_row_order(s, out);
    Linear w;
    w.out_ = out;
    w.in_ = in;
    switch (s.kind) {
        case TensorSpec::Kind::Float: {
            const int64_t ld = s.ld ? s.ld : in;
            if (s.dtype == DType::BF16) {
                w.kind_ = Kind::BF16;
                w.b_ = pack_bf16(static_cast<const uint16_t*>(s.data), ld, out, in, row_of, pool);
                w.format_ = "bf16";
                w.bytes_ = w.b_.data.size();
                if (s.releasable) release_pages(s.data, s.nbytes);
                return w;
            }
            if (row_of.empty()) return view(s.data, s.dtype, out, in, ld);
            // Reordered rows need a copy of their own; the mapped source is then released.
            const size_t row = size_t(in) * dtype_size(s.dtype);
            w = view(nullptr, s.dtype, out, in, in);
            w.owned_ = AlignedBuffer(row * out);
            for (int64_t n = 0; n < out; ++n)
                std::memcpy(w.owned_.get() + n * row,
                            static_cast<const uint8_t*>(s.data) + row_of[n] * ld * dtype_size(s.dtype), row);
            w.data_ = w.owned_.get();
            if (s.releasable) release_pages(s.data, s.nbytes);
            return w;
        }
        case TensorSpec::Kind::GGUF: {
            const gguf::BlockType& bt = gguf_type(s, in);
            const gguf::RowSource src = gguf_rows(s, bt, out, in);
            w.kind_ = Kind::Quant;
            w.q_ = pack_quant(bt.layout, out, in, gguf::decode_row, &src, row_of, pool);
            w.format_ = bt.name;
            break;
        }
        case TensorSpec::Kind::FP8: {
            w.kind_ = Kind::FP8;
            w.f_ = pack_fp8(static_cast<const uint8_t*>(s.data), s.scales, out, in, s.block, row_of, pool);
            w.format_ = "fp8_e4m3";
            w.bytes_ = w.f_.data.size();
            if (s.releasable) release_pages(s.data, s.nbytes);
            return w;
        }
        case TensorSpec::Kind::Int: {
            const QuantLayout L = int_layout(s);
            const uint8_t* u = static_cast<const uint8_t*>(s.data);
            for (int64_t i = 0; i < out * in; ++i)
                if (u[i] >> L.bits)
                    throw FormatError("tensor '" + s.name + "': code " + std::to_string(u[i]) + " at element " +
                                      std::to_string(i) + " does not fit " + std::to_string(L.bits) + " bits");
            const IntSource src{&s, in};
            w.kind_ = Kind::Quant;
            w.q_ = pack_quant(L, out, in, decode_int_row, &src, row_of, pool);
            w.format_ = "int" + std::to_string(L.bits) + " g" + std::to_string(L.group);
            break;
        }
    }
    w.qkind_ = cpu::qkind_index(w.q_.g.layout);
    if (w.qkind_ < 0)
        throw FormatError("tensor '" + s.name + "': no kernel for layout " + w.q_.g.layout.describe());
    w.bytes_ = w.q_.data.size();
    if (s.releasable) release_pages(s.data, s.nbytes);
    return w;
}

Linear Linear::lookup_table(const TensorSpec& s, int64_t rows, int64_t cols, cpu::ThreadPool* pool) {
    if (s.kind == TensorSpec::Kind::Float && !s.qk_heads) {  // rows read as stored: never multiplied
        check_shape(s, rows, cols);
        return view(s.data, s.dtype, rows, cols, s.ld ? s.ld : cols);
    }
    if (s.kind != TensorSpec::Kind::GGUF || s.qk_heads) return build(s, rows, cols, pool);
    check_shape(s, rows, cols);
    Linear w;
    w.kind_ = Kind::Rows;
    w.out_ = rows;
    w.in_ = cols;
    const gguf::BlockType& bt = gguf_type(s, cols);
    w.rows_ = gguf_rows(s, bt, rows, cols);
    w.format_ = bt.name;
    w.bytes_ = s.nbytes;
    return w;
}

void Linear::dequantize_row(const cpu::Kernels& k, int64_t r, float* out) const {
    switch (kind_) {
        case Kind::Float:
            k.to_f32[int(dtype_)](static_cast<const uint8_t*>(data_) + r * ld_ * dtype_size(dtype_), out, in_);
            break;
        case Kind::BF16:
            b_.dequantize_row(r, out);
            break;
        case Kind::FP8:
            f_.dequantize_row(r, out);
            break;
        case Kind::Quant:
            q_.dequantize_row(r, out);
            break;
        case Kind::Rows: {
            RowFields f;
            f.resize(rows_.type->layout, in_);
            gguf::decode_row(&rows_, r, f);
            dequantize_fields(rows_.type->layout, f, in_, out);
            break;
        }
    }
}

void linear_rows(const Linear& w, int chunk, int n_chunks, int64_t& n0, int64_t& n1) {
    // Chunk starts are multiples of every float tile's NR (48) or of the integer tile (16).
    cpu::ThreadPool::split(w.out(), chunk, n_chunks, w.row_align(), n0, n1);
}

void linear_slice(const cpu::Kernels& k, const Linear& w, const LinearInput& x, float* Y, int64_t ldy,
                  bool accumulate, int chunk, int n_chunks) {
    int64_t n0, n1;
    linear_rows(w, chunk, n_chunks, n0, n1);
    if (n0 >= n1) return;
    if (w.kind_ == Linear::Kind::Quant) {
        k.qmatmul[w.qkind_](*x.q8, w.q_.g, w.q_.data.get(), Y, ldy, n0 / kTileRows,
                            (n1 + kTileRows - 1) / kTileRows, accumulate);
    } else if (w.kind_ == Linear::Kind::BF16) {
        k.bf16_matmul(x.x, x.ldx, x.M, w.b_.g, w.b_.data.get(), Y, ldy, n0 / kTileRows,
                      (n1 + kTileRows - 1) / kTileRows, accumulate);
    } else if (w.kind_ == Linear::Kind::FP8) {
        k.fp8_matmul(x.x, x.ldx, x.M, w.f_.g, w.f_.data.get(), Y, ldy, n0 / kTileRows,
                     (n1 + kTileRows - 1) / kTileRows, accumulate);
    } else {  // Rows tables are never multiplied (the model builds a Quant head from them)
        k.matmul[int(w.dtype_)](x.x, x.ldx, w.data_, w.ld_, w.in_, Y, ldy, x.M, n0, n1, accumulate);
    }
}

// Rows of an input are packed at its own width, plus one cache line: rows a multiple of 4 KiB
// apart would fall in the same L1 sets, and a prefill micro-tile reads 8 of them side by side.
static int64_t act_stride(int64_t K) { return (K + kSuperCols - 1) / kSuperCols * kSuperCols + 64; }
static int64_t flag_words(int64_t ld) { return (ld / 32 + 63) / 64; }

QActBuffer::QActBuffer(int64_t max_rows, int64_t max_k)
    : max_rows_(max_rows),
      q_(size_t(max_rows * act_stride(max_k))),
      r_(size_t(max_rows * act_stride(max_k))),
      d_(size_t(max_rows * act_stride(max_k) / 32)),
      s_(size_t(max_rows * act_stride(max_k) / 16)),
      s32_(size_t(max_rows * act_stride(max_k) / 32)),
      isum_(size_t(max_rows * act_stride(max_k) / 16)),
      flags_(size_t(max_rows * flag_words(act_stride(max_k)))) {}

const cpu::QActs* QActBuffer::quantize(const cpu::Kernels& k, const float* x, int64_t ldx, int64_t M, int64_t K,
                                       cpu::ThreadPool* pool) {
    const int64_t Kp = (K + kSuperCols - 1) / kSuperCols * kSuperCols;
    ld_ = act_stride(K);
    fw_ = flag_words(ld_);
    // Rows [b, e), whole residual groups.
    auto rows = [&](int64_t b, int64_t e) {
        for (int64_t m = b; m < e; ++m)
            k.quantize_acts(x + m * ldx, K, Kp, q_.data() + m * ld_, d_.data() + m * (ld_ / 32),
                            s_.data() + m * (ld_ / 16), isum_.data() + m * (ld_ / 16));
        for (int64_t g = b; g < e; g += cpu::kResidualRows)
            cpu::add_residuals(x + g * ldx, ldx, std::min<int64_t>(cpu::kResidualRows, e - g), K, ld_,
                               q_.data() + g * ld_, d_.data() + g * (ld_ / 32), s_.data() + g * (ld_ / 16),
                               isum_.data() + g * (ld_ / 16), r_.data() + g * ld_, flags_.data() + g * fw_);
        for (int64_t m = b; m < e; ++m)
            for (int64_t i = 0; i < ld_ / 32; ++i)
                s32_[m * (ld_ / 32) + i] = s_[m * (ld_ / 16) + 2 * i] + s_[m * (ld_ / 16) + 2 * i + 1];
    };
    if (M == 1 || !pool || pool->size() == 1) {
        rows(0, M);
    } else {
        pool->run(pool->size(), [&](int c, int nc) {
            int64_t b, e;
            cpu::ThreadPool::split(M, c, nc, cpu::kResidualRows, b, e);
            rows(b, e);
        });
    }
    view_ = cpu::QActs{q_.data(), d_.data(), s_.data(), s32_.data(), isum_.data(), r_.data(), flags_.data(),
                       ld_, fw_, M};
    return &view_;
}

}  // namespace ll
