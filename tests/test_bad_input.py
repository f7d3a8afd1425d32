"""Bad input gets a clear error that names what was wrong, and never crashes the interpreter."""

import json
import re
import shutil
import struct

import ml_dtypes
import numpy as np
import pytest

from llama_local import LLM, ContextOverflowError, ModelFormatError
from llama_local.formats.safetensors_io import SafetensorsFile, write_safetensors
from tiny_models import make_tiny_llama

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    make_tiny_llama(d, num_attention_heads=4, num_key_value_heads=2, dtype="bfloat16")
    return d


@pytest.fixture
def model_copy(good_model, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(good_model, d)
    return d


def rewrite_tensor(model_dir, name, array):
    f = SafetensorsFile(model_dir / "model.safetensors")
    tensors = {k: (array if k == name else np.array(f.tensor(k))) for k in f.keys()}
    del f
    write_safetensors(model_dir / "model.safetensors", tensors)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file or directory"):
        LLM(tmp_path / "nope")


def test_directory_without_a_model(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ModelFormatError, match="not a model directory"):
        LLM(tmp_path)


def test_missing_safetensors(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match=r"no \*\.safetensors file"):
        LLM(model_copy)


def test_truncated_safetensors(model_copy):
    p = model_copy / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="run past the end of the file"):
        LLM(model_copy)


def test_header_length_past_end(model_copy):
    p = model_copy / "model.safetensors"
    p.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(ModelFormatError, match="header length"):
        LLM(model_copy)


