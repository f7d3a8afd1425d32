"""GPTQ (Frantar et al., 2022) for INT4 group-wise weights, calibrated by the engine itself.

The engine evaluates the calibration text and hands over each decoder layer's linear inputs
(Model.observe_inputs); their Gram matrices H = sum x^T x are the layer-wise Hessians of the
squared output error. Each weight is then quantized column by column: a column is rounded to its
group's grid and the rounding error, weighted by the inverse Hessian, is spread onto the columns
not yet quantized (blocks of 128 columns, with the updates to later blocks applied lazily, as the
reference implementation does). As llm-compressor's GPTQ with actorder "weight" (static groups):
- the group scales (and zero points) are fixed first, from the original weights, by
  round-to-nearest's search (quant/int4.py) with each column's squared error weighted by its input
  energy diag(H), as llama.cpp's importance matrix weights its quantizers' searches;
- the columns are then taken in act order, largest diag(H) first, so that the columns that matter
  most are rounded while the most columns remain to absorb their error.
The groups stay consecutive input columns, so the output is the same pack-quantized layout as
round-to-nearest's (no g_idx). On SmolLM2-135M (INT4 g32 symmetric, perplexity at ctx 128), with
the positive scales rounding used before, these two took GPTQ's cost from +13.7% to +8.7% on
tests/data/prose.txt, and from +17.3% to +8.5% on prose2.txt, where the plain column order had
gained nothing on rounding. With the signed scales (quant/int4.py), the README's table: +6.7% on
both texts, where rounding costs +12.9% and llama.cpp's Q4_0 +18.6%.

The Hessians come from one pass over the full-precision model (not re-collected after each layer
is quantized: on SmolLM2 that changed perplexity by under 1%).

Two departures from the reference, both for the outlier tokens Llama-family models have (measured
on SmolLM2-135M, INT4 g32 symmetric, prose perplexity at ctx 128; base 38.5, round-to-nearest 45.4):
- Massive activations. A few tokens (the first of a window above all) carry hidden-state
  components hundreds of times the others'; the plain Hessian is then mostly theirs, and GPTQ
  buys their error down with the typical tokens' (layer 28's down_proj: 20x the median token error
  on held-out text; the whole model 56.8, worse than rounding). Each token's input is therefore
  clipped to CLIP_NORM times the window's median token norm before it enters H.
- The attention sink. Every query of a window attends to its first position, so that token's K and
  V errors reach every later token: its q/k/v input is weighted by the window length.
With both, and DAMP 0.1 rather than AutoGPTQ's 0.01 (the calibration text is never the text the
model will see; more damping trusts it less), GPTQ in the plain column order gave 44.3 on the same
text where rounding gives 45.4.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import LlamaLocalError
from . import int4

DAMP = 0.1           # fraction of the mean Hessian diagonal added to it (AutoGPTQ's percdamp; see above)
CLIP_NORM = 3.0      # token inputs are clipped to this many times their window's median norm
BLOCK = 128          # columns per lazy-update block

# Which observed input feeds which projection (Model.observe_inputs' `which`).
INPUT_OF = {"self_attn.q_proj": 0, "self_attn.k_proj": 0, "self_attn.v_proj": 0, "self_attn.o_proj": 1,
            "mlp.gate_proj": 2, "mlp.up_proj": 2, "mlp.down_proj": 3}


def collect_hessians(llm, windows: list[list[int]], layers: range,
                     on_window: Callable[[int, int], None] | None = None) -> dict[tuple[int, int], np.ndarray]:
    """{(layer, which): sum of x^T x over every calibration token} (float64, [K, K]) for `layers`
    (one pass of the engine over the windows)."""
    hessians: dict[tuple[int, int], np.ndarray] = {}

    def observe(layer: int, which: int, x: np.ndarray) -> None:
        if layer not in layers:
            return
        x = token_weighted(x, sink=which == 0)
        g = (x.T @ x).astype(np.float64)  # float32 BLAS per window, summed in float64
        key = (layer, which)
        if key in hessians:
            hessians[key] += g
        else:
            hessians[key] = g

    for i, w in enumerate(windows):
        llm.model.observe_inputs(np.asarray(w, dtype=np.int32), observe)
        if on_window:
            on_window(i + 1, len(windows))
    llm.reset()  # the KV cache holds calibration tokens: nothing a generation could reuse
    return hessians


def token_weighted(x: np.ndarray, sink: bool) -> np.ndarray:
    """One window's inputs [T, K] as they enter the Hessian: each row clipped to CLIP_NORM times
    the median row norm, and with `sink` (attention inputs) the first row weighted by T."""
    norms = np.linalg.norm(x, axis=1)
    limit = CLIP_NORM * np.median(norms)
    factor = np.minimum(1.0, limit / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
    if sink:
        factor[0] *= np.float32(np.sqrt(len(x)))
    return x * factor[:, None]


def calibration_windows(llm, text: str, window: int, max_tokens: int) -> list[list[int]]:
    """The text's tokens (BOS first when the tokenizer adds one) cut into windows of `window`."""
    tok = llm.tokenizer
    ids = tok.encode(text, bos=bool(tok.add_bos_token and tok.bos_id is not None))[:max_tokens]
    if len(ids) < 16:
        raise LlamaLocalError(f"the calibration text is {len(ids)} tokens; GPTQ needs a few hundred at least")
    return [ids[i:i + window] for i in range(0, len(ids), window) if len(ids[i:i + window]) >= 2]


