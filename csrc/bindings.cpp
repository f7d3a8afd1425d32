// pybind11 module llama_local._core: the one place Python meets C++.
//
// Shapes and dtypes are checked here once and bad input is thrown as a package exception; the
// model and kernels behind it take raw pointers. The kernel entry points exist for the tests,
// which hold every kernel on every ISA path against numpy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "core/errors.h"
#include "cpu/kernels.h"
#include "cpu/thread_pool.h"
#include "cuda/attention_plan.h"
#include "cuda/bf16_gemm_tiling.h"
#include "cuda/device_math.h"
#include "cuda/flash_attn_schedule.h"
#include "cuda/fp8_gemm_tiling.h"
#include "cuda/fp8_layout.h"
#include "cuda/fp8_repack.h"
#include "cuda/gpu_weights.h"
#include "cuda/int4_gemm_tiling.h"
#include "cuda/int4_layout.h"
#include "cuda/int4_repack.h"
#include "cuda/mma_frag.h"
#include "cuda/small_ops_math.h"
#include "model/llama_cpu.h"
#include "weights/linear.h"
#if defined(LL_HAVE_CUDA)
#include "cuda/bf16_gemm.h"
#include "cuda/device_info.h"
#include "cuda/flash_attn.h"
#include "cuda/fp8_gemm.h"
#include "cuda/int4_gemm.h"
#include "cuda/kernel_timing.h"
#include "cuda/llama_cuda.h"
#include "cuda/small_ops.h"
#endif

namespace py = pybind11;
using namespace ll;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

DType array_dtype(const py::array& a, const std::string& what) {
    const std::string name = py::str(a.dtype().attr("name"));
    if (name == "float32") return DType::F32;
    if (name == "float16") return DType::F16;
    if (name == "bfloat16") return DType::BF16;
    throw FormatError(what + " has dtype " + name + "; expected float32, float16 or bfloat16");
}

// A float tensor used as it is.
TensorSpec float_spec(const py::array& a, const std::string& name) {
    if (!(a.flags() & py::array::c_style)) throw FormatError("tensor '" + name + "' is not a C-contiguous array");
    TensorSpec t;
    t.name = name;
    t.kind = TensorSpec::Kind::Float;
    t.dtype = array_dtype(a, "tensor '" + name + "'");
    t.data = a.data();
    t.nbytes = size_t(a.nbytes());
    for (py::ssize_t i = 0; i < a.ndim(); ++i) t.shape.push_back(a.shape(i));
    return t;
}

py::array contiguous(const py::dict& d, const char* key, const std::string& name) {
    if (!d.contains(key)) throw FormatError("tensor '" + name + "': spec lacks '" + key + "'");
    py::array a = d[key].cast<py::array>();
    if (!(a.flags() & py::array::c_style)) throw FormatError("tensor '" + name + "': '" + key + "' is not C-contiguous");
    return a;
}

// A tensor as Python describes it: a float array, or a dict for a quantized source
//   {"format": "gguf", "ggml_type": int, "data": uint8 blocks, "shape": [out, in]}
//   {"format": "int", "codes": uint8 [out, in], "scales": f32 [out, groups], "mins": f32 | None,
//    "bits": 4 | 8, "group": 32 | 64 | 128, "zero": int}
//   {"format": "fp8", "data": E4M3 codes [out, in] (uint8 or float8_e4m3fn), "scales": f32
//    [out] or [out, ceil(in / block)], "block": columns per scale (0: one per row), "act_ub":
//    the bound of per-token E4M3 activation scales where activations are FP8 too (inf: none)}
//   {"format": "float", "data": float array}
// plus optional "qk_heads" (undo llama.cpp's q/k row permutation) and "releasable" (the data is
// a read-only file mapping whose pages may be dropped once repacked).
TensorSpec spec_of(py::handle obj, const std::string& name) {
    if (!py::isinstance<py::dict>(obj)) return float_spec(obj.cast<py::array>(), name);
    const py::dict d = obj.cast<py::dict>();
    const std::string format = d.contains("format") ? d["format"].cast<std::string>() : "float";
    TensorSpec t;
    if (format == "float") {
        t = float_spec(contiguous(d, "data", name), name);
    } else if (format == "gguf") {
        const py::array a = contiguous(d, "data", name);
        t.kind = TensorSpec::Kind::GGUF;
        t.data = a.data();
        t.nbytes = size_t(a.nbytes());
        t.ggml_type = d["ggml_type"].cast<int>();
        t.shape = d["shape"].cast<std::vector<int64_t>>();
    } else if (format == "int") {
        const py::array u = contiguous(d, "codes", name), sc = contiguous(d, "scales", name);
        t.kind = TensorSpec::Kind::Int;
        t.bits = d["bits"].cast<int>();
        t.group = d["group"].cast<int>();
        t.zero = d.contains("zero") ? d["zero"].cast<int>() : 0;
        if (u.ndim() != 2 || std::string(py::str(u.dtype())) != "uint8")
            throw FormatError("tensor '" + name + "': codes must be a uint8 [out, in] array");
        t.shape = {u.shape(0), u.shape(1)};
        t.data = u.data();
        t.nbytes = size_t(u.nbytes());
        if (t.group <= 0) throw FormatError("tensor '" + name + "': group must be positive");
        const int64_t ng = (t.shape[1] + t.group - 1) / t.group;
        auto check_f32 = [&](const py::array& a, const char* what) {
            if (std::string(py::str(a.dtype())) != "float32" || a.ndim() != 2 || a.shape(0) != t.shape[0] ||
                a.shape(1) != ng)
                throw FormatError("tensor '" + name + "': " + what + " must be float32 [" +
                                  std::to_string(t.shape[0]) + ", " + std::to_string(ng) + "]");
        };
        check_f32(sc, "scales");
        t.scales = static_cast<const float*>(sc.data());
        if (d.contains("mins") && !d["mins"].is_none()) {
            const py::array mn = contiguous(d, "mins", name);
            check_f32(mn, "mins");
            t.mins = static_cast<const float*>(mn.data());
        }
    } else if (format == "fp8") {
        const py::array u = contiguous(d, "data", name), sc = contiguous(d, "scales", name);
        if (u.ndim() != 2 || u.itemsize() != 1)
            throw FormatError("tensor '" + name + "': FP8 data must be a one-byte [out, in] array");
        t.kind = TensorSpec::Kind::FP8;
        t.shape = {u.shape(0), u.shape(1)};
        t.data = u.data();
        t.nbytes = size_t(u.nbytes());
        t.block = d.contains("block") ? d["block"].cast<int64_t>() : 0;
        if (t.block < 0) throw FormatError("tensor '" + name + "': negative FP8 scale block");
        const int64_t nb = t.block > 0 && t.block < t.shape[1] ? (t.shape[1] + t.block - 1) / t.block : 1;
        if (std::string(py::str(sc.dtype())) != "float32" || sc.size() != t.shape[0] * nb)
            throw FormatError("tensor '" + name + "': FP8 scales must be float32 [" + std::to_string(t.shape[0]) +
                              (nb > 1 ? ", " + std::to_string(nb) : std::string()) + "]");
        t.scales = static_cast<const float*>(sc.data());
        if (d.contains("act_ub") && !d["act_ub"].is_none()) {
            t.act_ub = d["act_ub"].cast<float>();
            if (!(t.act_ub > 0)) throw FormatError("tensor '" + name + "': act_ub must be positive (inf: no bound)");
        }
    } else {
        throw FormatError("tensor '" + name + "': unknown spec format '" + format + "'");
    }
    t.name = name;
    if (d.contains("qk_heads")) t.qk_heads = d["qk_heads"].cast<int>();
    if (d.contains("releasable")) t.releasable = d["releasable"].cast<bool>();
    return t;
}

cpu::Isa isa_arg(const std::optional<std::string>& isa) {
    return isa ? cpu::parse_isa(isa->c_str()) : cpu::default_isa();
}

// The model plus the Python objects (memory-mapped arrays) its weight pointers point into.
// The core's config from Model's config dict (ModelConfig.core_dict()).
LlamaConfig config_from(const py::dict& config) {
    LlamaConfig c;
    auto need = [&](const char* key) -> py::handle {
        if (!config.contains(key)) throw FormatError(std::string("model config lacks '") + key + "'");
        return config[key];
    };
    c.vocab_size = need("vocab_size").cast<int64_t>();
    c.hidden_size = need("hidden_size").cast<int64_t>();
    c.intermediate_size = need("intermediate_size").cast<int64_t>();
    c.n_layers = need("num_hidden_layers").cast<int64_t>();
    c.n_heads = need("num_attention_heads").cast<int64_t>();
    c.n_kv_heads = need("num_key_value_heads").cast<int64_t>();
    c.head_dim = need("head_dim").cast<int64_t>();
    c.rms_norm_eps = need("rms_norm_eps").cast<float>();
    c.tie_word_embeddings = need("tie_word_embeddings").cast<bool>();
    c.inv_freq = need("inv_freq").cast<std::vector<float>>();
    return c;
}

// Tensors by name from Model's tensors dict (they stay alive in the dict the model keeps).
TensorSource tensor_source(const py::dict& tensors) {
    return [tensors](const std::string& name) {
        if (!tensors.contains(name.c_str())) throw FormatError("checkpoint has no tensor '" + name + "'");
        return spec_of(tensors[name.c_str()], name);
    };
}

using TokenArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

// Model.forward for either engine (LlamaCpu, cuda::LlamaCuda): tokens at [start_pos or n_past, ...),
// logits of the last token or of all of them, the GIL released while the model runs.
template <class M>
py::array_t<float> forward_logits(M& model, const TokenArray& tokens, std::optional<int64_t> start_pos,
                                  bool all_logits) {
    if (tokens.ndim() != 1) throw std::invalid_argument("forward: tokens must be a 1-D array");
    const int64_t T = tokens.shape(0);
    if (start_pos) {
        if (*start_pos < 0 || *start_pos > model.n_past())
            throw std::invalid_argument("forward: start_pos " + std::to_string(*start_pos) + " is beyond the " +
                                        std::to_string(model.n_past()) + " cached positions");
        model.truncate(*start_pos);
    }
    const int64_t V = model.config().vocab_size;
    py::array_t<float> out = all_logits ? py::array_t<float>({T, V}) : py::array_t<float>({V});
    float* o = out.mutable_data();
    const int32_t* t = tokens.data();
    {
        py::gil_scoped_release release;
        model.forward(t, T, o, all_logits);
    }
    return out;
}

class PyModel {
public:
    PyModel(const py::dict& config, const py::dict& tensors, int64_t n_ctx, int n_threads,
            const std::optional<std::string>& isa, int64_t n_batch, const std::string& kv_cache)
        : tensors_(tensors) {
        const KVType kv = parse_kv_type(kv_cache);
        if (n_threads <= 0) n_threads = cpu::physical_cores();
        model_ = std::make_unique<LlamaCpu>(config_from(config), tensor_source(tensors), n_ctx, n_threads,
                                            isa_arg(isa), n_batch, kv);
    }

    py::array_t<float> forward(const TokenArray& tokens, std::optional<int64_t> start_pos, bool all_logits) {
        return forward_logits(*model_, tokens, start_pos, all_logits);
    }

