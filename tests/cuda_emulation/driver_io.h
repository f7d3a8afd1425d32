// What every emulation driver (*_emulated.cpp) does around the kernel: its inputs from raw files
// in a directory, the buffers the kernel may read, its output back to a file, errors to stderr.
#pragma once
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_host_emulation.h"
#include "int4_gemm_tiling.h"  // GemmPlan

namespace ll::cuda::emu {

// n values of T from the raw file at path (exactly n).
template <class T>
std::vector<T> read_values(const std::string& path, size_t n) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (bytes.size() != n * sizeof(T)) throw std::runtime_error(path + " does not hold " + std::to_string(n) + " values");
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
}

template <class T>
void write_values(const std::string& path, const std::vector<T>& v) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
    if (!f) throw std::runtime_error("cannot write " + path);
}

// rows x cols 16-bit values laid out with row stride ld, the padding columns holding `fill` (as
// device_buffers.h's pad_rows, which fills with zeros).
inline std::vector<uint16_t> pad_rows(const std::vector<uint16_t>& a, int64_t rows, int64_t cols, int64_t ld,
                                      uint16_t fill = 0) {
    std::vector<uint16_t> out(size_t(rows * ld), fill);
    for (int64_t r = 0; r < rows; ++r) std::memcpy(&out[size_t(r * ld)], &a[size_t(r * cols)], size_t(cols) * 2);
    return out;
}

// The kernel may read all of v (check_read).
template <class T>
void readable(const std::vector<T>& v) {
    g_readable.push_back({reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)});
}

// Every block of `grid` (x fastest), one after another, `threads` threads each running body(),
// after before_block() has run for the block: the errors of the first block that had any.
template <class Body, class Before>
std::vector<std::string> run_grid(Dim3 grid, int threads, Copies copies, uint32_t seed, Body body,
                                  Before before_block) {
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                before_block();
                std::vector<std::string> errors = run_block(Dim3{x, y, z}, copies, seed++, body, threads);
                if (!errors.empty()) return errors;
            }
    return {};
}
template <class Body>
std::vector<std::string> run_grid(Dim3 grid, int threads, Copies copies, uint32_t seed, Body body) {
    return run_grid(grid, threads, copies, seed, body, [] {});
}

// A GEMM plan's grid (grid_n x grid_m x splits) of `threads` threads, each block given fresh
// shared memory of type Smem full of 0xFF bytes (NaN in fp32, bf16, fp16 and E4M3 alike):
// block(sm) is the kernel's body.
template <class Smem, class Block>
std::vector<std::string> run_gemm_grid(const GemmPlan& plan, int threads, Copies copies, uint32_t seed, Block block) {
    auto sm = std::make_unique<Smem>();
    const Dim3 grid{unsigned(plan.grid_n), unsigned(plan.grid_m), unsigned(plan.splits)};
    return run_grid(grid, threads, copies, seed, [&] { block(*sm); },
                    [&] { std::memset(static_cast<void*>(sm.get()), 0xFF, sizeof(Smem)); });
}

// splitk.cuh's splitk_reduce before its rounding: partial [splits][m][n] added in split order,
// times the row's scale where there are row scales (W8A8's activations).
inline std::vector<float> splitk_sums(const std::vector<float>& partial, int splits, int64_t m, int64_t n,
                                      const float* row_scales = nullptr) {
    std::vector<float> y(size_t(m * n));
    for (int64_t i = 0; i < m * n; ++i) {
        float sum = 0.0f;
        for (int s = 0; s < splits; ++s) sum += partial[size_t(s * m * n + i)];
        y[size_t(i)] = row_scales ? sum * row_scales[i / n] : sum;
    }
    return y;
}

// splitk_reduce's 16-bit output: each value rounded once to bf16 or fp16 bits.
inline void round_to_half(const std::vector<float>& v, bool bf16, uint16_t* y) {
    for (size_t i = 0; i < v.size(); ++i) y[i] = bf16 ? float_to_half_bits<true>(v[i]) : float_to_half_bits<false>(v[i]);
}

inline Copies copies_named(const std::string& s) {
    if (s == "at-issue") return Copies::kAtIssue;
    if (s == "at-wait") return Copies::kAtWait;
    if (s == "random") return Copies::kRandom;
    throw std::runtime_error("COPIES is at-issue, at-wait or random, not " + s);
}

// A driver's main: body(argv) returns the errors the emulation saw; exit status 1 with them (or
// with an exception's text) on stderr.
template <class Body>
int driver_main(const char* name, int argc, char** argv, int n_args, const char* usage, Body body) {
    try {
        if (argc != n_args + 1) throw std::runtime_error(std::string("usage: ") + name + " " + usage);
        const std::vector<std::string> errors = body(argv);
        for (const std::string& e : errors) std::fprintf(stderr, "emulation: %s\n", e.c_str());
        return errors.empty() ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", name, e.what());
        return 1;
    }
}

}  // namespace ll::cuda::emu
