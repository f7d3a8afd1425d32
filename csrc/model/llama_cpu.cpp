#include "llama_cpu.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "../core/errors.h"
#include "rope_table.h"

namespace ll {

std::vector<float> norm_weight(const cpu::Kernels& k, const TensorSource& src, const std::string& name, int64_t n) {
    const TensorSpec t = src(name);
    if (t.kind != TensorSpec::Kind::Float || t.shape != std::vector<int64_t>{n})
        throw FormatError("tensor '" + name + "' must be a float vector of " + std::to_string(n) + " elements");
    std::vector<float> w(n);
    k.to_f32[int(t.dtype)](t.data, w.data(), n);
    return w;
}

void forward_in_chunks(const LlamaConfig& cfg, int64_t n_past, int64_t n_ctx, int64_t n_batch, const int32_t* tokens,
                       int64_t T, float* logits, bool all_logits,
                       const std::function<void(const int32_t*, int64_t, float*, bool)>& chunk) {
    if (T <= 0) throw std::invalid_argument("forward: no tokens to evaluate");
    if (n_past + T > n_ctx)
        throw ContextOverflow(std::to_string(n_past) + " cached + " + std::to_string(T) +
                              " new tokens exceed the context size n_ctx=" + std::to_string(n_ctx));
    for (int64_t t = 0; t < T; ++t)
        if (tokens[t] < 0 || tokens[t] >= cfg.vocab_size)
            throw std::invalid_argument("token id " + std::to_string(tokens[t]) + " at position " +
                                        std::to_string(t) + " is outside the vocabulary [0, " +
                                        std::to_string(cfg.vocab_size) + ")");
    for (int64_t done = 0; done < T; done += n_batch) {
        const int64_t n = std::min(n_batch, T - done);
        const bool last = done + n == T;
        float* out = all_logits ? logits + done * cfg.vocab_size : (last ? logits : nullptr);
        chunk(tokens + done, n, out, all_logits);
    }
}

LlamaCpu::LlamaCpu(const LlamaConfig& cfg, const TensorSource& src, int64_t n_ctx, int n_threads,
                   cpu::Isa isa, int64_t n_batch, KVType kv_type)
    : cfg_(cfg),
      k_(cpu::kernels_for(isa)),
      pool_(n_threads),
      n_batch_(n_batch),
      cache_(cfg.n_layers, std::max<int64_t>(n_ctx, 1), cfg.n_kv_heads, cfg.head_dim, kv_type) {
    const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, hd = cfg.head_dim;
    const int64_t qdim = cfg.n_heads * hd, kvdim = cfg.n_kv_heads * hd;
    if (D <= 0 || F <= 0 || cfg.n_layers <= 0 || cfg.n_heads <= 0 || cfg.n_kv_heads <= 0 ||
        hd <= 0 || cfg.vocab_size <= 0)
        throw FormatError("model config has a non-positive size");
    if (cfg.n_heads % cfg.n_kv_heads != 0)
        throw FormatError("num_attention_heads (" + std::to_string(cfg.n_heads) +
                          ") is not a multiple of num_key_value_heads (" +
                          std::to_string(cfg.n_kv_heads) + ")");
    if (hd % 2 != 0 || int64_t(cfg.inv_freq.size()) != hd / 2)
        throw FormatError("RoPE needs head_dim / 2 frequencies and an even head_dim");
    if (n_ctx <= 0 || n_batch <= 0) throw std::invalid_argument("n_ctx and n_batch must be positive");

    // Each weight is repacked (when its format needs it) as soon as it is read, so that a mapped
    // source's pages can be dropped before the next one is touched.
    cpu::ThreadPool* pool = &pool_;
    auto linear = [&](const std::string& name, int64_t out, int64_t in) {
        Linear w = Linear::build(src(name), out, in, pool);
        weight_bytes_ += w.bytes();
        return w;
    };
    const std::string embed_name = "model.embed_tokens.weight";
    if (cfg.tie_word_embeddings) {
        embed_ = linear(embed_name, cfg.vocab_size, D);
    } else {
        embed_ = Linear::lookup_table(src(embed_name), cfg.vocab_size, D, pool);
        weight_bytes_ += embed_.bytes();
    }
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        Layer L;
        L.attn_norm = norm_weight(k_, src, p + "input_layernorm.weight", D);
        L.ffn_norm = norm_weight(k_, src, p + "post_attention_layernorm.weight", D);
        L.q = linear(p + "self_attn.q_proj.weight", qdim, D);
        L.k = linear(p + "self_attn.k_proj.weight", kvdim, D);
        L.v = linear(p + "self_attn.v_proj.weight", kvdim, D);
        L.o = linear(p + "self_attn.o_proj.weight", D, qdim);
        L.gate = linear(p + "mlp.gate_proj.weight", F, D);
        L.up = linear(p + "mlp.up_proj.weight", F, D);
        L.down = linear(p + "mlp.down_proj.weight", D, F);
        weight_bytes_ += 2 * D * sizeof(float);
        layers_.push_back(std::move(L));
    }
    final_norm_ = norm_weight(k_, src, "model.norm.weight", D);
    weight_bytes_ += D * sizeof(float);
    if (!cfg.tie_word_embeddings) lm_head_ = linear("lm_head.weight", cfg.vocab_size, D);

