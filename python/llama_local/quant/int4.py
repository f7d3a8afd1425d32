"""INT4 weights, group-wise, round to nearest, in compressed-tensors' pack-quantized layout.

Scales as compressed-tensors computes them (quantization/utils/helpers.py, calculate_qparams) for
asymmetric groups; symmetric groups search their scale (SCALE_SEARCH below); per group of `group`
input columns:
  symmetric:  scale = -sign(w at max|w|) * max|w| / 8 * f, f in SCALE_SEARCH for the least squared error,
              q = clamp(round(w / scale), -8, 7)
  asymmetric: scale = (max(w, 0) - min(w, 0)) / 15,
              zero = round(clamp(-8 - min(w, 0) / scale, -8, 7)),     q = clamp(round(w / scale) + zero, -8, 7)
with the scale rounded to the checkpoint's dtype (bf16) before the codes are computed against it,
so that the stored codes and scale dequantize as (q - zero) * scale. Packing (pack_to_int32): the
signed values are offset by 8 and eight 4-bit values fill an int32, element i in bits 4i..4i+3,
along the input dimension for weight_packed ([N, K / 8]) and along the output dimension for the
zero points ([N / 8, K / group]).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np

from ..errors import LlamaLocalError

GROUP_SIZES = (32, 64, 128)
# Symmetric groups: round to nearest, with the scale chosen among these multiples of max|w| / 8
# for the least squared error, and negative when the group's largest-magnitude value is positive, so
# that value lands on the code -8 (as llama.cpp's Q4_0 does: int4's codes reach one step further
# below zero than above it). compressed-tensors' own max/7.5 (1.0667 here) never uses the code -8;
# clipping the largest value a little moves the others closer to a code (llama.cpp's k-quants
# search the same way). No calibration data is involved. On SmolLM2's linear weights the relative
# squared error is 0.741% for max/7.5 with the search over positive scales and 0.608% with signed ones
# (llama.cpp's Q4_0 of the same weights: 0.750%). Asymmetric groups keep the min-max scale: a search
# did not help them there.
SCALE_SEARCH = tuple(float(x) for x in np.round(np.linspace(1.06, 0.78, 12), 4))
# Elements per row block of the search (4 MB of float32).
CHUNK_ELEMENTS = 1 << 20
# A group of zeros still needs a positive scale (compressed-tensors uses the dtype's epsilon).
ZERO_SCALE = float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps)


def pack_int4(q: np.ndarray, axis: int) -> np.ndarray:
    """Signed 4-bit values (int8 in [-8, 7]) packed eight to an int32 along `axis` (0 or 1)."""
    u = (q.astype(np.int32) + 8) & 0xF
    if axis == 0:
        u = u.T
    rows, cols = u.shape
    pad = -cols % 8
    if pad:
        u = np.pad(u, ((0, 0), (0, pad)))
    u = u.reshape(rows, -1, 8).astype(np.uint32)
    words = np.zeros(u.shape[:2], dtype=np.uint32)
    for i in range(8):
        words |= u[:, :, i] << np.uint32(4 * i)
    out = words.view(np.int32)
    return np.ascontiguousarray(out.T if axis == 0 else out)


def quantize_int4(w: np.ndarray, group: int, symmetric: bool, name: str = "weight",
                  importance: np.ndarray | None = None):
    """(q int8 [N, K] in [-8, 7], scale bf16 [N, K / group], zero int8 [N, K / group] or None).
    importance [K], when given, weights each input column's squared error in the scale search."""
    if group not in GROUP_SIZES:
        raise LlamaLocalError(f"group size {group} is not one of {', '.join(map(str, GROUP_SIZES))}")
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    if k % group:
        raise LlamaLocalError(f"tensor {name!r}: its input dimension {k} is not a multiple of the group size "
                              f"{group}; choose --group-size {' or '.join(str(g) for g in GROUP_SIZES if k % g == 0) or '(none fits)'}")
    g = w.reshape(n, k // group, group)
    imp = None if importance is None else np.asarray(importance, np.float32).reshape(1, k // group, group)
    q = np.empty(g.shape, dtype=np.int8)
    scale = np.empty(g.shape[:2], dtype=ml_dtypes.bfloat16)
    zero = None if symmetric else np.empty(g.shape[:2], dtype=np.int8)
    # Row blocks small enough to stay in cache through the search's passes (each candidate scale
    # is several whole-array operations), on a few threads: numpy lets go of the GIL inside them.
    rows = max(1, CHUNK_ELEMENTS // k)
    starts = range(0, n, rows)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1, len(starts))) as pool:
        list(pool.map(lambda r0: _quantize_rows(g, imp, symmetric, r0, r0 + rows, q, scale, zero), starts))
    return q.reshape(n, k), scale, zero


def _quantize_rows(g, imp, symmetric, r0, r1, q_out, scale_out, zero_out) -> None:
    """quantize_int4 of the row block g[r0:r1] into the outputs' rows r0:r1."""
    g = g[r0:r1]
    if symmetric:
        mag = np.abs(g)
        amax = mag.max(axis=2)
        biggest = np.take_along_axis(g, mag.argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
        del mag
        flip = np.where(biggest > 0, np.float32(-1), np.float32(1))
        # ... and compressed-tensors' own max/7.5, so that no group does worse than it would there.
        candidates = [amax / np.float32(8) * np.float32(f) * flip for f in SCALE_SEARCH] + [amax / np.float32(7.5)]
        lo = None
    else:
        lo = np.minimum(g.min(axis=2), 0)
        candidates = [(np.maximum(g.max(axis=2), 0) - lo) / np.float32(15)]
    best_err = np.full(g.shape[:2], np.inf, dtype=np.float32)
    best_scale = np.zeros(g.shape[:2], dtype=ml_dtypes.bfloat16)
    for cand in candidates:
        cand = np.where(cand == 0, np.float32(ZERO_SCALE), cand).astype(ml_dtypes.bfloat16)
        s = cand.astype(np.float32)[:, :, None]
        q, zero = _codes(g, s, lo)
        d2 = ((q - zero) * s - g) ** 2
        err = (d2 if imp is None else d2 * imp).sum(axis=2)
        better = err < best_err  # the first of equally good scales is kept
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, cand, best_scale)
    # The codes once more, for the chosen scales only.
    q_out[r0:r1], zero = _codes(g, best_scale.astype(np.float32)[:, :, None], lo)
    scale_out[r0:r1] = best_scale
    if zero_out is not None:
        zero_out[r0:r1] = zero[:, :, 0]


def _codes(g, s, lo):
    """The codes of groups g at scales s ([rows, groups, 1]) and their zero points: 0 when symmetric
    (lo None), else those that put each group's min(lo, 0) at code -8."""
    zero = 0 if lo is None else np.round(np.clip(-8 - lo[:, :, None] / s, -8, 7))
    return np.clip(np.round(g / s) + zero, -8, 7), zero


def weight_config(group: int, symmetric: bool, actorder: str | None = None) -> dict:
    """compressed-tensors' QuantizationArgs of these weights. actorder "weight" (GPTQ's columns
    taken in act order, groups fixed beforehand) describes how they were made; the layout is the
    same as without it (no g_idx)."""
    return {"num_bits": 4, "type": "int", "symmetric": symmetric, "strategy": "group", "group_size": group,
            "dynamic": False, "block_structure": None, "observer": "minmax", "actorder": actorder}