    // Evaluates tokens from position 0 and calls observer(layer, which, x) with every decoder
    // layer's linear inputs (x: float32 [T, K]; which as in LlamaCpu::set_input_observer).
    // For calibration: no logits are computed, and the KV cache holds these tokens afterwards.
    void observe_inputs(const TokenArray& tokens, const py::function& observer) {
        if (tokens.ndim() != 1) throw std::invalid_argument("observe_inputs: tokens must be a 1-D array");
        model_->truncate(0);
        model_->set_input_observer([&observer](int64_t l, int which, const float* x, int64_t T, int64_t K) {
            py::gil_scoped_acquire acquire;
            py::array_t<float> a({T, K});
            std::memcpy(a.mutable_data(), x, sizeof(float) * size_t(T * K));
            observer(l, which, a);
        });
        struct Unset {
            LlamaCpu& m;
            ~Unset() { m.set_input_observer(nullptr); }
        } unset{*model_};
        py::gil_scoped_release release;
        model_->forward(tokens.data(), tokens.shape(0), nullptr, false);
    }

    LlamaCpu& model() { return *model_; }

private:
    py::dict tensors_;
    std::unique_ptr<LlamaCpu> model_;
};

#if defined(LL_HAVE_CUDA)
// The forward pass on the GPU, with Model's interface (what LLM uses of it).
class PyCudaModel {
public:
    PyCudaModel(const py::dict& config, const py::dict& tensors, int64_t n_ctx, int64_t n_batch, bool cuda_graphs)
        : tensors_(tensors) {
        model_ = std::make_unique<cuda::LlamaCuda>(config_from(config), tensor_source(tensors), n_ctx, n_batch,
                                                   cuda_graphs);
    }
    py::array_t<float> forward(const TokenArray& tokens, std::optional<int64_t> start_pos, bool all_logits) {
        return forward_logits(*model_, tokens, start_pos, all_logits);
    }
    cuda::LlamaCuda& model() { return *model_; }

private:
    py::dict tensors_;
    std::unique_ptr<cuda::LlamaCuda> model_;
};
#endif

// ---- kernel entry points for the tests (single ISA forced, arguments checked here) ----

// The [M, N] result of a product, starting from a copy of `accumulate_into` when there is one.
py::array_t<float> product_output(int64_t M, int64_t N, const std::optional<FloatArray>& accumulate_into) {
    py::array_t<float> y({M, N});
    if (accumulate_into) {
        if (accumulate_into->ndim() != 2 || accumulate_into->shape(0) != M || accumulate_into->shape(1) != N)
            throw std::invalid_argument("matmul: accumulate_into must be [M, N]");
        std::copy(accumulate_into->data(), accumulate_into->data() + M * N, y.mutable_data());
    }
    return y;
}

py::array_t<float> k_matmul(const FloatArray& x, const py::array& w, const std::optional<std::string>& isa,
                            int n_threads, std::optional<FloatArray> accumulate_into) {
    // w may be a view with strided rows (ldw elements apart), as the KV cache is used.
    if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1) || w.strides(1) != w.itemsize() ||
        w.strides(0) % w.itemsize() || w.strides(0) < w.shape(1) * w.itemsize())
        throw std::invalid_argument("matmul: need x [M, K] and w [N, K] with contiguous rows");
    const DType wdt = array_dtype(w, "w");
    const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0), ldw = w.strides(0) / w.itemsize();
    py::array_t<float> y = product_output(M, N, accumulate_into);
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    const void* wp = w.data();
    const float* xp = x.data();
    float* yp = y.mutable_data();
    const bool acc = bool(accumulate_into);
    py::gil_scoped_release release;
    cpu::ThreadPool pool(n_threads);
    const Linear lin = Linear::view(wp, wdt, N, K, ldw);
    const LinearInput in{xp, K, M, nullptr};
    pool.run(4 * n_threads, [&](int c, int nc) { linear_slice(k, lin, in, yp, N, acc, c, nc); });
    return y;
}

// A weight built as the model builds it, for the tests: its dequantized rows and its product.
class PyPacked {
public:
    PyPacked(py::dict spec, int n_threads) : spec_(spec) {
        const TensorSpec s = spec_of(spec, "w");
        if (s.shape.size() != 2) throw FormatError("tensor 'w' must be a matrix");
        cpu::ThreadPool pool(n_threads);
        w_ = Linear::build(s, s.shape[0], s.shape[1], &pool);
    }
    py::array_t<float> dequantize(const std::optional<std::string>& isa) const {
        const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
        py::array_t<float> out({w_.out(), w_.in()});
        for (int64_t r = 0; r < w_.out(); ++r) w_.dequantize_row(k, r, out.mutable_data(r, 0));
        return out;
    }
    py::array_t<float> matmul(const FloatArray& x, const std::optional<std::string>& isa, int n_threads,
                              std::optional<FloatArray> accumulate_into) const {
        if (x.ndim() != 2 || x.shape(1) != w_.in()) throw std::invalid_argument("matmul: need x [M, in]");
        const int64_t M = x.shape(0), N = w_.out(), K = w_.in();
        py::array_t<float> y = product_output(M, N, accumulate_into);
        const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
        const float* xp = x.data();
        float* yp = y.mutable_data();
        const bool acc = bool(accumulate_into);
        py::gil_scoped_release release;
        cpu::ThreadPool pool(n_threads);
        QActBuffer qb(M, K);
        const cpu::QActs* q8 = w_.wants_q8() ? qb.quantize(k, xp, K, M, K, &pool) : nullptr;
        const LinearInput in{xp, K, M, q8};
        pool.run(4 * n_threads, [&](int c, int nc) { linear_slice(k, w_, in, yp, N, acc, c, nc); });
        return y;
    }
    // Seconds per product of M random rows, best of `repeats` runs of `iters` products each,
    // with a persistent pool and the activations quantized once (as the model shares them).
    double time_matmul(int64_t M, const std::optional<std::string>& isa, int n_threads, int iters, int repeats) const {
        const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
        const int64_t N = w_.out(), K = w_.in();
        std::vector<float> x(size_t(M * K)), y(size_t(M * N));
        for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
        py::gil_scoped_release release;
        cpu::ThreadPool pool(n_threads);
        QActBuffer qb(M, K);
        const cpu::QActs* q8 = w_.wants_q8() ? qb.quantize(k, x.data(), K, M, K, &pool) : nullptr;
        const LinearInput in{x.data(), K, M, q8};
        const int chunks = n_threads == 1 ? 1 : 4 * n_threads;  // as the model cuts them
        double best = 1e30;
        for (int r = 0; r < repeats; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < iters; ++i)
                pool.run(chunks, [&](int c, int nc) { linear_slice(k, w_, in, y.data(), N, false, c, nc); });
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
            best = dt < best ? dt : best;
        }
        return best;
    }
    const Linear& linear() const { return w_; }

private:
    py::dict spec_;  // keeps the source arrays alive
    Linear w_;
};

py::dict k_quantize_acts(const FloatArray& x, const std::optional<std::string>& isa) {
    if (x.ndim() != 2) throw std::invalid_argument("quantize_acts: need x [M, K]");
    const int64_t M = x.shape(0), K = x.shape(1), Kp = (K + kSuperCols - 1) / kSuperCols * kSuperCols;
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    QActBuffer buf(M, K);
    const cpu::QActs& a = *buf.quantize(k, x.data(), K, M, K, nullptr);
    // The model's arrays, cut to Kp columns.
    auto rows = [&](auto* p, int64_t ld, int64_t n) {
        using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
        py::array_t<T> out({M, n});
        for (int64_t m = 0; m < M; ++m) std::copy(p + m * ld, p + m * ld + n, out.mutable_data(m, 0));
        return out;
    };
    py::dict out;
    out["q"] = rows(a.q, a.ld, Kp);
    out["d"] = rows(a.d, a.ld / 32, Kp / 32);
    out["s"] = rows(a.s, a.ld / 16, Kp / 16);
    out["isum"] = rows(a.isum, a.ld / 16, Kp / 16);
    out["r"] = rows(a.r, a.ld, Kp);
    out["flags"] = rows(a.flags, a.fw, a.fw);
    return out;
}

py::array_t<float> k_rmsnorm(const FloatArray& x, const FloatArray& w, float eps,
                             const std::optional<std::string>& isa) {
    if (x.ndim() != 2 || w.ndim() != 1 || w.shape(0) != x.shape(1))
        throw std::invalid_argument("rmsnorm: need x [M, n] and w [n]");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    py::array_t<float> y({x.shape(0), x.shape(1)});
    for (py::ssize_t m = 0; m < x.shape(0); ++m)
        k.rmsnorm(x.data(m, 0), w.data(), y.mutable_data(m, 0), x.shape(1), eps);
    return y;
}

py::array_t<float> k_rope(const FloatArray& x, const FloatArray& cos, const FloatArray& sin,
                          const std::optional<std::string>& isa) {
    // x [T, H, hd]; cos, sin [T, hd / 2]
    if (x.ndim() != 3 || cos.ndim() != 2 || sin.ndim() != 2 || x.shape(2) % 2 ||
        cos.shape(0) != x.shape(0) || cos.shape(1) != x.shape(2) / 2 || sin.shape(0) != cos.shape(0) ||
        sin.shape(1) != cos.shape(1))
        throw std::invalid_argument("rope: need x [T, H, hd] and cos, sin [T, hd/2]");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    py::array_t<float> y({x.shape(0), x.shape(1), x.shape(2)});
    std::copy(x.data(), x.data() + x.size(), y.mutable_data());
    for (py::ssize_t t = 0; t < x.shape(0); ++t)
        for (py::ssize_t h = 0; h < x.shape(1); ++h)
            k.rope(y.mutable_data(t, h, 0), cos.data(t, 0), sin.data(t, 0), x.shape(2) / 2);
    return y;
}

py::array_t<float> k_swiglu(const FloatArray& g, const FloatArray& u, const std::optional<std::string>& isa) {
    if (g.ndim() != 1 || u.ndim() != 1 || g.shape(0) != u.shape(0))
        throw std::invalid_argument("swiglu: need gate [n] and up [n]");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    py::array_t<float> y(g.shape(0));
    k.swiglu(g.data(), u.data(), y.mutable_data(), g.shape(0));
    return y;
}

py::array_t<float> k_gemm_nn(const FloatArray& a, const py::array_t<float>& b, const std::optional<std::string>& isa) {
    // b may be a view with strided rows (as the V rows of the KV cache are).
    if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(0) || b.strides(1) != sizeof(float) ||
        b.strides(0) % sizeof(float))
        throw std::invalid_argument("gemm_nn: need a [M, K] and b [K, N] with contiguous rows");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
    py::array_t<float> y({M, N});
    k.gemm_nn(a.data(), K, b.data(), b.strides(0) / sizeof(float), K, y.mutable_data(), N, M, N, false);
    return y;
}

