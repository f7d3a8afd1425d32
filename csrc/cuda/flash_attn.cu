// Flash attention on the device (flash_attn.h). Every index below comes from attention_plan.h
// (tiles, masks, splits, swizzle) or mma_frag.h (fragments, ldmatrix addresses); the schedule
// they make is run on the host by flash_attn_schedule.cpp and held to numpy there.
//
// Prefill block: 4 warps, 64 query rows of one head (16 per warp, one m16 tile), for each K/V
// tile it sees: K and V copied into shared memory (cp.async, V's copy in flight while S = Q K^T
// is computed), S in fp32 fragments, the mask where the tile crosses the diagonal, the online
// softmax per row (a quad of lanes holds a row), P rounded to 16 bits straight into the A
// fragment of P V. Decode block: the query heads of one KV head (up to 16) as the m16 tile, one
// range of positions; each warp takes 16 positions of every tile and keeps its own partial, the
// block merges its warps in order, and a second kernel merges the ranges in order.
#include "flash_attn.h"
#include "device_buffers.h"

#include <cmath>
#include <stdexcept>

#include "attention_plan.h"
#include "half2_math.h"
#include "mma_frag.h"
#include "ptx.cuh"

namespace ll::cuda {
namespace {

constexpr int kFaThreads = 32 * kFaWarps;

struct FaParams {
    const uint16_t* q;
    int64_t ldq;
    const uint16_t* k;
    const uint16_t* v;
    int64_t n_ctx;
    uint16_t* out;
    int64_t ldo;
    int T;
    const int* pos;  // device: the first new row's position p0
    int n_heads, n_kv_heads, n_splits;
    float scale;
    float* partial;  // decode: [n_kv_heads][n_splits][group][2 + head_dim]: m, l, o
};

// Rows [0, kRows) of a [*, HD] tile whose row r is at src + r * ld, into shared memory swizzled
// (fa_smem_offset); rows from `valid` on are zero-filled (their source is never read), so a
// tile past the cached positions holds zeros, never stale values that could be NaN.
template <int HD, int kRows>
__device__ __forceinline__ void load_tile(uint16_t* tile, const uint16_t* src, int64_t ld, int valid) {
    constexpr int kChunks = HD / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < kRows * kChunks; c += kFaThreads) {
        const int r = c / kChunks, ch = c % kChunks;
        const bool ok = r < valid;
        copy16(tile + fa_smem_offset(r, 8 * ch, HD), src + (ok ? int64_t(r) * ld + 8 * ch : 0), ok ? 16 : 0);
    }
}

// A warp's 16 query rows as A fragments, one per k16 step of the head dimension.
template <int HD>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qa)[HD / 16][4], const uint16_t* sq, int row0) {
    const FragCoord a = ldm::a_row(threadIdx.x & 31);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) ldmatrix_x4(qa[kk], sq + fa_smem_offset(row0 + a.row, 16 * kk + a.col, HD));
}

// S [16 x 8 kNT] += Q K^T for K rows [c0, c0 + 8 kNT) of the tile.
template <bool kBf16, int HD, int kNT>
__device__ __forceinline__ void scores(float (&s)[kNT][4], const uint32_t (&qa)[HD / 16][4], const uint16_t* sk, int c0) {
    const FragCoord b = ldm::b_nk_row(threadIdx.x & 31);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk)
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
            uint32_t r[4];
            ldmatrix_x4(r, sk + fa_smem_offset(c0 + 16 * np + b.row, 16 * kk + b.col, HD));
            mma_16816<kBf16>(s[2 * np], qa[kk], r);
            mma_16816<kBf16>(s[2 * np + 1], qa[kk], r + 2);
        }
}

// A row's state lives in the quad of lanes that hold it: value i of a C fragment is row
// mma_c(lane, i).row, i.e. r = i / 2 picks row group (r = 0) or group + 8 (r = 1).
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xFFFFFFFFu, x, 1);
    return x + __shfl_xor_sync(0xFFFFFFFFu, x, 2);
}

