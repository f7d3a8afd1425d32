// Scalar reference for the integer weight kernels: the fallback on CPUs without a SIMD table and
// the oracle the SIMD kernels are tested against. It reads the same packed tiles field by field.
//
// For output row n and input row m:
//     y = sum over groups g, blocks b of g:  s_g * (d_mb * dot_gb + d_mb / 256 * rdot_gb)  +  mm_g * x_mb
// with dot_gb (rdot_gb) the int32 sum of codes times activation codes (residual codes) over the
// group's columns in block b, d_mb the activation block scale, x_mb the sum of the activations'
// quantized values over the same columns, and mm_g the group min (or -zero * s_g). Only the fp32
// summation order differs between this and the SIMD kernels; the integer dot products are the same.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../core/dtype.h"
#include "quant_kinds.h"

namespace ll::cpu {
namespace {

// One row of activations -> int8 blocks of 32 (round to nearest even, as vcvtps2dq does).
inline void quantize_acts_ref(const float* x, int64_t K, int64_t Kp, int8_t* q, float* d, float* s, int32_t* isum) {
    for (int64_t b = 0; b < Kp / 32; ++b) {
        float amax = 0.0f;
        for (int64_t k = b * 32; k < b * 32 + 32 && k < K; ++k) amax = __builtin_fmaxf(amax, __builtin_fabsf(x[k]));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int sum[2] = {0, 0};
        for (int j = 0; j < 32; ++j) {
            const int64_t k = b * 32 + j;
            const int v = k < K ? int(__builtin_nearbyintf(x[k] * id)) : 0;
            q[k] = int8_t(v);
            sum[j / 16] += v;
        }
        d[b] = db;
        s[2 * b] = db * float(sum[0]);
        s[2 * b + 1] = db * float(sum[1]);
        isum[2 * b] = sum[0];
        isum[2 * b + 1] = sum[1];
    }
}

// The fields of one group for row r of a tile, and the codes of one 32-column block.
struct RefTileReader {
    const QuantGeometry& g;
    const uint8_t* tile;

    float f16(const uint8_t* p, int r) const {
        uint16_t v;
        __builtin_memcpy(&v, p + 2 * r, 2);
        return fp16_to_float(v);
    }
    // Scale and effective min (-zero * s for symmetric layouts) of group gi, row r.
    void group(int64_t gi, int r, float& scale, float& mm) const {
        const QuantLayout& L = g.layout;
        const int64_t gps = L.groups_per_span(), fields = L.has_min ? 2 : 1;
        const uint8_t* h = g.span_header(tile, gi / gps);
        float mn = 0.0f;
        switch (L.scale) {
            case ScaleKind::F16:
                scale = f16(h, r);
                if (L.has_min) mn = f16(h + 2 * kTileRows, r);
                break;
            case ScaleKind::F32:
                __builtin_memcpy(&scale, h + 4 * r, 4);
                if (L.has_min) __builtin_memcpy(&mn, h + 4 * kTileRows + 4 * r, 4);
                break;
            case ScaleKind::Super: {
                const uint8_t* p = h + 2 * kTileRows * fields + (gi % gps) * kTileRows * fields;
                scale = f16(h, r) * float(int8_t(p[r]));
                if (L.has_min) mn = f16(h + 2 * kTileRows, r) * float(int8_t(p[kTileRows + r]));
                break;
            }
        }
        mm = L.has_min ? mn : -float(L.zero) * scale;
    }
    int code(int64_t b, int r, int kk) const {
        const QuantLayout& L = g.layout;
        const uint8_t* cb = g.span_codes(tile, b / g.span_blocks()) + (b % g.span_blocks()) * g.block_code_bytes();
        return code_value(L, block_code(cb, L.bits, r, kk));
    }
};

// Y[m, n] (+)= sum_k X[m, k] W[n, k] for rows n of tiles [t0, t1).
inline void qmatmul_ref(const QActs& a, const QuantGeometry& g, const uint8_t* w, float* Y, int64_t ldy,
                        int64_t t0, int64_t t1, bool accumulate) {
    const QuantLayout& L = g.layout;
    const int64_t G = L.group;
    for (int64_t t = t0; t < t1; ++t) {
        RefTileReader rd{g, w + t * g.tile_bytes};
        for (int r = 0; r < kTileRows; ++r) {
            const int64_t n = t * kTileRows + r;
            if (n >= g.N) break;
            for (int64_t m = 0; m < a.M; ++m) {
                const int8_t* xq = a.q + m * a.ld;
                const int8_t* xr = a.r + m * a.ld;
                const float* xd = a.d + m * (a.ld / 32);
                const float* xs = a.s + m * (a.ld / 16);
                float acc = 0.0f;
                for (int64_t gi = 0; gi < g.Kp / G; ++gi) {
                    float scale, mm;
                    rd.group(gi, r, scale, mm);
                    // The group's columns, one activation block (or half-block for G = 16) at a time.
                    for (int64_t k0 = gi * G; k0 < (gi + 1) * G; k0 += (G < 32 ? G : 32)) {
                        const int64_t b = k0 / 32, len = G < 32 ? G : 32;
                        int32_t dot = 0, rdot = 0;
                        for (int64_t k = k0; k < k0 + len; ++k) {
                            const int c = rd.code(b, r, int(k % 32));
                            dot += c * xq[k];
                            rdot += c * xr[k];
                        }
                        const float xsum = len == 32 ? xs[2 * b] + xs[2 * b + 1] : xs[k0 / 16];
                        acc += scale * (xd[b] * float(dot)) + scale * (xd[b] * (1.0f / 256.0f) * float(rdot)) +
                               mm * xsum;
                    }
                }
                float* y = Y + m * ldy + n;
                *y = accumulate ? *y + acc : acc;
            }
        }
    }
}

}  // namespace
}  // namespace ll::cpu