// Causal attention of q [T, n_heads, hd] at positions [p0, p0 + T) over k, v [p0 + T, n_kv, hd],
// stored in a one-layer KV cache of the given format first: the model's own path.
py::array_t<float> k_attention(const FloatArray& q, const FloatArray& kk, const FloatArray& vv, int64_t p0,
                               const std::string& kv_cache, const std::optional<std::string>& isa, int n_threads,
                               int64_t splits) {
    if (q.ndim() != 3 || kk.ndim() != 3 || vv.ndim() != 3)
        throw std::invalid_argument("attention: q, k, v must be 3-D [positions, heads, head_dim]");
    const int64_t T = q.shape(0), H = q.shape(1), hd = q.shape(2), N = kk.shape(0), KH = kk.shape(1);
    if (kk.shape(2) != hd || vv.shape(0) != N || vv.shape(1) != KH || vv.shape(2) != hd)
        throw std::invalid_argument("attention: k and v must both be [p0 + T, n_kv_heads, head_dim]");
    if (T <= 0 || KH <= 0 || H % KH != 0 || p0 < 0 || N != p0 + T)
        throw std::invalid_argument("attention: needs T > 0, n_heads a multiple of n_kv_heads, k of p0 + T rows");
    const KVType type = parse_kv_type(kv_cache);
    KVCache cache(1, N, KH, hd, type);
    cache.store(0, 0, N, kk.data(), vv.data());
    py::array_t<float> out({T, H, hd});
    cpu::ThreadPool pool(n_threads);
    Attention attn;
    attn.run(cpu::kernels_for(isa_arg(isa)), pool, cache, 0, {H, KH, hd}, q.data(), T, p0, out.mutable_data(), splits);
    return out;
}

// Seconds per attention call of T queries at depth `depth` (positions [depth, depth + T)), best of
// `repeats` runs of one call per layer: the cache holds n_layers layers of random K/V so that, as
// in a model, each call streams its layer from DRAM rather than from the last-level cache.
double k_time_attention(int64_t T, int64_t depth, int64_t n_heads, int64_t n_kv_heads, int64_t hd,
                        const std::string& kv_cache, const std::optional<std::string>& isa, int n_threads,
                        int64_t n_layers, int repeats) {
    if (T <= 0 || depth < 0 || n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || hd <= 0 || n_layers <= 0)
        throw std::invalid_argument("time_attention: needs T > 0, depth >= 0, n_heads a multiple of n_kv_heads");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    const int64_t n = depth + T, kvdim = n_kv_heads * hd;
    KVCache cache(n_layers, n, n_kv_heads, hd, parse_kv_type(kv_cache));
    std::vector<float> rows(size_t(n * kvdim)), q(size_t(T * n_heads * hd)), out(q.size());
    uint32_t s = 12345;
    auto rnd = [&] { s = s * 1664525u + 1013904223u; return float(s >> 8) / float(1u << 24) * 2.0f - 1.0f; };
    for (float& v : q) v = rnd();
    for (int64_t l = 0; l < n_layers; ++l) {
        for (float& v : rows) v = rnd();
        cache.store(l, 0, n, rows.data(), rows.data());
    }
    py::gil_scoped_release release;
    cpu::ThreadPool pool(n_threads);
    Attention attn;
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t l = 0; l < n_layers; ++l)
            attn.run(k, pool, cache, l, {n_heads, n_kv_heads, hd}, q.data(), T, depth, out.data());
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / n_layers;
        best = dt < best ? dt : best;
    }
    return best;
}

py::array_t<float> k_softmax(const FloatArray& s, float scale, const std::optional<std::string>& isa) {
    if (s.ndim() != 1 || s.shape(0) < 1) throw std::invalid_argument("softmax: need a non-empty 1-D array");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    py::array_t<float> y(s.shape(0));
    std::copy(s.data(), s.data() + s.shape(0), y.mutable_data());
    k.softmax(y.mutable_data(), s.shape(0), scale);
    return y;
}

py::array_t<float> k_to_f32(const py::array& w, const std::optional<std::string>& isa) {
    const TensorSpec v = float_spec(w, "w");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    py::array_t<float> y(w.size());
    k.to_f32[int(v.dtype)](v.data, y.mutable_data(), w.size());
    return y;
}

// ---- _core.device_math: csrc/cuda's __host__ __device__ math run on the host, for its tests.

template <class Out, class In, class F>
py::array_t<Out> map_array(const py::array_t<In, py::array::c_style | py::array::forcecast>& a, F f) {
    py::array_t<Out> y(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
    const In* x = a.data();
    Out* out = y.mutable_data();
    for (py::ssize_t i = 0; i < a.size(); ++i) out[i] = f(x[i]);
    return y;
}

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using U32Array = py::array_t<uint32_t, py::array::c_style | py::array::forcecast>;

// Partials (m[s], l[s], o[s, :]) of disjoint key ranges folded left to right with softmax_merge,
// then finished: (m, l, out[:]).
py::tuple dm_softmax_merge(const FloatArray& m, const FloatArray& l, const FloatArray& o) {
    if (m.ndim() != 1 || l.ndim() != 1 || o.ndim() != 2 || l.shape(0) != m.shape(0) || o.shape(0) != m.shape(0))
        throw std::invalid_argument("softmax_merge: need m [S], l [S] and o [S, D]");
    const py::ssize_t S = m.shape(0), D = o.shape(1);
    std::vector<float> acc(size_t(D), 0.0f);
    cuda::SoftmaxPartial p{ll::bits_to_float(0xFF800000u), 0.0f};
    for (py::ssize_t s = 0; s < S; ++s) {
        float wa, wb;
        p = cuda::softmax_merge(p, cuda::SoftmaxPartial{m.data()[s], l.data()[s]}, &wa, &wb);
        for (py::ssize_t d = 0; d < D; ++d) acc[size_t(d)] = wa * acc[size_t(d)] + wb * o.data()[s * D + d];
    }
    py::array_t<float> out(D);
    for (py::ssize_t d = 0; d < D; ++d) out.mutable_data()[d] = cuda::softmax_finish(acc[size_t(d)], p);
    return py::make_tuple(p.m, p.l, out);
}

// [32 lanes, values per lane, 2]: the (row, col) each lane's value i holds in an mma tile.
py::array_t<int32_t> dm_mma_fragment(const std::string& shape, const std::string& operand) {
    cuda::MmaShape s;
    if (shape == "m16n8k16") s = cuda::MmaShape::M16N8K16;
    else if (shape == "m16n8k32") s = cuda::MmaShape::M16N8K32;
    else throw std::invalid_argument("mma_fragment: shape is m16n8k16 or m16n8k32, not " + shape);
    const int n = operand == "a" ? cuda::mma_a_count(s) : operand == "b" ? cuda::mma_b_count(s) : cuda::kMmaCCount;
    if (operand != "a" && operand != "b" && operand != "c")
        throw std::invalid_argument("mma_fragment: operand is a, b or c, not " + operand);
    py::array_t<int32_t> out({py::ssize_t(32), py::ssize_t(n), py::ssize_t(2)});
    int32_t* p = out.mutable_data();
    for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < n; ++i, p += 2) {
            const cuda::FragCoord c = operand == "a" ? cuda::mma_a(s, lane, i)
                                      : operand == "b" ? cuda::mma_b(s, lane, i) : cuda::mma_c(lane, i);
            p[0] = c.row;
            p[1] = c.col;
        }
    return out;
}

// ---- INT4 GPU layout (csrc/cuda/int4_layout.h, int4_repack.cpp)

bool half_type_arg(const std::string& dtype) {
    if (dtype == "bf16") return true;
    if (dtype == "fp16") return false;
    throw std::invalid_argument("dtype is bf16 or fp16, not " + dtype);
}

