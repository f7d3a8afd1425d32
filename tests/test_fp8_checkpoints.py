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


WEIGHTS_ONLY = compressed_tensors_config("channel")
WEIGHTS_ONLY["config_groups"]["group_0"]["input_activations"] = None


@pytest.mark.parametrize("qconfig, bound", [
    (FBGEMM, 1200.0),
    ({**FBGEMM, "activation_scale_ub": 64.0}, 64.0),
    (compressed_tensors_config("channel"), float("inf")),  # FP8_DYNAMIC: per-token scales, no bound
    (WEIGHTS_ONLY, None),
])
def test_fp8_specs_say_whether_activations_are_fp8_too(tiny, tmp_path, qconfig, bound):
    # W8A8 checkpoints carry their activation-scale bound to the core, where the GPU's e4m3 mma path
    # uses it (the CPU keeps fp32 activations either way); a fused Q/K/V keeps it on the GPU form.
    from llama_local import _core
    from llama_local.formats import quantized_checkpoints
    from llama_local.formats.safetensors_io import Checkpoint
    src, model = tiny
    write_fp8_model(src, tmp_path / "m", model, "channel")
    specs = quantized_checkpoints.core_tensors(Checkpoint(tmp_path / "m"), qconfig, "config.json")
    fp8 = {n: s for n, s in specs.items() if s["format"] == "fp8"}
    assert len(fp8) == 7 * model.config.num_hidden_layers
    assert all(s.get("act_ub") == bound for s in fp8.values()), {s.get("act_ub") for s in fp8.values()}
    p = "model.layers.0.self_attn."
    parts = [fp8[p + f"{x}_proj.weight"] for x in "qkv"]
    outs = [s["data"].shape[0] for s in parts]
    g = _core.device_math.gpu_weight(parts, outs, 128)
    assert g["fp8"] and g["act_ub"] == (bound or 0.0)
    if bound is not None:  # parts that disagree fall back to 16-bit activations (W8A16)
        parts[1] = {**parts[1], "act_ub": 100.0}
        assert _core.device_math.gpu_weight(parts, outs, 128)["act_ub"] == 0.0


@pytest.mark.parametrize("ub", [0.0, -1.0, float("nan")])
def test_a_bad_activation_bound_is_refused(ub):
    from llama_local import _core
    from llama_local.formats.fp8_checkpoints import activation_bound
    spec = {"format": "fp8", "data": np.zeros((64, 64), np.uint8), "scales": np.ones(64, np.float32), "act_ub": ub}
    with pytest.raises(ModelFormatError, match="act_ub must be positive"):
        _core.device_math.gpu_weight([spec], [64], 64)
    with pytest.raises(ModelFormatError, match="activation_scale_ub must be a positive number"):
        activation_bound({**FBGEMM, "activation_scale_ub": ub})
