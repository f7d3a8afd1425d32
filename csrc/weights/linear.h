// A weight matrix y = x W^T as the forward pass sees it: built once at load from a TensorSpec
// (whatever the checkpoint stores) into the layout its kernels stream, then used without the
// caller knowing the format.
//
//   Float   fp32 / fp16 rows as stored (in place in the mapped file), or an owned copy when rows
//           had to be reordered (llama.cpp's q/k permutation).
//   BF16    bf16 rows repacked into 16-row tiles of column pairs (bf16_tiles.h).
//   FP8     E4M3 codes and fp32 scales repacked into 16-row tiles (fp8_tiles.h).
//   Quant   integer codes and group scales repacked into 16-row tiles (quant_layout.h).
//   Rows    a quantized source kept as stored and decoded row by row: an embedding table that is
//           only ever looked up (untied), so that the rows never used are never read.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/aligned_buffer.h"
#include "../core/dtype.h"
#include "../cpu/kernels.h"
#include "../cpu/thread_pool.h"
#include "bf16_tiles.h"
#include "fp8_tiles.h"
#include "gguf_blocks.h"
#include "quant_layout.h"

namespace ll {

// A tensor as the checkpoint stores it: views the caller keeps alive for the model's lifetime.
struct TensorSpec {
    enum class Kind { Float, GGUF, Int, FP8 };
    std::string name;
    Kind kind = Kind::Float;
    std::vector<int64_t> shape;        // logical: [out, in] for a matrix
    const void* data = nullptr;        // Float: elements; GGUF: blocks; Int, FP8: codes u8 [out, in]
    size_t nbytes = 0;
    DType dtype = DType::F32;          // Float
    int64_t ld = 0;                    // Float: elements between rows (0: dense)
    int ggml_type = -1;                // GGUF
    // Int: the canonical group-wise form, w = s * (u - zero) or s * u + m.
    const float* scales = nullptr;     // Int: [out, in / group] (last group may be partial); FP8: [out, in / block]
    const float* mins = nullptr;       // same shape, or null
    int bits = 0, group = 0, zero = 0;
    int64_t block = 0;                 // FP8: columns per scale (0: one scale per row)
    float act_ub = 0;                  // FP8: > 0 when the checkpoint quantizes activations to E4M3
                                       // too, per token with scales bounded by act_ub (inf: none);
                                       // the GPU's W8A8 path (the CPU keeps fp32 activations)
    int qk_heads = 0;                  // undo llama.cpp's q/k row permutation for this many heads
    bool releasable = false;           // data lies in a read-only file mapping: its pages may be dropped
};

class Linear {
public:
    enum class Kind { Float, BF16, FP8, Quant, Rows };

    Linear() = default;
    Linear(Linear&&) = default;
    Linear& operator=(Linear&&) = default;

    // The kernel-ready weight for `s` (checked against [out, in]); repacks quantized sources.
    static Linear build(const TensorSpec& s, int64_t out, int64_t in, cpu::ThreadPool* pool);
    // An embedding table that is only looked up: quantized sources stay as stored.
    static Linear lookup_table(const TensorSpec& s, int64_t rows, int64_t cols, cpu::ThreadPool* pool);
    // A float matrix used in place (the tests' strided views, the KV cache).
    static Linear view(const void* data, DType dt, int64_t out, int64_t in, int64_t ld);

    Kind kind() const { return kind_; }
    int64_t out() const { return out_; }
    int64_t in() const { return in_; }
    bool wants_q8() const { return kind_ == Kind::Quant; }
    size_t bytes() const { return bytes_; }               // what the weight occupies (or maps)
    const std::string& format() const { return format_; }  // "bf16", "Q4_K", "int4 g128", ...
    int64_t row_align() const { return kind_ == Kind::Float ? 48 : kTileRows; }
    const PackedQuant& packed() const { return q_; }

    void dequantize_row(const cpu::Kernels& k, int64_t r, float* out) const;

private:
    friend void linear_slice(const cpu::Kernels&, const Linear&, const struct LinearInput&, float*, int64_t,
                             bool, int, int);
    Kind kind_ = Kind::Float;
    int64_t out_ = 0, in_ = 0;
    size_t bytes_ = 0;
    std::string format_;
    // Float
    const void* data_ = nullptr;
    DType dtype_ = DType::F32;
    int64_t ld_ = 0;
    AlignedBuffer owned_;
    // BF16
    PackedBF16 b_;
    // FP8
    PackedFP8 f_;
    // Quant
    PackedQuant q_;
    int qkind_ = -1;
    // Rows
    gguf::RowSource rows_{};
};

// The activations of one product, as floats and (when a consumer needs them) quantized.
struct LinearInput {
    const float* x;
    int64_t ldx;
    int64_t M;
    const cpu::QActs* q8;   // null unless a Quant weight consumes this input
};

// The output rows [n0, n1) that chunk `chunk` of `n_chunks` computes.
void linear_rows(const Linear& w, int chunk, int n_chunks, int64_t& n0, int64_t& n1);

// Y[M, out] (+)= X[M, in] . W^T for one chunk's rows. Called from inside ThreadPool::run, so
// several products (Q, K, V; gate, up) can share one dispatch.
void linear_slice(const cpu::Kernels& k, const Linear& w, const LinearInput& x, float* Y, int64_t ldy,
                  bool accumulate, int chunk, int n_chunks);

// Scratch for quantized activations: rows of up to max_k columns.
class QActBuffer {
public:
    QActBuffer() = default;
    QActBuffer(int64_t max_rows, int64_t max_k);
    // Quantizes X[0:M, 0:K]; rows are split over the pool when M > 1.
    const cpu::QActs* quantize(const cpu::Kernels& k, const float* x, int64_t ldx, int64_t M, int64_t K,
                               cpu::ThreadPool* pool);
    size_t bytes() const {
        return q_.size() + r_.size() + 4 * (d_.size() + s_.size() + s32_.size() + isum_.size()) + 8 * flags_.size();
    }

private:
    int64_t ld_ = 0, fw_ = 0, max_rows_ = 0;
    std::vector<int8_t> q_, r_;
    std::vector<float> d_, s_, s32_;
    std::vector<int32_t> isum_;
    std::vector<uint64_t> flags_;
    cpu::QActs view_;
};

}  // namespace ll
