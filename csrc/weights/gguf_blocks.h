// GGUF (ggml) block formats: which internal layout each maps onto, and its row decoder.
//
// Every block layout here follows ggml-quants.c and gguf-py's quants.py (the test oracle); the
// decoded fields reproduce their dequantization exactly (see quant_layout.h).
#pragma once
#include <cstdint>

#include "quant_layout.h"

namespace ll::gguf {

struct BlockType {
    int id;               // GGMLQuantizationType value
    const char* name;
    int block;            // elements per block
    int bytes;            // bytes per block
    QuantLayout layout;
    // Decodes block `bi` of a row (elements [bi * block, (bi + 1) * block)) into f.
    void (*decode)(const uint8_t* blk, int64_t bi, RowFields& f);
};

// The quantized block types llama_local reads; nullptr for any other id (floats included).
const BlockType* block_type(int ggml_type);

// A row decoder context for pack_quant: rows of `row_bytes` bytes starting at data.
struct RowSource {
    const BlockType* type;
    const uint8_t* data;
    int64_t row_bytes;
    int64_t K;
};
void decode_row(const void* ctx, int64_t row, RowFields& f);

}  // namespace ll::gguf
