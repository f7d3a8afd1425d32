#include "llama_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>

#include "../core/errors.h"
#include "../cpu/kernels.h"
#include "../model/rope_table.h"
#include "attention_plan.h"
#include "bf16_gemm.h"
#include "device_buffers.h"
#include "flash_attn.h"
#include "fp8_gemm.h"
#include "gpu_weights.h"
#include "int4_gemm.h"
#include "small_ops.h"

namespace ll::cuda {
namespace {

// One GEMM's weight on the device.
struct DevGemm {
    int64_t out = 0, in = 0;
    bool int4 = false, fp8 = false;
    bool w8a8 = false;  // fp8: activations quantized per token to E4M3 (bound act_ub), e4m3 mma
    float act_ub = 0;
    Int4DeviceWeight q{};
    Fp8DeviceWeight f{};
    const uint16_t* w = nullptr;  // 16-bit rows [out][ldw]
    int64_t ldw = 0;
    std::string format;
    size_t bytes = 0;
};

// A linear layer (or fused layers): its pieces' GEMMs write the output's columns side by side
// (gpu_linear_pieces: one piece unless the fused parts keep different forms).
struct DevLinear {
    std::vector<DevGemm> pieces;
    std::vector<int64_t> col0;  // each piece's first output column
};

}  // namespace

struct LlamaCuda::Impl {
    LlamaConfig cfg;
    int64_t n_ctx = 0, n_batch = 0, n_past = 0;
    int64_t qdim = 0, kvdim = 0, qkvdim = 0;
    bool bf16 = true;
    bool fp8_mma = false;  // the GPU runs the W8A8 FP8 GEMM
    int sms = 0;
    std::string name;
    cudaStream_t stream = nullptr;
    DeviceBuffers weights, state;  // state: KV cache and scratch
    size_t kv_bytes = 0;
    std::vector<std::pair<std::string, size_t>> formats;

    struct Layer {
        const float* attn_norm;
        const float* ffn_norm;
        DevLinear qkv, o, gate_up, down;
        uint16_t* k_cache;
        uint16_t* v_cache;
    };
    std::vector<Layer> layers;
    DevLinear embed, head;  // head: the embedding's rows when tied
    const float* final_norm = nullptr;
    const float* rope_cos = nullptr;
    const float* rope_sin = nullptr;

    // The decode step's CUDA graphs, by flash decode's split count: the one launch shape that
    // changes with the position (every kernel reads the position itself from `io`). A capture that
    // fails turns them off (the step it follows has run eagerly), keeping why in graph_error.
    bool use_graphs = true;
    std::vector<std::pair<int, cudaGraphExec_t>> graphs;
    std::string graph_error;

    // scratch, n_batch rows each
    int32_t* io = nullptr;  // [1 + n_batch]: the chunk's first position, then its tokens
    std::vector<int32_t> io_host;
    float* x = nullptr;     // residual stream, fp32 [T][D]
    uint16_t* h = nullptr;  // normed input of a GEMM [T][D]
    uint16_t* qkv = nullptr;
    uint16_t* attn = nullptr;
    uint16_t* tmp = nullptr;  // a GEMM's output before the residual add [T][D]
    uint16_t* gu = nullptr;
    uint16_t* act = nullptr;
    float* logits = nullptr;
    uint8_t* act_codes = nullptr;  // W8A8: a GEMM's input as E4M3 codes [T][K rounded up to 32]
    float* act_scales = nullptr;   // and each row's scale
    float* gemm_work = nullptr;
    size_t gemm_work_bytes = 0;
    float* attn_work = nullptr;
    size_t attn_work_bytes = 0;

    void add_format(const std::string& f, size_t n) {
        for (auto& e : formats)
            if (e.first == f) return void(e.second += n);
        formats.emplace_back(f, n);
    }

    DevGemm upload(const GpuLinearHost& g) {
        DevGemm d;
        d.out = g.out;
        d.in = g.in;
        d.int4 = g.int4;
        d.fp8 = g.fp8;
        d.w8a8 = g.fp8 && g.act_ub > 0 && fp8_mma;
        d.act_ub = g.act_ub;
        d.format = g.format + (g.fp8 && !g.f.int8 ? (d.w8a8 ? ", W8A8" : ", W8A16") : "");
        const size_t before = weights.bytes();
        if (g.int4) {
            d.q = Int4DeviceWeight{g.q.g, g.q.bf16, g.q.has_min, g.q.zero, weights.upload(g.q.q),
                                   weights.upload(g.q.scales), g.q.has_min ? weights.upload(g.q.mins) : nullptr};
        } else if (g.fp8) {
            d.f = Fp8DeviceWeight{g.f.g, weights.upload(g.f.q), weights.upload(g.f.scales), g.f.int8,
                                  g.f.mins.empty() ? nullptr : weights.upload(g.f.mins)};
        } else {
            d.w = weights.upload(g.half);
            d.ldw = g.ld;
        }
        d.bytes = weights.bytes() - before;
        add_format(d.format, d.bytes);
        return d;
    }
    DevLinear upload_pieces(const std::vector<GpuLinearHost>& pieces) {
        DevLinear d;
        int64_t col = 0;
        for (const GpuLinearHost& g : pieces) {
            d.pieces.push_back(upload(g));
            d.col0.push_back(col);
            col += g.out;
        }
        return d;
    }