// The online-softmax step over one tile's scores (masked ones already -inf): new max, rescale of
// l and o, scores turned into weights. l stays a per-lane partial until the end (every lane of a
// quad rescales by the same factor).
template <int kNT, int kOT>
__device__ __forceinline__ void softmax_step(float (&s)[kNT][4], float (&o)[kOT][4], float (&m)[2], float (&l)[2]) {
    float tmax[2] = {fa_neg_inf(), fa_neg_inf()};
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) tmax[i >> 1] = fmaxf(tmax[i >> 1], s[nt][i]);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const float m_new = fa_new_max(m[r], quad_max(tmax[r]));
        const float f = fa_rescale(m[r], m_new);
        m[r] = m_new;
        l[r] *= f;
#pragma unroll
        for (int ot = 0; ot < kOT; ++ot) {
            o[ot][2 * r] *= f;
            o[ot][2 * r + 1] *= f;
        }
    }
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            s[nt][i] = fa_weight(s[nt][i], m[i >> 1]);
            l[i >> 1] += s[nt][i];
        }
}

// O [16 x HD] += P V for the 16 kk2-th positions of the weights (two n8 score tiles become one
// A fragment: mma_frag.h c_to_a) against V rows [c0, c0 + 16) of the tile.
template <bool kBf16, int HD, int kNT>
__device__ __forceinline__ void weighted_values(float (&o)[HD / 8][4], const float (&p)[kNT][4], int kk2,
                                                const uint16_t* sv, int c0) {
    uint32_t pa[4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
        pa[r] = pack_half2<kBf16>(p[2 * kk2 + c_to_a_tile(2 * r)][c_to_a_value(2 * r)],
                                  p[2 * kk2 + c_to_a_tile(2 * r + 1)][c_to_a_value(2 * r + 1)]);
    const FragCoord b = ldm::b_kn_row(threadIdx.x & 31);
#pragma unroll
    for (int np = 0; np < HD / 16; ++np) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, sv + fa_smem_offset(c0 + b.row, 16 * np + b.col, HD));
        mma_16816<kBf16>(o[2 * np], pa, r);
        mma_16816<kBf16>(o[2 * np + 1], pa, r + 2);
    }
}

template <bool kBf16, int HD>
__device__ void prefill_block(const FaParams& p) {
    constexpr int kNT = kFaKvTile / 8, kOT = HD / 8;
    __shared__ __align__(128) uint16_t sq[kFaQRows * HD], sk[kFaKvTile * HD], sv[kFaKvTile * HD];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int h = blockIdx.y, q0 = blockIdx.x * kFaQRows, p0 = *p.pos, n_pos = p0 + p.T;
    const int64_t kv_off = int64_t(fa_kv_head(h, p.n_heads, p.n_kv_heads)) * p.n_ctx * HD;

    load_tile<HD, kFaQRows>(sq, p.q + int64_t(q0) * p.ldq + int64_t(h) * HD, p.ldq, p.T - q0);
    copy_commit();
    copy_wait<0>();
    __syncthreads();
    uint32_t qa[HD / 16][4];
    load_q_fragments<HD>(qa, sq, 16 * warp);

    float o[kOT][4] = {}, m[2] = {fa_neg_inf(), fa_neg_inf()}, l[2] = {0.0f, 0.0f};
    const int tiles = fa_kv_tiles(q0, p.T, p0);
    for (int j = 0; j < tiles; ++j) {
        const int j0 = j * kFaKvTile;
        __syncthreads();  // every warp is done with the previous tile
        load_tile<HD, kFaKvTile>(sk, p.k + kv_off + int64_t(j0) * HD, HD, n_pos - j0);
        copy_commit();
        load_tile<HD, kFaKvTile>(sv, p.v + kv_off + int64_t(j0) * HD, HD, n_pos - j0);
        copy_commit();
        copy_wait<1>();  // K has landed; V may still be in flight
        __syncthreads();
        float s[kNT][4] = {};
        scores<kBf16, HD, kNT>(s, qa, sk, 0);
        const bool masked = !fa_tile_unmasked(j, q0, p0);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const FragCoord c = mma_c(lane, i);
                s[nt][i] *= p.scale;
                if (masked && !fa_visible(q0 + 16 * warp + c.row, j0 + 8 * nt + c.col, p0)) s[nt][i] = fa_neg_inf();
            }
        softmax_step(s, o, m, l);
        copy_wait<0>();
        __syncthreads();
#pragma unroll
        for (int kk2 = 0; kk2 < kFaKvTile / 16; ++kk2) weighted_values<kBf16, HD, kNT>(o, s, kk2, sv, 16 * kk2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = quad_sum(l[r]);
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const FragCoord c = mma_c(lane, 2 * r);
            const int t = q0 + 16 * warp + c.row;
            if (t >= p.T) continue;
            const SoftmaxPartial row{m[r], l[r]};
            const uint32_t v = pack_half2<kBf16>(softmax_finish(o[ot][2 * r], row), softmax_finish(o[ot][2 * r + 1], row));
            *reinterpret_cast<uint32_t*>(p.out + int64_t(t) * p.ldo + int64_t(h) * HD + 8 * ot + c.col) = v;
        }
}

