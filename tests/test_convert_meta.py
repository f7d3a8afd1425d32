"""Meta original/ → HF conversion, checked against Meta's own forward pass on the original weights.

The tests write tiny checkpoints in Meta's layout with torch (tiny_models.write_meta_dir:
params.json, consolidated.NN.pth, the real tokenizer.model). transformers' LlamaForCausalLM on the converted directory must give
the logits of a pure-torch copy of Meta's reference model (llama_models/llama3/model.py:
interleaved complex RoPE with apply_scaling) on the unconverted weights — which holds only if
the q/k rows were permuted right and the shards were put back together along the right axes.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from tiny_models import meta_weights, rounds_bf16_activations, write_meta_dir

from llama_local.formats.meta_original import convert_meta_original, ffn_hidden_dim
from llama_local.errors import ModelFormatError

torch = pytest.importorskip("torch", reason="torch is needed to write Meta-layout checkpoints")
transformers = pytest.importorskip("transformers", reason="transformers is the reference loader")
from llama3_reference import TOKENIZER_MODEL  # noqa: E402

PARAMS = {
    "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 128256, "multiple_of": 32,
    "ffn_dim_multiplier": 1.3, "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True,
}


# --- Meta's reference forward (llama_models/llama3/model.py), single device, no KV cache ---------

def apply_scaling(freqs):
    scale_factor, low_freq_factor, high_freq_factor, old_context_len = 8, 1, 4, 8192
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * torch.pi / freqs
    new_freqs = torch.where(wavelen > low_freq_wavelen, freqs / scale_factor, freqs)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    return torch.where((wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen),
                       (1 - smooth) * new_freqs / scale_factor + smooth * new_freqs, new_freqs)


def meta_forward(weights, params, tokens, dtype=torch.float32):
    """Meta's Llama 3.1 forward pass; dtype=torch.bfloat16 runs its matmuls in bf16 (inputs and
    outputs rounded), as the framework would on bf16 hardware paths."""
    w = {k: v.float() for k, v in weights.items()}
    d, nh, nkv = params["dim"], params["n_heads"], params["n_kv_heads"]
    hd, seq = d // nh, tokens.shape[1]
    freqs = 1.0 / (params["rope_theta"] ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    if params["use_scaled_rope"]:
        freqs = apply_scaling(freqs)
    freqs_cis = torch.polar(torch.ones(seq, hd // 2), torch.outer(torch.arange(seq).float(), freqs))

    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + params["norm_eps"]) * weight

    def mm(x, weight):
        return (x.to(dtype) @ weight.T.to(dtype)).float()

    def rope(x):  # interleaved pairs as complex numbers
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)

    h = w["tok_embeddings.weight"][tokens]
    mask = torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        x = norm(h, w[p + "attention_norm.weight"])
        q = (mm(x, w[p + "attention.wq.weight"])).view(1, seq, nh, hd)
        k = (mm(x, w[p + "attention.wk.weight"])).view(1, seq, nkv, hd)
        v = (mm(x, w[p + "attention.wv.weight"])).view(1, seq, nkv, hd)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(nh // nkv, dim=2), v.repeat_interleave(nh // nkv, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + mask, dim=-1)
        h = h + mm((att @ v).transpose(1, 2).reshape(1, seq, -1), w[p + "attention.wo.weight"])
        x = norm(h, w[p + "ffn_norm.weight"])
        ff = torch.nn.functional.silu(mm(x, w[p + "feed_forward.w1.weight"])) * mm(x, w[p + "feed_forward.w3.weight"])
        h = h + mm(ff, w[p + "feed_forward.w2.weight"])
    return mm(norm(h, w["norm.weight"]), w["output.weight"])


@pytest.fixture(scope="module")
def weights():
    return meta_weights(PARAMS)


@pytest.fixture(scope="module")
def converted(weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    src = write_meta_dir(root / "Llama3.1-tiny-Instruct" / "original", weights, PARAMS, n_shards=2)
    return convert_meta_original(src, root / "hf", progress=False)


def test_logits_equal_meta_reference(weights, converted):
    model = transformers.LlamaForCausalLM.from_pretrained(converted, dtype=torch.float32)
    tokens = torch.tensor([[128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13, 1226]])
    with torch.no_grad():
        ours = model(tokens).logits
        ref = meta_forward(weights, PARAMS, tokens)
    err = (ours - ref).abs().max().item()
    assert err < 1e-4 * ref.abs().max().item(), err
    # The check has teeth: with Meta's unpermuted q/k rows put back, the logits no longer match.
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight.copy_(weights["layers.0.attention.wq.weight"].float())
        attn.k_proj.weight.copy_(weights["layers.0.attention.wk.weight"].float())
        unpermuted = model(tokens).logits
    assert (unpermuted - ref).abs().max().item() > 100 * max(err, 1e-6)


def test_config_and_files(converted):
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["intermediate_size"] == ffn_hidden_dim(64, 32, 1.3) == 224
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert (cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]) == (2, 16, 1e-5)
    gen = json.loads((converted / "generation_config.json").read_text())
    assert gen["temperature"] == 0.6 and gen["top_p"] == 0.9 and gen["eos_token_id"] == [128001, 128008, 128009]
    from llama_local.formats.safetensors_io import SafetensorsFile

    st = SafetensorsFile(converted / "model.safetensors")
    assert str(st.info("model.layers.1.self_attn.k_proj.weight")[0]) == "bfloat16"
    assert len(st.keys()) == 2 * 9 + 3


def test_tokenizer_files(converted):
    from llama3_reference import meta_tokenizer
    from llama_local.tokenizer import Tokenizer

    text = "Hello, wörld! <|eot_id|>"
    ours = Tokenizer.load(converted)
    assert ours.encode(text, bos=True) == meta_tokenizer().encode(text, bos=True, eos=False)
    assert ours.add_bos_token and ours.eos_token_ids == frozenset({128001, 128008, 128009})
    # transformers reads the same files: BOS from the post-processor, special tokens recognized.
    hf = transformers.AutoTokenizer.from_pretrained(converted)
    assert hf(text)["input_ids"] == meta_tokenizer().encode(text, bos=True, eos=False, allowed_special="all")


def test_single_shard_and_llama2_embedding_layout_agree(weights, converted, tmp_path):
    from llama_local.formats.safetensors_io import SafetensorsFile

    one = convert_meta_original(write_meta_dir(tmp_path / "one", weights, PARAMS), tmp_path / "one_hf", progress=False)
    split_dim1 = write_meta_dir(tmp_path / "l2", weights, PARAMS, n_shards=2, embedding_axis=1)
    l2 = convert_meta_original(split_dim1, tmp_path / "l2_hf", progress=False)
    ref = SafetensorsFile(converted / "model.safetensors")
    for other in (SafetensorsFile(one / "model.safetensors"), SafetensorsFile(l2 / "model.safetensors")):
        for name in ref.keys():
            np.testing.assert_array_equal(other.tensor(name).view(np.uint16), ref.tensor(name).view(np.uint16),
                                          err_msg=name)


def test_clear_errors(weights, tmp_path, converted):
    src = write_meta_dir(tmp_path / "src", weights, PARAMS)
    with pytest.raises(FileExistsError):
        convert_meta_original(src, converted, progress=False)
    (src / "tokenizer.model").unlink()
    with pytest.raises(ModelFormatError, match="tokenizer.model"):
        convert_meta_original(src, tmp_path / "out", progress=False)
    shutil.copy(TOKENIZER_MODEL, src / "tokenizer.model")
    (src / "consolidated.00.pth").rename(tmp_path / "moved.pth")
    with pytest.raises(ModelFormatError, match="consolidated"):
        convert_meta_original(src, tmp_path / "out", progress=False)
    data = (tmp_path / "moved.pth").read_bytes()
    (src / "consolidated.00.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFormatError, match="consolidated.00.pth"):
        convert_meta_original(src, tmp_path / "out", progress=False)
    (src / "params.json").unlink()
    with pytest.raises(ModelFormatError, match="params.json"):
        convert_meta_original(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_is_reported(weights, tmp_path):
    src = write_meta_dir(tmp_path / "src", weights, {**PARAMS, "multiple_of": 64})  # ffn 256, weights have 224
    with pytest.raises(ModelFormatError, match="feed_forward.w1.weight"):
        convert_meta_original(src, tmp_path / "out", progress=False)


def test_llm_loads_the_original_directory_directly(weights, converted, tmp_path, monkeypatch):
    # LLM(original/) converts once into the cache and runs our engine on it: Meta's logits again.
    from llama_local import LLM

    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path / "cache"))
    src = write_meta_dir(tmp_path / "Llama3.1-tiny" / "original", weights, PARAMS, n_shards=2)
    tokens = [128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13, 1226]
    llm = LLM(src.parent, n_ctx=64)  # the model directory whose original/ holds the checkpoint
    with torch.no_grad():
        ref = meta_forward(weights, PARAMS, torch.tensor([tokens]))[0].numpy()
    got = llm.logits(tokens)
    bound = 1e-3 * np.abs(ref).max()
    if rounds_bf16_activations(llm):  # at most twice Meta's own forward pass in bf16
        with torch.no_grad():
            ref_bf16 = meta_forward(weights, PARAMS, torch.tensor([tokens]), dtype=torch.bfloat16)[0].numpy()
        bound = max(bound, 2 * np.abs(ref_bf16 - ref).max())
    assert np.abs(got - ref).max() < bound
    assert llm.tokenizer.is_llama3 and 128009 in llm.tokenizer.eos_token_ids
    assert LLM(src, n_ctx=64).path == llm.path  # the same cached conversion, not a second one


def test_cli_convert_writes_the_same_directory(weights, converted, tmp_path):
    import subprocess
    import sys

    src = write_meta_dir(tmp_path / "m" / "original", weights, PARAMS, n_shards=2)
    out = subprocess.run([sys.executable, "-m", "llama_local.cli", "convert", str(src), str(tmp_path / "hf")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "hf" / "config.json").read_text()) == json.loads(
        (converted / "config.json").read_text())
    again = subprocess.run([sys.executable, "-m", "llama_local.cli", "convert", str(src), str(tmp_path / "hf")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr
