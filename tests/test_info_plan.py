"""`llama-local info` from config.json alone: Llama 3.1 8B, 70B and 405B as Meta publishes them."""

import json
import subprocess
import sys

import pytest

from llama_local.config import ModelConfig
from llama_local.formats.memory_plan import plan, vllm_command

GiB = 2**30
COMMON = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
          "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"},
          "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}
# The shapes in Meta's config.json files, and the parameter counts their model cards give.
LLAMA31 = {
    "8B": ({"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8}, 8_030_261_248),
    "70B": ({"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
             "num_attention_heads": 64, "num_key_value_heads": 8}, 70_553_706_496),
    "405B": ({"hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
              "num_attention_heads": 128, "num_key_value_heads": 8}, 405_853_388_800),
}


def config(size: str) -> ModelConfig:
    return ModelConfig.from_dict({**COMMON, **LLAMA31[size][0]})


@pytest.mark.parametrize("size", list(LLAMA31))
def test_parameters_and_bf16_bytes(size):
    c = config(size)
    assert c.n_params() == LLAMA31[size][1]
    rows = {r.format: r for r in plan(c, 8192, 80 * GiB, machine_bytes=24 * GiB)}
    assert rows["bf16"].weight_bytes == 2 * LLAMA31[size][1]
    # Quantized formats keep embeddings and LM head in bf16 (13% of 8B's parameters, 2.6% of 405B's):
    # more than a half / a quarter of bf16, and not much more.
    assert 0.5 < rows["fp8"].weight_bytes / rows["bf16"].weight_bytes < 0.6
    assert 0.25 < rows["int4"].weight_bytes / rows["bf16"].weight_bytes < 0.38
    # llama_local's KV cache is f16 by default: 2 x layers x 8 KV heads x 128 x 2 bytes per position.
    assert rows["bf16"].kv_bytes == 2 * c.num_hidden_layers * 8 * 128 * 2 * 8192


def test_8b_fits_a_16_gib_laptop_at_4_bits_only():
    rows = {r.format: r for r in plan(config("8B"), 4096, 80 * GiB, machine_bytes=16 * GiB)}
    assert rows["int4"].fits and not rows["bf16"].fits
    assert rows["bf16"].vllm_tp == 1


def test_405b_needs_two_nodes_in_bf16_and_one_in_fp8():
    # Meta serves Llama 3.1 405B in bf16 on two 8-GPU nodes and its FP8 release on one 8xH100 node.
    rows = {r.format: r for r in plan(config("405B"), 8192, 80 * GiB, machine_bytes=24 * GiB)}
    assert not any(r.fits for r in rows.values())
    assert rows["bf16"].vllm_tp == 16 and rows["fp8"].vllm_tp == 8 and rows["int4"].vllm_tp <= 4
    assert vllm_command("meta-llama/Llama-3.1-405B-Instruct", "bf16", 16, 8192) == (
        "vllm serve meta-llama/Llama-3.1-405B-Instruct --tensor-parallel-size 8 --max-model-len 8192 "
        "--pipeline-parallel-size 2")
    assert "--quantization fp8 --tensor-parallel-size 8" in vllm_command("x", "fp8", 8, 8192)
    assert vllm_command("meta-llama/Llama-3.1-405B-Instruct", "int4", 4, 8192) == (
        "llama-local quantize meta-llama/Llama-3.1-405B-Instruct Llama-3.1-405B-Instruct-int4-g128 --format int4 "
        "--group-size 128 && vllm serve Llama-3.1-405B-Instruct-int4-g128 --tensor-parallel-size 4 --max-model-len 8192")


def test_the_command_plans_from_a_config_only_directory(tmp_path):
    d = tmp_path / "Llama-3.1-70B-Instruct"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**COMMON, **LLAMA31["70B"][0]}))
    out = subprocess.run([sys.executable, "-m", "llama_local.cli", "info", str(d), "--json", "--n-ctx", "8192"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["parameters"] == LLAMA31["70B"][1]
    fp8 = next(f for f in doc["formats"] if f["format"] == "fp8")
    assert fp8["vllm_command"].startswith(f"vllm serve {d} --quantization fp8 --tensor-parallel-size ")
    text = subprocess.run([sys.executable, "-m", "llama_local.cli", "info", str(d / "config.json")],
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "70.6B parameters" in text.stdout and "vllm serve" in text.stdout
    bad = subprocess.run([sys.executable, "-m", "llama_local.cli", "info", str(d), "--n-ctx", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "n_ctx must be a positive integer" in bad.stderr
