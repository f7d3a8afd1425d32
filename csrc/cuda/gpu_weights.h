// What a checkpoint's weights become on the GPU, made on the host (compiled into every build, so
// the host tests hold it to the CPU weight layer): each linear layer, alone or fused with its
// neighbours along the output dimension (Q/K/V, gate/up), is
//   INT4  when every part is 4-bit group-wise with one group size and the same kind of zero: an
//         integer checkpoint's (GPTQ, AWQ, compressed-tensors) codes and scales as they are, or a
//         GGUF Q4_0 / Q4_1 / Q4_K (Q2_K, Q3_K) tensor's codes with each group's scale and min as
//         the CPU's dequantization forms them (int4_repack.h rounds those to 16 bits);
//   FP8   when every part is an E4M3 spec with one scale block: codes and scales as they are
//         (fp8_repack.h), for the FP8 GEMM, with the parts' activation bound when they share one
//         (W8A8 where the GPU has e4m3 mma; else 0: W8A16, which every part's products allow);
//   INT8  (in the FP8 GEMM's tiles, f.int8) when every part is zero-point integer codes whose
//         u - zero is a signed byte, in groups of 32 (or 16) columns or one per row: GGUF Q8_0,
//         Q6_K and Q5_0, IQ4_NL and IQ4_XS (their code book's values), 8-bit symmetric
//         checkpoints; the signed codes and group scales, for its W8A16 path; or codes of up to 7
//         bits with a scale and a min per group of 32 (GGUF Q5_K, Q5_1): the codes, and each
//         group's scale and min (f.mins) as the CPU forms them;
//   16-bit rows [out][ld] otherwise: each row dequantized by the CPU weight layer (which undoes
//         GGUF's q/k row permutation and decodes every GGUF type: here, the float ones) and
//         rounded once to bf16 or fp16.
// The W16A16 GEMM reads the rows in place; the INT4 and FP8 GEMMs their repacked tiles.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../weights/linear.h"
#include "fp8_repack.h"
#include "int4_repack.h"

namespace ll::cuda {

struct GpuLinearHost {
    int64_t out = 0, in = 0;
    bool int4 = false, fp8 = false;  // fp8: the 8-bit GEMM's tiles, E4M3 or (f.int8) integer codes
    Int4GpuWeight q;              // int4
    Fp8GpuWeight f;               // fp8
    float act_ub = 0;             // fp8: TensorSpec::act_ub of every part (0: weights only)
    std::vector<uint16_t> half;   // 16-bit rows [out][ld], zeros past `in`
    int64_t ld = 0;               // in, rounded up to 8 values (16-byte rows for cp.async)
    std::string format;           // "int4 g128", "fp8 per channel", "bf16 (from Q4_K)", ...
};

// parts[i] has outs[i] rows of `in` columns; the result stacks them in order, in one form: the
// parts' shared quantized form, or 16-bit rows when they share none.
GpuLinearHost gpu_linear(const std::vector<TensorSpec>& parts, const std::vector<int64_t>& outs, int64_t in,
                         bool bf16);

// The same rows as products that each keep their parts' form: runs of neighbouring parts that
// share a quantized form stack into one, runs of parts that have none into 16-bit rows. A
// llama.cpp Q4_K_M file's q/k (Q4_K) and v (Q6_K) become an INT4 and an INT8 product, where
// gpu_linear would make all three 16-bit rows. Piece p holds the rows after pieces 0 .. p-1's.
std::vector<GpuLinearHost> gpu_linear_pieces(const std::vector<TensorSpec>& parts, const std::vector<int64_t>& outs,
                                             int64_t in, bool bf16);

// An embedding table [rows][cols] as 16-bit rows (it is also the tied LM head's weight).
GpuLinearHost gpu_table(const TensorSpec& spec, int64_t rows, int64_t cols, bool bf16);

}  // namespace ll::cuda
