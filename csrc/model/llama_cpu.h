// The Llama forward pass on the CPU: one call runs every layer for a batch of new tokens,
// appends their keys and values to the KV cache and writes the logits.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <utility>
#include <memory>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "../cpu/kernels.h"
#include "../cpu/thread_pool.h"
#include "../weights/linear.h"
#include "attention.h"
#include "kv_cache.h"

namespace ll {

struct LlamaConfig {
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;
    int64_t n_layers = 0;
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    float rms_norm_eps = 1e-5f;
    bool tie_word_embeddings = false;
    // head_dim / 2 RoPE frequencies with the model's scaling (Llama 3.1 etc.) already applied:
    // the Python config layer owns the scaling rules, the core only rotates.
    std::vector<float> inv_freq;
};

using TensorSource = std::function<TensorSpec(const std::string& name)>;

// What both engines (LlamaCpu, cuda::LlamaCuda) share around their layers:
// A norm's weight as fp32, checked to be a float vector of n.
std::vector<float> norm_weight(const cpu::Kernels& k, const TensorSource& src, const std::string& name, int64_t n);
// forward()'s checks (tokens in the vocabulary, room in n_ctx) and its cut into chunks of at most
// n_batch tokens: chunk(tokens, n, logits or null, all_logits), where only the last chunk gets
// logits unless all are wanted ([T, vocab]).
void forward_in_chunks(const LlamaConfig& cfg, int64_t n_past, int64_t n_ctx, int64_t n_batch, const int32_t* tokens,
                       int64_t T, float* logits, bool all_logits,
                       const std::function<void(const int32_t*, int64_t, float*, bool)>& chunk);

class LlamaCpu {
public:
    // n_batch: the most tokens one internal step evaluates (bounds the scratch memory).
    LlamaCpu(const LlamaConfig& cfg, const TensorSource& tensors, int64_t n_ctx, int n_threads,
             cpu::Isa isa, int64_t n_batch = 512, KVType kv_type = KVType::F16);

    // Evaluate tokens[0:T] at positions [n_past, n_past + T). Writes logits for every position
    // ([T, vocab]) when all_logits, else for the last one only ([vocab]).
    void forward(const int32_t* tokens, int64_t T, float* logits, bool all_logits);

    int64_t n_past() const { return n_past_; }
    int64_t n_ctx() const { return cache_.n_ctx(); }
    // Forget everything after the first n cached positions (prefix reuse keeps the rest).
    void truncate(int64_t n);
    const LlamaConfig& config() const { return cfg_; }
    const cpu::Kernels& kernels() const { return k_; }
    int n_threads() const { return pool_.size(); }
    size_t weight_bytes() const { return weight_bytes_; }
    // Bytes of weights held per format ("Q4_K", "bf16", ...), norms included as "f32".
    std::vector<std::pair<std::string, size_t>> weight_formats() const;
    size_t kv_bytes() const { return cache_.bytes(); }
    KVType kv_type() const { return cache_.type(); }
    size_t scratch_bytes() const;

    // When set, called during forward with the fp32 input of each decoder layer's linear products,
    // [T, K] row-major: which = 0 (q, k, v), 1 (o), 2 (gate, up), 3 (down). Quantizers calibrate
    // on these (GPTQ's Hessians); unset, it costs one branch per layer.
    using InputObserver = std::function<void(int64_t layer, int which, const float* x, int64_t T, int64_t K)>;
    void set_input_observer(InputObserver f) { observer_ = std::move(f); }

private:
    struct Layer {
        std::vector<float> attn_norm, ffn_norm;
        Linear q, k, v, o, gate, up, down;
    };
    // The products' common input, quantized when one of `ws` takes int8 activations.
    LinearInput input(const float* x, int64_t ld, int64_t T, int64_t K, std::initializer_list<const Linear*> ws);
    const Linear& head() const { return cfg_.tie_word_embeddings ? embed_ : lm_head_; }

    void forward_chunk(const int32_t* tokens, int64_t T, float* logits, bool all_logits);
    int matmul_chunks() const { return pool_.size() == 1 ? 1 : 4 * pool_.size(); }

    InputObserver observer_;
    LlamaConfig cfg_;
    const cpu::Kernels& k_;
    cpu::ThreadPool pool_;
    int64_t n_batch_;
    Linear embed_;     // tied: also the LM head
    std::vector<Layer> layers_;
    std::vector<float> final_norm_;
    Linear lm_head_;   // untied only
    QActBuffer qact_;
    KVCache cache_;
    Attention attention_;
    std::vector<float> rope_cos_, rope_sin_;  // [n_ctx, head_dim / 2]
    int64_t n_past_ = 0;
    size_t weight_bytes_ = 0;
    // scratch, [n_batch, ...]; k_new_, v_new_: the new rows before they are encoded into the cache
    std::vector<float> x_, h_, q_, k_new_, v_new_, attn_, gate_, up_;
};

}  // namespace ll
