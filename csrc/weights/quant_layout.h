// The integer weight layout every quantized source format is repacked into at load.
//
// A weight is an unsigned code u per element and a scale per group of columns:
//     w = s * (u - zero)        (symmetric formats: zero is a constant of the format)
//     w = s * u + m             (formats with a per-group min; m = -dmin * mn for K-quants)
// computed in that order in fp32, which is how each source format's own reference dequantizes,
// so the repacked weights equal the source's bit for bit (tests hold this against gguf-py).
//
// Rows are interleaved 16 at a time ("tiles"), so that one 4-byte activation word broadcast to
// all lanes feeds 16 rows in one VNNI dot product and the 16 results land one per lane: no
// horizontal sums. A tile is one sequential stream, read front to back by a decode step:
//
//   span     the columns that share one header: a group (F16, F32), or a 256-column K-quant
//            super-block (Super). Its header, for the 16 rows: F16: s[16] fp16 (+ m[16] fp16);
//            F32: the same in fp32; Super: d[16] fp16 (+ -dmin[16] fp16), then per group sc[16]
//            int8 (+ mn[16] int8), with s = d * sc and m = -dmin * mn.
//   unit     one or two spans stored as [their headers][their codes], the headers padded to 64
//            bytes (two spans when one header alone would leave half a cache line empty).
//   block    the codes of 32 columns of the tile. bits = 4: 4 chunks of 64 bytes; in chunk c,
//            byte 4r + j holds row r's code of column 4c + j in its low nibble and of column
//            16 + 4c + j in its high nibble. bits = 6: those 4 chunks for the codes' low nibbles,
//            then 2 chunks of their top 2 bits: in chunk 4 + h, bits 2c..2c+1 of byte 4r + j are
//            those of column 16h + 4c + j. bits = 8: 8 chunks; chunk c, byte 4r + j is row r's
//            code of column 4c + j.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/aligned_buffer.h"

namespace ll {
namespace cpu { class ThreadPool; }

constexpr int kTileRows = 16;
constexpr int kQBlock = 32;        // columns of one code block and one activation block
constexpr int kSuperCols = 256;    // K-quant super-block

enum class ScaleKind : uint8_t { F16 = 0, F32 = 1, Super = 2 };

struct QuantLayout {
    int bits = 4;                      // 4, 6 or 8: width of a stored code
    int group = 32;                    // columns sharing one scale: 16 (Super only), 32, 64, 128
    ScaleKind scale = ScaleKind::F16;
    bool has_min = false;              // w = s*u + m; else w = s*(u - zero)
    bool lut = false;                  // 4-bit codes are indices into kIQ4Values (IQ4_NL, IQ4_XS)
    int zero = 0;                      // the symmetric formats' zero point

    // Columns sharing one header: a super-block for Super, else one group.
    int span() const { return scale == ScaleKind::Super ? kSuperCols : group; }
    int groups_per_span() const { return span() / group; }
    // Bytes of one span's header (16 rows).
    int span_header() const;
    std::string describe() const;
};

// Code kk (0..31) of row r of a block of codes (see "block" above), read and written.
inline int block_code(const uint8_t* cb, int bits, int r, int kk) {
    if (bits == 8) return cb[(kk / 4) * 64 + 4 * r + kk % 4];
    const uint8_t nib = cb[((kk % 16) / 4) * 64 + 4 * r + kk % 4];
    const int lo = kk < 16 ? nib & 15 : nib >> 4;
    if (bits == 4) return lo;
    const int hi = (cb[256 + (kk / 16) * 64 + 4 * r + kk % 4] >> (2 * ((kk % 16) / 4))) & 3;
    return lo | hi << 4;
}
inline void set_block_code(uint8_t* cb, int bits, int r, int kk, int u) {  // cb starts zeroed
    if (bits == 8) {
        cb[(kk / 4) * 64 + 4 * r + kk % 4] = uint8_t(u);
        return;
    }
    cb[((kk % 16) / 4) * 64 + 4 * r + kk % 4] |= uint8_t(kk < 16 ? u & 15 : (u & 15) << 4);
    if (bits == 6) cb[256 + (kk / 16) * 64 + 4 * r + kk % 4] |= uint8_t(((u >> 4) & 3) << (2 * ((kk % 16) / 4)));
}

// IQ4_NL's non-linear code book, +128 so that the looked-up value is an unsigned byte.
extern const uint8_t kIQ4Values[16];

// The unsigned code a stored code u stands for: u itself, or for a code-book layout the book's value.
inline int code_value(const QuantLayout& L, int u) { return L.lut ? kIQ4Values[u] : u; }

// One row of a source tensor decoded into the layout's fields (what a source decoder writes and
// the packer reads). Only the arrays of the layout's scale kind are used.
struct RowFields {
    std::vector<uint8_t> u;                 // [Kp] codes (LUT indices for lut layouts)
    std::vector<uint16_t> s16, m16;         // F16: [n_groups]
    std::vector<float> s32, m32;            // F32: [n_groups]
    std::vector<uint16_t> d16, dmin16;      // Super: [n_super] (dmin16 already negated)
    std::vector<int8_t> sc, mn;             // Super: [n_groups]
    void resize(const QuantLayout& L, int64_t Kp);
};

// Geometry of a packed matrix [N, K].
struct QuantGeometry {
    QuantLayout layout;
    int64_t N = 0, K = 0, Kp = 0;      // Kp: K rounded up to whole spans (zero codes beyond K)
    int64_t n_tiles = 0;
    int64_t n_spans = 0;               // per row
    int64_t spans_per_unit = 1;
    int64_t span_header_bytes = 0;     // layout.span_header()
    int64_t tile_bytes = 0;

