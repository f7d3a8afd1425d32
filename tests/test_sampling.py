"""The sampler against direct numpy computations of each rule."""

import numpy as np
import pytest

from llama_local.sampling import Sampler, SamplingParams, apply_repeat_penalty


def draw(logits, n=4000, **kw):
    s = Sampler(SamplingParams(**{"seed": 0, **kw}))
    return np.bincount([s(logits) for _ in range(n)], minlength=logits.size) / n


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    s = Sampler(SamplingParams(temperature=0))
    assert s(logits) == 1


def test_temperature_one_follows_softmax():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    freq = draw(logits, temperature=1.0, top_p=1.0)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.03)


def test_top_k_keeps_only_k():
    logits = np.array([1.0, 5.0, 4.0, 3.0, 2.0])
    freq = draw(logits, temperature=5.0, top_p=1.0, top_k=2)
    assert set(np.flatnonzero(freq)) == {1, 2}


def test_top_p_keeps_smallest_prefix_reaching_p():
    probs = np.array([0.05, 0.5, 0.3, 0.15])
    freq = draw(np.log(probs), temperature=1.0, top_p=0.7)
    # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: tokens 1 and 2 kept, renormalised
    assert set(np.flatnonzero(freq)) == {1, 2}
    np.testing.assert_allclose(freq[[1, 2]], [0.5 / 0.8, 0.3 / 0.8], atol=0.03)


def test_top_p_on_a_large_flat_vocabulary_needs_more_than_the_first_partial_sort():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 0.01, 50000)  # nearly flat: top_p 0.9 needs ~45000 tokens
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=1))
    picks = {s(logits) for _ in range(300)}
    assert len(picks) > 250


def test_min_p_drops_tokens_below_fraction_of_max():
    probs = np.array([0.6, 0.3, 0.07, 0.03])
    freq = draw(np.log(probs), temperature=1.0, top_p=1.0, min_p=0.1)
    assert set(np.flatnonzero(freq)) == {0, 1, 2}


def test_repeat_penalty_rule():
    x = np.array([2.0, -2.0, 1.0], np.float32)
    y = apply_repeat_penalty(x, [0, 1, 0], 2.0)
    np.testing.assert_array_equal(y, [1.0, -4.0, 1.0])
    np.testing.assert_array_equal(x, [2.0, -2.0, 1.0])  # input untouched


def test_seed_reproduces():
    logits = np.random.default_rng(1).normal(size=1000)
    a = Sampler(SamplingParams(temperature=1.0, seed=42))
    b = Sampler(SamplingParams(temperature=1.0, seed=42))
    assert [a(logits) for _ in range(20)] == [b(logits) for _ in range(20)]


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0), dict(top_k=-1),
                                 dict(min_p=2), dict(repeat_penalty=0)])
def test_invalid_parameters(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad).validate()