    rope_tables(cfg.inv_freq, n_ctx, rope_cos_, rope_sin_);

    const size_t B = size_t(n_batch_);
    x_.resize(B * D);
    h_.resize(B * D);
    q_.resize(B * qdim);
    k_new_.resize(B * kvdim);
    v_new_.resize(B * kvdim);
    attn_.resize(B * qdim);
    gate_.resize(B * F);
    up_.resize(B * F);
    qact_ = QActBuffer(n_batch_, std::max({D, qdim, F}));
}

std::vector<std::pair<std::string, size_t>> LlamaCpu::weight_formats() const {
    std::vector<std::pair<std::string, size_t>> out;
    auto add = [&](const std::string& f, size_t n) {
        for (auto& e : out)
            if (e.first == f) return void(e.second += n);
        out.emplace_back(f, n);
    };
    add(embed_.format(), embed_.bytes());
    for (const Layer& L : layers_) {
        for (const Linear* w : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) add(w->format(), w->bytes());
        add("f32", 2 * L.attn_norm.size() * sizeof(float));
    }
    add("f32", final_norm_.size() * sizeof(float));
    if (!cfg_.tie_word_embeddings) add(lm_head_.format(), lm_head_.bytes());
    return out;
}

LinearInput LlamaCpu::input(const float* x, int64_t ld, int64_t T, int64_t K,
                            std::initializer_list<const Linear*> ws) {
    const cpu::QActs* q8 = nullptr;
    for (const Linear* w : ws)
        if (w->wants_q8()) {
            q8 = qact_.quantize(k_, x, ld, T, K, &pool_);
            break;
        }
    return LinearInput{x, ld, T, q8};
}

size_t LlamaCpu::scratch_bytes() const {
    return sizeof(float) * (x_.size() + h_.size() + q_.size() + k_new_.size() + v_new_.size() + attn_.size() +
                            gate_.size() + up_.size() + rope_cos_.size() + rope_sin_.size()) +
           qact_.bytes() + attention_.bytes();
}

void LlamaCpu::truncate(int64_t n) {
    if (n < 0) throw std::invalid_argument("truncate: negative length");
    n_past_ = std::min(n_past_, n);
}

void LlamaCpu::forward(const int32_t* tokens, int64_t T, float* logits, bool all_logits) {
    forward_in_chunks(cfg_, n_past_, cache_.n_ctx(), n_batch_, tokens, T, logits, all_logits,
                      [this](const int32_t* t, int64_t n, float* out, bool all) { forward_chunk(t, n, out, all); });
}

