// The Llama forward pass on a GPU (device="cuda"): the weights as gpu_weights.h makes them, a
// device KV cache [layer][kv head][n_ctx][head_dim] in 16 bits, and per chunk of tokens one pass of
// kernels with no host round trip until the logits: embedding, then per layer RMSNorm, the fused
// Q/K/V GEMM, RoPE, the KV append, flash attention, the output GEMM and residual add, RMSNorm, the
// fused gate/up GEMM, SwiGLU, the down GEMM and residual add; then the final norm and the LM head
// in fp32. bf16 on sm_80+, fp16 on sm_75. A decode step (one token) is replayed as a CUDA graph
// unless decode_graphs is false. Compiled only in CUDA builds.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../model/llama_cpu.h"

namespace ll::cuda {

class LlamaCuda {
public:
    // Throws FormatError for a model the kernels cannot take (head_dim other than 64 or 128, sizes
    // not multiples of 8, decode groups over 16 query heads per KV head), std::runtime_error with
    // the CUDA error's text for a device failure (out of memory included).
    LlamaCuda(const LlamaConfig& cfg, const TensorSource& src, int64_t n_ctx, int64_t n_batch,
              bool decode_graphs = true);
    ~LlamaCuda();

    // Evaluates T tokens at positions [n_past, n_past + T). logits (host): [vocab] for the last
    // token, or [T][vocab] with all_logits; null for none.
    void forward(const int32_t* tokens, int64_t T, float* logits, bool all_logits);
    void truncate(int64_t n);
    int64_t n_past() const;
    int64_t n_ctx() const;
    const LlamaConfig& config() const;
    bool bf16() const;
    std::string device_name() const;
    size_t weight_bytes() const;
    size_t kv_bytes() const;
    size_t scratch_bytes() const;
    std::vector<std::pair<std::string, size_t>> weight_formats() const;
    int decode_graphs() const;  // decode-step graphs captured so far (one per split count met)
    std::string decode_graph_error() const;  // why decode graphs were turned off; empty if they were not

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ll::cuda
