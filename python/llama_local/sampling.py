"""Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p, repetition
penalty, seeded. numpy on one logits row per step; the expensive part (a full sort of the
vocabulary) is avoided by growing a partial sort until it covers top_p."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Meta's Llama 3.1 defaults, used when a model's generation_config.json says nothing.
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.9
REPEAT_LAST_N = 64  # tokens the repetition penalty looks back over (llama.cpp's default)
CUTOFF = 20.0       # nats below the most likely token past which a token is never drawn


@dataclass
class SamplingParams:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    repeat_penalty: float = 1.0  # 1 = off
    seed: int | None = None

    def validate(self) -> "SamplingParams":
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repeat_penalty > 0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        return self


class Sampler:
    def __init__(self, params: SamplingParams):
        self.p = params.validate()
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, previous: Sequence[int] = ()) -> int:
        p = self.p
        x = logits
        if p.repeat_penalty != 1.0 and len(previous):
            x = apply_repeat_penalty(x, previous[-REPEAT_LAST_N:], p.repeat_penalty)
        if p.temperature == 0 or p.top_k == 1:
            return int(np.argmax(x))
        x = x / np.float32(p.temperature)
        # Only tokens within CUTOFF nats of the best can matter: each one below has probability
        # under e^-CUTOFF (2e-9) of the best's, all of them together under vocab * 2e-9.
        # Dropping them first keeps the per-token work on a few hundred candidates.
        ids = np.flatnonzero(x >= x.max() - CUTOFF)
        if p.top_k and p.top_k < ids.size:
            ids = ids[np.argpartition(-x[ids], p.top_k - 1)[:p.top_k]]
        z = x[ids]
        # exp in float32 (numpy vectorizes it; float64 exp is 20x slower), sums in float64.
        probs = np.exp(z - z.max()).astype(np.float64)
        probs /= probs.sum()
        if p.min_p > 0:
            keep = probs >= p.min_p * probs.max()
            ids, probs = ids[keep], probs[keep] / probs[keep].sum()
        if p.top_p < 1.0:
            ids, probs = _top_p(ids, probs, p.top_p)
        return int(ids[_draw(self.rng, probs)])


def apply_repeat_penalty(logits: np.ndarray, previous: Sequence[int], penalty: float) -> np.ndarray:
    """llama.cpp / CTRL penalty: a seen token's positive logit is divided, a negative one multiplied."""
    x = logits.copy()
    seen = np.unique(np.asarray(previous, dtype=np.int64))
    seen = seen[(seen >= 0) & (seen < x.size)]
    v = x[seen]
    x[seen] = np.where(v > 0, v / penalty, v * penalty)
    return x


def _top_p(ids: np.ndarray, probs: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    # Keep the smallest prefix of the sorted distribution whose mass reaches top_p (the token that
    # crosses the threshold included, as Meta and transformers do). Sort only as much as needed.
    m = min(256, probs.size)
    while True:
        part = np.argpartition(-probs, m - 1)[:m] if m < probs.size else np.arange(probs.size)
        order = part[np.argsort(-probs[part], kind="stable")]
        cum = np.cumsum(probs[order])
        if cum[-1] >= top_p or m == probs.size:
            n = min(int(np.searchsorted(cum, top_p)) + 1, order.size)
            order = order[:n]
            kept = probs[order]
            return ids[order], kept / kept.sum()
        m = min(m * 4, probs.size)


def _draw(rng: np.random.Generator, probs: np.ndarray) -> int:
    c = np.cumsum(probs)
    return min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), probs.size - 1)
