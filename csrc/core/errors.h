// Exceptions the core throws; bindings.cpp maps each onto a class of llama_local.errors.
#pragma once
#include <stdexcept>
#include <string>

namespace ll {

// A weight tensor or model description is not what the model needs (wrong shape, dtype, size).
struct FormatError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The tokens do not fit the KV cache.
struct ContextOverflow : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace ll