template <bool kBf16, int HD>
__device__ void decode_block(const FaParams& p) {
    constexpr int kNT = kFaWarpCols / 8, kOT = HD / 8;
    constexpr int kTileElems = kFaKvTile * HD;
    // K and V tiles; after the loop the same bytes hold the warps' partial outputs.
    static_assert(kFaWarps * 16 * HD * sizeof(float) <= 2 * kTileElems * sizeof(uint16_t), "merge space");
    __shared__ __align__(128) uint16_t skv[2 * kTileElems];
    __shared__ __align__(128) uint16_t sq[16 * HD];
    __shared__ float sml[kFaWarps][16][2];
    uint16_t* sk = skv;
    uint16_t* sv = skv + kTileElems;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int split = blockIdx.x, kvh = blockIdx.y, group = p.n_heads / p.n_kv_heads;
    const int p0 = *p.pos, n_pos = p0 + 1;
    const int64_t kv_off = int64_t(kvh) * p.n_ctx * HD;

    // The group's query heads are consecutive in q's one row: rows of HD values, stride HD.
    load_tile<HD, 16>(sq, p.q + int64_t(kvh) * group * HD, HD, group);
    copy_commit();
    copy_wait<0>();
    __syncthreads();
    uint32_t qa[HD / 16][4];
    load_q_fragments<HD>(qa, sq, 0);

    float o[kOT][4] = {}, m[2] = {fa_neg_inf(), fa_neg_inf()}, l[2] = {0.0f, 0.0f};
    const KvRange range = fa_split(split, p.n_splits, n_pos);
    const int c0 = warp * kFaWarpCols;
    for (int j0 = range.begin; j0 < range.end; j0 += kFaKvTile) {
        __syncthreads();
        load_tile<HD, kFaKvTile>(sk, p.k + kv_off + int64_t(j0) * HD, HD, n_pos - j0);
        load_tile<HD, kFaKvTile>(sv, p.v + kv_off + int64_t(j0) * HD, HD, n_pos - j0);
        copy_commit();
        copy_wait<0>();
        __syncthreads();
        float s[kNT][4] = {};
        scores<kBf16, HD, kNT>(s, qa, sk, c0);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                s[nt][i] *= p.scale;
                if (!fa_visible(0, j0 + c0 + 8 * nt + mma_c(lane, i).col, p0)) s[nt][i] = fa_neg_inf();
            }
        softmax_step(s, o, m, l);
        weighted_values<kBf16, HD, kNT>(o, s, 0, sv, c0);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = quad_sum(l[r]);

    __syncthreads();  // the tiles are no longer read: their bytes take the warps' partials
    float* so = reinterpret_cast<float*>(skv);  // [warp][16 rows][HD]
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const FragCoord c = mma_c(lane, i);
            so[(warp * 16 + c.row) * HD + 8 * ot + c.col] = o[ot][i];
        }
    if ((lane & 3) == 0)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            sml[warp][mma_c(lane, 2 * r).row][0] = m[r];
            sml[warp][mma_c(lane, 2 * r).row][1] = l[r];
        }
    __syncthreads();
    for (int idx = threadIdx.x; idx < group * HD; idx += kFaThreads) {
        const int r = idx / HD, d = idx % HD;
        SoftmaxPartial acc{fa_neg_inf(), 0.0f};
        float od = 0.0f;
        for (int w = 0; w < kFaWarps; ++w) {
            float wa, wb;
            acc = softmax_merge(acc, SoftmaxPartial{sml[w][r][0], sml[w][r][1]}, &wa, &wb);
            od = wa * od + wb * so[(w * 16 + r) * HD + d];
        }
        float* part = p.partial + ((int64_t(kvh) * p.n_splits + split) * group + r) * (2 + HD);
        part[2 + d] = od;
        if (d == 0) {
            part[0] = acc.m;
            part[1] = acc.l;
        }
    }
}

