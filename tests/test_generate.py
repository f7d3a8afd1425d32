"""generate(): streaming chunks, stop tokens, stop strings, max_tokens, early close, prefix reuse."""

import numpy as np
import pytest

from llama_local import LLM, LlamaLocalError
from tiny_models import make_tiny_llama

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    make_tiny_llama(d, num_attention_heads=4, num_key_value_heads=2)
    return LLM(d, n_ctx=128, n_threads=2)


PROMPT = [3, 14, 15, 92, 65, 35]


def greedy(llm, n=12, **kw):
    return list(llm.generate(PROMPT, max_tokens=n, temperature=0, stop_token_ids=[], **kw))


def test_one_chunk_per_token_and_length_finish(llm):
    chunks = greedy(llm)
    assert len(chunks) == 12
    assert [c.finish_reason for c in chunks] == [None] * 11 + ["length"]
    assert "".join(c.text for c in chunks).split() == [f"t{c.token_id}" for c in chunks]


def test_stop_token_ends_with_an_empty_chunk_carrying_its_id(llm):
    ids = [c.token_id for c in greedy(llm)]
    stop = ids[4]
    first = ids.index(stop)
    chunks = list(llm.generate(PROMPT, max_tokens=12, temperature=0, stop_token_ids=[stop]))
    assert len(chunks) == first + 1
    assert chunks[-1].token_id == stop and chunks[-1].text == "" and chunks[-1].finish_reason == "stop"


def test_stop_string_is_not_emitted(llm):
    chunks = greedy(llm)
    words = [f"t{c.token_id}" for c in chunks]
    target = words[5]
    stopped = list(llm.generate(PROMPT, max_tokens=12, temperature=0, stop_token_ids=[], stop=[target]))
    text = "".join(c.text for c in stopped)
    assert target not in text
    assert stopped[-1].finish_reason == "stop"
    assert text.split() == words[: words.index(target)]


def test_closing_early_leaves_the_model_usable(llm):
    ref = [c.token_id for c in greedy(llm)]
    gen = llm.generate(PROMPT, max_tokens=12, temperature=0, stop_token_ids=[])
    next(gen), next(gen)
    gen.close()
    assert [c.token_id for c in greedy(llm)] == ref
    assert llm.logits(PROMPT).shape == (len(PROMPT), 320)


def test_newer_generate_supersedes_older(llm):
    old = llm.generate(PROMPT, max_tokens=5, temperature=0)
    next(old)
    new = llm.generate(PROMPT, max_tokens=5, temperature=0)
    next(new)
    with pytest.raises(LlamaLocalError, match="superseded"):
        next(old)


def test_prefix_reuse_gives_the_same_logits_as_a_fresh_pass(llm):
    full = llm.logits(PROMPT + [7, 8, 9])
    list(llm.generate(PROMPT, max_tokens=3, temperature=0, stop_token_ids=[]))
    cached = llm.model.n_past
    out = llm._eval(PROMPT + [7, 8, 9])  # shares PROMPT with the cache: only 3 tokens evaluated
    assert cached >= len(PROMPT)
    np.testing.assert_allclose(out, full[-1], rtol=1e-5, atol=1e-5)


def test_seeded_sampling_is_reproducible(llm):
    a = [c.token_id for c in llm.generate(PROMPT, max_tokens=8, temperature=1.0, seed=7, stop_token_ids=[])]
    b = [c.token_id for c in llm.generate(PROMPT, max_tokens=8, temperature=1.0, seed=7, stop_token_ids=[])]
    assert a == b


def test_max_tokens_is_clipped_to_the_context(llm):
    prompt = list(range(120))
    chunks = list(llm.generate(prompt, max_tokens=50, temperature=0, stop_token_ids=[]))
    assert len(chunks) == 8 and chunks[-1].finish_reason == "length"
