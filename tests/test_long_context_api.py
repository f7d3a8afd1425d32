"""Long contexts from the caller's side: the KV cache dtype (kv_cache=, --kv-cache), n_ctx up to the
model's max_position_embeddings ("max", and past it only when asked), tokens_left, and what info
reports. Expected sizes are computed here from the config: 2 (K and V) x layers x kv_heads x
head_dim values per position, at f32 4, f16 and bf16 2, q8_0 34/32 bytes (llama.cpp's blocks of 32
int8 codes and one fp16 scale)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llama_local import LLM
from llama_local.errors import ContextOverflowError
from llama_local.llm import context_size

from tiny_models import GGUF_SMALL, make_tiny_gguf

pytest.importorskip("gguf")

MAX_POS = 256
BYTES_PER_VALUE = {"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32}
# Llama 3.2 1B's config.json shape, for plans from config.json alone.
LLAMA32_1B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
              "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
              "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
              "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"},
              "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128001}


def expected_kv_bytes(c: dict, n_ctx: int, kv_cache: str) -> int:
    row = int(c["num_key_value_heads"] * c["head_dim"] * BYTES_PER_VALUE[kv_cache])
    k_positions = -(-n_ctx // 16) * 16    # K is stored in blocks of 16 positions
    return c["num_hidden_layers"] * row * (n_ctx + k_positions)


def cli(*args):
    env = {**os.environ, "COLUMNS": "200"}  # rich tables: no truncated cells
    return subprocess.run([sys.executable, "-m", "llama_local.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A one-layer GGUF trained (nominally) for 256 positions; K/V rows of 32 values (q8_0 blocks)."""
    return make_tiny_gguf(tmp_path_factory.mktemp("long") / "tiny.gguf", **GGUF_SMALL,
                          max_position_embeddings=MAX_POS)


# ---- bad arguments: refused before anything loads ----

@pytest.mark.parametrize("kv_cache", ["q4_0", "fp16", "", None])
def test_unknown_kv_cache_is_refused(tmp_path, kv_cache):
    with pytest.raises(ValueError, match=f"{kv_cache!r}.*f16, bf16, q8_0, f32"):
        LLM(tmp_path / "not-loaded", kv_cache=kv_cache)


@pytest.mark.parametrize("n_ctx", [0, -1, "big", 1.5, True])
def test_bad_n_ctx_is_refused(tmp_path, n_ctx):
    with pytest.raises(ValueError, match=f"n_ctx must be a positive integer or 'max', got {n_ctx!r}"):
        LLM(tmp_path / "not-loaded", n_ctx=n_ctx)


def test_context_size_defaults_and_max():
    assert context_size(None, 131072) == 4096      # the default: 4096 ...
    assert context_size(None, 2048) == 2048        # ... or the model's maximum if smaller
    assert context_size("max", 131072) == 131072
    assert context_size(8192, 131072) == 8192
    with pytest.raises(ValueError, match="n_ctx=4,097 is past .*max_position_embeddings=4,096"):
        context_size(4097, 4096)
    assert context_size(4097, 4096, allow_beyond_trained_context=True) == 4097


# ---- the loaded model ----

def test_n_ctx_past_the_trained_context_needs_asking(tiny):
    with pytest.raises(ValueError, match=r"n_ctx=257 is past the model's trained context "
                                         r"\(max_position_embeddings=256\); pass allow_beyond_trained_context=True"):
        LLM(tiny.path, n_ctx=MAX_POS + 1, progress=False)
    assert LLM(tiny.path, n_ctx=MAX_POS + 1, allow_beyond_trained_context=True, progress=False).n_ctx == MAX_POS + 1


def test_max_and_default_n_ctx(tiny):
    assert LLM(tiny.path, n_ctx="max", progress=False).n_ctx == MAX_POS
    assert LLM(tiny.path, progress=False).n_ctx == MAX_POS  # the default 4096, clamped to what it was trained for


def test_core_refuses_an_unknown_kv_cache(tiny):
    llm = LLM(tiny.path, n_ctx=16, progress=False)
    with pytest.raises(ValueError, match="q4_0"):
        type(llm.model)(llm.config.core_dict(), llm.weights.core_tensors(), 16, kv_cache="q4_0")