def gptq_int4(w: np.ndarray, hessian: np.ndarray, group: int, symmetric: bool, name: str = "weight"):
    """(q int8 [N, K] in [-8, 7], scale bf16 [N, K / group], zero int8 [N, K / group] or None)."""
    W = np.array(w, dtype=np.float64)
    n, k = W.shape
    if k % group:
        raise LlamaLocalError(f"tensor {name!r}: its input dimension {k} is not a multiple of the group size {group}")
    H = np.array(hessian, dtype=np.float64)
    dead = np.diag(H) == 0          # inputs that never varied: their columns do not matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    # Static groups: every group's scale (and zero) is fixed before any column moves, by the
    # round-to-nearest search with each column's error weighted by its input energy diag(H).
    _, sc, zp = int4.quantize_int4(W.astype(np.float32), group, symmetric, name, importance=np.diag(H))
    col_scale = np.repeat(sc.astype(np.float64), group, axis=1)
    col_zero = np.zeros((n, k)) if zp is None else np.repeat(zp.astype(np.float64), group, axis=1)
    # Act order: the columns with the most input energy are rounded first, while the most columns
    # are left to absorb their error.
    order = np.argsort(-np.diag(H), kind="stable")
    W, H = W[:, order], H[np.ix_(order, order)]
    col_scale, col_zero = col_scale[:, order], col_zero[:, order]
    H[np.diag_indices(k)] += DAMP * np.mean(np.diag(H))
    # The upper Cholesky factor of H^-1: row i holds how column i's error spreads onward.
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T
    q = np.zeros((n, k), dtype=np.int8)
    for b0 in range(0, k, BLOCK):
        b1 = min(b0 + BLOCK, k)
        W1 = W[:, b0:b1].copy()
        err = np.zeros_like(W1)
        for i in range(b1 - b0):
            col = b0 + i
            s, z, x = col_scale[:, col], col_zero[:, col], W1[:, i]
            code = np.clip(np.round(x / s) + z, -8, 7)
            q[:, order[col]] = code
            e = (x - (code - z) * s) / Hinv[col, col]
            W1[:, i:] -= np.outer(e, Hinv[col, col:b1])
            err[:, i] = e
        W[:, b1:] -= err @ Hinv[b0:b1, b1:]
    return q, sc, zp


class Hessians:
    """The Hessians of each layer, collected a few layers per engine pass so that they stay
    within `budget_bytes` (an 8B model's would take 64 GB at once), dropped once used."""

    def __init__(self, llm, windows: list[list[int]], budget_bytes: int = 2 * 2**30,
                 on_pass: Callable[[int, int], None] | None = None):
        c = llm.config
        per_layer = 8 * (2 * c.hidden_size ** 2 + (c.num_attention_heads * c.head_dim) ** 2
                         + c.intermediate_size ** 2)
        self.llm, self.windows, self.n_layers = llm, windows, c.num_hidden_layers
        self.step = max(1, min(self.n_layers, budget_bytes // per_layer))
        self.on_pass = on_pass
        self.held: dict[tuple[int, int], np.ndarray] = {}
        self.first = self.last = -1

    def get(self, layer: int, which: int) -> np.ndarray:
        if not self.first <= layer < self.last:
            self.held.clear()
            self.first, self.last = layer, min(layer + self.step, self.n_layers)
            self.held = collect_hessians(self.llm, self.windows, range(self.first, self.last))
            if self.on_pass:
                self.on_pass(self.last, self.n_layers)
        return self.held[(layer, which)]

