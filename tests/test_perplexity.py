"""`llama-local perplexity`: llama.cpp's method, held against transformers computing the same windows."""

import copy
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llama_local import LLM, LlamaLocalError
from llama_local.evaluate.perplexity import perplexity

PROSE = Path(__file__).parent / "data" / "prose.txt"
CTX = 128


@pytest.fixture(scope="module")
def llm(smollm2_gguf):
    return LLM(smollm2_gguf, n_ctx=256, progress=False)


def reference_ppl(model, hf_tok, text: str, ctx: int, add_bos: bool, bos_id: int) -> tuple[float, int]:
    """llama.cpp's perplexity() (tools/perplexity/perplexity.cpp), restated with transformers in fp32."""
    import torch
    tokens = ([bos_id] if add_bos else []) + hf_tok(text, add_special_tokens=False)["input_ids"]
    first, nll = ctx // 2, []
    for c in range(len(tokens) // ctx):
        window = tokens[c * ctx:(c + 1) * ctx]
        if add_bos:
            window[0] = bos_id
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([window])).logits[0].double(), dim=-1)
        nll += [-float(logp[j, window[j + 1]]) for j in range(first, ctx - 1)]
    return math.exp(sum(nll) / len(nll)), len(tokens)


def test_matches_transformers_on_the_same_windows(llm, smollm2_hf_model, smollm2_hf_tokenizer):
    text = PROSE.read_text()
    ours = perplexity(llm, text, ctx=CTX)
    ref, n_tokens = reference_ppl(smollm2_hf_model, smollm2_hf_tokenizer, text, CTX,
                                  llm.tokenizer.add_bos_token, llm.tokenizer.bos_id)
    assert ours.text_tokens == n_tokens
    assert ours.chunks == n_tokens // CTX and ours.scored_tokens == ours.chunks * (CTX - 1 - CTX // 2)
    # Same weights (transformers dequantizes the same GGUF); the bar against llama.cpp is 1%.
    assert abs(ours.ppl / ref - 1) < 0.01, (ours.ppl, ref)


def test_the_error_is_the_standard_error_of_the_mean_nll(llm):
    r = perplexity(llm, PROSE.read_text(), ctx=CTX)
    nll = r.nll
    assert len(nll) == r.scored_tokens and math.isclose(r.ppl, math.exp(nll.mean()), rel_tol=1e-12)
    assert math.isclose(r.error, r.ppl * np.std(nll) / math.sqrt(len(nll) - 1), rel_tol=1e-9)
    assert r.chunk_ppl[-1] == pytest.approx(r.ppl) and len(r.chunk_ppl) == r.chunks


def test_each_chunk_starts_from_bos_when_the_tokenizer_adds_one(llm):
    class Spy:
        """The real engine, with a tokenizer that adds BOS, recording every window it evaluates."""
        def __init__(self, inner):
            self.inner, self.n_ctx, self.windows = inner, inner.n_ctx, []
            self.tokenizer = copy.copy(inner.tokenizer)
            self.tokenizer.add_bos_token = True

        def logits(self, ids):
            self.windows.append(list(ids))
            return self.inner.logits(ids)

    spy = Spy(llm)
    text = PROSE.read_text()
    r = perplexity(spy, text, ctx=CTX, max_chunks=3)
    plain = llm.tokenizer.encode(text)
    assert r.chunks == 3 and len(spy.windows) == 3
    bos = llm.tokenizer.bos_id
    for c, w in enumerate(spy.windows):
        assert w[0] == bos
        # The rest of the window is the text's tokens, offset by the BOS in front of the text.
        assert w[1:] == plain[c * CTX:(c + 1) * CTX - 1]


def test_too_short_a_text_is_refused_naming_the_sizes(llm):
    with pytest.raises(LlamaLocalError, match=r"needs at least 256 \(two chunks\)"):
        perplexity(llm, "A short text.", ctx=CTX)
    with pytest.raises(ValueError, match="larger than the model's context"):
        perplexity(llm, PROSE.read_text(), ctx=1024)


def test_the_command(smollm2_gguf, tmp_path):
    out = subprocess.run([sys.executable, "-m", "llama_local.cli", "perplexity", str(smollm2_gguf), "--file",
                          str(PROSE), "--ctx", "128", "--chunks", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "2 chunks of 128 tokens, 126 tokens scored" in out.stdout
    ppl, err = map(float, out.stdout.split("PPL = ")[1].split(" +/- "))
    assert 1 < ppl < 1000 and 0 < err < ppl
    missing = subprocess.run([sys.executable, "-m", "llama_local.cli", "perplexity", str(smollm2_gguf), "--file",
                              str(tmp_path / "none.txt")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "none.txt: no such file" in missing.stderr
