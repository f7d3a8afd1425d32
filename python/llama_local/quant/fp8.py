"""FP8 E4M3 weights with one scale per output channel, as llm-compressor's FP8 scheme makes them.

scale = max|w_row| / 448 (448: E4M3's largest value), rounded to the checkpoint's bf16; the codes are
w / scale rounded to the nearest E4M3 value. A weight dequantizes to code * scale, which the
loader (formats/fp8_checkpoints.py) hands to the core exactly.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

E4M3_MAX = 448.0
# A row of zeros still needs a positive scale (its codes are all zero whatever it is).
MIN_SCALE = float(np.finfo(np.float32).tiny)


def quantize_fp8_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes float8_e4m3fn [N, K], scales bfloat16 [N, 1]) for a float weight [N, K]."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1, keepdims=True)
    scale = np.maximum(amax / np.float32(E4M3_MAX), MIN_SCALE).astype(ml_dtypes.bfloat16)
    s = scale.astype(np.float32)
    codes = np.clip(w / s, -E4M3_MAX, E4M3_MAX).astype(ml_dtypes.float8_e4m3fn)
    return codes, scale


def weight_config() -> dict:
    """compressed-tensors' QuantizationArgs of these weights."""
    return {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False,
            "group_size": None, "block_structure": None, "observer": "minmax", "actorder": None}
