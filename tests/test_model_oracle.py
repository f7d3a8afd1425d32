"""The forward pass against transformers' LlamaForCausalLM on tiny random models."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llama_local import LLM, _core  # noqa: E402
from tiny_models import make_tiny_llama, rounds_bf16_activations, torch_bf16_error  # noqa: E402

LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

# (name, model kwargs): GQA 1:1 to 8:1 and MQA, tied and untied heads, head_dim 64 and 128,
# Llama 3.1 RoPE scaling with an original context (64) far shorter than the prompts (~300).
CASES = [
    ("mha-1to1-hd64-untied", dict(num_attention_heads=4, num_key_value_heads=4, head_dim=64, hidden_size=256)),
    ("gqa-2to1-hd64-tied", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=64, hidden_size=256,
                                tie_word_embeddings=True)),
    ("gqa-4to1-llama31rope", dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                                  rope_scaling=LLAMA31_SCALING, rope_theta=500000.0)),
    ("gqa-8to1-hd128-llama31rope", dict(num_attention_heads=8, num_key_value_heads=1, head_dim=128,
                                        hidden_size=256, rope_scaling=LLAMA31_SCALING, rope_theta=500000.0)),
    ("gqa-8to1-hd64-tied", dict(num_attention_heads=16, num_key_value_heads=2, head_dim=64, hidden_size=256,
                                tie_word_embeddings=True)),
    ("mqa-hd128", dict(num_attention_heads=4, num_key_value_heads=1, head_dim=128, hidden_size=192)),
]


@pytest.mark.parametrize("factor, head_dim", [(8.0, 64), (32.0, 128)])
def test_llama3_rope_frequencies_match_transformers(factor, head_dim):
    # The table behind every scaled-RoPE case above, against transformers' own rope init.
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from llama_local.config import ModelConfig

    scaling = {**LLAMA31_SCALING, "factor": factor, "original_max_position_embeddings": 8192}
    cfg = LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim, rope_theta=500000.0,
                      rope_scaling=scaling, max_position_embeddings=131072)
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    got = ModelConfig.from_dict(cfg.to_dict()).inv_freq()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)  # torch's and numpy's float32 pow may differ by an ulp


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def tiny(request, tmp_path_factory):
    name, kwargs = request.param
    d = tmp_path_factory.mktemp(name)
    model = make_tiny_llama(d, **kwargs)
    return model, d


def test_logits_match_transformers(tiny):
    model, d = tiny
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, 300).tolist()
    ref = torch_logits(model, ids)
    llm = LLM(d, n_ctx=512, n_threads=2)
    got = llm.logits(ids)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert rel_err(got, ref) < 1e-3
    # Every position's argmax agrees too (the logits are not just close on average).
    assert (got.argmax(-1) == ref.argmax(-1)).mean() == 1.0


def test_incremental_decoding_matches_one_pass(tiny):
    model, d = tiny
    ids = np.random.default_rng(2).integers(0, model.config.vocab_size, 200).tolist()
    llm = LLM(d, n_ctx=512, n_threads=2, n_batch=64)  # n_batch < prompt: chunked prefill too
    full = llm.logits(ids)
    m = llm.model
    m.reset()
    steps = [m.forward(np.array(ids[:150], np.int32), start_pos=0)]
    steps += [m.forward(np.array([t], np.int32)) for t in ids[150:]]
    # step i's logits belong to position 149 + i
    for i, step in enumerate(steps):
        assert rel_err(step, full[149 + i]) < 1e-5


def test_greedy_continuation_matches_transformers(tiny):
    model, d = tiny
    prompt = np.random.default_rng(3).integers(0, model.config.vocab_size, 40).tolist()
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    llm = LLM(d, n_ctx=256, n_threads=2)
    got = [c.token_id for c in llm.generate(prompt, max_tokens=24, temperature=0, stop_token_ids=[])]
    assert got == ref


def test_bf16_checkpoint_matches_transformers_in_bf16_weights(tmp_path):
    # bf16 weights are widened exactly; the reference is the same bf16 weights computed in fp32.
    model = make_tiny_llama(tmp_path, dtype="bfloat16", num_attention_heads=4, num_key_value_heads=2)
    ids = np.random.default_rng(4).integers(0, 320, 100).tolist()
    ref = torch_logits(model, ids)  # make_tiny_llama returns the bf16-rounded weights as fp32
    llm = LLM(tmp_path, n_ctx=256)
    bound = 2 * torch_bf16_error(model, ids, ref) if rounds_bf16_activations(llm) else 1e-3
    assert rel_err(llm.logits(ids), ref) < bound


def test_transformers_4x_config_form_loads_the_same(tmp_path):
    # transformers 4.x wrote rope_theta at the top level and rope_scaling with "type";
    # 5.x writes rope_parameters. Both must give the same model.
    model = make_tiny_llama(tmp_path, rope_scaling=LLAMA31_SCALING, rope_theta=500000.0)
    ids = np.random.default_rng(5).integers(0, 320, 120).tolist()
    ref = torch_logits(model, ids)
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    params = cfg.pop("rope_parameters", None)
    if params is not None:
        cfg["rope_theta"] = params.pop("rope_theta")
        params["type"] = params.pop("rope_type")
        cfg["rope_scaling"] = params
        cfg_path.write_text(json.dumps(cfg))
    got = LLM(tmp_path, n_ctx=256).logits(ids)
    assert rel_err(got, ref) < 1e-3


@pytest.mark.parametrize("isa", _core.build_info()["isas_supported"])
def test_every_isa_runs_the_model(tmp_path, isa):
    model = make_tiny_llama(tmp_path, num_attention_heads=4, num_key_value_heads=2, dtype="bfloat16")
    ids = np.random.default_rng(6).integers(0, 320, 70).tolist()
    ref = torch_logits(model, ids)
    llm = LLM(tmp_path, n_ctx=128, isa=isa, n_threads=2)
    assert llm.model.isa == isa
    bound = 2 * torch_bf16_error(model, ids, ref) if rounds_bf16_activations(llm) else 1e-3
    assert rel_err(llm.logits(ids), ref) < bound
