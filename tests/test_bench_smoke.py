"""bench/: the model files the benchmark gives each engine hold the same weights.

Fast checks on a tiny random model; the full cross-check against transformers and llama.cpp is
`python bench/bench_cpu.py --verify` (needs llama-cpp-python). No timings here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_cpu  # noqa: E402
import bench_models as bm  # noqa: E402
from tiny_models import llamacpp_permute  # noqa: E402

gguf = pytest.importorskip("gguf")

TINY = dataclasses.replace(bm.VERIFY_SMALL, name="bench-tiny", hidden=64, intermediate=128, layers=2,
                           heads=4, kv_heads=2, head_dim=16, vocab=2048)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    wd = tmp_path_factory.mktemp("bench")
    hf = bm.ensure_synthetic_hf(TINY, wd, log=lambda *a: None)
    return hf, bm.ensure_gguf(hf, "f16", log=lambda *a: None)


F16_MIN_NORMAL = 2.0 ** -14


def assert_f16_of(actual: np.ndarray, bf16: np.ndarray) -> None:
    """`actual` is bf16 -> f16: exact wherever f16 has a normal number; f16's subnormals keep the
    value to half their spacing (2**-25)."""
    x = np.asarray(bf16).astype(np.float32)
    a = np.asarray(actual).astype(np.float32)
    np.testing.assert_array_equal(a, x.astype(np.float16).astype(np.float32))
    normal = np.abs(x) >= F16_MIN_NORMAL
    np.testing.assert_array_equal(a[normal], x[normal])
    assert np.abs(a - x).max() <= 2.0 ** -25


def test_synthetic_vocab_is_llama3_shaped():
    tokens, types, merges = bm.synthetic_vocab(128256)
    assert len(tokens) == len(types) == 128256
    assert len(set(tokens)) == len(tokens)
    assert tokens[128000] == "<|begin_of_text|>" and tokens[128009] == "<|eot_id|>"
    # Named as the Llama 3.1 release's tokenizer.json names them (no <|step_id|>, no <|image|>).
    assert tokens[128005] == "<|reserved_special_token_2|>" and tokens[128011] == "<|reserved_special_token_3|>"
    assert tokens[128255] == "<|reserved_special_token_247|>"
    assert all(t == 3 for t in types[128000:]) and all(t == 1 for t in types[:128000])
    for m in merges:
        a, b = m.split(" ")
        assert a + b in tokens[:128000]


def test_bench_config_names_the_synthetic_special_tokens(tiny):
    hf, _ = tiny
    cfg = json.loads((hf / "config.json").read_text())
    tokens, _, _ = bm.synthetic_vocab(TINY.vocab)
    assert (tokens[cfg["bos_token_id"]], tokens[cfg["eos_token_id"]]) == ("<|begin_of_text|>", "<|end_of_text|>")
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def test_gguf_holds_the_hf_weights(tiny):
    hf, path = tiny
    from llama_local.formats.safetensors_io import Checkpoint

    ckpt = Checkpoint(hf)
    r = gguf.GGUFReader(path)
    t = {x.name: x for x in r.tensors}
    assert "output.weight" not in t  # tied
    assert len(t) == 1 + 1 + 9 * TINY.layers + 1  # embd, rope_freqs, layers, output_norm
    q = ckpt.tensor("model.layers.1.self_attn.q_proj.weight")
    assert_f16_of(t["blk.1.attn_q.weight"].data, llamacpp_permute(q, TINY.heads))
    k = ckpt.tensor("model.layers.0.self_attn.k_proj.weight")
    assert_f16_of(t["blk.0.attn_k.weight"].data, llamacpp_permute(k, TINY.kv_heads))
    d = ckpt.tensor("model.layers.0.mlp.down_proj.weight")
    assert_f16_of(t["blk.0.ffn_down.weight"].data, d)
    assert t["blk.0.ffn_down.weight"].data.shape == (TINY.hidden, TINY.intermediate)
    assert np.all(t["output_norm.weight"].data == 1.0)
    rf = t["rope_freqs.weight"].data
    assert rf.shape == (TINY.head_dim // 2,) and rf[0] == 1.0 and rf[-1] == 32.0


@pytest.mark.parametrize("ftype", ["f16", "bf16"])
def test_gguf_round_trips_through_the_importer(tiny, tmp_path, ftype):
    """Our GGUF, converted back by llama_local's own importer, gives the same HF weights
    (bit-exact through BF16; through F16 up to f16's subnormals)."""
    from llama_local.formats.gguf_import import convert_gguf
    from llama_local.formats.safetensors_io import Checkpoint

    hf, _ = tiny
    path = bm.ensure_gguf(hf, ftype, out_dir=tmp_path, log=lambda *a: None)
    out = tmp_path / "back"
    convert_gguf(path, out, progress=False)
    a, b = Checkpoint(hf), Checkpoint(out)
    assert sorted(a.keys()) == sorted(b.keys())
    for name in a.keys():
        if ftype == "bf16" or a.info(name)[1] == (TINY.hidden,):
            np.testing.assert_array_equal(np.asarray(b.tensor(name)).astype(np.float32),
                                          np.asarray(a.tensor(name)).astype(np.float32), err_msg=name)
        else:
            assert_f16_of(b.tensor(name), a.tensor(name))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_key_value_heads"] == TINY.kv_heads and cfg["vocab_size"] == TINY.vocab


def test_bytes_per_token(tiny):
    hf, path = tiny
    h, i, v = TINY.hidden, TINY.intermediate, TINY.vocab
    kv = TINY.kv_heads * TINY.head_dim
    layer = 2 * (h * h * 2 + h * kv * 2 + 3 * h * i) + 2 * 2 * h
    want = TINY.layers * layer + 2 * h + 2 * h + 2 * v * h  # + final norm, one embd row, tied head
    assert bm.hf_bytes_per_token(hf) == want
    # GGUF: norms in f32 (twice the bytes), no rope_freqs
    assert bm.gguf_bytes_per_token(path) == want + 2 * h * (2 * TINY.layers + 1)


def test_bytes_per_token_with_a_quantized_head(tiny):
    # --weights ct-int4: the head is the quantized lm_head; the bf16 embeddings give one row only.
    from llama_local.formats.safetensors_io import Checkpoint
    hf, _ = tiny
    ct = bm.ensure_ct(hf, "ct-int4", log=lambda *a: None)
    c = Checkpoint(ct)
    sizes = {n: int(np.prod(c.info(n)[1])) * c.info(n)[0].itemsize for n in c.keys()}
    assert sizes["lm_head.weight_packed"] == TINY.vocab * TINY.hidden // 2
    embed = sizes.pop("model.embed_tokens.weight")
    assert bm.hf_bytes_per_token(ct) == sum(sizes.values()) + embed // TINY.vocab
    assert bench_cpu.parse_args(["--weights", "ct-int4,ct-fp8"]).weights == ["ct-int4", "ct-fp8"]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_llama_cpp_loads_the_gguf(tiny):
    hf, path = tiny
    eng = bench_cpu.LlamaCppEngine(str(path), 1, 64, n_batch=16)
    prompt = bench_cpu.prompt_ids(16, TINY.vocab, 0)
    res = bench_cpu.timed_pass(eng, prompt, 4)
    assert res["finite"] and len(res["tokens"]) == 4
    assert all(0 <= t < TINY.vocab for t in res["tokens"])


def test_cli_rejects_bad_options():
    with pytest.raises(SystemExit):
        bench_cpu.parse_args(["--gguf-types", "q4_0"])
    with pytest.raises(SystemExit):
        bench_cpu.parse_args(["--prompt-tokens", "1000", "--gen-tokens", "100"])
    a = bench_cpu.parse_args(["--gguf-types", "bf16", "--stat", "median"])
    assert a.gguf_types == ["bf16"] and a.stat == "median" and a.threads == 2
    a = bench_cpu.parse_args([])
    assert a.gguf_types == ["f16", "bf16"] and a.stat == "best" and a.prompt_tokens == 512


def test_gpu_bench_says_why_it_cannot_run(capsys):
    from llama_local import _core
    info = _core.build_info()
    if hasattr(_core, "cuda_kernels") and info["cuda_devices"] > 0:
        pytest.skip("a GPU is here: bench/bench_gpu.py runs for real (minutes), not in the suite")
    import bench_gpu
    assert bench_gpu.main([]) == 0
    assert info["cuda_unavailable_reason"] in capsys.readouterr().out


# K-quant rows need 256 columns; 8 layers so that llama.cpp's "more bits" layers and the others both occur.
TINY_K = dataclasses.replace(TINY, name="bench-tiny-k", hidden=256, intermediate=512, layers=8, head_dim=64)


def make_tiny_k(tmp_path_factory, tied: bool):
    wd = tmp_path_factory.mktemp("bench-k")
    hf = bm.ensure_synthetic_hf(dataclasses.replace(TINY_K, tied=tied), wd, log=lambda *a: None)
    return hf, bm.ensure_gguf(hf, "f16", log=lambda *a: None)


@pytest.fixture(scope="module")
def tiny_k(tmp_path_factory):
    return make_tiny_k(tmp_path_factory, tied=True)


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("ftype", ["q4_k_m", "q5_k_m"])
def test_gguf_mix_types_are_llama_cpps(tmp_path_factory, ftype, tied):
    """Without llama.cpp, the bench rounds into the type of each tensor that llama.cpp's quantizer
    chooses: the same file layout, so the GPU bench times the kernels a real Q4_K_M file runs."""
    _, f16 = make_tiny_k(tmp_path_factory, tied)
    ours = bm.ensure_gguf_mix(f16, ftype, use_llamacpp=False, log=lambda *a: None)
    theirs = bm.ensure_gguf_mix(f16, ftype, use_llamacpp=True, log=lambda *a: None)
    assert ours != theirs
    assert tensor_types(ours) == tensor_types(theirs)
    assert {"Q6_K", "Q4_K" if ftype == "q4_k_m" else "Q5_K"} <= set(tensor_types(ours).values())


def test_gpu_bench_weight_variants(tiny_k, tmp_path, monkeypatch):
    """bench_gpu.py --weights: names are checked before anything is generated, and each variant is
    a file that LLM() reads in the formats its name says (the K mixes by the round-to-nearest
    path, which a GPU machine without llama.cpp takes)."""
    import functools

    import bench_gpu
    from llama_local import LLM

    with pytest.raises(SystemExit, match="'q4_k' is not one of"):
        bench_gpu.weight_names("bf16,q4_k")
    monkeypatch.setattr(bm, "ensure_gguf_mix", functools.partial(bm.ensure_gguf_mix, use_llamacpp=False))
    hf, _ = tiny_k
    names = bench_gpu.weight_names("bf16, int4,fp8,q8_0,q4_k_m,q5_k_m,q6_k")
    variants = bench_gpu.model_variants(hf, names, tmp_path, log=lambda *a: None)
    assert [n for n, _ in variants] == names
    want = {"bf16": {"bf16"}, "int4": {"bf16", "int4 g32"}, "fp8": {"bf16", "fp8_e4m3"}, "q8_0": {"Q8_0"},
            "q4_k_m": {"Q4_K", "Q6_K"}, "q5_k_m": {"Q5_K", "Q6_K"}, "q6_k": {"Q6_K"}}
    prompt = np.random.default_rng(1).integers(0, TINY_K.vocab, 8)
    for name, path in variants:
        llm = LLM(path, progress=False)
        assert {f for f, _ in llm.model.weight_formats} == want[name] | {"f32"}, name  # f32: the norms
        logits = llm.logits(prompt)
        assert logits.shape == (8, TINY_K.vocab) and np.isfinite(logits).all(), name


def test_gpu_run_script_refuses_what_it_cannot_do(tmp_path):
    """tools/gpu/run.sh (for a lent GPU machine): an unknown stage is refused before anything
    runs; with no GPU and no arch named, the build says so and its status is in the summary."""
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("nvidia-smi is here: the script would build for this GPU (minutes), not in the suite")
    script = BENCH.parent / "tools" / "gpu" / "run.sh"
    env = {**os.environ, "OUT": str(tmp_path), "PATH": "/usr/bin:/bin"}  # no nvidia-smi, no nvcc
    env.pop("LLAMA_LOCAL_CUDA_ARCHS", None)
    r = subprocess.run([str(script), "test", "tset"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown stage 'tset'" in r.stderr
    assert not (tmp_path / "summary.txt").exists()
    r = subprocess.run([str(script), "build"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "LLAMA_LOCAL_CUDA_ARCHS unset" in r.stdout
    assert (tmp_path / "summary.txt").read_text().startswith("build: exit 2 in ")
