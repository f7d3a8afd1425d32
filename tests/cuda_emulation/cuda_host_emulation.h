// The CUDA a kernel's block code needs, emulated on the host, so that the tests run the kernels'
// own code (csrc/cuda/*_block.cuh) on a machine without a GPU. ptx.cuh includes
// this instead of its PTX when LL_CUDA_HOST_EMULATION is defined; nothing of it is in the wheel.
//
// A block is a host thread per CUDA thread, and they meet at real barriers: __syncthreads for
// the block, and every warp-wide instruction (ldmatrix, mma, shuffles) for the warp, whose lanes
// hand in their operands, wait for each other, and each take their own part of the result.
// The instructions are emulated from the PTX ISA's own description of which lane holds what,
// written here independently of mma_frag.h (which the kernels use to know where their data is),
// so that a wrong fragment map in mma_frag.h gives wrong products, not the same mistake twice.
//
// What the emulation catches that a quiet GPU run might not:
//   - cp.async: with Copies::kAtWait a copy lands only when copy_wait says its group is done (what
//     a fast GPU may do at worst), and shared memory starts as NaN (where the driver owns it), so
//     reading a stage too early reads NaN; Copies::kRandom lands each copy at issue or at the
//     wait by a seeded coin, and lets other threads run at the copies it lands late, so that the
//     warps drift apart and a missing barrier lets one overwrite what another still reads.
//   - global reads outside the buffers the test registered (check_read), misaligned 16-byte copies
//     and ldmatrix rows: reported, and the run fails.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "device_math.h"
#include "half2_math.h"

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// A block's shared arrays declared in its code (flash_attn_block.cuh) are one per program, as the
// blocks run one at a time.
#define __shared__ static

struct alignas(16) uint4 {
    uint32_t x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return uint4{x, y, z, w}; }
struct Dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local Dim3 threadIdx, blockIdx;

namespace ll::cuda::emu {

constexpr int kMaxWarps = 32;

enum class Copies { kAtIssue, kAtWait, kRandom };

// What the block's threads share while it runs (a whole number of warps).
struct Block {
    explicit Block(int threads) : all(threads) {
        for (int w = 0; w < threads / 32; ++w) warp.push_back(std::make_unique<std::barrier<>>(32));
    }
    std::barrier<> all;
    std::vector<std::unique_ptr<std::barrier<>>> warp;
    Copies copies = Copies::kAtIssue;
    const void* addr[kMaxWarps][32];  // ldmatrix: each lane's row address
    uint32_t a[kMaxWarps][32][4], b[kMaxWarps][32][2];
    float f[kMaxWarps][32];
};
inline Block* g_block = nullptr;

// Readable global memory: [begin, begin + bytes) of each buffer the test registered.
struct Range {
    const char* begin;
    size_t bytes;
};
inline std::vector<Range> g_readable;
inline std::mutex g_error_mutex;
inline std::vector<std::string> g_errors;

inline void fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(g_error_mutex);
    if (g_errors.size() < 20) g_errors.push_back(what);
}
inline void check_read(const void* p, int bytes) {
    if (bytes <= 0) return;
    const char* c = static_cast<const char*>(p);
    for (const Range& r : g_readable)
        if (c >= r.begin && c + bytes <= r.begin + r.bytes) return;
    fail("a global read of " + std::to_string(bytes) + " bytes outside every buffer");
}

// A copy in flight: its source bytes land in its 16-byte destination (the rest zeroed) later.
struct Copy {
    void* dst;
    const void* src;
    int bytes;
    void land() const {
        check_read(src, bytes);
        unsigned char v[16] = {};
        if (bytes > 0) std::memcpy(v, src, size_t(bytes));
        std::memcpy(dst, v, 16);
    }
};
inline thread_local std::vector<std::vector<Copy>> t_committed;  // groups in flight, oldest first
inline thread_local std::vector<Copy> t_open;
inline thread_local std::mt19937 t_coin;

inline int lane() { return int(threadIdx.x & 31); }
inline int warp() { return int(threadIdx.x >> 5); }
inline void warp_sync() { g_block->warp[size_t(warp())]->arrive_and_wait(); }

