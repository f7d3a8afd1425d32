"""The llama-local command as a user runs it."""

import ctypes.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from tiny_models import make_tiny_llama

pytest.importorskip("torch")


def run(*args, input=None, env=None):
    return subprocess.run([sys.executable, "-m", "llama_local.cli", *args], capture_output=True, text=True,
                          input=input, timeout=300, env=env)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    make_tiny_llama(d, num_attention_heads=4, num_key_value_heads=2, dtype="bfloat16")
    return d


def test_console_script_is_installed():
    if not shutil.which("llama-local"):
        pytest.skip("llama-local is not on PATH (package not installed into this environment)")
    out = subprocess.run(["llama-local", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("llama-local ")


def test_generate_streams_the_greedy_continuation(tiny):
    from llama_local import LLM
    want = "".join(c.text for c in LLM(tiny, n_ctx=64).generate("t1 t2 t3", max_tokens=6, temperature=0,
                                                                stop_token_ids=[]))
    out = run("generate", str(tiny), "t1 t2 t3", "--max-tokens", "6", "--temperature", "0", "--n-ctx", "64")
    assert out.returncode == 0, out.stderr
    # the CLI uses the model's own stop ids; the tiny model has none
    assert out.stdout.rstrip("\n") == want


def test_info_prints_config_and_memory_plan(tiny):
    out = run("info", str(tiny), "--json", "--n-ctx", "256")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    m = info["model"]
    assert (m["layers"], m["heads"], m["kv_heads"], m["n_ctx"]) == (2, 4, 2, 256)
    assert m["kv_cache"] == "f16" and m["kv_cache_bytes"] == 2 * 2 * 256 * 2 * 32 * 2  # f16 by default
    assert m["weight_bytes"] > 0 and info["system"]["isa"] in info["system"]["isas_supported"]
    table = run("info", str(tiny))
    assert table.returncode == 0 and "KV cache" in table.stdout


def test_missing_model_exits_2_with_a_message(tmp_path):
    out = run("generate", str(tmp_path / "missing"), "hi")
    assert out.returncode == 2
    assert "no such file or directory" in out.stderr and "Traceback" not in out.stderr


def test_convert_refuses_unknown_source(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"123")
    out = run("convert", str(tmp_path / "x.bin"), str(tmp_path / "out"))
    assert out.returncode == 2 and "expected a .gguf file" in out.stderr


def test_system_info_reports_cuda_build_state():
    from llama_local import system_info
    info = system_info()
    assert info["threads_default"] >= 1 and "scalar" in info["isas_supported"]
    mode = os.environ.get("LLAMA_LOCAL_CUDA", "AUTO").upper()
    driver = ctypes.util.find_library("cuda") is not None
    if shutil.which("nvcc") and (mode == "ON" or (mode == "AUTO" and driver)):
        # With nvcc and a driver the wheel compiles its CUDA sources (DESIGN.md, Testing).
        assert info["cuda_compiled"], "nvcc and an NVIDIA driver are here but the core was built without CUDA"
    if not driver and mode == "AUTO":
        # nvcc without a GPU (this project's development machines): the CPU core only, built fast.
        assert not info["cuda_compiled"] and "LLAMA_LOCAL_CUDA=ON" in info["cuda_unavailable_reason"]
    if not info["cuda_available"]:
        assert info["cuda_unavailable_reason"]