    int64_t block_code_bytes() const { return int64_t(kTileRows) * kQBlock * layout.bits / 8; }
    int64_t span_blocks() const { return layout.span() / kQBlock; }
    // Bytes of a unit of n spans: padded headers, then codes.
    int64_t header_bytes(int64_t n) const { return (n * span_header_bytes + 63) / 64 * 64; }
    int64_t unit_bytes(int64_t n) const { return header_bytes(n) + n * span_blocks() * block_code_bytes(); }
    // Span j of a tile: its header and its first block of codes.
    const uint8_t* span_header(const uint8_t* tile, int64_t j) const {
        const int64_t u = j / spans_per_unit;
        return tile + u * unit_bytes(spans_per_unit) + (j % spans_per_unit) * span_header_bytes;
    }
    const uint8_t* span_codes(const uint8_t* tile, int64_t j) const {
        const int64_t u = j / spans_per_unit, in_unit = n_spans - u * spans_per_unit;
        const int64_t n = in_unit < spans_per_unit ? in_unit : spans_per_unit;
        return tile + u * unit_bytes(spans_per_unit) + header_bytes(n) +
               (j % spans_per_unit) * span_blocks() * block_code_bytes();
    }
    static QuantGeometry make(const QuantLayout& L, int64_t N, int64_t K);
};

// A repacked integer weight: geometry plus the tile stream.
struct PackedQuant {
    QuantGeometry g;
    AlignedBuffer data;
    const uint8_t* tile(int64_t t) const { return data.get() + t * g.tile_bytes; }
    // Row n's fields, read back from its tile.
    void unpack_row(int64_t n, RowFields& f) const;
    // Row n as fp32, bit-equal to the source's own dequantization (embedding lookup, tests).
    void dequantize_row(int64_t n, float* out) const;
};

// Group gi's scale and min (0 for symmetric layouts) from decoded fields, in fp32 as the source
// formats' references form them (K-quants: (d * sc), then the code).
void group_scale(const QuantLayout& L, const RowFields& f, int64_t gi, float& scale, float& min);

// w[0:K] from decoded fields: s * (u - zero) or s * u + m, in fp32, in that order.
void dequantize_fields(const QuantLayout& L, const RowFields& f, int64_t K, float* out);

// Decodes source row `src_row` into `f` (sized for the layout by the caller).
using RowDecoder = void (*)(const void* ctx, int64_t src_row, RowFields& f);

// Packs N rows; output row n is source row row_of(n) (identity, or llama.cpp's q/k un-permute).
// The pool's threads (if any) split the tiles.
PackedQuant pack_quant(const QuantLayout& L, int64_t N, int64_t K, RowDecoder decode, const void* ctx,
                       const std::vector<int64_t>& row_of, cpu::ThreadPool* pool);

}  // namespace ll