template <class T>
py::array_t<T> copy_out(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
    py::array_t<T> a(shape);
    std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

// An optional buffer (a weight's mins): None when empty, else copy_out's array (flat by default).
template <class T>
py::object copy_out_or_none(const std::vector<T>& v, std::vector<py::ssize_t> shape = {}) {
    if (v.empty()) return py::none();
    return copy_out(v, shape.empty() ? std::vector<py::ssize_t>{py::ssize_t(v.size())} : std::move(shape));
}

// int4_repack after the shape checks a Python caller needs (FormatError naming the tensor).
cuda::Int4GpuWeight repack_checked(const U8Array& codes, const FloatArray& scales, int64_t group,
                                   const std::optional<FloatArray>& mins, int zero, const std::string& dtype,
                                   const std::string& name) {
    if (codes.ndim() != 2) throw FormatError("tensor '" + name + "': INT4 codes must be a uint8 [N, K] array");
    const int64_t N = codes.shape(0), K = codes.shape(1);
    const cuda::Int4Geometry g = cuda::int4_geometry(name, N, K, group);
    auto check = [&](const FloatArray& a, const char* what) {
        if (a.ndim() != 2 || a.shape(0) != N || a.shape(1) != g.groups)
            throw FormatError("tensor '" + name + "': " + what + " must be float32 [" + std::to_string(N) + ", " +
                              std::to_string(g.groups) + "] for group " + std::to_string(group));
    };
    check(scales, "scales");
    if (mins) check(*mins, "mins");
    return cuda::int4_repack(name, codes.data(), N, K, scales.data(), mins ? mins->data() : nullptr, group, zero,
                             half_type_arg(dtype));
}

py::dict dm_int4_repack(const U8Array& codes, const FloatArray& scales, int64_t group,
                        const std::optional<FloatArray>& mins, int zero, const std::string& dtype,
                        const std::string& name) {
    const cuda::Int4GpuWeight w = repack_checked(codes, scales, group, mins, zero, dtype, name);
    const cuda::Int4Geometry& g = w.g;
    const std::vector<py::ssize_t> sshape{py::ssize_t(g.n_tiles), py::ssize_t(g.groups), 64};
    py::dict d;
    d["q"] = copy_out(w.q, {py::ssize_t(g.n_tiles), py::ssize_t(g.k_tiles), 32, 4});
    d["scales"] = copy_out(w.scales, sshape);
    d["mins"] = copy_out_or_none(w.mins, sshape);
    d["n_tiles"] = g.n_tiles;
    d["k_tiles"] = g.k_tiles;
    d["groups"] = g.groups;
    d["tiles_per_group"] = g.tiles_per_group;
    return d;
}

// What each lane's int4_tile_fragments gives for each tile, reading the buffers at the kernel's
// offsets: uint32 [n_tiles, k_tiles, 32 lanes, 8 sub-tiles, 2 registers].
template <bool kBf16, bool kHasMin>
void int4_all_fragments(const cuda::Int4Geometry& g, const uint32_t* q, const uint16_t* scales, const uint16_t* mins,
                        int zero, uint32_t* out) {
    const cuda::Int4Bias bias = cuda::int4_bias<kBf16>(zero);
    for (int64_t nt = 0; nt < g.n_tiles; ++nt)
        for (int64_t kt = 0; kt < g.k_tiles; ++kt)
            for (int lane = 0; lane < 32; ++lane, out += 16) {
                const int64_t so = cuda::int4_scale_offset(g, nt, kt, lane);
                uint32_t s[4], m[4] = {0, 0, 0, 0};
                std::memcpy(s, scales + so, 16);
                if (kHasMin) std::memcpy(m, mins + so, 16);
                cuda::int4_tile_fragments<kBf16, kHasMin>(q + cuda::int4_q_offset(g, nt, kt, lane), s, m, bias,
                                                          reinterpret_cast<uint32_t(*)[2]>(out));
            }
}

py::array_t<uint32_t> dm_int4_fragments(const U32Array& q, const py::array_t<uint16_t, py::array::c_style | py::array::forcecast>& scales,
                                        const std::optional<py::array_t<uint16_t, py::array::c_style | py::array::forcecast>>& mins,
                                        int64_t n, int64_t k, int64_t group, int zero, const std::string& dtype) {
    const cuda::Int4Geometry g = cuda::int4_geometry("int4_fragments", n, k, group);
    const bool bf16 = half_type_arg(dtype);
    const int64_t ns = g.n_tiles * g.groups * 64;
    if (q.size() != g.n_tiles * g.k_tiles * cuda::kInt4TileWords || scales.size() != ns || (mins && mins->size() != ns))
        throw std::invalid_argument("int4_fragments: buffers do not match a [" + std::to_string(n) + ", " +
                                    std::to_string(k) + "] weight with group " + std::to_string(group));
    if (zero < 0 || zero > 15 || (mins && zero != 0)) throw std::invalid_argument("int4_fragments: bad zero point");
    py::array_t<uint32_t> out({py::ssize_t(g.n_tiles), py::ssize_t(g.k_tiles), py::ssize_t(32),
                               py::ssize_t(cuda::kInt4SubTiles), py::ssize_t(2)});
    const uint16_t* m = mins ? mins->data() : nullptr;
    uint32_t* o = out.mutable_data();
    if (bf16 && m) int4_all_fragments<true, true>(g, q.data(), scales.data(), m, zero, o);
    else if (bf16) int4_all_fragments<true, false>(g, q.data(), scales.data(), m, zero, o);
    else if (m) int4_all_fragments<false, true>(g, q.data(), scales.data(), m, zero, o);
    else int4_all_fragments<false, false>(g, q.data(), scales.data(), m, zero, o);
    return out;
}

// [32 lanes, 4 words, 8 nibbles, 2]: int4_tile_coord's (k, n) of every nibble of a tile.
py::array_t<int32_t> dm_int4_tile_coords() {
    py::array_t<int32_t> out({py::ssize_t(32), py::ssize_t(4), py::ssize_t(8), py::ssize_t(2)});
    int32_t* p = out.mutable_data();
    for (int lane = 0; lane < 32; ++lane)
        for (int w = 0; w < 4; ++w)
            for (int j = 0; j < 8; ++j, p += 2) {
                const cuda::FragCoord c = cuda::int4_tile_coord(lane, w, j);
                p[0] = c.row;
                p[1] = c.col;
            }
    return out;
}

// [32 lanes, 4 registers, 2 halves, 2]: the (row, col) of the row-major shared-memory tile that
// each lane's register half receives when the lanes give ldmatrix.x4 the row addresses of
// `layout` (a, b_nk: without .trans; b_kn: with .trans), by the instruction's rule (mma_frag.h:
// ldm::element gives the element within its 8 x 8 matrix; lane 8 * reg + row gave that row).
py::array_t<int32_t> dm_ldmatrix_x4(const std::string& layout) {
    const bool trans = layout == "b_kn";
    if (layout != "a" && layout != "b_nk" && !trans)
        throw std::invalid_argument("ldmatrix_x4: layout is a, b_nk or b_kn, not " + layout);
    py::array_t<int32_t> out({py::ssize_t(32), py::ssize_t(4), py::ssize_t(2), py::ssize_t(2)});
    int32_t* p = out.mutable_data();
    for (int lane = 0; lane < 32; ++lane)
        for (int reg = 0; reg < 4; ++reg)
            for (int j = 0; j < 2; ++j, p += 2) {
                const cuda::FragCoord e = cuda::ldm::element(lane, j, trans);
                const int giver = 8 * reg + e.row;
                const cuda::FragCoord r = layout == "a" ? cuda::ldm::a_row(giver)
                                          : trans ? cuda::ldm::b_kn_row(giver) : cuda::ldm::b_nk_row(giver);
                p[0] = r.row;
                p[1] = r.col + e.col;
            }
    return out;
}

// ---- the W4A16 GEMM's work split (csrc/cuda/int4_gemm_tiling.h)

// A GEMM launch as a dict, its split ranges spelled out (the FP8 plan adds its folds).
py::dict plan_dict(const cuda::GemmPlan& p) {
    py::list ranges;
    for (int s = 0; s < p.splits; ++s) {
        const cuda::StageRange r = cuda::splitk_range(p.k_stages, p.splits, s);
        ranges.append(py::make_tuple(r.begin, r.end));
    }
    py::dict d;
    d["m_frags"] = p.m_frags;
    d["splits"] = p.splits;
    d["grid_n"] = p.grid_n;
    d["grid_m"] = p.grid_m;
    d["k_stages"] = p.k_stages;
    d["stage_ranges"] = ranges;
    return d;
}

// The W4A16 and 16-bit-weight GEMMs' plans, with the blocks per SM their kernels are built for.
py::dict gemm_plan_dict(const cuda::GemmPlan& p) {
    py::dict d = plan_dict(p);
    d["min_blocks"] = cuda::gemm_min_blocks(p.m_frags);
    return d;
}

py::dict dm_int4_gemm_plan(int64_t m, int64_t n, int64_t k, int64_t group, int sms) {
    if (m <= 0 || sms <= 0) throw std::invalid_argument("int4_gemm_plan: m and sms must be positive");
    const cuda::Int4Geometry g = cuda::int4_geometry("int4_gemm_plan", n, k, group);
    return gemm_plan_dict(cuda::int4_gemm_plan(m, g, sms));
}

py::dict dm_bf16_gemm_plan(int64_t m, int64_t n, int64_t k, int sms) {
    if (m <= 0 || n <= 0 || k <= 0 || sms <= 0) throw std::invalid_argument("bf16_gemm_plan: m, n, k and sms must be positive");
    return gemm_plan_dict(cuda::bf16_gemm_plan(m, n, k, sms));
}

// What a weight (or weights fused along the output) becomes on the GPU (gpu_weights.h): one
// product (gpu_linear), or the products the engine runs (gpu_linear_pieces).
py::dict gpu_linear_dict(const cuda::GpuLinearHost& g) {
    py::dict d;
    d["format"] = g.format;
    d["int4"] = g.int4;
    d["fp8"] = g.fp8;
    d["out"] = g.out;
    if (g.int4) {
        d["q"] = copy_out(g.q.q, {py::ssize_t(g.q.q.size())});
        d["scales"] = copy_out(g.q.scales, {py::ssize_t(g.q.scales.size())});
        d["mins"] = copy_out_or_none(g.q.mins);
        d["zero"] = g.q.zero;
    } else if (g.fp8) {
        d["act_ub"] = g.act_ub;
        d["int8"] = g.f.int8;
        d["q"] = copy_out(g.f.q, {py::ssize_t(g.f.q.size())});
        d["scales"] = copy_out(g.f.scales, {py::ssize_t(g.f.scales.size())});
        d["mins"] = copy_out_or_none(g.f.mins);
    } else {
        d["rows"] = copy_out(g.half, {py::ssize_t(g.out), py::ssize_t(g.ld)});
    }
    return d;
}

std::vector<TensorSpec> gpu_weight_parts(const py::list& parts, const std::string& dtype) {
    half_type_arg(dtype);  // refused before any part is read
    std::vector<TensorSpec> specs;
    for (size_t i = 0; i < parts.size(); ++i) specs.push_back(spec_of(parts[i], "part" + std::to_string(i)));
    return specs;
}

py::dict dm_gpu_weight(const py::list& parts, const std::vector<int64_t>& outs, int64_t in, const std::string& dtype) {
    return gpu_linear_dict(cuda::gpu_linear(gpu_weight_parts(parts, dtype), outs, in, dtype == "bf16"));
}

py::list dm_gpu_weight_pieces(const py::list& parts, const std::vector<int64_t>& outs, int64_t in,
                              const std::string& dtype) {
    py::list out;
    for (const cuda::GpuLinearHost& g : cuda::gpu_linear_pieces(gpu_weight_parts(parts, dtype), outs, in, dtype == "bf16"))
        out.append(gpu_linear_dict(g));
    return out;
}

// ---- FP8 GPU layout (csrc/cuda/fp8_layout.h, fp8_repack.cpp) and the FP8 GEMM's work split

// fp8_repack after the shape checks a Python caller needs (FormatError naming the tensor). scales
// (and mins): [N] or [N, blocks], as the CPU format's spec holds them.
cuda::Fp8GpuWeight fp8_repack_checked(const U8Array& codes, const FloatArray& scales, int64_t block,
                                      const std::string& name, bool int8 = false,
                                      const std::optional<FloatArray>& mins = std::nullopt) {
    if (codes.ndim() != 2) throw FormatError("tensor '" + name + "': FP8 codes must be a uint8 [N, K] array");
    const int64_t N = codes.shape(0), K = codes.shape(1);
    const cuda::Fp8TileGeometry g = cuda::fp8_geometry(name, N, K, block, int8);
    for (const auto& [a, what] : {std::pair{&scales, "scales"}, std::pair{mins ? &*mins : nullptr, "mins"}})
        if (a && (a->size() != N * g.blocks || (a->ndim() == 2 && a->shape(0) != N) || a->ndim() > 2))
            throw FormatError("tensor '" + name + "': FP8 " + what + " must be float32 [" + std::to_string(N) + ", " +
                              std::to_string(g.blocks) + "] for blocks of " + std::to_string(g.block) + " columns");
    return cuda::fp8_repack(name, codes.data(), N, K, scales.data(), block, int8, mins ? mins->data() : nullptr);
}

py::dict dm_fp8_repack(const U8Array& codes, const FloatArray& scales, int64_t block, const std::string& name,
                       bool int8, const std::optional<FloatArray>& mins) {
    const cuda::Fp8GpuWeight w = fp8_repack_checked(codes, scales, block, name, int8, mins);
    const cuda::Fp8TileGeometry& g = w.g;
    py::dict d;
    const std::vector<py::ssize_t> sshape{py::ssize_t(g.n_tiles), py::ssize_t(g.blocks), cuda::kFp8TileN};
    d["q"] = copy_out(w.q, {py::ssize_t(g.n_tiles), py::ssize_t(g.k_tiles), cuda::kFp8Chunks, 32, 4});
    d["scales"] = copy_out(w.scales, sshape);
    d["mins"] = copy_out_or_none(w.mins, sshape);
    d["n_tiles"] = g.n_tiles;
    d["k_tiles"] = g.k_tiles;
    d["block"] = g.block;
    d["blocks"] = g.blocks;
    d["tiles_per_block"] = g.tiles_per_block;
    return d;
}

// What each lane's fragment functions give for each tile, reading q at the kernel's offsets:
// kind "e4m3": uint32 [n_tiles, k_tiles, 32 lanes, 8 sub-tiles, 2 registers] (m16n8k32 B);
// "bf16" / "fp16": [n_tiles, k_tiles, 32, 8 sub-tiles, 2 k16 steps, 2 registers] of 16-bit pairs.
py::array_t<uint32_t> dm_fp8_fragments(const U32Array& q, int64_t n, int64_t k, int64_t block, const std::string& kind,
                                       bool int8) {
    const cuda::Fp8TileGeometry g = cuda::fp8_geometry("fp8_fragments", n, k, block, int8);
    if (q.size() != g.n_tiles * g.k_tiles * cuda::kFp8TileWords)
        throw std::invalid_argument("fp8_fragments: q does not match a [" + std::to_string(n) + ", " + std::to_string(k) +
                                    "] weight");
    const bool e4m3 = kind == "e4m3";
    const bool bf16 = !e4m3 && half_type_arg(kind);
    if (e4m3 && int8) throw std::invalid_argument("fp8_fragments: integer codes have only 16-bit fragments");
    std::vector<py::ssize_t> shape{py::ssize_t(g.n_tiles), py::ssize_t(g.k_tiles), 32, cuda::kFp8SubTiles, 2};
    if (!e4m3) shape.push_back(2);
    py::array_t<uint32_t> out(shape);
    uint32_t* o = out.mutable_data();
    for (int64_t nt = 0; nt < g.n_tiles; ++nt)
        for (int64_t kt = 0; kt < g.k_tiles; ++kt)
            for (int lane = 0; lane < 32; ++lane)
                for (int s = 0; s < cuda::kFp8SubTiles; ++s) {
                    const uint32_t* v = q.data() + cuda::fp8_w_offset(g, nt, kt, s / 2, lane);
                    if (e4m3) {
                        cuda::fp8_e4m3_fragment(v, s, o);
                        o += 2;
                        continue;
                    }
                    for (int r = 0; r < 2; ++r, o += 2) {
                        const uint32_t word = v[2 * (s & 1) + r];
                        if (bf16 && int8) cuda::w8_word_fragment<true, true>(word, o);
                        else if (bf16) cuda::w8_word_fragment<true, false>(word, o);
                        else if (int8) cuda::w8_word_fragment<false, true>(word, o);
                        else cuda::w8_word_fragment<false, false>(word, o);
                    }
                }
    return out;
}

// [n_tiles, blocks, 32 lanes, 16]: the scales each lane reads for its accumulators.
py::array_t<float> dm_fp8_lane_scales(const FloatArray& scales, int64_t n, int64_t k, int64_t block, bool int8) {
    const cuda::Fp8TileGeometry g = cuda::fp8_geometry("fp8_lane_scales", n, k, block, int8);
    if (scales.size() != g.n_tiles * g.blocks * cuda::kFp8TileN)
        throw std::invalid_argument("fp8_lane_scales: scales do not match the weight");
    py::array_t<float> out({py::ssize_t(g.n_tiles), py::ssize_t(g.blocks), py::ssize_t(32), py::ssize_t(16)});
    float* o = out.mutable_data();
    for (int64_t nt = 0; nt < g.n_tiles; ++nt)
        for (int64_t b = 0; b < g.blocks; ++b)
            for (int lane = 0; lane < 32; ++lane, o += 16)
                std::memcpy(o, scales.data() + cuda::fp8_scale_offset(g, nt, b) + cuda::fp8_lane_scales(lane), 64);
    return out;
}

// x [M, K] float32 -> (codes uint8 [M, ceil(K / 32) * 32] in slot order, scales float32 [M]).
py::tuple dm_fp8_quantize_rows(const FloatArray& x, std::optional<float> ub_arg) {
    const float ub = ub_arg.value_or(std::numeric_limits<float>::infinity());
    if (x.ndim() != 2) throw std::invalid_argument("fp8_quantize_rows: x must be [M, K]");
    const int64_t M = x.shape(0), K = x.shape(1), ldq = (K + cuda::kFp8TileK - 1) / cuda::kFp8TileK * cuda::kFp8TileK;
    py::array_t<uint8_t> codes({M, ldq});
    py::array_t<float> scales(M);
    for (int64_t m = 0; m < M; ++m)
        scales.mutable_data()[m] = cuda::fp8_quantize_row(x.data() + m * K, K, ldq, ub, codes.mutable_data() + m * ldq);
    return py::make_tuple(codes, scales);
}

py::dict dm_fp8_gemm_plan(int64_t m, int64_t n, int64_t k, int64_t block, int sms, const std::string& path,
                          bool int8) {
    if (m <= 0 || sms <= 0) throw std::invalid_argument("fp8_gemm_plan: m and sms must be positive");
    if (path != "w8a8" && path != "w8a16") throw std::invalid_argument("fp8_gemm_plan: path is w8a8 or w8a16");
    const bool w8a8 = path == "w8a8";
    if (w8a8 && int8) throw std::invalid_argument("fp8_gemm_plan: integer codes take the W8A16 path");
    const cuda::Fp8TileGeometry g = cuda::fp8_geometry("fp8_gemm_plan", n, k, block, int8);
    const cuda::GemmPlan p = cuda::fp8_gemm_plan(m, g, sms, w8a8);
    py::list folds;
    for (int s = 0; s < p.splits; ++s) {
        const cuda::StageRange r = cuda::splitk_range(p.k_stages, p.splits, s);
        py::list f;
        for (int64_t kt = r.begin; kt < r.end; ++kt)
            if ((w8a8 || g.blocks > 1) && cuda::fp8_fold_after(g, kt, r.end, w8a8)) f.append(kt);  // the folding kernels
        folds.append(f);
    }
    py::dict d = plan_dict(p);
    d["folds"] = folds;
    d["step_blocks"] = cuda::fp8_step_blocks(g);
    return d;
}

// ---- flash attention (csrc/cuda/attention_plan.h)

// Its schedule on the host (flash_attn_schedule.h): q [T, H * hd], k and v
// [p0 + T, KH * hd] -> [T, H * hd].
// The shape of an attention call's q [T, H * hd], k and v [p0 + T, KH * hd] (host schedule and
// GPU kernels alike), checked.
cuda::FaHostShape attention_shape(const py::array& q, const py::array& k, const py::array& v, int p0, int n_heads,
                                  int n_kv_heads) {
    if (q.ndim() != 2 || k.ndim() != 2 || v.ndim() != 2 || n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads ||
        q.shape(1) % n_heads)
        throw std::invalid_argument("flash_attention: need q [T, H * hd], k and v [p0 + T, KH * hd], KH dividing H");
    const int T = int(q.shape(0)), hd = int(q.shape(1) / n_heads);
    if (p0 < 0 || k.shape(0) != p0 + T || v.shape(0) != p0 + T || k.shape(1) != n_kv_heads * hd ||
        v.shape(1) != n_kv_heads * hd)
        throw std::invalid_argument("flash_attention: k and v must be [p0 + T, KH * hd]");
    return cuda::FaHostShape{T, p0, n_heads, n_kv_heads, hd};
}

py::array_t<float> dm_flash_attention(const FloatArray& q, const FloatArray& k, const FloatArray& v, int p0, int n_heads,
                                      int n_kv_heads, int splits, int n_sms) {
    const cuda::FaHostShape s = attention_shape(q, k, v, p0, n_heads, n_kv_heads);
    py::array_t<float> out({q.shape(0), q.shape(1)});
    cuda::flash_attention_schedule(q.data(), k.data(), v.data(), s, splits, n_sms, out.mutable_data());
    return out;
}

py::dict build_info() {
    py::dict d;
    d["version"] = LL_VERSION;
    d["compiler"] = __VERSION__;
    py::list compiled, supported;
    for (int i = 0; i < cpu::kNumIsas; ++i) {
        const cpu::Isa isa = cpu::Isa(i);
        if (cpu::isa_supported(isa)) supported.append(cpu::isa_name(isa));
    }
    d["isas_supported"] = supported;
    d["best_isa"] = cpu::isa_name(cpu::best_isa());
    d["physical_cores"] = cpu::physical_cores();
#if defined(LL_HAVE_CUDA)
    d["cuda_compiled"] = true;
    d["cuda_archs"] = LL_CUDA_ARCHS;
    std::string why;
    const int n = cuda::device_count(&why);
    d["cuda_devices"] = n;
    py::list names;
    for (int i = 0; i < n; ++i) names.append(cuda::device_name(i));
    d["cuda_device_names"] = names;
    d["cuda_unavailable_reason"] = n > 0 ? py::object(py::none()) : py::object(py::str(why));
#else
    d["cuda_compiled"] = false;
    d["cuda_archs"] = "";
    d["cuda_devices"] = 0;
    d["cuda_device_names"] = py::list();
    d["cuda_unavailable_reason"] =
        "this build has no CUDA support (built where nvcc or an NVIDIA driver was missing, or with "
        "LLAMA_LOCAL_CUDA=OFF; LLAMA_LOCAL_CUDA=ON pip install . builds it)";
#endif
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "llama_local compiled core: the Llama forward pass and its CPU kernels";

    // C++ exceptions become the package's own classes (llama_local.errors).
    static py::object format_error = py::module_::import("llama_local.errors").attr("ModelFormatError");
    static py::object overflow_error = py::module_::import("llama_local.errors").attr("ContextOverflowError");
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const FormatError& e) {
            PyErr_SetString(format_error.ptr(), e.what());
        } catch (const ContextOverflow& e) {
            PyErr_SetString(overflow_error.ptr(), e.what());
        }
    });

    m.def("build_info", &build_info, "Version, ISAs and CUDA support of this build and machine");
    m.def("default_isa", [] { return std::string(cpu::isa_name(cpu::default_isa())); },
          "The ISA models use: LLAMA_LOCAL_ISA if set, else the best this CPU supports");

    py::class_<PyModel>(m, "Model")
        .def(py::init<const py::dict&, const py::dict&, int64_t, int, const std::optional<std::string>&, int64_t,
                      const std::string&>(),
             py::arg("config"), py::arg("tensors"), py::arg("n_ctx"), py::arg("n_threads") = 0,
             py::arg("isa") = py::none(), py::arg("n_batch") = 512, py::arg("kv_cache") = "f16",
             "kv_cache: the KV cache's format, f16 (default), bf16, q8_0 or f32")
        .def("observe_inputs", &PyModel::observe_inputs, py::arg("tokens"), py::arg("observer"),
             "Evaluate tokens from position 0, calling observer(layer, which, x[T, K]) with each decoder "
             "layer's linear inputs: which 0 = q/k/v, 1 = o, 2 = gate/up, 3 = down")
        .def("forward", &PyModel::forward, py::arg("tokens"), py::arg("start_pos") = py::none(),
             py::arg("all_logits") = false,
             "Evaluate tokens at positions [start_pos or n_past, ...), append them to the KV cache, "
             "and return float32 logits: [vocab] for the last token, or [T, vocab] with all_logits")
        .def("reset", [](PyModel& s) { s.model().truncate(0); })
        .def("truncate", [](PyModel& s, int64_t n) { s.model().truncate(n); }, py::arg("n"))
        .def_property_readonly("n_past", [](PyModel& s) { return s.model().n_past(); })
        .def_property_readonly("n_ctx", [](PyModel& s) { return s.model().n_ctx(); })
        .def_property_readonly("n_threads", [](PyModel& s) { return s.model().n_threads(); })
        .def_property_readonly("isa", [](PyModel& s) { return std::string(s.model().kernels().name); })
        .def_property_readonly("weight_bytes", [](PyModel& s) { return s.model().weight_bytes(); })
        .def_property_readonly("weight_formats", [](PyModel& s) { return s.model().weight_formats(); },
                               "[(format, bytes)] of the weights as held, e.g. [('Q4_K', ...), ('f32', ...)]")
        .def_property_readonly("kv_bytes", [](PyModel& s) { return s.model().kv_bytes(); },
                               "bytes of the KV cache at n_ctx positions (committed as positions are used)")
        .def_property_readonly("kv_cache", [](PyModel& s) { return std::string(kv_type_name(s.model().kv_type())); })
        .def_property_readonly("scratch_bytes", [](PyModel& s) { return s.model().scratch_bytes(); });

