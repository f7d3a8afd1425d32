// The flash attention kernels' work per block (flash_attn.cu's kernels; the file comment there
// says how they cut attention). Device code, in a header of its own so that tests/cuda_emulation
// can run this very code on the host, with ptx.cuh's instructions emulated.
#pragma once
#include <cstdint>

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

// The decode merge (one block per query head, one thread per output column): the head's split
// partials merged in split order, as the host schedule does.
template <bool kBf16, int HD>
__device__ void decode_merge_block(const FaParams& p) {
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
    p.out[int64_t(h) * HD + d] = float_to_half_bits<kBf16>(softmax_finish(od, acc));
}

}  // namespace
}  // namespace ll::cuda