    const float* upload_f32(const std::vector<float>& v) {
        const float* d = weights.upload(v);
        add_format("f32", v.size() * sizeof(float));
        return d;
    }

    // The split-K workspace the largest plan of any product at any batch size needs.
    size_t workspace_for(const DevLinear& l) const {
        size_t most = 0;
        for (const DevGemm& w : l.pieces)
            for (int64_t M = 1; M <= n_batch; ++M) {
                if (w.int4) most = std::max(most, int4_gemm_workspace_bytes(int4_gemm_plan(M, w.q.g, sms), M, w.out));
                else if (w.fp8)
                    most = std::max(most, fp8_gemm_workspace_bytes(fp8_gemm_plan(M, w.f.g, sms, w.w8a8), M, w.out));
                else most = std::max(most, bf16_gemm_workspace_bytes(bf16_gemm_plan(M, w.out, w.in, sms), M, w.out));
            }
        return most;
    }

    // y [M][ldy] = x [M][ldx] . w^T: 16-bit, or fp32 (the LM head, which is always 16-bit rows).
    // FP8 weights of a checkpoint whose activations are FP8 too take W8A8 where the GPU can (x
    // quantized per row first), the others W8A16: the activations stay 16-bit.
    void gemm(const DevLinear& l, const uint16_t* xin, int64_t ldx, int64_t M, void* y, int64_t ldy, bool y_f32) {
        for (size_t i = 0; i < l.pieces.size(); ++i)
            gemm(l.pieces[i], xin, ldx, M, static_cast<char*>(y) + l.col0[i] * (y_f32 ? 4 : 2), ldy, y_f32);
    }
    void gemm(const DevGemm& w, const uint16_t* xin, int64_t ldx, int64_t M, void* y, int64_t ldy, bool y_f32) {
        std::string why;
        cudaError_t err;
        if (w.int4) {
            const GemmPlan plan = int4_gemm_plan(M, w.q.g, sms);
            err = int4_gemm(xin, ldx, M, w.q, static_cast<uint16_t*>(y), ldy, plan, gemm_work, gemm_work_bytes, stream,
                            &why);
        } else if (w.w8a8) {
            const int64_t ldq = w.f.g.k_tiles * kFp8TileK;
            err = fp8_quantize_activations(xin, ldx, M, w.in, w.act_ub, act_codes, ldq, act_scales, stream, &why);
            if (err == cudaSuccess)
                err = fp8_gemm_w8a8(act_codes, ldq, act_scales, M, w.f, static_cast<uint16_t*>(y), ldy,
                                    fp8_gemm_plan(M, w.f.g, sms, true), gemm_work, gemm_work_bytes, stream, &why);
        } else if (w.fp8) {
            const GemmPlan plan = fp8_gemm_plan(M, w.f.g, sms, false);
            err = fp8_gemm_w8a16(xin, ldx, M, w.f, bf16, static_cast<uint16_t*>(y), ldy, plan, gemm_work,
                                 gemm_work_bytes, stream, &why);
        } else {
            const GemmPlan plan = bf16_gemm_plan(M, w.out, w.in, sms);
            err = bf16_gemm(Bf16GemmArgs{xin, ldx, w.w, w.ldw, M, w.out, w.in, bf16, y, ldy, y_f32, plan, gemm_work,
                                         gemm_work_bytes},
                            stream, &why);
        }
        launch_check(err, why, "GEMM");
    }

    int decode_splits(int p0) const { return fa_num_splits(p0 + 1, int(cfg.n_kv_heads), sms); }
    void enqueue(int64_t T, int p0, int64_t n_out);
    cudaGraphExec_t decode_graph(int p0) const;  // null until captured
    void capture_decode_graph(int p0);
    void chunk(const int32_t* host_tokens, int64_t T, float* logits_out, bool all_logits);

