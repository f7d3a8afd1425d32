"""The llama-local command as a user runs it."""

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
    assert m["kv_cache_bytes"] == 2 * 2 * 256 * 2 * 32 * 4
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
    if shutil.which("nvcc") and os.environ.get("LLAMA_LOCAL_CUDA", "AUTO").upper() != "OFF":
        # Wherever nvcc is present the wheel compiles its CUDA sources (DESIGN.md, Testing).
        assert info["cuda_compiled"], "nvcc is on PATH but the core was built without CUDA"
    if not info["cuda_available"]:
        assert info["cuda_unavailable_reason"]


# The 135M demo model, run on its exact Q4_1 weights, answers "What is the capital of France?" with
# a French phrase when left to its default system prompt (so does llama.cpp on the same file: the
# first token is a near-tie); asked to answer briefly, it is reliable.
BRIEF = ["--system", "You are a helpful assistant. Answer in one short sentence."]


def test_chat_with_the_demo_model_answers_and_keeps_context(smollm2_gguf):
    # No MODEL argument: the bundled SmolLM2; two turns typed on stdin, then end of input.
    out = run("chat", "--temperature", "0", "--max-tokens", "40", *BRIEF,
              input="What is the capital of France?\nAnd what is the capital of Germany?\n")
    assert out.returncode == 0, out.stderr
    replies = [r for r in out.stdout.split(">>> ") if r.strip()]
    assert len(replies) == 2
    assert "Paris" in replies[0] and "Berlin" in replies[1]
    assert "bundled demo model" in out.stderr


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(smollm2_gguf):
    # In a real pty: Ctrl-C mid-reply returns to the prompt; the next question is answered.
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "llama_local.cli", "chat", "--temperature", "0",
                                           "--max-tokens", "400", *BRIEF], encoding="utf-8", timeout=120)
    child.expect(">>> ")
    child.sendline("Write a very long essay about the history of Rome.")
    child.expect(r"history of Rome\.\r?\n")  # the pty's echo of the question
    child.expect(r"\w+ \w+ \w+")  # the reply has started streaming
    child.sendintr()
    child.expect(r"\[interrupted\]")
    child.expect(">>> ")
    child.sendline("What is the capital of France?")
    child.expect("Paris")
    child.expect(">>> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")
