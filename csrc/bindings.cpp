// pybind11 module llama_local._core: the one place Python meets C++.
//
// Shapes and dtypes are checked here once and bad input is thrown as a package exception; the
// model and kernels behind it take raw pointers. The kernel entry points exist for the tests,
// which hold every kernel on every ISA path against numpy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/errors.h"
#include "cpu/kernels.h"
#include "cpu/thread_pool.h"
#include "model/llama_cpu.h"
#include "model/linear.h"
#if defined(LL_HAVE_CUDA)
#include "cuda/device_info.h"
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

TensorView view_of(const py::array& a, const std::string& what) {
    if (!(a.flags() & py::array::c_style))
        throw FormatError(what + " is not a C-contiguous array");
    TensorView t;
    t.dtype = array_dtype(a, what);
    t.data = a.data();
    for (py::ssize_t i = 0; i < a.ndim(); ++i) t.shape.push_back(a.shape(i));
    return t;
}

cpu::Isa isa_arg(const std::optional<std::string>& isa) {
    return isa ? cpu::parse_isa(isa->c_str()) : cpu::default_isa();
}

// The model plus the Python objects (memory-mapped arrays) its weight pointers point into.
class PyModel {
public:
    PyModel(const py::dict& config, const py::dict& tensors, int64_t n_ctx, int n_threads,
            const std::optional<std::string>& isa, int64_t n_batch)
        : tensors_(tensors) {
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
        TensorSource source = [&](const std::string& name) {
            if (!tensors.contains(name.c_str())) throw FormatError("checkpoint has no tensor '" + name + "'");
            return view_of(tensors[name.c_str()].cast<py::array>(), "tensor '" + name + "'");
        };
        if (n_threads <= 0) n_threads = cpu::physical_cores();
        model_ = std::make_unique<LlamaCpu>(c, source, n_ctx, n_threads, isa_arg(isa), n_batch);
    }

    py::array_t<float> forward(const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& tokens,
                               std::optional<int64_t> start_pos, bool all_logits) {
        if (tokens.ndim() != 1) throw std::invalid_argument("forward: tokens must be a 1-D array");
        const int64_t T = tokens.shape(0);
        if (start_pos) {
            if (*start_pos < 0 || *start_pos > model_->n_past())
                throw std::invalid_argument("forward: start_pos " + std::to_string(*start_pos) +
                                            " is beyond the " + std::to_string(model_->n_past()) +
                                            " cached positions");
            model_->truncate(*start_pos);
        }
        const int64_t V = model_->config().vocab_size;
        py::array_t<float> out = all_logits ? py::array_t<float>({T, V}) : py::array_t<float>({V});
        float* o = out.mutable_data();
        const int32_t* t = tokens.data();
        {
            py::gil_scoped_release release;
            model_->forward(t, T, o, all_logits);
        }
        return out;
    }

    LlamaCpu& model() { return *model_; }

private:
    py::dict tensors_;
    std::unique_ptr<LlamaCpu> model_;
};

// ---- kernel entry points for the tests (single ISA forced, arguments checked here) ----

py::array_t<float> k_matmul(const FloatArray& x, const py::array& w, const std::optional<std::string>& isa,
                            int n_threads, std::optional<FloatArray> accumulate_into) {
    // w may be a view with strided rows (ldw elements apart), as the KV cache is used.
    if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1) || w.strides(1) != w.itemsize() ||
        w.strides(0) % w.itemsize() || w.strides(0) < w.shape(1) * w.itemsize())
        throw std::invalid_argument("matmul: need x [M, K] and w [N, K] with contiguous rows");
    const DType wdt = array_dtype(w, "w");
    const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0), ldw = w.strides(0) / w.itemsize();
    py::array_t<float> y({M, N});
    if (accumulate_into) {
        if (accumulate_into->ndim() != 2 || accumulate_into->shape(0) != M || accumulate_into->shape(1) != N)
            throw std::invalid_argument("matmul: accumulate_into must be [M, N]");
        std::copy(accumulate_into->data(), accumulate_into->data() + M * N, y.mutable_data());
    }
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    const void* wp = w.data();
    const float* xp = x.data();
    float* yp = y.mutable_data();
    const bool acc = bool(accumulate_into);
    py::gil_scoped_release release;
    cpu::ThreadPool pool(n_threads);
    const Linear lin{wp, wdt, N, K};
    pool.run(4 * n_threads, [&](int c, int nc) {
        int64_t n0, n1;
        linear_rows(lin, c, nc, n0, n1);  // the model's split, with the view's own row stride
        if (n0 < n1) k.matmul[int(wdt)](xp, K, wp, ldw, K, yp, N, M, n0, n1, acc);
    });
    return y;
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

py::array_t<float> k_softmax(const FloatArray& s, float scale, const std::optional<std::string>& isa) {
    if (s.ndim() != 1 || s.shape(0) < 1) throw std::invalid_argument("softmax: need a non-empty 1-D array");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    py::array_t<float> y(s.shape(0));
    std::copy(s.data(), s.data() + s.shape(0), y.mutable_data());
    k.softmax(y.mutable_data(), s.shape(0), scale);
    return y;
}

py::array_t<float> k_to_f32(const py::array& w, const std::optional<std::string>& isa) {
    const TensorView v = view_of(w, "w");
    const cpu::Kernels& k = cpu::kernels_for(isa_arg(isa));
    py::array_t<float> y(w.size());
    k.to_f32[int(v.dtype)](v.data, y.mutable_data(), w.size());
    return y;
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
    d["cuda_unavailable_reason"] = "this build has no CUDA support (nvcc was not found or LLAMA_LOCAL_CUDA=OFF)";
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
        .def(py::init<const py::dict&, const py::dict&, int64_t, int, const std::optional<std::string>&, int64_t>(),
             py::arg("config"), py::arg("tensors"), py::arg("n_ctx"), py::arg("n_threads") = 0,
             py::arg("isa") = py::none(), py::arg("n_batch") = 512)
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
        .def_property_readonly("kv_bytes", [](PyModel& s) { return s.model().kv_bytes(); })
        .def_property_readonly("scratch_bytes", [](PyModel& s) { return s.model().scratch_bytes(); });

    py::module_ k = m.def_submodule("kernels", "Each CPU kernel, for tests against numpy");
    k.def("matmul", &k_matmul, py::arg("x"), py::arg("w"), py::arg("isa") = py::none(),
          py::arg("n_threads") = 1, py::arg("accumulate_into") = py::none(),
          "x [M, K] float32 . w [N, K]^T (w float32/float16/bfloat16) -> [M, N]");
    k.def("rmsnorm", &k_rmsnorm, py::arg("x"), py::arg("w"), py::arg("eps"), py::arg("isa") = py::none());
    k.def("rope", &k_rope, py::arg("x"), py::arg("cos"), py::arg("sin"), py::arg("isa") = py::none());
    k.def("swiglu", &k_swiglu, py::arg("gate"), py::arg("up"), py::arg("isa") = py::none());
    k.def("gemm_nn", &k_gemm_nn, py::arg("a"), py::arg("b"), py::arg("isa") = py::none(),
          "a [M, K] . b [K, N], float32 (b's rows may be strided)");
    k.def("softmax", &k_softmax, py::arg("s"), py::arg("scale") = 1.0f, py::arg("isa") = py::none());
    k.def("to_f32", &k_to_f32, py::arg("w"), py::arg("isa") = py::none());
}