#if defined(LL_HAVE_CUDA)
    py::class_<PyCudaModel>(m, "CudaModel")
        .def(py::init<const py::dict&, const py::dict&, int64_t, int64_t, bool>(), py::arg("config"),
             py::arg("tensors"), py::arg("n_ctx"), py::arg("n_batch") = 512, py::arg("cuda_graphs") = true,
             "The forward pass on the GPU (CUDA builds only), with Model's interface; cuda_graphs: replay "
             "each decode step as a CUDA graph")
        .def("forward", &PyCudaModel::forward, py::arg("tokens"), py::arg("start_pos") = py::none(),
             py::arg("all_logits") = false, "as Model.forward")
        .def("reset", [](PyCudaModel& s) { s.model().truncate(0); })
        .def("truncate", [](PyCudaModel& s, int64_t n) { s.model().truncate(n); }, py::arg("n"))
        .def_property_readonly("n_past", [](PyCudaModel& s) { return s.model().n_past(); })
        .def_property_readonly("n_ctx", [](PyCudaModel& s) { return s.model().n_ctx(); })
        .def_property_readonly("n_threads", [](PyCudaModel&) { return 0; })
        .def_property_readonly("isa", [](PyCudaModel& s) { return "cuda (" + s.model().device_name() + ")"; })
        .def_property_readonly("weight_bytes", [](PyCudaModel& s) { return s.model().weight_bytes(); })
        .def_property_readonly("weight_formats", [](PyCudaModel& s) { return s.model().weight_formats(); })
        .def_property_readonly("kv_bytes", [](PyCudaModel& s) { return s.model().kv_bytes(); })
        .def_property_readonly("kv_cache", [](PyCudaModel& s) { return std::string(s.model().bf16() ? "bf16" : "f16"); })
        .def_property_readonly("scratch_bytes", [](PyCudaModel& s) { return s.model().scratch_bytes(); })
        .def_property_readonly("decode_graphs", [](PyCudaModel& s) { return s.model().decode_graphs(); },
                               "decode-step CUDA graphs captured so far (one per flash-decode split count met)")
        .def_property_readonly("decode_graph_error", [](PyCudaModel& s) { return s.model().decode_graph_error(); },
                               "why decode-step graphs were turned off (a capture failed; decode runs launch by "
                               "launch); empty if they were not");
