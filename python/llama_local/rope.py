"""RoPE as Llama models use it, written once: the base frequencies, Llama 3.1's frequency scaling
(Meta's `apply_scaling`), and the table of divisors that llama.cpp stores in its place.

The scaling keeps short wavelengths, divides long ones by `factor`, and blends the band between:
for wavelength w, s = (original / w - low) / (high - low), and the frequency is divided by
1 / ((1 - s) / factor + s). `llama3_scaled` computes it as transformers does, `llama3_factors`
as llama.cpp's converter does; each must match its own reference to the last bit.
"""

from __future__ import annotations

import math

import numpy as np

# transformers' LlamaConfig and llama.cpp both assume this base when a file names none.
DEFAULT_THETA = 10000.0
# Llama 3's base (Meta's ModelArgs default; every Llama 3.x config.json says so too).
LLAMA3_THETA = 500000.0

# Llama 3 was trained to 8K positions; Llama 3.1 and later reach 128K through the scaling.
LLAMA3_CONTEXT = 8192
LLAMA31_CONTEXT = 131072

# Meta's apply_scaling constants for Llama 3.1 (llama3/model.py), as config.json writes them.
LLAMA31_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": LLAMA3_CONTEXT,
}
# Llama 3.2 (1B, 3B) scales by 32 instead.
LLAMA32_SCALING = {**LLAMA31_SCALING, "factor": 32.0}


def inv_freq(theta: float, head_dim: int) -> np.ndarray:
    """The head_dim/2 unscaled RoPE frequencies, float32, computed as transformers computes them."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)


def llama3_scaled(inv: np.ndarray, factor: float, low: float, high: float, original: float) -> np.ndarray:
    """Meta's apply_scaling for Llama 3.1 on frequencies `inv`, in float32 as transformers'
    _compute_llama3_parameters computes it (low/high: low_freq_factor/high_freq_factor,
    original: original_max_position_embeddings)."""
    low_wavelen = original / low
    high_wavelen = original / high
    wavelen = (2 * math.pi / inv).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv / np.float32(factor), inv).astype(np.float32)
    smooth = ((original / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / np.float32(factor) + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def llama3_factors(theta: float, head_dim: int, factor: float, low: float, high: float,
                   original: float) -> np.ndarray:
    """The per-frequency divisors llama.cpp's convert_hf_to_gguf.py stores as `rope_freqs.weight`
    for rope_type llama3: float32, computed in float32 as its torch code computes them."""
    freqs = inv_freq(theta, head_dim)
    wavelen = 2 * math.pi / freqs  # float32, as torch divides a Python float by a float32 tensor
    smooth = (original / wavelen - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, blended))
    return out.astype(np.float32)
