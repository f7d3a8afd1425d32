#include "gguf_blocks.h"

#include <cstring>

namespace ll::gguf {

namespace {

uint16_t rd16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
uint32_t rd32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
uint16_t neg16(uint16_t h) { return uint16_t(h ^ 0x8000u); }  // -x of an fp16, exact

// Blocks of 32: fp16 d [+ fp16 m], then the format's codes. Element j of the block is the low
// nibble of qs[j], element j + 16 the high nibble (Q4_0, Q4_1, Q5_*, IQ4_NL).
void nibbles32(const uint8_t* qs, uint8_t* u) {
    for (int j = 0; j < 16; ++j) {
        u[j] = qs[j] & 15;
        u[j + 16] = qs[j] >> 4;
    }
}

void dec_q4_0(const uint8_t* b, int64_t bi, RowFields& f) {  // 18 bytes: d, qs[16]; w = d (q - 8)
    f.s16[bi] = rd16(b);
    nibbles32(b + 2, &f.u[bi * 32]);
}
void dec_q4_1(const uint8_t* b, int64_t bi, RowFields& f) {  // 20 bytes: d, m, qs[16]; w = d q + m
    f.s16[bi] = rd16(b);
    f.m16[bi] = rd16(b + 2);
    nibbles32(b + 4, &f.u[bi * 32]);
}
void fifth_bit(uint32_t qh, uint8_t* u) {
    for (int j = 0; j < 32; ++j) u[j] |= uint8_t(((qh >> j) & 1) << 4);
}
void dec_q5_0(const uint8_t* b, int64_t bi, RowFields& f) {  // 22 bytes: d, qh[4], qs[16]; w = d (q - 16)
    f.s16[bi] = rd16(b);
    nibbles32(b + 6, &f.u[bi * 32]);
    fifth_bit(rd32(b + 2), &f.u[bi * 32]);
}
void dec_q5_1(const uint8_t* b, int64_t bi, RowFields& f) {  // 24 bytes: d, m, qh[4], qs[16]
    f.s16[bi] = rd16(b);
    f.m16[bi] = rd16(b + 2);
    nibbles32(b + 8, &f.u[bi * 32]);
    fifth_bit(rd32(b + 4), &f.u[bi * 32]);
}
void dec_q8_0(const uint8_t* b, int64_t bi, RowFields& f) {  // 34 bytes: d, int8 qs[32]; w = d q
    f.s16[bi] = rd16(b);
    for (int j = 0; j < 32; ++j) f.u[bi * 32 + j] = uint8_t(int(int8_t(b[2 + j])) + 128);
}
void dec_iq4_nl(const uint8_t* b, int64_t bi, RowFields& f) {  // 18 bytes: d, qs[16]; w = d kvalues[q]
    f.s16[bi] = rd16(b);
    nibbles32(b + 2, &f.u[bi * 32]);
}

// K-quants: super-blocks of 256.

// Q4_K / Q5_K: eight 6-bit scales and mins packed in 12 bytes (ggml's get_scale_min_k4).
void scale_min_k4(const uint8_t* q, int8_t* sc, int8_t* mn) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = int8_t(q[j] & 63);
        mn[j] = int8_t(q[j + 4] & 63);
        sc[j + 4] = int8_t((q[j + 8] & 15) | ((q[j] >> 6) << 4));
        mn[j + 4] = int8_t((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}
void dec_q4_k(const uint8_t* b, int64_t bi, RowFields& f) {
    // 144 bytes: d, dmin, scales[12], qs[128]. Element 64c + 32h + l is nibble h of qs[32c + l].
    f.d16[bi] = rd16(b);
    f.dmin16[bi] = neg16(rd16(b + 2));
    scale_min_k4(b + 4, &f.sc[bi * 8], &f.mn[bi * 8]);
    uint8_t* u = &f.u[bi * 256];
    const uint8_t* qs = b + 16;
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
            u[64 * c + l] = qs[32 * c + l] & 15;
            u[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
}
void dec_q5_k(const uint8_t* b, int64_t bi, RowFields& f) {
    // 176 bytes: d, dmin, scales[12], qh[32], qs[128]; bit i of qh[l] is bit 4 of element 32i + l.
    f.d16[bi] = rd16(b);
    f.dmin16[bi] = neg16(rd16(b + 2));
    scale_min_k4(b + 4, &f.sc[bi * 8], &f.mn[bi * 8]);
    uint8_t* u = &f.u[bi * 256];
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
            u[64 * c + l] = qs[32 * c + l] & 15;
            u[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
    for (int i = 0; i < 8; ++i)
        for (int l = 0; l < 32; ++l) u[32 * i + l] |= uint8_t(((qh[l] >> i) & 1) << 4);
}
void dec_q6_k(const uint8_t* b, int64_t bi, RowFields& f) {
    // 210 bytes: ql[128], qh[64], int8 scales[16], d. Element 128h + 64n + l (l < 64) has low
    // nibble n of ql[64h + l]; element 128h + 32s + l (l < 32) has bits 2s..2s+1 of qh[32h + l] as
    // bits 4-5. Groups of 16; w = d sc (q - 32).
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const uint8_t* scales = b + 192;
    f.d16[bi] = rd16(b + 208);
    for (int j = 0; j < 16; ++j) f.sc[bi * 16 + j] = int8_t(scales[j]);
    uint8_t* u = &f.u[bi * 256];
    for (int h = 0; h < 2; ++h)
        for (int n = 0; n < 2; ++n)
            for (int l = 0; l < 64; ++l) u[128 * h + 64 * n + l] = (ql[64 * h + l] >> (4 * n)) & 15;
    for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
            for (int l = 0; l < 32; ++l) u[128 * h + 32 * s + l] |= uint8_t(((qh[32 * h + l] >> (2 * s)) & 3) << 4);
}
void dec_q2_k(const uint8_t* b, int64_t bi, RowFields& f) {
    // 84 bytes: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Element
    // 128h + 32s + l has bits 2s..2s+1 of qs[32h + l]. Groups of 16; w = d sc q - dmin m.
    for (int j = 0; j < 16; ++j) {
        f.sc[bi * 16 + j] = int8_t(b[j] & 15);
        f.mn[bi * 16 + j] = int8_t(b[j] >> 4);
    }
    const uint8_t* qs = b + 16;
    f.d16[bi] = rd16(b + 80);
    f.dmin16[bi] = neg16(rd16(b + 82));
    uint8_t* u = &f.u[bi * 256];
    for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
            for (int l = 0; l < 32; ++l) u[128 * h + 32 * s + l] = (qs[32 * h + l] >> (2 * s)) & 3;
}
void dec_q3_k(const uint8_t* b, int64_t bi, RowFields& f) {
    // 110 bytes: hmask[32], qs[64], scales[12], d. Element 128h + 32s + l has low bits 2s..2s+1 of
    // qs[32h + l]; element 32i + l has bit i of hmask[l], and q = low - 4 when that bit is clear.
    // Sixteen 6-bit scales, stored minus 32. Groups of 16; w = d (sc - 32) q.
    const uint8_t* hm = b;
    const uint8_t* qs = b + 32;
    const uint8_t* sb = b + 96;
    f.d16[bi] = rd16(b + 108);
    for (int i = 0; i < 16; ++i) {
        const int lo = i < 8 ? sb[i] & 15 : sb[i - 8] >> 4;
        const int hi = (sb[8 + i % 4] >> (2 * (i / 4))) & 3;
        f.sc[bi * 16 + i] = int8_t((lo | (hi << 4)) - 32);
    }
    uint8_t* u = &f.u[bi * 256];
    for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
            for (int l = 0; l < 32; ++l) u[128 * h + 32 * s + l] = (qs[32 * h + l] >> (2 * s)) & 3;
    // stored code u = q + 4, zero 4: the high bit set means q = low, clear means q = low - 4
    for (int i = 0; i < 8; ++i)
        for (int l = 0; l < 32; ++l) u[32 * i + l] = uint8_t(u[32 * i + l] + (((hm[l] >> i) & 1) ? 4 : 0));
}
void dec_iq4_xs(const uint8_t* b, int64_t bi, RowFields& f) {
    // 136 bytes: d, scales_h (u16), scales_l[4], qs[128]. Group ib's 6-bit scale, minus 32; its
    // element 16n + j is nibble n of qs[16 ib + j]; w = d (ls - 32) kvalues[q].
    f.d16[bi] = rd16(b);
    const uint16_t sh = rd16(b + 2);
    const uint8_t* sl = b + 4;
    const uint8_t* qs = b + 8;
    uint8_t* u = &f.u[bi * 256];
    for (int ib = 0; ib < 8; ++ib) {
        const int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4);
        f.sc[bi * 8 + ib] = int8_t(ls - 32);
        for (int j = 0; j < 16; ++j) {
            u[32 * ib + j] = qs[16 * ib + j] & 15;
            u[32 * ib + 16 + j] = qs[16 * ib + j] >> 4;
        }
    }
}

QuantLayout lay(int bits, int group, ScaleKind sk, bool has_min, int zero, bool lut = false) {
    QuantLayout L;
    L.bits = bits;
    L.group = group;
    L.scale = sk;
    L.has_min = has_min;
    L.zero = zero;
    L.lut = lut;
    return L;
}

const BlockType kTypes[] = {
    {2, "Q4_0", 32, 18, lay(4, 32, ScaleKind::F16, false, 8), dec_q4_0},
    {3, "Q4_1", 32, 20, lay(4, 32, ScaleKind::F16, true, 0), dec_q4_1},
    {6, "Q5_0", 32, 22, lay(6, 32, ScaleKind::F16, false, 16), dec_q5_0},
    {7, "Q5_1", 32, 24, lay(6, 32, ScaleKind::F16, true, 0), dec_q5_1},
    {8, "Q8_0", 32, 34, lay(8, 32, ScaleKind::F16, false, 128), dec_q8_0},
    {10, "Q2_K", 256, 84, lay(4, 16, ScaleKind::Super, true, 0), dec_q2_k},
    {11, "Q3_K", 256, 110, lay(4, 16, ScaleKind::Super, false, 4), dec_q3_k},
    {12, "Q4_K", 256, 144, lay(4, 32, ScaleKind::Super, true, 0), dec_q4_k},
    {13, "Q5_K", 256, 176, lay(6, 32, ScaleKind::Super, true, 0), dec_q5_k},
    {14, "Q6_K", 256, 210, lay(6, 16, ScaleKind::Super, false, 32), dec_q6_k},
    {20, "IQ4_NL", 32, 18, lay(4, 32, ScaleKind::F16, false, 128, true), dec_iq4_nl},
    {23, "IQ4_XS", 256, 136, lay(4, 32, ScaleKind::Super, false, 128, true), dec_iq4_xs},
};

}  // namespace

const BlockType* block_type(int ggml_type) {
    for (const BlockType& t : kTypes)
        if (t.id == ggml_type) return &t;
    return nullptr;
}

void decode_row(const void* ctx, int64_t row, RowFields& f) {
    const RowSource& s = *static_cast<const RowSource*>(ctx);
    const uint8_t* p = s.data + row * s.row_bytes;
    for (int64_t bi = 0; bi < s.K / s.type->block; ++bi) s.type->decode(p + bi * s.type->bytes, bi, f);
}

}  // namespace ll::gguf