    // The stream and graphs are released here, not in ~LlamaCuda, so that a constructor that
    // throws after creating the stream (a malformed tensor, out of memory) does not leak it.
    ~Impl() {
        for (auto& g : graphs) cudaGraphExecDestroy(g.second);
        if (stream) cudaStreamDestroy(stream);
    }
};

LlamaCuda::LlamaCuda(const LlamaConfig& cfg, const TensorSource& src, int64_t n_ctx, int64_t n_batch,
                     bool decode_graphs)
    : impl_(std::make_unique<Impl>()) {
    Impl& m = *impl_;
    m.cfg = cfg;
    m.use_graphs = decode_graphs;
    const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, hd = cfg.head_dim;
    m.qdim = cfg.n_heads * hd;
    m.kvdim = cfg.n_kv_heads * hd;
    m.qkvdim = m.qdim + 2 * m.kvdim;
    if (D <= 0 || F <= 0 || cfg.n_layers <= 0 || cfg.n_heads <= 0 || cfg.n_kv_heads <= 0 || cfg.vocab_size <= 0)
        throw FormatError("model config has a non-positive size");
    if (cfg.n_heads % cfg.n_kv_heads) throw FormatError("num_attention_heads is not a multiple of num_key_value_heads");
    if (hd != 64 && hd != 128)
        throw FormatError("the CUDA backend takes head_dim 64 or 128, not " + std::to_string(hd));
    if (D % 8 || F % 8)
        throw FormatError("the CUDA backend needs hidden and intermediate sizes that are multiples of 8");
    if (cfg.n_heads / cfg.n_kv_heads > 16)
        throw FormatError("the CUDA backend takes at most 16 query heads per KV head");
    if (int64_t(cfg.inv_freq.size()) != hd / 2) throw FormatError("RoPE needs head_dim / 2 frequencies");
    if (n_ctx <= 0 || n_batch <= 0) throw std::invalid_argument("n_ctx and n_batch must be positive");
    m.n_ctx = n_ctx;
    m.n_batch = std::min(n_batch, n_ctx);

    int dev = 0;
    DeviceFacts facts;
    cuda_check(cudaGetDevice(&dev), "selecting the device");
    cuda_check(current_device(&facts), "reading the device");
    m.sms = facts.sms;
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, dev), "reading the device");
    m.name = prop.name;
    // bf16 tensor cores from Ampere (and code built for it); Turing, or a build without code for this
    // GPU's arch that falls back to sm_75's PTX, computes in fp16
    m.bf16 = facts.runs(80);
    m.fp8_mma = fp8_w8a8_supported();
    cuda_check(cudaStreamCreate(&m.stream), "creating a stream");

    // Weights, one layer at a time (each converted on the host, uploaded, then freed there).
    const cpu::Kernels& k = cpu::kernels_for(cpu::best_isa());
    const std::string embed_name = "model.embed_tokens.weight";
    m.embed = m.upload_pieces({gpu_table(src(embed_name), cfg.vocab_size, D, m.bf16)});
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        Impl::Layer L{};
        L.attn_norm = m.upload_f32(norm_weight(k, src, p + "input_layernorm.weight", D));
        L.ffn_norm = m.upload_f32(norm_weight(k, src, p + "post_attention_layernorm.weight", D));
        auto linear = [&](std::vector<std::string> names, std::vector<int64_t> outs, int64_t in) {
            std::vector<TensorSpec> parts;
            for (const std::string& n : names) parts.push_back(src(p + n + ".weight"));
            return m.upload_pieces(gpu_linear_pieces(parts, outs, in, m.bf16));
        };
        L.qkv = linear({"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, {m.qdim, m.kvdim, m.kvdim}, D);
        L.o = linear({"self_attn.o_proj"}, {D}, m.qdim);
        L.gate_up = linear({"mlp.gate_proj", "mlp.up_proj"}, {F, F}, D);
        L.down = linear({"mlp.down_proj"}, {D}, F);
        m.layers.push_back(L);
    }
    m.final_norm = m.upload_f32(norm_weight(k, src, "model.norm.weight", D));
    // The head gives fp32 logits, which only the 16-bit-weight GEMM writes: an untied head is kept
    // as 16-bit rows whatever its source format.
    m.head = cfg.tie_word_embeddings ? m.embed
                                     : m.upload_pieces({gpu_table(src("lm_head.weight"), cfg.vocab_size, D, m.bf16)});
    std::vector<float> cos_t, sin_t;
    rope_tables(cfg.inv_freq, n_ctx, cos_t, sin_t);
    m.rope_cos = m.state.upload(cos_t);
    m.rope_sin = m.state.upload(sin_t);

    // The KV cache, then the scratch of one chunk of n_batch tokens.
    for (Impl::Layer& L : m.layers) {
        L.k_cache = m.state.alloc<uint16_t>(size_t(m.kvdim * n_ctx));
        L.v_cache = m.state.alloc<uint16_t>(size_t(m.kvdim * n_ctx));
    }
    m.kv_bytes = size_t(cfg.n_layers) * 2 * size_t(m.kvdim * n_ctx) * 2;
    const int64_t B = m.n_batch;
    m.io = m.state.alloc<int32_t>(size_t(1 + B));
    m.io_host.resize(size_t(1 + B));
    m.x = m.state.alloc<float>(size_t(B * D));
    m.h = m.state.alloc<uint16_t>(size_t(B * D));
    m.qkv = m.state.alloc<uint16_t>(size_t(B * m.qkvdim));
    m.attn = m.state.alloc<uint16_t>(size_t(B * m.qdim));
    m.tmp = m.state.alloc<uint16_t>(size_t(B * D));
    m.gu = m.state.alloc<uint16_t>(size_t(B * 2 * F));
    m.act = m.state.alloc<uint16_t>(size_t(B * F));
    m.logits = m.state.alloc<float>(size_t(B * cfg.vocab_size));
    size_t ws = m.workspace_for(m.head);
    int64_t ldq = 0;  // the widest W8A8 input, in codes
    for (const Impl::Layer& L : m.layers)
        for (const DevLinear* l : {&L.qkv, &L.o, &L.gate_up, &L.down}) {
            ws = std::max(ws, m.workspace_for(*l));
            for (const DevGemm& w : l->pieces)
                if (w.w8a8) ldq = std::max(ldq, w.f.g.k_tiles * kFp8TileK);
        }
    m.gemm_work_bytes = ws;
    if (ldq > 0) {
        m.act_codes = m.state.alloc<uint8_t>(size_t(B * ldq));
        m.act_scales = m.state.alloc<float>(size_t(B));
    }
    m.gemm_work = m.state.alloc<float>(ws / sizeof(float));
    m.attn_work_bytes = flash_attention_workspace_bytes(1, int(cfg.n_heads), int(hd), kFaMaxSplits);
    m.attn_work = m.state.alloc<float>(m.attn_work_bytes / sizeof(float));
}