// Register budgets (blocks of 4 warps per SM, enforced by __launch_bounds__ and checked in
// tests/test_cuda_static.py): prefill keeps Q (HD / 4), S (32) and O (HD / 2) fragments in
// registers, so head_dim 128 gets two blocks per SM (255 registers at most; its 48 KB of shared
// memory allows no more on sm_86/89/120 anyway) and 64 three (170); decode holds a 16-position
// slice of S: three (170) and four (128).
constexpr int fa_prefill_blocks(int hd) { return hd == 128 ? 2 : 3; }
constexpr int fa_decode_blocks(int hd) { return hd == 128 ? 3 : 4; }

template <bool kBf16, int HD>
__global__ void __launch_bounds__(kFaThreads, fa_prefill_blocks(HD)) fa_prefill_kernel(const FaParams p) {
    if constexpr (kBf16 && !kDeviceHasBf16) __trap();  // never launched: flash_attention refuses
    else prefill_block<kBf16, HD>(p);
}

template <bool kBf16, int HD>
__global__ void __launch_bounds__(kFaThreads, fa_decode_blocks(HD)) fa_decode_kernel(const FaParams p) {
    if constexpr (kBf16 && !kDeviceHasBf16) __trap();
    else decode_block<kBf16, HD>(p);
}

// One block per query head, one thread per output column: the head's split partials merged in
// split order, as the host schedule does.
template <bool kBf16, int HD>
__global__ void __launch_bounds__(HD) fa_decode_merge_kernel(const FaParams p) {
    const int h = blockIdx.x, d = threadIdx.x, group = p.n_heads / p.n_kv_heads;
    const int kvh = h / group, r = h % group;
    SoftmaxPartial acc{fa_neg_inf(), 0.0f};
    float od = 0.0f;
    for (int s = 0; s < p.n_splits; ++s) {
        const float* part = p.partial + ((int64_t(kvh) * p.n_splits + s) * group + r) * (2 + HD);
        float wa, wb;
        acc = softmax_merge(acc, SoftmaxPartial{part[0], part[1]}, &wa, &wb);
        od = wa * od + wb * part[2 + d];
    }
    if constexpr (kBf16 && !kDeviceHasBf16) __trap();
    else p.out[int64_t(h) * HD + d] = float_to_half_bits<kBf16>(softmax_finish(od, acc));
}