def test_tokens_left_follows_the_cache(tiny):
    llm = LLM(tiny.path, n_ctx=32, progress=False)
    assert llm.tokens_left == 32
    prompt = [5, 6, 7, 8, 9]
    left = [llm.tokens_left for _ in llm.generate(prompt, max_tokens=6, temperature=0, stop_token_ids=[])]
    # Each sampled token is written to the cache when the next one is asked for.
    assert left == [32 - len(prompt) - i for i in range(6)]
    assert llm.tokens_left == 32 - len(prompt) - 5
    llm.reset()
    assert llm.tokens_left == 32
    llm.logits(list(range(10)))
    assert llm.tokens_left == 22
    # A prompt that does not fit, or leaves no room to generate, still fails with the sizes.
    with pytest.raises(ContextOverflowError, match="33 tokens do not fit the context \\(n_ctx=32\\)"):
        next(llm.generate(list(range(33))))
    with pytest.raises(ContextOverflowError, match="the prompt has 32 tokens; no room left to generate in n_ctx=32"):
        next(llm.generate(list(range(32))))
    # A generation runs at most to the end of the context.
    chunks = list(llm.generate(list(range(28)), max_tokens=100, temperature=0, stop_token_ids=[]))
    assert len(chunks) == 4 and chunks[-1].finish_reason == "length"
    assert llm.tokens_left == 1  # the last token is sampled, never evaluated


@pytest.mark.parametrize("kv_cache", list(BYTES_PER_VALUE))
def test_info_reports_the_kv_cache(tiny, kv_cache):
    llm = LLM(tiny.path, n_ctx=128, kv_cache=kv_cache, progress=False)
    info = llm.info()
    assert info["kv_cache"] == kv_cache == llm.model.kv_cache
    assert info["kv_cache_bytes"] == expected_kv_bytes(tiny.config, 128, kv_cache)
    assert (info["n_ctx"], info["max_position_embeddings"], info["tokens_left"]) == (128, MAX_POS, 128)
    assert kv_cache in repr(llm)


def test_every_kv_cache_gives_nearly_the_f32_logits(tiny):
    ids = list(range(3, 40))
    ref = LLM(tiny.path, n_ctx=64, kv_cache="f32", progress=False).logits(ids)
    for kv_cache in ("f16", "bf16", "q8_0"):
        got = LLM(tiny.path, n_ctx=64, kv_cache=kv_cache, progress=False).logits(ids)
        assert np.abs(got - ref).max() <= 0.01 * np.abs(ref).max(), kv_cache


# ---- the command line ----

def test_info_command_plans_the_kv_cache_for_max_context(tiny):
    out = cli("info", str(tiny.path), "--kv-cache", "q8_0", "--n-ctx", "max", "--json")
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)["model"]
    assert (m["kv_cache"], m["n_ctx"]) == ("q8_0", MAX_POS)
    assert m["kv_cache_bytes"] == expected_kv_bytes(tiny.config, MAX_POS, "q8_0")
    table = cli("info", str(tiny.path), "--kv-cache", "bf16", "--n-ctx", "100")
    assert table.returncode == 0, table.stderr
    assert "KV cache (bf16, 100 positions)" in table.stdout