// The value of a 16-bit operand, bf16 or fp16.
inline double half_value(uint32_t bits, bool bf16) {
    return bf16 ? double(ll::bf16_to_float(uint16_t(bits))) : double(ll::fp16_to_float(uint16_t(bits)));
}

// Runs body on the `threads` threads (a multiple of 32, at most 1024) of block `index`; the
// errors the emulation saw, if any.
inline std::vector<std::string> run_block(Dim3 index, Copies copies, uint32_t seed, const std::function<void()>& body,
                                          int threads_per_block = 128) {
    Block block(threads_per_block);
    block.copies = copies;
    g_block = &block;
    std::vector<std::thread> threads;
    threads.reserve(size_t(threads_per_block));
    for (unsigned t = 0; t < unsigned(threads_per_block); ++t)
        threads.emplace_back([&, t] {
            threadIdx = Dim3{t, 0, 0};
            blockIdx = index;
            t_committed.clear();
            t_open.clear();
            t_coin.seed(seed * 131u + t);
            body();
            bool in_flight = !t_open.empty();  // (empty groups committed past the last tile are fine)
            for (const std::vector<Copy>& g : t_committed) in_flight |= !g.empty();
            if (in_flight) fail("the kernel ended with copies still in flight");
        });
    for (std::thread& t : threads) t.join();
    g_block = nullptr;
    std::lock_guard<std::mutex> lock(g_error_mutex);
    std::vector<std::string> errors;
    errors.swap(g_errors);
    return errors;
}

// PTX ISA, mma.m16n8k16 with .bf16/.f16 operands: groupID = lane / 4, t = lane % 4.
//   A 16x16: a_i (i = 0..7, two per register) at row groupID + 8 (i / 2 % 2), col 2t + i % 2 + 8 (i / 4)
//   B 16x8:  b_i (i = 0..3) at row (k) 2t + i % 2 + 8 (i / 2), col groupID
//   C 16x8:  c_i (i = 0..3) at row groupID + 8 (i / 2), col 2t + i % 2
// mma.m16n8k32 with .e4m3 operands, four per register:
//   A 16x32: a_i (i = 0..15) at row groupID + 8 (i / 4 % 2), col 4t + i % 4 + 16 (i / 8)
//   B 32x8:  b_i (i = 0..7) at row 4t + i % 4 + 16 (i / 4), col groupID
// The products are exact; they are summed in double and added to c once (the tensor cores' fp32
// sum differs from this by less than the tests' fp32 accumulation bound).
template <int kK, class Value>
void warp_mma(float c[4], const uint32_t a[4], const uint32_t b[2], Value value) {
    Block& B = *g_block;
    const int w = warp(), l = lane();
    std::memcpy(B.a[w][l], a, 16);
    std::memcpy(B.b[w][l], b, 8);
    warp_sync();
    constexpr int kPerReg = kK == 16 ? 2 : 4, kBits = 32 / kPerReg;
    double A[16][kK], Bm[kK][8];
    for (int ln = 0; ln < 32; ++ln) {
        const int g = ln >> 2, t = ln & 3;
        for (int i = 0; i < 4 * kPerReg; ++i) {
            const uint32_t bits = B.a[w][ln][i / kPerReg] >> (kBits * (i % kPerReg)) & ((1u << kBits) - 1);
            const int row = g + 8 * (i / kPerReg % 2), col = kPerReg * t + i % kPerReg + (kK / 2) * (i / (2 * kPerReg));
            A[row][col] = value(bits);
        }
        for (int i = 0; i < 2 * kPerReg; ++i) {
            const uint32_t bits = B.b[w][ln][i / kPerReg] >> (kBits * (i % kPerReg)) & ((1u << kBits) - 1);
            Bm[kPerReg * t + i % kPerReg + (kK / 2) * (i / kPerReg)][g] = value(bits);
        }
    }
    warp_sync();  // the operands are read: the lanes may hand in the next ones
    const int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        double s = 0;
        for (int k = 0; k < kK; ++k) s += A[row][k] * Bm[k][col];
        c[i] = float(double(c[i]) + s);
    }
}

}  // namespace ll::cuda::emu