def edit_header(path, edit):
    """Rewrite a safetensors header through edit(header_dict), keeping the data bytes."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def test_header_offsets_past_file(model_copy):
    name = "model.layers.0.self_attn.q_proj.weight"

    def push_past_end(header):
        b, e = header[name]["data_offsets"]
        header[name]["data_offsets"] = [b + 10**9, e + 10**9]

    edit_header(model_copy / "model.safetensors", push_past_end)
    with pytest.raises(ModelFormatError, match=f"{name}.*data_offsets"):
        LLM(model_copy)


def test_header_size_disagrees_with_shape(model_copy):
    def double_shape(header):
        header["model.norm.weight"]["shape"] = [header["model.norm.weight"]["shape"][0] * 2]

    edit_header(model_copy / "model.safetensors", double_shape)
    with pytest.raises(ModelFormatError, match="model.norm.weight.*needs"):
        LLM(model_copy)


def test_header_not_json(model_copy):
    p = model_copy / "model.safetensors"
    p.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{{")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        LLM(model_copy)


def test_tensor_of_wrong_shape(model_copy):
    name = "model.layers.1.self_attn.k_proj.weight"
    rewrite_tensor(model_copy, name, np.zeros((7, 128), dtype=ml_dtypes.bfloat16))
    with pytest.raises(ModelFormatError, match=rf"'{name}' has shape \[7, 128\], expected \[64, 128\]"):
        LLM(model_copy)


def test_tensor_of_wrong_dtype(model_copy):
    name = "model.layers.0.mlp.up_proj.weight"
    rewrite_tensor(model_copy, name, np.zeros((224, 128), dtype=np.int32))
    with pytest.raises(ModelFormatError, match=rf"'{name}' has dtype int32"):
        LLM(model_copy)


def test_missing_tensor(model_copy):
    f = SafetensorsFile(model_copy / "model.safetensors")
    tensors = {k: np.array(f.tensor(k)) for k in f.keys() if k != "model.layers.0.input_layernorm.weight"}
    del f
    write_safetensors(model_copy / "model.safetensors", tensors)
    with pytest.raises(ModelFormatError, match="no tensor 'model.layers.0.input_layernorm.weight'"):
        LLM(model_copy)


def test_config_not_llama(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "mamba", ["MambaForCausalLM"]
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="'mamba'.*not a Llama model"):
        LLM(model_copy)


def test_config_missing_field(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    del cfg["intermediate_size"]
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="config.json: missing required field 'intermediate_size'"):
        LLM(model_copy)


def test_unsupported_rope_scaling(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="rope scaling type 'yarn' is not supported"):
        LLM(model_copy)


def test_prompt_longer_than_context(good_model):
    llm = LLM(good_model, n_ctx=32)
    with pytest.raises(ContextOverflowError, match="n_ctx=32"):
        llm.logits(list(range(33)))
    with pytest.raises(ContextOverflowError, match="n_ctx=32"):
        next(llm.generate(list(range(40)), max_tokens=4))
    # The model is still usable afterwards.
    assert llm.logits(list(range(32))).shape == (32, 320)


def test_token_outside_vocabulary(good_model):
    llm = LLM(good_model, n_ctx=32)
    with pytest.raises(ValueError, match="token id 320 at position 1 is outside the vocabulary"):
        llm.logits([1, 320])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.model.forward(np.array([5, -1], np.int32))


def test_core_refuses_overflow_directly(good_model):
    llm = LLM(good_model, n_ctx=8)
    llm.model.forward(np.arange(8, dtype=np.int32), start_pos=0)
    with pytest.raises(ContextOverflowError, match="exceed the context size n_ctx=8"):
        llm.model.forward(np.array([1], np.int32))
    with pytest.raises(ValueError, match="start_pos 9"):
        llm.model.forward(np.array([1], np.int32), start_pos=9)


def test_bad_sampling_arguments(good_model):
    llm = LLM(good_model, n_ctx=32)
    with pytest.raises(ValueError, match="top_p"):
        next(llm.generate([1, 2], top_p=1.5))
    with pytest.raises(ValueError, match="temperature"):
        next(llm.generate([1, 2], temperature=-1))


def test_cuda_device_without_gpu_is_a_clear_error(good_model):
    from llama_local import LlamaLocalError, system_info
    info = system_info()
    if info["cuda_available"] and info["cuda_backend"]:
        pytest.skip("a GPU is here: device='cuda' loads (tests/test_cuda_forward.py)")
    with pytest.raises(LlamaLocalError, match="device='cuda' is not available: " + re.escape(
            info["cuda_unavailable_reason"] or "this build has no CUDA forward pass")):
        LLM(good_model, device="cuda")


def test_auto_device_falls_back_to_cpu_and_says_why(good_model):
    from llama_local import _core, system_info
    llm = LLM(good_model, device="auto", n_ctx=16)
    info = system_info()
    assert info["cuda_backend"] == _core.build_info()["cuda_compiled"]
    if info["cuda_available"] and info["cuda_backend"]:
        # the GPU, unless the CUDA kernels cannot take this model: then the CPU, saying why
        assert llm.device == "cuda" or (llm.device == "cpu" and llm.cuda_fallback_reason)
    else:
        assert llm.device == "cpu" and llm.cuda_fallback_reason is None
        assert info["cuda_unavailable_reason"]


def test_cpu_only_kv_cache_formats_are_refused_on_the_gpu(good_model):
    from llama_local import system_info
    info = system_info()
    if not (info["cuda_available"] and info["cuda_backend"]):
        pytest.skip(f"no GPU: {info['cuda_unavailable_reason']}")
    with pytest.raises(ValueError, match="CPU-only"):
        LLM(good_model, device="cuda", kv_cache="q8_0")


@pytest.mark.parametrize("field,value", [("architectures", 1.5), ("architectures", [3]), ("model_type", 7),
                                         ("rms_norm_eps", "small"), ("tie_word_embeddings", "yes"),
                                         ("rope_theta", "big"), ("eos_token_id", "2"), ("hidden_size", 64.0),
                                         ("max_position_embeddings", -1)])
def test_config_field_of_the_wrong_type(model_copy, field, value):
    cfg = json.loads((model_copy / "config.json").read_text())
    # transformers 5 keeps rope_theta in rope_parameters, which takes precedence over the top level
    where = cfg["rope_parameters"] if field == "rope_theta" and "rope_parameters" in cfg else cfg
    where[field] = value
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=rf"config\.json: .*{field}"):
        LLM(model_copy)


def test_rope_scaling_field_that_is_not_a_number(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": "eight", "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=r"config\.json: rope scaling 'llama3' has a field that is not a number"):
        LLM(model_copy)


def test_gguf_merge_naming_a_token_outside_the_vocabulary(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    from tiny_models import GGUF_SMALL, make_tiny_gguf
    monkeypatch.setenv("LLAMA_LOCAL_CACHE", str(tmp_path / "cache"))
    path = make_tiny_gguf(tmp_path / "m.gguf", **GGUF_SMALL, merges=["Ġ t", "Ġt zz"]).path
    with pytest.raises(ModelFormatError, match=r"m\.gguf: tokenizer\.ggml\.merges\[1\] = 'Ġt zz' names 'zz', "
                                               r"which is not in tokenizer\.ggml\.tokens"):
        LLM(path)
    assert not list((tmp_path / "cache").rglob("config.json"))  # nothing half-written into the cache