def test_info_plan_from_config_json_uses_the_kv_dtype(tmp_path):
    d = tmp_path / "Llama-3.2-1B"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA32_1B))
    sizes = {}
    for kv_cache in ("f16", "q8_0"):
        out = cli("info", str(d), "--kv-cache", kv_cache, "--n-ctx", "max", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert (doc["kv_cache"], doc["n_ctx"]) == (kv_cache, 131072)
        sizes[kv_cache] = {f["kv_bytes"] for f in doc["formats"]}
        assert sizes[kv_cache] == {expected_kv_bytes(LLAMA32_1B, 131072, kv_cache)}
    # The budget: at most llama.cpp's f16 size (4 GiB) in f16, at most 2.2 GiB in q8_0.
    assert sizes["f16"].pop() <= 4 * 2**30 and sizes["q8_0"].pop() <= 2.2 * 2**30
    text = cli("info", str(d / "config.json"), "--kv-cache", "q8_0", "--n-ctx", "max")
    assert text.returncode == 0, text.stderr
    gib = expected_kv_bytes(LLAMA32_1B, 131072, "q8_0") / 2**30
    assert "KV cache (q8_0)" in text.stdout and f"{gib:,.1f} GiB" in text.stdout
    past = cli("info", str(d), "--n-ctx", "200000")
    assert past.returncode == 2 and "--allow-beyond-trained-context" in past.stderr
    allowed = cli("info", str(d), "--n-ctx", "200000", "--allow-beyond-trained-context", "--json")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["n_ctx"] == 200000


@pytest.mark.parametrize("command", [["generate", "M", "hi"], ["chat", "M"], ["info", "M"],
                                     ["perplexity", "M", "-f", "text.txt"]])
def test_cli_bad_kv_cache_and_n_ctx_exit_2(command):
    out = cli(*command, "--kv-cache", "q4")
    assert out.returncode == 2 and "invalid choice: 'q4'" in out.stderr and "q8_0" in out.stderr
    if command[0] != "perplexity":  # its context is --ctx
        out = cli(*command, "--n-ctx", "big")
        assert out.returncode == 2 and "expected a number of tokens or 'max', got 'big'" in out.stderr


def test_cli_n_ctx_zero_and_past_the_model(tiny):
    out = cli("generate", str(tiny.path), "hi", "--n-ctx", "0")
    assert out.returncode == 2 and "n_ctx must be a positive integer" in out.stderr
    out = cli("generate", str(tiny.path), "hi", "--n-ctx", str(MAX_POS + 1))
    assert out.returncode == 2 and "max_position_embeddings=256" in out.stderr
    assert "--allow-beyond-trained-context" in out.stderr and "Traceback" not in out.stderr


# ---- memory grows with the positions used, not with n_ctx ----

# The resident memory the KV cache takes after filling `n` positions of a 131,072-position cache,
# in a process of its own: the model has Llama-3.2-1B's KV geometry (16 layers, 8 KV heads of 64:
# 4 GiB at f16 for all of n_ctx) on a narrow residual stream, so filling is quick.
RSS_SCRIPT = r"""
import json, re, sys
import numpy as np
from llama_local import LLM

def rss():
    return int(re.search(r"VmRSS:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

path, kv_cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = LLM(path, n_ctx="max", kv_cache=kv_cache, n_batch=512, progress=False)
ids = np.random.default_rng(0).integers(0, llm.config.vocab_size, n).tolist()
llm.model.forward(ids[:512], 0)       # scratch buffers and thread stacks touched before the baseline
before = rss()
for p in range(512, n, 512):
    llm.model.forward(ids[p:p + 512], p)
print(json.dumps({"grew": rss() - before, "rss": rss(), "kv_bytes": llm.model.kv_bytes, "n_ctx": llm.n_ctx}))
"""


@pytest.fixture(scope="module")
def kv_geometry_1b(tmp_path_factory):
    return make_tiny_gguf(tmp_path_factory.mktemp("kv1b") / "kv1b.gguf", num_hidden_layers=16, hidden_size=512,
                          num_attention_heads=8, num_key_value_heads=8, head_dim=64, intermediate_size=64,
                          tie_word_embeddings=True, max_position_embeddings=131072)


def kv_rss(model, kv_cache: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(model.path), kv_cache, str(n)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["n_ctx"] == 131072
    assert r["kv_bytes"] == expected_kv_bytes(model.config, 131072, kv_cache)
    return r


def check_rss_follows_positions(model, kv_cache: str, n: int) -> None:
    r = kv_rss(model, kv_cache, n)
    used = expected_kv_bytes(model.config, n - 512, kv_cache)  # the positions filled after the baseline
    # Pages are touched as positions are written: the growth is the used part of the cache (plus
    # at most a page per layer and head at each end, and the allocator's slack), never n_ctx's.
    assert 0.9 * used <= r["grew"] <= 1.1 * used + (8 << 20), (r, used)
    # and the whole process, interpreter and libraries included, is far from n_ctx's plan.
    assert r["rss"] <= expected_kv_bytes(model.config, n, kv_cache) + (400 << 20), r


@pytest.mark.parametrize("kv_cache", ["f16", "q8_0"])
def test_kv_cache_memory_follows_the_positions_used(kv_geometry_1b, kv_cache):
    check_rss_follows_positions(kv_geometry_1b, kv_cache, 2048)


@pytest.mark.slow
@pytest.mark.parametrize("kv_cache", ["f16", "q8_0"])
def test_kv_cache_memory_after_16384_positions(kv_geometry_1b, kv_cache):
    # The figure: at n_ctx 131,072 the plan is 4 GiB (f16) / 2.1 GiB (q8_0), and after
    # 16,384 positions the process holds an eighth of it.
    check_rss_follows_positions(kv_geometry_1b, kv_cache, 16384)
