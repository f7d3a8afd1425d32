"""A real model end to end: SmolLM2-135M-Instruct (Q4_1 GGUF, converted to bf16) against transformers
loading the same GGUF in float32.

Our weights are the GGUF's dequantized values rounded to bf16, so logits differ from the reference
by that rounding and by summation order; the bars (top-1 agreement, perplexity within 1%) are far
above what a wrong RoPE layout, a wrong norm or a wrong tokenizer would reach.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("llama_local._core", reason="the compiled core is not built")
torch = pytest.importorskip("torch")

import llama_local  # noqa: E402

# Written for this test, so that it is not text the model may have memorized.
PARAGRAPH = (
    "The lighthouse keeper on Marrow Point kept two logbooks. The first was the official one, with its "
    "columns for wind direction, barometric pressure and the hours the lamp burned, and he filled it in "
    "every evening with the care of a man who expected an inspector to arrive at any moment. The second "
    "was a cheap school notebook with a green cover, and in it he wrote down everything the official "
    "book had no column for: the morning a seal slept for three hours on the landing stage, the week the "
    "fog did not lift and he began talking to the radio, the letter from his sister that arrived soaked "
    "and unreadable, so that he had to guess at its news for a month. When the lighthouse was automated, "
    "the authorities collected the first logbook and shipped it to an archive on the mainland, where it "
    "was catalogued, boxed and never opened again. The green notebook he kept. Years later, living in a "
    "small flat above a bakery in town, he would take it out on winter evenings and read a page or two, "
    "not because he had forgotten what was in it, but because the handwriting reminded him of how "
    "patient he had once been. His neighbours assumed he missed the sea. What he actually missed, he "
    "told the baker once, was having a reason to notice things, a job that consisted mostly of paying "
    "attention. The baker, who got up at four every morning to knead dough in the dark, said that "
    "sounded like her job too, and the two of them laughed about it, and after that she saved him the "
    "burnt rolls that nobody else wanted."
)
PROMPT = "The three primary colors are"
GEN_TOKENS = 20


@pytest.fixture(scope="module")
def llm(smollm2_dir):
    return llama_local.LLM(smollm2_dir, n_ctx=2048, progress=False)


@pytest.fixture(scope="module")
def reference(smollm2_hf_tokenizer, smollm2_hf_model):
    """transformers on the same GGUF, float32: the paragraph's ids and logits, and a greedy generation."""
    tok, model = smollm2_hf_tokenizer, smollm2_hf_model
    ids = tok(PARAGRAPH)["input_ids"]
    prompt_ids = tok(PROMPT)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=GEN_TOKENS, do_sample=False,
                             min_new_tokens=GEN_TOKENS, output_scores=True, return_dict_in_generate=True,
                             pad_token_id=tok.pad_token_id)
    generated = out.sequences[0, len(prompt_ids):].tolist()
    return {"ids": ids, "logits": logits, "prompt_ids": prompt_ids, "generated": generated,
            "scores": [s[0].numpy() for s in out.scores]}


def _nll(logits: np.ndarray, ids: list[int]) -> float:
    """Mean negative log-likelihood of ids[1:] under logits[:-1] (float64 log-softmax)."""
    x = logits[:-1].astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean())


def test_logits_track_transformers(llm, reference):
    ids = reference["ids"]
    assert llm.tokenizer.encode(PARAGRAPH) == ids
    assert len(ids) >= 300
    ours = llm.logits(ids)
    ref = reference["logits"]
    assert ours.shape == ref.shape == (len(ids), 49152) and ours.dtype == np.float32
    agree = float((ours.argmax(axis=1) == ref.argmax(axis=1)).mean())
    assert agree >= 0.98, f"top-1 agreement {agree:.3f}"
    ppl, ref_ppl = math.exp(_nll(ours, ids)), math.exp(_nll(ref, ids))
    assert abs(ppl / ref_ppl - 1) < 0.01, f"perplexity {ppl:.3f} vs transformers {ref_ppl:.3f}"
    # A sanity floor: the model must actually predict this English text (a broken one sits near 49152).
    assert ref_ppl < 200


def test_chat_knows_the_capital_of_france(llm):
    reply = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                     temperature=0, max_tokens=40)
    assert reply["object"] == "chat.completion"
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"], choice["message"]["content"]
    assert choice["finish_reason"] == "stop"  # it ends its turn with <|im_end|> well before 40 tokens


def test_greedy_generation_matches_transformers(llm, reference):
    assert llm.tokenizer.encode(PROMPT) == reference["prompt_ids"]
    chunks = list(llm.generate(PROMPT, max_tokens=GEN_TOKENS, temperature=0, stop_token_ids=[]))
    ours = [c.token_id for c in chunks]
    want = reference["generated"]
    assert len(ours) == GEN_TOKENS and chunks[-1].finish_reason == "length"
    assert "".join(c.text for c in chunks) == llm.tokenizer.decode(ours)
    if ours != want:
        # Report where and how close the reference's own choice was, so a near-tie is recognisable.
        i = next(k for k, (a, b) in enumerate(zip(ours, want)) if a != b)
        s = reference["scores"][i]
        pytest.fail(f"greedy tokens diverge at generated position {i}: ours {ours[i]} vs transformers "
                    f"{want[i]}; transformers' logit gap between them {s[want[i]] - s[ours[i]]:.4f}")


def test_gguf_path_loads_through_the_cache(smollm2_gguf, llm, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path))
    direct = llama_local.LLM(smollm2_gguf, n_ctx=256, progress=False)
    assert direct.path.parent == tmp_path / "gguf"
    ids = llm.tokenizer.encode("Bonjour, je m'appelle Marie et j'habite à Lyon.")
    np.testing.assert_array_equal(direct.logits(ids), llm.logits(ids))
