// Storage formats of the KV cache, as a row of n values (one KV head's head_dim values of one
// position):
//
//   f32, f16, bf16: the values, n elements.
//   q8_0:          n int8 codes, then one fp16 scale per 32 values (n / 32 of them): 34 bytes per
//                  32 values, as llama.cpp's q8_0 (head_dim is a multiple of 32).
// K is stored after RoPE. Rounding: f16/bf16 to nearest even; q8_0 as llama.cpp quantizes
// (scale = max|x| / 127 stored as fp16, code = round(x / scale) with the unrounded scale).
//
// The KV cache (model/kv_cache.h) keeps each KV head apart: its V as these rows over the head's
// head_dim values, position after position, and its K transposed in blocks of kKVBlock
// positions: value d of the block's positions j = 0..15 at element d * 16 + j (q8_0: the codes
// so, then the scales of each group of 32 values as [head_dim / 32][16] fp16). A block holds the
// same bytes as its 16 rows would. This way a query's scores against 16 positions are head_dim
// broadcast multiply-adds into one 16-lane sum, with no horizontal reduction (attention_impl.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "dtype.h"

namespace ll {

enum class KVType : int { F32 = 0, F16 = 1, BF16 = 2, Q8_0 = 3 };
constexpr int kNumKVTypes = 4;
constexpr int64_t kKVQBlock = 32;   // q8_0 values per scale
constexpr int64_t kKVBlock = 16;    // K positions per transposed block

static inline const char* kv_type_name(KVType t) {
    switch (t) {
        case KVType::F32: return "f32";
        case KVType::F16: return "f16";
        case KVType::BF16: return "bf16";
        case KVType::Q8_0: return "q8_0";
    }
    return "?";
}

static inline KVType parse_kv_type(const std::string& s) {
    for (int i = 0; i < kNumKVTypes; ++i)
        if (s == kv_type_name(KVType(i))) return KVType(i);
    throw std::invalid_argument("unknown KV cache type '" + s + "' (expected f16, bf16, q8_0 or f32)");
}

static inline int64_t kv_row_bytes(KVType t, int64_t kv_dim) {
    switch (t) {
        case KVType::F32: return 4 * kv_dim;
        case KVType::F16:
        case KVType::BF16: return 2 * kv_dim;
        case KVType::Q8_0: return kv_dim + 2 * (kv_dim / kKVQBlock);
    }
    return 0;
}

// float -> IEEE half, round to nearest even; overflow to inf, subnormals kept.
static inline uint16_t float_to_fp16(float f) {
    const uint32_t u = float_to_bits(f);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);           // NaN
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);          // rounds past 65504: inf
    if (a < 0x38800000u) {                                          // below 2^-14: subnormal (or 0)
        // value / 2^-24 rounded to nearest even: adding 0.5 in float does exactly that
        const float v = bits_to_float(a) * 16777216.0f;
        return uint16_t(sign | uint16_t(std::nearbyint(v)));
    }
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);              // round the 13 dropped bits
    return uint16_t(sign | uint16_t((r - 0x38000000u) >> 13));
}

// One row of kv_dim fp32 values into its storage format.
static inline void encode_kv_row(KVType t, const float* x, int64_t kv_dim, uint8_t* dst) {
    switch (t) {
        case KVType::F32: std::memcpy(dst, x, sizeof(float) * size_t(kv_dim)); return;
        case KVType::F16: {
            uint16_t* d = reinterpret_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < kv_dim; ++i) d[i] = float_to_fp16(x[i]);
            return;
        }
        case KVType::BF16: {
            uint16_t* d = reinterpret_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < kv_dim; ++i) d[i] = float_to_bf16(x[i]);
            return;
        }
        case KVType::Q8_0: {
            int8_t* q = reinterpret_cast<int8_t*>(dst);
            uint8_t* scales = dst + kv_dim;
            for (int64_t b = 0; b < kv_dim / kKVQBlock; ++b) {
                const float* xb = x + b * kKVQBlock;
                float amax = 0.0f;
                for (int64_t i = 0; i < kKVQBlock; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
                const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
                for (int64_t i = 0; i < kKVQBlock; ++i) q[b * kKVQBlock + i] = int8_t(std::lround(xb[i] * id));
                const uint16_t h = float_to_fp16(d);
                std::memcpy(scales + 2 * b, &h, 2);
            }
            return;
        }
    }
}

// Scatters one head's encoded row `src` (kv_row_bytes(t, hd) bytes, as encode_kv_row writes it)
// into lane j of that head's K block `blk`.
static inline void scatter_k_lane(KVType t, const uint8_t* src, int64_t hd, int64_t j, uint8_t* blk) {
    const int64_t es = t == KVType::F32 ? 4 : t == KVType::Q8_0 ? 1 : 2;
    for (int64_t d = 0; d < hd; ++d) std::memcpy(blk + (d * kKVBlock + j) * es, src + d * es, size_t(es));
    if (t == KVType::Q8_0)
        for (int64_t c = 0; c < hd / kKVQBlock; ++c)
            std::memcpy(blk + hd * kKVBlock + (c * kKVBlock + j) * 2, src + hd + 2 * c, 2);
}

// Values [i0, i0 + n) of a stored row as fp32 (the scalar reference of what kernels read).
// For q8_0, i0 and n are multiples of 32; kv_dim locates the scales.
static inline void decode_kv_row(KVType t, const uint8_t* row, int64_t kv_dim, int64_t i0, int64_t n, float* out) {
    switch (t) {
        case KVType::F32: std::memcpy(out, reinterpret_cast<const float*>(row) + i0, sizeof(float) * size_t(n)); return;
        case KVType::F16:
            for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_float(reinterpret_cast<const uint16_t*>(row)[i0 + i]);
            return;
        case KVType::BF16:
            for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(reinterpret_cast<const uint16_t*>(row)[i0 + i]);
            return;
        case KVType::Q8_0: {
            const int8_t* q = reinterpret_cast<const int8_t*>(row);
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, row + kv_dim + 2 * ((i0 + i) / kKVQBlock), 2);
                out[i] = float(q[i0 + i]) * fp16_to_float(h);
            }
            return;
        }
    }
}

}  // namespace ll
