"""Perplexity over a text, computed as llama.cpp's `llama-perplexity` computes it (its default mode).

METHOD (what `llama-local perplexity --help` states):
  1. The whole text is tokenized once, with the model's BOS token in front when its tokenizer adds
     one; special-token text in the file is plain text.
  2. The tokens are cut into floor(n / ctx) chunks of ctx tokens (the remainder is not scored); at
     least 2 chunks are needed. Each chunk is evaluated alone, from an empty KV cache, with its first
     token replaced by BOS when the tokenizer adds one.
  3. Only the second half of each chunk is scored, so that every scored token has at least ctx/2
     tokens of context: the logits at positions ctx/2 .. ctx-2 against the tokens that follow them,
     ctx - 1 - ctx/2 tokens per chunk.
  4. PPL = exp(mean NLL) over every scored token; its error is PPL * sqrt(var(NLL) / (count - 1)),
     with var the population variance of the per-token NLLs ("PPL = X +/- Y").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import LlamaLocalError


@dataclass
class PerplexityResult:
    ppl: float
    error: float                  # one standard error of the PPL estimate
    ctx: int
    chunks: int
    scored_tokens: int
    text_tokens: int
    chunk_ppl: list[float] = field(default_factory=list)  # running PPL after each chunk
    nll: np.ndarray | None = None  # per scored token, float64

    def as_dict(self) -> dict:
        return {"ppl": self.ppl, "error": self.error, "ctx": self.ctx, "chunks": self.chunks,
                "scored_tokens": self.scored_tokens, "text_tokens": self.text_tokens,
                "chunk_ppl": self.chunk_ppl}


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] for each row, in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return log_z - x[np.arange(len(targets)), targets]


def perplexity(llm, text: str, ctx: int = 512, max_chunks: int | None = None,
               on_chunk: Callable[[int, int, float], None] | None = None) -> PerplexityResult:
    """Perplexity of `llm` on `text` by the method in this module's docstring.
    on_chunk(done, total, running_ppl) is called after each chunk."""
    if not isinstance(ctx, int) or ctx < 4:
        raise ValueError(f"ctx must be an integer of at least 4, got {ctx!r}")
    if ctx > llm.n_ctx:
        raise ValueError(f"ctx {ctx} is larger than the model's context (n_ctx={llm.n_ctx})")
    tok = llm.tokenizer
    add_bos = bool(tok.add_bos_token and tok.bos_id is not None)
    tokens = np.asarray(tok.encode(text, bos=add_bos), dtype=np.int64)
    if len(tokens) < 2 * ctx:
        raise LlamaLocalError(f"the text is {len(tokens)} tokens; perplexity with a context of {ctx} "
                              f"needs at least {2 * ctx} (two chunks): give a longer text or a smaller --ctx")
    n_chunks = len(tokens) // ctx
    if max_chunks is not None:
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be positive, got {max_chunks}")
        n_chunks = min(n_chunks, max_chunks)
    first = ctx // 2
    nlls: list[np.ndarray] = []
    running: list[float] = []
    for c in range(n_chunks):
        window = tokens[c * ctx:(c + 1) * ctx].copy()
        if add_bos:
            window[0] = tok.bos_id
        logits = llm.logits(window.tolist())  # a fresh context: the KV cache starts empty
        nlls.append(token_nll(logits[first:ctx - 1], window[first + 1:]))
        all_nll = np.concatenate(nlls)
        running.append(math.exp(all_nll.mean()))
        if on_chunk:
            on_chunk(c + 1, n_chunks, running[-1])
    nll = np.concatenate(nlls)
    mean = nll.mean()
    var = (nll * nll).mean() - mean * mean
    ppl = math.exp(mean)
    error = ppl * math.sqrt(var / (len(nll) - 1)) if var > 0 else 0.0
    return PerplexityResult(ppl=ppl, error=error, ctx=ctx, chunks=n_chunks, scored_tokens=len(nll),
                            text_tokens=len(tokens), chunk_ppl=running, nll=nll)