LlamaCuda::~LlamaCuda() = default;

// Every kernel of T tokens at positions [p0, p0 + T) on the stream, from the tokens in `io` to
// the last n_out rows' logits in `logits`; nothing waits, so a decode step can be captured.
void LlamaCuda::Impl::enqueue(int64_t T, int p0, int64_t n_out) {
    const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, hd = cfg.head_dim, V = cfg.vocab_size;
    const int H = int(cfg.n_heads), KH = int(cfg.n_kv_heads);
    const float eps = cfg.rms_norm_eps;
    const FirstPos pos{p0, io};
    const int splits = T == 1 ? decode_splits(p0) : 1;
    cuda_check(cuda::embed(embed.pieces[0].w, V, io + 1, int(T), int(D), x, bf16, stream), "embedding");
    for (const Layer& L : layers) {
        cuda_check(rmsnorm_to_half(x, D, L.attn_norm, int(T), int(D), eps, h, D, bf16, stream), "RMSNorm");
        gemm(L.qkv, h, D, T, qkv, qkvdim, false);
        uint16_t* k_new = qkv + qdim;  // rows of q, k, v side by side
        cuda_check(rope_qk(qkv, qkvdim, H, k_new, qkvdim, KH, int(hd), int(T), rope_cos, rope_sin, pos, bf16, stream),
                   "RoPE");
        cuda_check(kv_append(k_new, k_new + kvdim, qkvdim, int(T), KH, int(hd), L.k_cache, L.v_cache, n_ctx, pos,
                             stream),
                   "KV append");
        std::string why;
        const FlashAttentionArgs a{qkv, qkvdim, L.k_cache, L.v_cache, n_ctx, attn, qdim, int(T), pos,
                                   H, KH, int(hd), bf16, splits, attn_work, attn_work_bytes};
        launch_check(flash_attention(a, stream, &why), why, "attention");
        gemm(L.o, attn, qdim, T, tmp, D, false);
        cuda_check(residual_add(x, tmp, int(T), int(D), bf16, stream), "residual");
        cuda_check(rmsnorm_to_half(x, D, L.ffn_norm, int(T), int(D), eps, h, D, bf16, stream), "RMSNorm");
        gemm(L.gate_up, h, D, T, gu, 2 * F, false);
        cuda_check(swiglu(gu, int(T), int(F), act, bf16, stream), "SwiGLU");
        gemm(L.down, act, F, T, tmp, D, false);
        cuda_check(residual_add(x, tmp, int(T), int(D), bf16, stream), "residual");
    }
    if (n_out > 0) {
        cuda_check(rmsnorm_to_half(x + (T - n_out) * D, D, final_norm, int(n_out), int(D), eps, h, D, bf16, stream),
                   "RMSNorm");
        gemm(head, h, D, n_out, logits, V, true);
    }
}