void LlamaCpu::forward_chunk(const int32_t* tokens, int64_t T, float* logits, bool all_logits) {
    const int64_t D = cfg_.hidden_size, F = cfg_.intermediate_size, hd = cfg_.head_dim;
    const int64_t qdim = cfg_.n_heads * hd, kvdim = cfg_.n_kv_heads * hd, half = hd / 2;
    const int64_t p0 = n_past_;
    const cpu::Kernels& k = k_;
    const float eps = cfg_.rms_norm_eps;
    float* x = x_.data();
    float* h = h_.data();

    for (int64_t t = 0; t < T; ++t) embed_.dequantize_row(k, tokens[t], x + t * D);

    // Row-wise work (norms, RoPE) is split over tokens; a single token stays on this thread
    // because a dispatch would cost more than the work.
    auto rows = [&](int64_t n, const std::function<void(int64_t, int64_t)>& body) {
        if (n == 1) return body(0, 1);
        pool_.run(int(std::min<int64_t>(n, pool_.size())), [&](int c, int nc) {
            int64_t b, e;
            cpu::ThreadPool::split(n, c, nc, 1, b, e);
            body(b, e);
        });
    };
    // Products are cut into more chunks than threads so that a thread the OS preempts on a
    // busy machine holds up little: the others take its share.
    const int mm_chunks = matmul_chunks();

    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
        Layer& L = layers_[l];
        float* kc = k_new_.data();
        float* vc = v_new_.data();
        rows(T, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) k.rmsnorm(x + t * D, L.attn_norm.data(), h + t * D, D, eps);
        });
        if (observer_) observer_(l, 0, h, T, D);
        // New K (after RoPE) and V rows are encoded into the cache at their positions.
        const LinearInput hin = input(h, D, T, D, {&L.q, &L.k, &L.v});
        pool_.run(mm_chunks, [&](int c, int nc) {
            linear_slice(k, L.q, hin, q_.data(), qdim, false, c, nc);
            linear_slice(k, L.k, hin, kc, kvdim, false, c, nc);
            linear_slice(k, L.v, hin, vc, kvdim, false, c, nc);
        });
        rows(T, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) {
                const float* c = rope_cos_.data() + (p0 + t) * half;
                const float* s = rope_sin_.data() + (p0 + t) * half;
                for (int64_t hh = 0; hh < cfg_.n_heads; ++hh) k.rope(q_.data() + t * qdim + hh * hd, c, s, half);
                for (int64_t hh = 0; hh < cfg_.n_kv_heads; ++hh) k.rope(kc + t * kvdim + hh * hd, c, s, half);
                cache_.store(l, p0 + t, 1, kc + t * kvdim, vc + t * kvdim);
            }
        });
        attention_.run(k, pool_, cache_, l, {cfg_.n_heads, cfg_.n_kv_heads, hd}, q_.data(), T, p0, attn_.data());
        if (observer_) observer_(l, 1, attn_.data(), T, qdim);
        // The output projection adds into the residual stream directly.
        const LinearInput ain = input(attn_.data(), qdim, T, qdim, {&L.o});
        pool_.run(mm_chunks, [&](int c, int nc) { linear_slice(k, L.o, ain, x, D, true, c, nc); });
        rows(T, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) k.rmsnorm(x + t * D, L.ffn_norm.data(), h + t * D, D, eps);
        });
        // Each thread applies SwiGLU to the gate/up columns it just computed: no extra dispatch.
        // gate and up share the chunking (same row count and alignment) only when their formats
        // align alike; SwiGLU covers each chunk's gate rows, which up then has computed too.
        if (observer_) observer_(l, 2, h, T, D);
        const LinearInput fin = input(h, D, T, D, {&L.gate, &L.up});
        const bool fused_swiglu = L.gate.row_align() == L.up.row_align();
        pool_.run(mm_chunks, [&](int c, int nc) {
            linear_slice(k, L.gate, fin, gate_.data(), F, false, c, nc);
            linear_slice(k, L.up, fin, up_.data(), F, false, c, nc);
            if (!fused_swiglu) return;
            int64_t n0, n1;
            linear_rows(L.gate, c, nc, n0, n1);
            for (int64_t t = 0; t < T && n0 < n1; ++t)
                k.swiglu(gate_.data() + t * F + n0, up_.data() + t * F + n0, gate_.data() + t * F + n0,
                         n1 - n0);
        });
        if (!fused_swiglu)
            rows(T, [&](int64_t b, int64_t e) {
                for (int64_t t = b; t < e; ++t) k.swiglu(gate_.data() + t * F, up_.data() + t * F, gate_.data() + t * F, F);
            });
        if (observer_) observer_(l, 3, gate_.data(), T, F);
        const LinearInput din = input(gate_.data(), F, T, F, {&L.down});
        pool_.run(mm_chunks, [&](int c, int nc) { linear_slice(k, L.down, din, x, D, true, c, nc); });
    }
    n_past_ = p0 + T;

    if (!logits) return;
    const int64_t first = all_logits ? 0 : T - 1;
    const int64_t n_out = T - first;
    rows(n_out, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t)
            k.rmsnorm(x + (first + t) * D, final_norm_.data(), h + t * D, D, eps);
    });
    const Linear& head_w = head();
    const LinearInput hin = input(h, D, n_out, D, {&head_w});
    pool_.run(mm_chunks, [&](int c, int nc) {
        linear_slice(k, head_w, hin, logits, cfg_.vocab_size, false, c, nc);
    });
}

}  // namespace ll