#endif

    py::module_ dm = m.def_submodule("device_math", "csrc/cuda's shared host/device math, run on the host");
    dm.def("e4m3_to_float", [](const U8Array& a) { return map_array<float>(a, cuda::e4m3_to_float); }, py::arg("codes"),
           "E4M3 codes (uint8) -> float32, exact");
    dm.def("float_to_e4m3", [](const FloatArray& a) { return map_array<uint8_t>(a, cuda::float_to_e4m3); }, py::arg("x"),
           "float32 -> E4M3 codes: nearest, ties to even, saturating at +-448");
    dm.def("float_to_bf16", [](const FloatArray& a) { return map_array<uint16_t>(a, ll::float_to_bf16); }, py::arg("x"),
           "float32 -> bf16 bits: nearest, ties to even");
    dm.def("int4_dequant", [](const U32Array& packed, float scale, int zero) {
        py::array_t<float> y(packed.size() * 8);
        for (py::ssize_t w = 0; w < packed.size(); ++w)
            for (int i = 0; i < 8; ++i) y.mutable_data()[w * 8 + i] = cuda::int4_dequant(packed.data()[w], i, scale, zero);
        return y;
    }, py::arg("packed"), py::arg("scale"), py::arg("zero"), "8 nibbles per uint32, low first -> scale * (q - zero)");
    dm.def("softmax_merge", &dm_softmax_merge, py::arg("m"), py::arg("l"), py::arg("o"),
           "partials (m [S], l [S], o [S, D]) merged in order -> (m, l, o / l)");
    dm.def("mma_fragment", &dm_mma_fragment, py::arg("shape"), py::arg("operand"),
           "[32, n, 2]: the (row, col) of each lane's value i in an mma.sync operand");
    dm.def("int4_repack", &dm_int4_repack, py::arg("codes"), py::arg("scales"), py::arg("group"),
           py::arg("mins") = py::none(), py::arg("zero") = 0, py::arg("dtype") = "bf16", py::arg("name") = "weight",
           "INT4 codes u [N, K] (uint8 0..15), fp32 scales (and mins) [N, groups] -> the GPU layout: "
           "{q: uint32 [n_tiles, k_tiles, 32, 4], scales, mins: 16-bit [n_tiles, groups, 64] or None, "
           "n_tiles, k_tiles, groups, tiles_per_group}");
    dm.def("int4_fragments", &dm_int4_fragments, py::arg("q"), py::arg("scales"), py::arg("mins"), py::arg("n"),
           py::arg("k"), py::arg("group"), py::arg("zero"), py::arg("dtype"),
           "the kernel's B fragments of every tile and lane, read from int4_repack's buffers: uint32 "
           "[n_tiles, k_tiles, 32, 8 sub-tiles, 2 registers] of 16-bit pairs");
    dm.def("splitk_range", [](int64_t k_stages, int splits, int split) {
        if (k_stages < 0 || splits < 1 || split < 0 || split >= splits)
            throw std::invalid_argument("splitk_range: need k_stages >= 0 and 0 <= split < splits");
        const cuda::StageRange r = cuda::splitk_range(k_stages, splits, split);
        return py::make_tuple(r.begin, r.end);
    }, py::arg("k_stages"), py::arg("splits"), py::arg("split"), "[begin, end) of the k stages split `split` takes");
    dm.def("int4_gemm_plan", &dm_int4_gemm_plan, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("group"),
           py::arg("sms"),
           "the W4A16 GEMM's launch for X [m, k] . W [n, k]^T on a GPU with `sms` SMs: {m_frags, splits, "
           "grid_n, grid_m, k_stages, stage_ranges: [(begin, end)] per split, min_blocks}");
    dm.def("gpu_weight", &dm_gpu_weight, py::arg("parts"), py::arg("outs"), py::arg("in_features"),
           py::arg("dtype") = "bf16",
           "the GPU form of weight specs stacked along the output (gpu_weights.h): {format, int4, fp8, out, rows "
           "[out, ld] 16-bit bits | q, scales: int4_repack's or fp8_repack's flat buffers (fp8: and act_ub, int8, "
           "mins)}");
    dm.def("gpu_weight_pieces", &dm_gpu_weight_pieces, py::arg("parts"), py::arg("outs"), py::arg("in_features"),
           py::arg("dtype") = "bf16",
           "the products the engine runs for weight specs stacked along the output (gpu_linear_pieces): a list of "
           "gpu_weight's dicts, each for a run of neighbouring parts that keep one form, in row order");
    dm.def("bf16_gemm_plan", &dm_bf16_gemm_plan, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("sms"),
           "the 16-bit-weight GEMM's launch for X [m, k] . W [n, k]^T on a GPU with `sms` SMs (as int4_gemm_plan)");
    dm.def("b16_chunks", []() {
        py::array_t<int32_t> out({py::ssize_t(4 * cuda::kB16BlockN), py::ssize_t(2)});
        for (int c = 0; c < 4 * cuda::kB16BlockN; ++c) {
            const cuda::FragCoord a = cuda::b16_chunk(c);
            out.mutable_data()[2 * c] = a.row;
            out.mutable_data()[2 * c + 1] = a.col;
        }
        return out;
    }, "[512, 2]: the (row, k) of the 16-byte chunk each copy of a bf16 GEMM stage moves");
    dm.def("int4_tile_coords", &dm_int4_tile_coords,
           "[32 lanes, 4 words, 8 nibbles, 2]: the (k, n) in a 16 x 64 tile of each nibble of a lane's load");

    dm.def("fp8_k_of_slot", []() {
        py::array_t<int32_t> out(32);
        for (int v = 0; v < 32; ++v) out.mutable_data()[v] = cuda::fp8_k_of_slot(v);
        return out;
    }, "[32]: the k (within a 32-k tile) whose code W8A8 stores at each slot");
    dm.def("fp8_quantize_rows", &dm_fp8_quantize_rows, py::arg("x"), py::arg("ub") = py::none(),
           "x [M, K] float32 -> (E4M3 codes uint8 [M, ceil(K/32)*32] in slot order, zeros past K; scales [M]); "
           "ub: the bound on absmax (None: none)");
    dm.def("fp8_repack", &dm_fp8_repack, py::arg("codes"), py::arg("scales"), py::arg("block") = 0,
           py::arg("name") = "weight", py::arg("int8") = false, py::arg("mins") = py::none(),
           "E4M3 codes [N, K] (uint8; int8: signed integer codes as uint8 bytes), fp32 scales [N, blocks] (block "
           "<= 0 or >= K: one per row), with int8 optionally fp32 mins [N, blocks] (w = scale code + min) -> the GPU "
           "layout: {q: uint32 [n_tiles, k_tiles, 4, 32, 4], scales, mins (or None): float32 [n_tiles, blocks, 64], "
           "n_tiles, k_tiles, block, blocks, tiles_per_block}");
    dm.def("fp8_fragments", &dm_fp8_fragments, py::arg("q"), py::arg("n"), py::arg("k"), py::arg("block"),
           py::arg("kind"), py::arg("int8") = false,
           "the kernel's B fragments of every tile, lane and sub-tile from fp8_repack's q: kind e4m3 -> uint32 "
           "[.., 8, 2]; bf16 / fp16 -> [.., 8, 2 steps, 2] of 16-bit pairs (int8: of integer codes)");
    dm.def("fp8_lane_scales", &dm_fp8_lane_scales, py::arg("scales"), py::arg("n"), py::arg("k"), py::arg("block"),
           py::arg("int8") = false, "[n_tiles, blocks, 32, 16]: the scales each lane reads from fp8_repack's scales");
    dm.def("fp8_gemm_plan", &dm_fp8_gemm_plan, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("block"),
           py::arg("sms"), py::arg("path"), py::arg("int8") = false,
           "the FP8 GEMM's launch on path w8a8 or w8a16: {m_frags, splits, grid_n, grid_m, k_stages, stage_ranges, "
           "folds: per split, the tiles after which partial sums are scaled into the fp32 totals, step_blocks: "
           "whether each k16 step instead takes its own block's scales (integer codes in blocks of 16)}");

    dm.def("ldmatrix_x4", &dm_ldmatrix_x4, py::arg("layout"),
           "[32, 4, 2, 2]: the tile (row, col) each lane's register half gets from ldmatrix.x4 (a, b_nk, b_kn)");
    dm.def("c_to_a", []() {
        py::array_t<int32_t> out({py::ssize_t(8), py::ssize_t(2)});
        for (int i = 0; i < 8; ++i) {
            out.mutable_data()[2 * i] = cuda::c_to_a_tile(i);
            out.mutable_data()[2 * i + 1] = cuda::c_to_a_value(i);
        }
        return out;
    }, "[8, 2]: for A value i (m16n8k16), the n8 C tile and the value within it that become it");
    dm.def("fa_split", [](int n_pos, int n_splits) {
        py::array_t<int32_t> out({py::ssize_t(n_splits), py::ssize_t(2)});
        for (int s = 0; s < n_splits; ++s) {
            const cuda::KvRange r = cuda::fa_split(s, n_splits, n_pos);
            out.mutable_data()[2 * s] = r.begin;
            out.mutable_data()[2 * s + 1] = r.end;
        }
        return out;
    }, py::arg("n_pos"), py::arg("n_splits"), "[n_splits, 2]: decode's position ranges (begin, end) of a KV head");
    dm.def("fa_num_splits", &cuda::fa_num_splits, py::arg("n_pos"), py::arg("n_kv_heads"), py::arg("n_sms"),
           "decode's ranges per KV head");
    dm.def("fa_smem_offsets", [](int rows, int cols) {
        py::array_t<int32_t> out({py::ssize_t(rows), py::ssize_t(cols)});
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c) out.mutable_data()[r * cols + c] = cuda::fa_smem_offset(r, c, cols);
        return out;
    }, py::arg("rows"), py::arg("cols"), "[rows, cols]: where each element of a K/V tile sits in shared memory");
    dm.def("rmsnorm", [](const FloatArray& x, const FloatArray& w, float eps) {
        if (x.ndim() != 2 || w.ndim() != 1 || w.shape(0) != x.shape(1))
            throw std::invalid_argument("rmsnorm: need x [T, D] and w [D]");
        const int D = int(x.shape(1));
        py::array_t<float> y({x.shape(0), x.shape(1)});
        for (py::ssize_t t = 0; t < x.shape(0); ++t) {
            const float* r = x.data() + t * D;
            float ss = 0.0f;  // in order, as the scalar CPU kernel
            for (int i = 0; i < D; ++i) ss += r[i] * r[i];
            const float inv = cuda::rms_inv(ss, D, eps);
            for (int i = 0; i < D; ++i) y.mutable_data()[t * D + i] = cuda::rms_apply(r[i], inv, w.data()[i]);
        }
        return y;
    }, py::arg("x"), py::arg("w"), py::arg("eps"), "small_ops_math.h's RMSNorm of each row, sums in order");
    dm.def("rope", [](const FloatArray& x, const FloatArray& cos, const FloatArray& sin) {
        if (x.ndim() != 2 || cos.ndim() != 2 || sin.ndim() != 2 || cos.shape(0) != x.shape(0) ||
            2 * cos.shape(1) != x.shape(1) || sin.shape(0) != cos.shape(0) || sin.shape(1) != cos.shape(1))
            throw std::invalid_argument("rope: need x [n, hd], cos and sin [n, hd / 2]");
        const py::ssize_t n = x.shape(0), half = cos.shape(1);
        py::array_t<float> y({n, 2 * half});
        for (py::ssize_t r = 0; r < n; ++r)
            for (py::ssize_t i = 0; i < half; ++i) {
                const cuda::RopePair p = cuda::rope_pair(x.data()[r * 2 * half + i], x.data()[r * 2 * half + half + i],
                                                         cos.data()[r * half + i], sin.data()[r * half + i]);
                y.mutable_data()[r * 2 * half + i] = p.a;
                y.mutable_data()[r * 2 * half + half + i] = p.b;
            }
        return y;
    }, py::arg("x"), py::arg("cos"), py::arg("sin"), "small_ops_math.h's RoPE of each row (pairs i, i + hd/2)");
    dm.def("silu_mul", [](const FloatArray& g, const FloatArray& u) {
        if (g.size() != u.size()) throw std::invalid_argument("silu_mul: g and u differ in size");
        py::array_t<float> y(g.size());
        for (py::ssize_t i = 0; i < g.size(); ++i) y.mutable_data()[i] = cuda::silu_mul(g.data()[i], u.data()[i]);
        return y;
    }, py::arg("g"), py::arg("u"), "small_ops_math.h's silu(g) * u, elementwise (flattened)");
    dm.def("flash_attention", &dm_flash_attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("p0"),
           py::arg("n_heads"), py::arg("n_kv_heads"), py::arg("splits") = 0, py::arg("n_sms") = 132,
           "flash_attn.cu's schedule in fp32 on the host: q [T, H*hd], k, v [p0+T, KH*hd] -> [T, H*hd]");