template <bool kBf16, int HD>
cudaError_t launch(const FaParams& p, cudaStream_t stream) {
    if (p.T > 1) {
        const dim3 grid(unsigned((p.T + kFaQRows - 1) / kFaQRows), unsigned(p.n_heads));
        fa_prefill_kernel<kBf16, HD><<<grid, kFaThreads, 0, stream>>>(p);
        return cudaGetLastError();
    }
    fa_decode_kernel<kBf16, HD><<<dim3(unsigned(p.n_splits), unsigned(p.n_kv_heads)), kFaThreads, 0, stream>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    fa_decode_merge_kernel<kBf16, HD><<<unsigned(p.n_heads), HD, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

size_t flash_attention_workspace_bytes(int T, int n_heads, int head_dim, int splits) {
    return T == 1 ? size_t(n_heads) * size_t(splits) * size_t(2 + head_dim) * sizeof(float) : 0;
}

cudaError_t flash_attention(const FlashAttentionArgs& a, cudaStream_t stream, std::string* error) {
    auto refuse = [&](const std::string& why) {
        if (error) *error = "flash_attention: " + why;
        return cudaErrorInvalidValue;
    };
    if (a.head_dim != 64 && a.head_dim != 128) return refuse("head_dim must be 64 or 128");
    if (a.T < 1 || a.p0.host < 0 || int64_t(a.p0.host) + a.T > a.n_ctx)
        return refuse("positions [p0, p0 + T) must lie in n_ctx");
    if (a.n_kv_heads < 1 || a.n_heads % a.n_kv_heads) return refuse("n_kv_heads must divide n_heads");
    if (a.T == 1 && a.n_heads / a.n_kv_heads > 16) return refuse("decode takes at most 16 query heads per KV head");
    if (reinterpret_cast<uintptr_t>(a.q) % 16 || reinterpret_cast<uintptr_t>(a.k) % 16 ||
        reinterpret_cast<uintptr_t>(a.v) % 16 || reinterpret_cast<uintptr_t>(a.out) % 4 || a.ldq % 8 || a.ldo % 2)
        return refuse("q, k and v must be 16-byte aligned with q's row stride a multiple of 8");
    if (a.bf16)
        if (const cudaError_t err = require_cc(80, "bf16", "use fp16 on this GPU", "flash_attention", error))
            return err;
    DeviceFacts d;
    if (const cudaError_t err = current_device(&d)) return err;
    const int splits = a.T > 1 ? 1 : a.splits > 0 ? a.splits : fa_num_splits(a.p0.host + 1, a.n_kv_heads, d.sms);
    if (a.workspace_bytes < flash_attention_workspace_bytes(a.T, a.n_heads, a.head_dim, splits))
        return refuse("the decode workspace is too small");
    const FaParams p{a.q, a.ldq, a.k, a.v, a.n_ctx, a.out, a.ldo, a.T, a.p0.device, a.n_heads, a.n_kv_heads, splits,
                     1.0f / sqrtf(float(a.head_dim)), a.workspace};
    if (a.bf16) return a.head_dim == 64 ? launch<true, 64>(p, stream) : launch<true, 128>(p, stream);
    return a.head_dim == 64 ? launch<false, 64>(p, stream) : launch<false, 128>(p, stream);
}

std::vector<uint16_t> flash_attention_on_device(const uint16_t* q, const uint16_t* k, const uint16_t* v, int T, int p0,
                                                int n_heads, int n_kv_heads, int head_dim, bool bf16, int splits) {
    const int n_pos = p0 + T, hd = head_dim;
    const int64_t n_ctx = n_pos + 5;  // a cache longer than the positions in use, as in the engine
    // The CPU rows [position][kv head][hd] rearranged into the device cache's [kv head][n_ctx][hd].
    std::vector<uint16_t> kc(size_t(n_kv_heads * n_ctx * hd), 0), vc(kc.size(), 0);
    for (int h = 0; h < n_kv_heads; ++h)
        for (int pos = 0; pos < n_pos; ++pos)
            for (int d = 0; d < hd; ++d) {
                const size_t src = (size_t(pos) * n_kv_heads + h) * hd + d, dst = (size_t(h) * n_ctx + pos) * hd + d;
                kc[dst] = k[src];
                vc[dst] = v[src];
            }
    const size_t q_count = size_t(T) * n_heads * hd;
    const int used = T > 1 ? 1 : splits > 0 ? splits : fa_num_splits(n_pos, n_kv_heads, device_sms());
    const size_t ws = flash_attention_workspace_bytes(T, n_heads, hd, used);
    DeviceBuffers b;
    const uint16_t* dq = b.upload(q, q_count);
    const uint16_t* dk = b.upload(kc);
    const uint16_t* dv = b.upload(vc);
    uint16_t* dout = b.alloc<uint16_t>(q_count);
    float* dws = b.alloc<float>(ws / sizeof(float));
    const FirstPos pos{p0, b.upload(&p0, 1)};
    const FlashAttentionArgs a{dq, int64_t(n_heads) * hd, dk, dv, n_ctx, dout, int64_t(n_heads) * hd, T, pos,
                               n_heads, n_kv_heads, hd, bf16, used, dws, ws};
    std::string why;
    launch_check(flash_attention(a, nullptr, &why), why, "flash attention");
    return download(dout, q_count);
}

}  // namespace ll::cuda
