#include "quant_layout.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "../core/dtype.h"
#include "../cpu/thread_pool.h"

namespace ll {

const uint8_t kIQ4Values[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};

int QuantLayout::span_header() const {
    const int fields = has_min ? 2 : 1;
    switch (scale) {
        case ScaleKind::F16: return kTileRows * 2 * fields;
        case ScaleKind::F32: return kTileRows * 4 * fields;
        case ScaleKind::Super: return kTileRows * 2 * fields + groups_per_span() * kTileRows * fields;
    }
    return 0;
}

std::string QuantLayout::describe() const {
    std::ostringstream o;
    o << "int" << bits << " g" << group << (scale == ScaleKind::F16 ? " f16" : scale == ScaleKind::F32 ? " f32" : " super")
      << (has_min ? " min" : " zero=" + std::to_string(zero)) << (lut ? " lut" : "");
    return o.str();
}

void RowFields::resize(const QuantLayout& L, int64_t Kp) {
    const int64_t ng = Kp / L.group, ns = Kp / kSuperCols;
    u.assign(Kp, 0);
    switch (L.scale) {
        case ScaleKind::F16:
            s16.assign(ng, 0);
            m16.assign(L.has_min ? ng : 0, 0);
            break;
        case ScaleKind::F32:
            s32.assign(ng, 0.0f);
            m32.assign(L.has_min ? ng : 0, 0.0f);
            break;
        case ScaleKind::Super:
            d16.assign(ns, 0);
            dmin16.assign(L.has_min ? ns : 0, 0);
            sc.assign(ng, 0);
            mn.assign(L.has_min ? ng : 0, 0);
            break;
    }
}

QuantGeometry QuantGeometry::make(const QuantLayout& L, int64_t N, int64_t K) {
    QuantGeometry g;
    g.layout = L;
    g.N = N;
    g.K = K;
    g.Kp = (K + L.span() - 1) / L.span() * L.span();
    g.n_tiles = (N + kTileRows - 1) / kTileRows;
    g.n_spans = g.Kp / L.span();
    // Two spans per unit when one header would fill only half a cache line (32 bytes of fp16
    // scales), so that codes start on a line. K-quant headers (160, 288 bytes) are padded instead
    // (under 1%): paired, the second span's header sat 4-8 KiB ahead of its codes, and Q6_K decode
    // streamed at 12 GB/s instead of 20 waiting for it.
    g.span_header_bytes = L.span_header();
    g.spans_per_unit = (g.span_header_bytes % 64 && L.scale != ScaleKind::Super) ? 2 : 1;
    const int64_t full = g.n_spans / g.spans_per_unit, rest = g.n_spans % g.spans_per_unit;
    g.tile_bytes = full * g.unit_bytes(g.spans_per_unit) + (rest ? g.unit_bytes(rest) : 0);
    return g;
}

namespace {

// Writes one tile from the decoded fields of its 16 rows (rows past N left zero).
void write_tile(const QuantGeometry& g, const RowFields* rows, int n_rows, uint8_t* tile) {
    const QuantLayout& L = g.layout;
    const int64_t gps = L.groups_per_span();
    for (int64_t j = 0; j < g.n_spans; ++j) {
        uint8_t* s = const_cast<uint8_t*>(g.span_header(tile, j));
        // one field of the 16 rows, each `size` bytes
        auto put = [&](int size, auto get) {
            for (int r = 0; r < n_rows; ++r) {
                const auto v = get(rows[r]);
                std::memcpy(s + size * r, &v, size);
            }
            s += size * kTileRows;
        };
        if (L.scale == ScaleKind::Super) {
            put(2, [&](const RowFields& f) { return f.d16[j]; });
            if (L.has_min) put(2, [&](const RowFields& f) { return f.dmin16[j]; });
        }
        for (int64_t gi = j * gps; gi < (j + 1) * gps; ++gi) {
            switch (L.scale) {
                case ScaleKind::F16:
                    put(2, [&](const RowFields& f) { return f.s16[gi]; });
                    if (L.has_min) put(2, [&](const RowFields& f) { return f.m16[gi]; });
                    break;
                case ScaleKind::F32:
                    put(4, [&](const RowFields& f) { return f.s32[gi]; });
                    if (L.has_min) put(4, [&](const RowFields& f) { return f.m32[gi]; });
                    break;
                case ScaleKind::Super:
                    put(1, [&](const RowFields& f) { return f.sc[gi]; });
                    if (L.has_min) put(1, [&](const RowFields& f) { return f.mn[gi]; });
                    break;
            }
        }
        uint8_t* c = const_cast<uint8_t*>(g.span_codes(tile, j));
        for (int64_t b = j * g.span_blocks(); b < (j + 1) * g.span_blocks(); ++b, c += g.block_code_bytes()) {
            for (int r = 0; r < n_rows; ++r) {
                const uint8_t* u = rows[r].u.data() + b * kQBlock;
                for (int kk = 0; kk < kQBlock; ++kk) set_block_code(c, L.bits, r, kk, u[kk]);
            }
        }
    }
}

}  // namespace

PackedQuant pack_quant(const QuantLayout& L, int64_t N, int64_t K, RowDecoder decode, const void* ctx,
                       const std::vector<int64_t>& row_of, cpu::ThreadPool* pool) {
    PackedQuant p;
    p.g = QuantGeometry::make(L, N, K);
    p.data = AlignedBuffer(size_t(p.g.n_tiles * p.g.tile_bytes));
    const QuantGeometry& g = p.g;
    uint8_t* base = p.data.get();
    auto work = [&](int chunk, int n_chunks) {
        int64_t t0, t1;
        cpu::ThreadPool::split(g.n_tiles, chunk, n_chunks, 1, t0, t1);
        std::vector<RowFields> rows(kTileRows);
        for (int64_t t = t0; t < t1; ++t) {
            const int n_rows = int(std::min<int64_t>(kTileRows, N - t * kTileRows));
            for (int r = 0; r < n_rows; ++r) {
                const int64_t n = t * kTileRows + r;
                rows[r].resize(L, g.Kp);  // codes past K stay zero whatever the previous row held
                decode(ctx, row_of.empty() ? n : row_of[n], rows[r]);
            }
            write_tile(g, rows.data(), n_rows, base + t * g.tile_bytes);
        }
    };
    if (pool && pool->size() > 1) pool->run(pool->size(), work);
    else work(0, 1);
    return p;
}

void PackedQuant::unpack_row(int64_t n, RowFields& f) const {
    const QuantLayout& L = g.layout;
    f.resize(L, g.Kp);
    const uint8_t* t = tile(n / kTileRows);
    const int r = int(n % kTileRows);
    const int64_t gps = L.groups_per_span();
    for (int64_t j = 0; j < g.n_spans; ++j) {
        const uint8_t* s = g.span_header(t, j);
        auto get = [&](int size, auto& dst) {
            std::memcpy(&dst, s + size * r, size);
            s += size * kTileRows;
        };
        if (L.scale == ScaleKind::Super) {
            get(2, f.d16[j]);
            if (L.has_min) get(2, f.dmin16[j]);
        }
        for (int64_t gi = j * gps; gi < (j + 1) * gps; ++gi) {
            switch (L.scale) {
                case ScaleKind::F16:
                    get(2, f.s16[gi]);
                    if (L.has_min) get(2, f.m16[gi]);
                    break;
                case ScaleKind::F32:
                    get(4, f.s32[gi]);
                    if (L.has_min) get(4, f.m32[gi]);
                    break;
                case ScaleKind::Super:
                    get(1, f.sc[gi]);
                    if (L.has_min) get(1, f.mn[gi]);
                    break;
            }
        }
        const uint8_t* c = g.span_codes(t, j);
        for (int64_t b = j * g.span_blocks(); b < (j + 1) * g.span_blocks(); ++b, c += g.block_code_bytes()) {
            for (int kk = 0; kk < kQBlock; ++kk) f.u[b * kQBlock + kk] = uint8_t(block_code(c, L.bits, r, kk));
        }
    }
}

void PackedQuant::dequantize_row(int64_t n, float* out) const {
    RowFields f;
    unpack_row(n, f);
    dequantize_fields(g.layout, f, g.K, out);
}

void group_scale(const QuantLayout& L, const RowFields& f, int64_t gi, float& scale, float& min) {
    min = 0.0f;
    switch (L.scale) {
        case ScaleKind::F16:
            scale = fp16_to_float(f.s16[gi]);
            if (L.has_min) min = fp16_to_float(f.m16[gi]);
            break;
        case ScaleKind::F32:
            scale = f.s32[gi];
            if (L.has_min) min = f.m32[gi];
            break;
        case ScaleKind::Super: {
            const int64_t sb = gi * L.group / kSuperCols;
            scale = fp16_to_float(f.d16[sb]) * float(f.sc[gi]);
            if (L.has_min) min = fp16_to_float(f.dmin16[sb]) * float(f.mn[gi]);
            break;
        }
    }
}

void dequantize_fields(const QuantLayout& L, const RowFields& f, int64_t K, float* out) {
    for (int64_t gi = 0; gi * L.group < K; ++gi) {
        float scale, min;
        group_scale(L, f, gi, scale, min);
        for (int64_t k = gi * L.group; k < (gi + 1) * L.group && k < K; ++k) {
            const int u = code_value(L, f.u[k]);
            out[k] = L.has_min ? scale * float(u) + min : scale * float(u - L.zero);
        }
    }
}

}  // namespace ll