#if defined(LL_HAVE_CUDA)
    // Only in CUDA builds: the device kernels, each run once on host data, for tests against numpy.
    py::module_ ck = m.def_submodule("cuda_kernels", "The CUDA kernels, for tests against numpy (CUDA builds only)");
    ck.def("int4_gemm", [](const py::array_t<uint16_t, py::array::c_style | py::array::forcecast>& x,
                           const U8Array& codes, const FloatArray& scales, int64_t group,
                           const std::optional<FloatArray>& mins, int zero, const std::string& dtype, int splits) {
        if (x.ndim() != 2 || codes.ndim() != 2 || x.shape(1) != codes.shape(1))
            throw std::invalid_argument("int4_gemm: x [M, K] and codes [N, K] must agree on K");
        const cuda::Int4GpuWeight w = repack_checked(codes, scales, group, mins, zero, dtype, "int4_gemm");
        const std::vector<uint16_t> y = cuda::int4_gemm_on_device(w, x.data(), x.shape(0), splits);
        return copy_out(y, {x.shape(0), codes.shape(0)});
    }, py::arg("x"), py::arg("codes"), py::arg("scales"), py::arg("group"), py::arg("mins") = py::none(),
       py::arg("zero") = 0, py::arg("dtype") = "bf16", py::arg("splits") = 0,
       "x [M, K] (bf16/fp16 bits as uint16) . W^T on the GPU, W given as int4_repack takes it; splits 0: the "
       "plan's choice -> y [M, N] bits");
    using U16Array = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>;
    ck.def("fp8_gemm", [](const U16Array& x, const U8Array& codes, const FloatArray& scales, int64_t block,
                          const std::string& path, const std::string& dtype, int splits, std::optional<float> ub,
                          bool int8, const std::optional<FloatArray>& mins) {
        if (x.ndim() != 2 || codes.ndim() != 2 || x.shape(1) != codes.shape(1))
            throw std::invalid_argument("fp8_gemm: x [M, K] and codes [N, K] must agree on K");
        if (path != "w8a8" && path != "w8a16") throw std::invalid_argument("fp8_gemm: path is w8a8 or w8a16");
        const bool bf16 = half_type_arg(dtype);
        if (path == "w8a8" && !bf16) throw std::invalid_argument("fp8_gemm: W8A8 takes bf16 activations");
        const cuda::Fp8GpuWeight w = fp8_repack_checked(codes, scales, block, "fp8_gemm", int8, mins);
        const std::vector<uint16_t> y = cuda::fp8_gemm_on_device(
            w, x.data(), x.shape(0), path == "w8a8", bf16, splits, ub.value_or(std::numeric_limits<float>::infinity()));
        return copy_out(y, {x.shape(0), codes.shape(0)});
    }, py::arg("x"), py::arg("codes"), py::arg("scales"), py::arg("block") = 0, py::arg("path") = "w8a8",
       py::arg("dtype") = "bf16", py::arg("splits") = 0, py::arg("ub") = py::none(), py::arg("int8") = false,
       py::arg("mins") = py::none(),
       "x [M, K] (bf16/fp16 bits as uint16) . W^T on the GPU, W given as device_math.fp8_repack takes it; path "
       "w8a8 (x quantized per row on the device, bound ub) or w8a16 (int8: integer codes, with mins if given); "
       "splits 0: the plan's choice -> y [M, N] bits");
    ck.def("fp8_quantize", [](const U16Array& x, std::optional<float> ub) {
        if (x.ndim() != 2) throw std::invalid_argument("fp8_quantize: x must be bf16 bits [M, K]");
        const int64_t M = x.shape(0), K = x.shape(1);
        std::vector<uint8_t> codes;
        std::vector<float> scales;
        cuda::fp8_quantize_on_device(x.data(), M, K, ub.value_or(std::numeric_limits<float>::infinity()), &codes,
                                     &scales);
        return py::make_tuple(copy_out(codes, {M, py::ssize_t(codes.size()) / M}), copy_out(scales, {M}));
    }, py::arg("x"), py::arg("ub") = py::none(),
       "W8A8's activation quantization on the GPU: x [M, K] bf16 bits -> (codes [M, ceil(K/32)*32] in slot "
       "order, scales [M]), as device_math.fp8_quantize_rows");
    ck.def("flash_attention", [](const U16Array& q, const U16Array& k, const U16Array& v, int p0, int n_heads,
                                 int n_kv_heads, const std::string& dtype, int splits) {
        const bool bf16 = half_type_arg(dtype);
        const cuda::FaHostShape s = attention_shape(q, k, v, p0, n_heads, n_kv_heads);
        const std::vector<uint16_t> out = cuda::flash_attention_on_device(
            q.data(), k.data(), v.data(), s.T, p0, n_heads, n_kv_heads, s.head_dim, bf16, splits);
        return copy_out(out, {q.shape(0), q.shape(1)});
    }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("p0"), py::arg("n_heads"), py::arg("n_kv_heads"),
       py::arg("dtype") = "bf16", py::arg("splits") = 0,
       "causal GQA attention on the GPU: q [T, H*hd], k, v [p0+T, KH*hd] (bf16/fp16 bits) -> [T, H*hd] bits");
    ck.def("rmsnorm", [](const FloatArray& x, const FloatArray& w, float eps, const std::string& dtype) {
        if (x.ndim() != 2 || w.ndim() != 1 || w.shape(0) != x.shape(1))
            throw std::invalid_argument("rmsnorm: need x [T, D] and w [D]");
        const bool bf16 = half_type_arg(dtype);
        return copy_out(cuda::rmsnorm_on_device(x.data(), w.data(), int(x.shape(0)), int(x.shape(1)), eps, bf16),
                        {x.shape(0), x.shape(1)});
    }, py::arg("x"), py::arg("w"), py::arg("eps"), py::arg("dtype") = "bf16",
       "RMSNorm on the GPU: x [T, D] fp32, w [D] -> [T, D] 16-bit bits");
    ck.def("rope", [](const U16Array& x, int n_heads, const FloatArray& cos, const FloatArray& sin, int p0,
                               const std::string& dtype) {
        if (x.ndim() != 2 || n_heads < 1 || x.shape(1) % n_heads || cos.ndim() != 2 || sin.ndim() != 2 ||
            2 * cos.shape(1) * n_heads != x.shape(1) || sin.shape(0) != cos.shape(0) || sin.shape(1) != cos.shape(1))
            throw std::invalid_argument("rope: need x [T, H * hd], cos and sin [positions, hd / 2]");
        const bool bf16 = half_type_arg(dtype);
        return copy_out(cuda::rope_on_device(x.data(), int(x.shape(0)), n_heads, int(x.shape(1) / n_heads), cos.data(),
                                             sin.data(), int(cos.shape(0)), p0, bf16),
                        {x.shape(0), x.shape(1)});
    }, py::arg("x"), py::arg("n_heads"), py::arg("cos"), py::arg("sin"), py::arg("p0"), py::arg("dtype") = "bf16",
       "RoPE on the GPU, rows at positions p0 + t: x [T, H * hd] 16-bit bits -> the same");
    ck.def("swiglu", [](const U16Array& gu, const std::string& dtype) {
        if (gu.ndim() != 2 || gu.shape(1) % 2) throw std::invalid_argument("swiglu: need gu [T, 2F]");
        const bool bf16 = half_type_arg(dtype);
        return copy_out(cuda::swiglu_on_device(gu.data(), int(gu.shape(0)), int(gu.shape(1) / 2), bf16),
                        {gu.shape(0), gu.shape(1) / 2});
    }, py::arg("gu"), py::arg("dtype") = "bf16", "silu(gate) * up on the GPU: gu [T, 2F] bits -> [T, F] bits");
    ck.def("residual_add", [](const FloatArray& x, const U16Array& y, const std::string& dtype) {
        if (x.ndim() != 2 || y.ndim() != 2 || x.shape(0) != y.shape(0) || x.shape(1) != y.shape(1))
            throw std::invalid_argument("residual_add: x and y must both be [T, D]");
        const bool bf16 = half_type_arg(dtype);
        return copy_out(cuda::residual_add_on_device(x.data(), y.data(), int(x.shape(0)), int(x.shape(1)), bf16),
                        {x.shape(0), x.shape(1)});
    }, py::arg("x"), py::arg("y"), py::arg("dtype") = "bf16", "x [T, D] fp32 + y [T, D] 16-bit bits on the GPU");
    ck.def("embed", [](const U16Array& table, const TokenArray& tokens,
                                const std::string& dtype) {
        if (table.ndim() != 2 || tokens.ndim() != 1) throw std::invalid_argument("embed: need table [V, D], tokens [T]");
        const bool bf16 = half_type_arg(dtype);
        return copy_out(cuda::embed_on_device(table.data(), table.shape(0), tokens.data(), int(tokens.shape(0)),
                                              int(table.shape(1)), bf16),
                        {tokens.shape(0), table.shape(1)});
    }, py::arg("table"), py::arg("tokens"), py::arg("dtype") = "bf16", "rows of a 16-bit table -> [T, D] fp32");
    ck.def("kv_append", [](const U16Array& k, const U16Array& v, int n_kv_heads, int64_t n_ctx, int p0) {
        if (k.ndim() != 2 || v.ndim() != 2 || k.shape(0) != v.shape(0) || k.shape(1) != v.shape(1) || n_kv_heads < 1 ||
            k.shape(1) % n_kv_heads || p0 < 0 || p0 + k.shape(0) > n_ctx)
            throw std::invalid_argument("kv_append: need k, v [T, KH * hd] and p0 + T <= n_ctx");
        const int hd = int(k.shape(1) / n_kv_heads);
        const std::vector<uint16_t> kv = cuda::kv_append_on_device(k.data(), v.data(), int(k.shape(0)), n_kv_heads, hd,
                                                                   n_ctx, p0);
        return copy_out(kv, {2, py::ssize_t(n_kv_heads), py::ssize_t(n_ctx), py::ssize_t(hd)});
    }, py::arg("k"), py::arg("v"), py::arg("n_kv_heads"), py::arg("n_ctx"), py::arg("p0"),
       "k, v rows appended at p0 to a zero device cache -> [2 (K, V), KH, n_ctx, hd] bits");
    ck.def("bf16_gemm", [](const U16Array& x, const U16Array& w, const std::string& dtype, bool y_f32,
                                    int splits) {
        if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1))
            throw std::invalid_argument("bf16_gemm: x [M, K] and w [N, K] must agree on K");
        const bool bf16 = half_type_arg(dtype);
        return copy_out(cuda::bf16_gemm_on_device(x.data(), w.data(), x.shape(0), w.shape(0), x.shape(1), bf16, y_f32,
                                                  splits),
                        {x.shape(0), w.shape(0)});
    }, py::arg("x"), py::arg("w"), py::arg("dtype") = "bf16", py::arg("y_f32") = false, py::arg("splits") = 0,
       "x [M, K] . w [N, K]^T on the GPU (16-bit bits) -> y [M, N] as float32 (16-bit results widened exactly)");
    ck.def("device_spec", []() {
        const cuda::DeviceSpec s = cuda::device_spec();
        py::dict d;
        d["name"] = s.name;
        d["sms"] = s.sms;
        d["compute_capability"] = py::make_tuple(s.cc_major, s.cc_minor);
        d["sm_clock_ghz"] = s.sm_clock_ghz;
        d["mem_spec_gbps"] = s.mem_spec_gbps;
        d["copy_gbps"] = s.copy_gbps;
        return d;
    }, "the current GPU: name, SMs, compute capability, clock, datasheet and measured copy bandwidth");
    ck.def("time_bf16_gemm", &cuda::time_bf16_gemm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("bf16") = true,
           py::arg("y_f32") = false, py::arg("iters") = 20, py::arg("repeats") = 5, py::arg("splits") = 0,
           "seconds per 16-bit-weight product X [m, k] . W [n, k]^T (best of repeats x iters launches)");
    ck.def("time_int4_gemm", &cuda::time_int4_gemm, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("group"),
           py::arg("bf16") = true, py::arg("iters") = 20, py::arg("repeats") = 5, py::arg("splits") = 0,
           "seconds per W4A16 product X [m, k] . W [n, k]^T (best of repeats x iters launches)");
    ck.def("time_flash_attention", &cuda::time_flash_attention, py::arg("t"), py::arg("p0"), py::arg("n_heads"),
           py::arg("n_kv_heads"), py::arg("head_dim"), py::arg("bf16") = true, py::arg("iters") = 20,
           py::arg("repeats") = 5, "seconds per flash attention call of t query rows after p0 cached positions");