// The decode step (one token, its logits) as a graph: about ten launches a layer become one,
// which is most of a small model's decode time on a fast GPU. The graph of a split count is
// captured after the first step with that count has run launch by launch (so every kernel it
// holds is loaded and has run once), then replayed at any position with that count.
cudaGraphExec_t LlamaCuda::Impl::decode_graph(int p0) const {
    for (const auto& g : graphs)
        if (g.first == decode_splits(p0)) return g.second;
    return nullptr;
}

void LlamaCuda::Impl::capture_decode_graph(int p0) {
    cudaGraph_t graph = nullptr;
    cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capturing the decode step");
    try {
        enqueue(1, p0, 1);
    } catch (...) {
        if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
        throw;
    }
    cuda_check(cudaStreamEndCapture(stream, &graph), "capturing the decode step");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    cuda_check(err, "instantiating the decode graph");
    graphs.emplace_back(decode_splits(p0), exec);
}

void LlamaCuda::Impl::chunk(const int32_t* host_tokens, int64_t T, float* logits_out, bool all_logits) {
    const int p0 = int(n_past);
    const int64_t n_out = !logits_out ? 0 : all_logits ? T : 1;
    io_host[0] = p0;
    std::copy(host_tokens, host_tokens + T, io_host.begin() + 1);
    cuda_check(cudaMemcpyAsync(io, io_host.data(), size_t(1 + T) * sizeof(int32_t), cudaMemcpyHostToDevice, stream),
               "tokens");
    const bool decode = use_graphs && T == 1 && n_out == 1;
    if (cudaGraphExec_t g = decode ? decode_graph(p0) : nullptr) {
        cuda_check(cudaGraphLaunch(g, stream), "the decode graph");
    } else {
        enqueue(T, p0, n_out);
        if (decode) {
            try {
                capture_decode_graph(p0);  // recorded, not run: the next steps replay it
            } catch (const std::runtime_error& e) {  // decode goes on launch by launch
                use_graphs = false;
                graph_error = e.what();
                (void)cudaGetLastError();  // the capture's own error is not the step's
            }
        }
    }
    n_past += T;
    if (n_out > 0) {
        const size_t bytes = size_t(n_out * cfg.vocab_size) * sizeof(float);
        cuda_check(cudaMemcpyAsync(logits_out, logits, bytes, cudaMemcpyDeviceToHost, stream), "logits");
    }
    cuda_check(cudaStreamSynchronize(stream), "the forward pass");
}

void LlamaCuda::forward(const int32_t* tokens, int64_t T, float* logits, bool all_logits) {
    Impl& m = *impl_;
    forward_in_chunks(m.cfg, m.n_past, m.n_ctx, m.n_batch, tokens, T, logits, all_logits,
                      [&m](const int32_t* t, int64_t n, float* out, bool all) { m.chunk(t, n, out, all); });
}

void LlamaCuda::truncate(int64_t n) {
    if (n < 0) throw std::invalid_argument("truncate: negative length");
    impl_->n_past = std::min(impl_->n_past, n);
}
int64_t LlamaCuda::n_past() const { return impl_->n_past; }
int64_t LlamaCuda::n_ctx() const { return impl_->n_ctx; }
const LlamaConfig& LlamaCuda::config() const { return impl_->cfg; }
bool LlamaCuda::bf16() const { return impl_->bf16; }
std::string LlamaCuda::device_name() const { return impl_->name; }
size_t LlamaCuda::weight_bytes() const { return impl_->weights.bytes(); }
size_t LlamaCuda::kv_bytes() const { return impl_->kv_bytes; }
size_t LlamaCuda::scratch_bytes() const { return impl_->state.bytes() - impl_->kv_bytes; }
std::vector<std::pair<std::string, size_t>> LlamaCuda::weight_formats() const { return impl_->formats; }
int LlamaCuda::decode_graphs() const { return int(impl_->graphs.size()); }
std::string LlamaCuda::decode_graph_error() const { return impl_->graph_error; }

}  // namespace ll::cuda