namespace ll::cuda {
namespace {

inline void __syncthreads() { emu::g_block->all.arrive_and_wait(); }
[[noreturn]] inline void __trap() {
    std::fprintf(stderr, "__trap() reached\n");
    std::abort();
}
inline float __shfl_xor_sync(unsigned, float v, int mask) {
    emu::Block& B = *emu::g_block;
    B.f[emu::warp()][emu::lane()] = v;
    emu::warp_sync();
    const float r = B.f[emu::warp()][emu::lane() ^ mask];
    emu::warp_sync();
    return r;
}

inline void copy16(void* smem, const void* gmem, int bytes) {
    if (bytes < 0 || bytes > 16) emu::fail("copy16 of " + std::to_string(bytes) + " bytes");
    // (cp.async of 16 bytes wants both addresses 16-byte aligned, however many bytes it reads)
    if (reinterpret_cast<uintptr_t>(smem) % 16 || reinterpret_cast<uintptr_t>(gmem) % 16)
        emu::fail("copy16 with a misaligned address");
    const emu::Copy c{smem, gmem, bytes};
    const emu::Copies mode = emu::g_block->copies;
    if (mode == emu::Copies::kAtIssue || (mode == emu::Copies::kRandom && (emu::t_coin() & 1))) {
        c.land();
    } else {
        emu::t_open.push_back(c);
        if (mode == emu::Copies::kRandom) std::this_thread::yield();
    }
}
inline void copy_commit() {
    emu::t_committed.push_back(std::move(emu::t_open));
    emu::t_open.clear();
}
template <int kPending>
void copy_wait() {
    while (int(emu::t_committed.size()) > kPending) {
        for (const emu::Copy& c : emu::t_committed.front()) c.land();
        emu::t_committed.erase(emu::t_committed.begin());
    }
}

// ldmatrix .x4: lanes 8j..8j+7 name the 16-byte rows of matrix j; lane l gets in register j
// matrix j's row l / 4, halves 2 (l % 4) and + 1 (.trans: its column l / 4, rows 2 (l % 4), + 1).
template <bool kTrans>
void ldmatrix(uint32_t r[4], const void* smem) {
    emu::Block& B = *emu::g_block;
    const int w = emu::warp(), l = emu::lane();
    if (reinterpret_cast<uintptr_t>(smem) % 16) emu::fail("ldmatrix with a row address not 16-byte aligned");
    B.addr[w][l] = smem;
    emu::warp_sync();
    for (int j = 0; j < 4; ++j) {
        uint16_t h[2];
        for (int e = 0; e < 2; ++e) {
            const int row = kTrans ? 2 * (l % 4) + e : l / 4, col = kTrans ? l / 4 : 2 * (l % 4) + e;
            std::memcpy(&h[e], static_cast<const char*>(B.addr[w][8 * j + row]) + 2 * col, 2);
        }
        r[j] = uint32_t(h[0]) | uint32_t(h[1]) << 16;
    }
    emu::warp_sync();
}
inline void ldmatrix_x4(uint32_t r[4], const void* smem) { ldmatrix<false>(r, smem); }
inline void ldmatrix_x4_trans(uint32_t r[4], const void* smem) { ldmatrix<true>(r, smem); }

template <bool kBf16>
uint32_t pack_half2(float lo, float hi) {
    return uint32_t(float_to_half_bits<kBf16>(lo)) | uint32_t(float_to_half_bits<kBf16>(hi)) << 16;
}

template <bool kBf16>
void mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    emu::warp_mma<16>(c, a, b, [](uint32_t bits) { return emu::half_value(bits, kBf16); });
}
inline void mma_16832_e4m3(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    emu::warp_mma<32>(c, a, b, [](uint32_t bits) { return double(e4m3_to_float(uint8_t(bits))); });
}

}  // namespace
}  // namespace ll::cuda