#endif

    py::module_ k = m.def_submodule("kernels", "Each CPU kernel, for tests against numpy");
    k.attr("FP8_BF16_MIN_ROWS") = cpu::kFP8DotMinRows;  // rows from which avx512bf16 rounds activations to bf16
    k.def("matmul", &k_matmul, py::arg("x"), py::arg("w"), py::arg("isa") = py::none(),
          py::arg("n_threads") = 1, py::arg("accumulate_into") = py::none(),
          "x [M, K] float32 . w [N, K]^T (w float32/float16/bfloat16) -> [M, N]");
    k.def("rmsnorm", &k_rmsnorm, py::arg("x"), py::arg("w"), py::arg("eps"), py::arg("isa") = py::none());
    k.def("rope", &k_rope, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("isa") = py::none());
    k.def("swiglu", &k_swiglu, py::arg("gate"), py::arg("up"), py::arg("isa") = py::none());
    k.def("gemm_nn", &k_gemm_nn, py::arg("a"), py::arg("b"), py::arg("isa") = py::none(),
          "a [M, K] . b [K, N], float32 (b's rows may be strided)");
    k.def("softmax", &k_softmax, py::arg("s"), py::arg("scale") = 1.0f, py::arg("isa") = py::none());
    k.def("attention", &k_attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("p0") = 0,
          py::arg("kv_cache") = "f32", py::arg("isa") = py::none(), py::arg("n_threads") = 1, py::arg("splits") = 0,
          "Causal flash attention of q [T, H, hd] at positions [p0, p0 + T) over k, v [p0 + T, KH, hd] held in a "
          "KV cache of format kv_cache; splits > 0 forces that many KV ranges per head (merged by log-sum-exp)");
    k.def("time_attention", &k_time_attention, py::arg("T"), py::arg("depth"), py::arg("n_heads"),
          py::arg("n_kv_heads"), py::arg("head_dim"), py::arg("kv_cache") = "f16", py::arg("isa") = py::none(),
          py::arg("n_threads") = 1, py::arg("n_layers") = 16, py::arg("repeats") = 5,
          "seconds per attention call of T queries at depth `depth` over a KV cache of n_layers layers "
          "(micro-benchmark: each call streams its layer's K and V)");
    k.def("encode_kv", [](const FloatArray& x, const std::string& kv_cache) {
              if (x.ndim() != 2) throw std::invalid_argument("encode_kv: x must be 2-D [rows, kv_dim]");
              const KVType t = parse_kv_type(kv_cache);
              const int64_t n = x.shape(0), d = x.shape(1);
              if (t == KVType::Q8_0 && d % kKVQBlock) throw std::invalid_argument("encode_kv: q8_0 needs kv_dim % 32 == 0");
              py::array_t<uint8_t> raw({n, kv_row_bytes(t, d)});
              py::array_t<float> back({n, d});
              for (int64_t i = 0; i < n; ++i) {
                  encode_kv_row(t, x.data() + i * d, d, raw.mutable_data() + i * kv_row_bytes(t, d));
                  decode_kv_row(t, raw.data() + i * kv_row_bytes(t, d), d, 0, d, back.mutable_data() + i * d);
              }
              return py::make_tuple(raw, back);
          }, py::arg("x"), py::arg("kv_cache"),
          "(stored rows as bytes, the values they hold as float32): the KV cache's encoding of x [rows, kv_dim]");
    k.def("to_f32", &k_to_f32, py::arg("w"), py::arg("isa") = py::none());
    k.def("quantize_acts", &k_quantize_acts, py::arg("x"), py::arg("isa") = py::none(),
          "x [M, K] -> {q: int8 codes [M, Kp], d: block scales [M, Kp/32], s: half-block sums [M, Kp/16], "
          "isum: half-block code sums [M, Kp/16], r: residual codes [M, Kp], flags: residual blocks, "
          "uint64 bit sets [M, words]}");
    py::class_<PyPacked>(k, "Packed", "A weight built from a spec exactly as the model builds it")
        .def(py::init<py::dict, int>(), py::arg("spec"), py::arg("n_threads") = 1)
        .def("dequantize", &PyPacked::dequantize, py::arg("isa") = py::none(), "the weight as float32 [out, in]")
        .def("matmul", &PyPacked::matmul, py::arg("x"), py::arg("isa") = py::none(), py::arg("n_threads") = 1,
             py::arg("accumulate_into") = py::none(), "x [M, in] float32 . W^T -> [M, out]")
        .def("time_matmul", &PyPacked::time_matmul, py::arg("M"), py::arg("isa") = py::none(),
             py::arg("n_threads") = 1, py::arg("iters") = 10, py::arg("repeats") = 5,
             "seconds per product with M activation rows (micro-benchmark)")
        .def_property_readonly("format", [](const PyPacked& p) { return p.linear().format(); })
        .def_property_readonly("nbytes", [](const PyPacked& p) { return p.linear().bytes(); })
        .def_property_readonly("layout", [](const PyPacked& p) {
            return p.linear().kind() == Linear::Kind::Quant ? p.linear().packed().g.layout.describe() : p.linear().format();
        });
}
