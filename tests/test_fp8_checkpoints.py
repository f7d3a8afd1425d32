"""FP8 checkpoints people download: Meta's fbgemm_fp8 release and compressed-tensors float-quantized.

Each test writes a tiny model in the format's byte layout (float8_e4m3fn weights, a weight_scale of
the scheme's shape and dtype, quantization_config as the producer writes it) and holds llama_local's
logits against transformers running the same model with every weight dequantized (code * scale).
"""

import json
import shutil

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llama_local import LLM, ModelFormatError  # noqa: E402
from llama_local.formats.safetensors_io import write_safetensors  # noqa: E402
from tiny_models import drop_tensor, make_tiny_llama, rounds_bf16_activations, torch_bf16_error  # noqa: E402

E4M3_MAX = 448.0
FBGEMM = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0, "modules_to_not_convert": ["lm_head"]}


def compressed_tensors_config(strategy: str, **extra) -> dict:
    return {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
            "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"],
                                          "weights": {"num_bits": 8, "type": "float", "strategy": strategy,
                                                      "symmetric": True, "dynamic": False, **extra},
                                          "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                                                "dynamic": True, "symmetric": True}}}}


def quantize(w: np.ndarray, scheme: str):
    """(codes, stored scale, the fp32 scale of each weight element) for one [N, K] weight."""
    n, k = w.shape
    if scheme in ("fbgemm", "channel"):
        amax = np.abs(w).max(axis=1, keepdims=True)
        dtype = np.float32 if scheme == "fbgemm" else ml_dtypes.bfloat16
        stored = (amax / E4M3_MAX).astype(dtype)
        full = np.broadcast_to(stored.astype(np.float32), w.shape)
    elif scheme == "tensor":
        stored = np.array([np.abs(w).max() / E4M3_MAX], dtype=np.float16)
        full = np.full(w.shape, stored.astype(np.float32)[0])
    elif scheme == "block":
        bn = bk = 48  # divides neither tiny dimension: tail blocks on both axes
        gn, gk = -(-n // bn), -(-k // bk)
        stored = np.zeros((gn, gk), np.float32)
        for i in range(gn):
            for j in range(gk):
                stored[i, j] = np.abs(w[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk]).max() / E4M3_MAX
        full = np.repeat(np.repeat(stored, bn, axis=0), bk, axis=1)[:n, :k]
    else:  # group of 32 along K
        g = 32
        stored = (np.abs(w.reshape(n, k // g, g)).max(axis=2) / E4M3_MAX).astype(np.float32)
        full = np.repeat(stored, g, axis=1)
    codes = (w / full).astype(ml_dtypes.float8_e4m3fn)
    return codes, stored, full


SCHEMES = {
    "fbgemm": FBGEMM,
    "channel": compressed_tensors_config("channel"),
    "tensor": compressed_tensors_config("tensor"),
    "block": compressed_tensors_config("block", block_structure=[48, 48]),
    "group": compressed_tensors_config("group", group_size=32),
}


def write_fp8_model(src, dst, model, scheme: str):
    """The tiny model at `src` rewritten as an FP8 checkpoint at `dst`; returns the reference model
    (transformers, fp32) holding the dequantized weights."""
    dst.mkdir()
    shutil.copy(src / "tokenizer.json", dst / "tokenizer.json")
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = SCHEMES[scheme]
    (dst / "config.json").write_text(json.dumps(cfg))
    tensors, ref_state = {}, {}
    for name, p in model.state_dict().items():
        w = p.detach().numpy().astype(np.float32)
        if name.endswith("proj.weight"):
            codes, stored, full = quantize(w, scheme)
            tensors[name] = codes
            tensors[name[: -len("weight")] + "weight_scale"] = stored
            if scheme != "fbgemm":
                tensors[name[: -len("weight")] + "input_scale"] = np.ones(1, np.float32)  # ignored on the CPU
            ref_state[name] = torch.from_numpy(codes.astype(np.float32) * full)
        else:
            tensors[name] = w
    write_safetensors(dst / "model.safetensors", tensors)
    import copy
    ref = copy.deepcopy(model)
    ref.load_state_dict(ref_state, strict=False)
    return ref.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp8-src")
    model = make_tiny_llama(d, num_attention_heads=4, num_key_value_heads=2, head_dim=32, hidden_size=128)
    return d, model


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_fp8_checkpoint_matches_its_dequantized_weights(tiny, tmp_path, scheme):
    src, model = tiny
    ref_model = write_fp8_model(src, tmp_path / "fp8", model, scheme)
    ids = np.random.default_rng(7).integers(0, model.config.vocab_size, 120).tolist()
    with torch.no_grad():
        ref = ref_model(torch.tensor([ids])).logits[0].numpy()
    llm = LLM(tmp_path / "fp8", n_ctx=256, kv_cache="f32")
    got = llm.logits(ids)
    # Exact weights, fp32 KV; fp32 activations, or on AVX512-BF16 bf16 ones in prefill.
    bound = 2 * torch_bf16_error(ref_model, ids, ref) if rounds_bf16_activations(llm) else 1e-3
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < bound
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    assert agree >= (0.97 if rounds_bf16_activations(llm) else 1.0)  # bf16 rounding flips near-ties
    formats = llm.info()["weight_formats"]
    assert any("fp8" in f for f in formats), formats
    # Not just close to the original weights: the FP8 model is a different model.
    with torch.no_grad():
        orig = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(orig - ref).max() > np.abs(got - ref).max()


@pytest.mark.parametrize("qconfig, why", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method 'bitsandbytes'"),
    ({"quant_method": "gptq", "bits": 3, "group_size": 128}, "GPTQ checkpoints with 3-bit weights"),
    ({**compressed_tensors_config("group"), "format": "marlin-24"}, "format 'marlin-24'"),
    (compressed_tensors_config("channel") | {"config_groups": {"g": {"weights": {"num_bits": 4, "type": "int"}}}},
     "4-bit int weights"),
])
def test_unsupported_quantization_is_refused_naming_it(tiny, tmp_path, qconfig, why):
    src, model = tiny
    write_fp8_model(src, tmp_path / "m", model, "channel")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["quantization_config"] = qconfig
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=why):
        LLM(tmp_path / "m", n_ctx=64)


def test_an_fp8_weight_without_its_scale_is_refused(tiny, tmp_path):
    src, model = tiny
    d = tmp_path / "m"
    write_fp8_model(src, d, model, "fbgemm")
    drop_tensor(d / "model.safetensors", "model.layers.0.mlp.up_proj.weight_scale")
    with pytest.raises(ModelFormatError, match="'model.layers.0.mlp.up_proj.weight' has no 'model.layers.0.mlp.up_proj.weight_scale'"):
        LLM(d, n_ctx=64)
