"""A 20,480-token prompt through a tiny model with Llama 3.1's RoPE scaling: the logits past
position 16,384 against transformers', for every KV cache format."""

import numpy as np
import pytest

from llama_local import LLM
from tiny_models import make_tiny_llama

N = 20_480
LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}


@pytest.fixture(scope="module")
def long_case(tmp_path_factory):
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("long") / "tiny31"
    model = make_tiny_llama(path, rope_scaling=LLAMA31_ROPE, rope_theta=500000.0, max_position_embeddings=131072,
                            hidden_size=128, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                            num_hidden_layers=2)
    ids = np.random.default_rng(0).integers(0, 320, N)
    with torch.no_grad():
        ref = model(torch.tensor(ids[None])).logits[0, 16_384:].numpy()
    return path, ids, ref


@pytest.mark.parametrize("kv, want", [("f32", 0.99), ("f16", 0.99), ("bf16", 0.99), ("q8_0", 0.97)])
def test_logits_past_16k_match_transformers(long_case, kv, want):
    path, ids, ref = long_case
    llm = LLM(path, n_ctx=N, kv_cache=kv, progress=False)
    ours = llm.logits(ids.tolist())[16_384:]
    agree = (ours.argmax(-1) == ref.argmax(-1)).mean()
    assert agree >= want, agree
    # The values too, not only their order. Measured: f32 3e-6, f16 4e-4, bf16 3e-3, q8_0 8e-3 of the
    # logits' spread; the same model without its RoPE scaling is off by 6e-2 (and 98.9% top-1).
    assert np.abs(ours - ref).max() < 0.02 * ref.std()
