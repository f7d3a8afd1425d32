"""`llama-local quantize --format fp8`: compressed-tensors checkpoints that transformers and LLM() load."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from llama_local import LLM, LlamaLocalError
from llama_local.evaluate.perplexity import perplexity
from llama_local.formats.safetensors_io import Checkpoint
from llama_local.quant import fp8 as fp8_mod
from llama_local.quant.writer import quantize

PROSE = Path(__file__).parent / "data" / "prose.txt"


def run(*args):
    return subprocess.run([sys.executable, "-m", "llama_local.cli", *args], capture_output=True, text=True,
                          timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def smol_fp8(smollm2_gguf, tmp_path_factory):
    before = digest(smollm2_gguf)
    out = tmp_path_factory.mktemp("q") / "smollm2-fp8"
    r = run("quantize", str(smollm2_gguf), str(out), "--format", "fp8")
    assert r.returncode == 0, r.stderr
    assert digest(smollm2_gguf) == before  # the source is only read
    return out


def test_transformers_loads_it_and_agrees(smol_fp8):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("compressed_tensors")
    llm = LLM(smol_fp8, n_ctx=2048, progress=False)
    assert "fp8_e4m3" in llm.info()["weight_formats"]
    ids = llm.tokenizer.encode(PROSE.read_text())  # all of it: 1,179 tokens
    ours = llm.logits(ids)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(smol_fp8), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.97


def test_fp8_costs_little_perplexity(smol_fp8, smollm2_gguf):
    text = PROSE.read_text()
    base = perplexity(LLM(smollm2_gguf, n_ctx=128, progress=False), text, ctx=128).ppl
    q = perplexity(LLM(smol_fp8, n_ctx=128, progress=False), text, ctx=128).ppl
    assert q / base <= 1.035, (q, base)


def test_the_layout_is_compressed_tensors(smol_fp8, smollm2_dir):
    cfg = json.loads((smol_fp8 / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "float-quantized"
    ct = pytest.importorskip("compressed_tensors")
    parsed = ct.QuantizationConfig.model_validate(qc)  # the library's own schema
    assert parsed.config_groups["group_0"].weights.strategy == "channel"
    out, src = Checkpoint(smol_fp8), Checkpoint(smollm2_dir)
    n_fp8 = 0
    for name in src.keys():
        w = np.asarray(src.tensor(name), np.float32)
        dtype, shape = out.info(name)
        assert tuple(shape) == w.shape
        if name.startswith("model.layers.") and name.endswith("proj.weight"):
            n_fp8 += 1
            assert str(dtype) == "float8_e4m3fn"
            scale = out.tensor(name[: -len("weight")] + "weight_scale")
            assert str(scale.dtype) == "bfloat16" and scale.shape == (w.shape[0], 1)
            deq = out.tensor(name).astype(np.float32) * scale.astype(np.float32)
            # E4M3 keeps 3 mantissa bits: each weight within half a step (2^-4 relative) of the source,
            # or of the smallest step for tiny ones.
            step = np.maximum(np.abs(w), scale.astype(np.float32) * 2.0**-6)
            assert np.all(np.abs(deq - w) <= step * 2.0**-4 * 1.0001 + 1e-30)
        else:
            assert str(dtype) == "bfloat16"
            np.testing.assert_array_equal(out.tensor(name), w.astype(ml_dtypes.bfloat16))
    assert n_fp8 == 7 * 30  # SmolLM2-135M: 30 layers of q, k, v, o, gate, up, down


def test_an_existing_output_is_refused_unless_forced(smollm2_gguf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    r = run("quantize", str(smollm2_gguf), str(out), "--format", "fp8")
    assert r.returncode == 2 and "already exists" in r.stderr
    assert (out / "mine.txt").read_text() == "keep"
    r = run("quantize", str(smollm2_gguf), str(out), "--format", "fp8", "--force")
    assert r.returncode == 0, r.stderr
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()


def test_an_interrupted_run_leaves_nothing(smollm2_gguf, tmp_path, monkeypatch):
    calls = []
    real = fp8_mod.quantize_fp8_channel

    def interrupt_on_the_third(w):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(w)

    monkeypatch.setattr(fp8_mod, "quantize_fp8_channel", interrupt_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        quantize(smollm2_gguf, tmp_path / "out", fmt="fp8")
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # no output, no partial directory


def test_bad_sources_are_refused(smol_fp8, smollm2_gguf, tmp_path):
    with pytest.raises(LlamaLocalError, match="already quantized"):
        quantize(smol_fp8, tmp_path / "again", fmt="fp8")
    pytest.importorskip("torch")
    from tiny_models import make_tiny_llama
    tiny = tmp_path / "tiny"
    make_tiny_llama(tiny, dtype="bfloat16")
    before = {p.name: digest(p) for p in tiny.iterdir()}
    with pytest.raises(LlamaLocalError, match="would replace the source"):
        quantize(tiny, tmp_path / "." / "tiny", fmt="fp8", force=True)
    assert {p.name: digest(p) for p in tiny.iterdir()} == before
    r = run("quantize", str(tmp_path / "missing"), str(tmp_path / "o"), "--format", "fp8")
    assert r.returncode == 2 and "no such file or directory" in r.stderr
    r = run("quantize", str(smollm2_gguf), str(tmp_path / "o"), "--format", "int3")
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.parametrize("fmt", ["fp8", "int4"])
def test_a_weight_with_nan_is_refused_naming_it(tmp_path, fmt):
    pytest.importorskip("torch")
    from safetensors.numpy import load_file, save_file
    from tiny_models import make_tiny_llama
    tiny = tmp_path / "tiny"
    make_tiny_llama(tiny)
    tensors = load_file(tiny / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"][2, 5] = np.nan
    tensors["model.layers.1.mlp.up_proj.weight"][7, 0] = np.inf
    save_file(tensors, tiny / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LlamaLocalError, match=r"'model.layers.1.mlp.up_proj.weight' holds 2 NaN or infinite "
                                              r"value\(s\), the first at \(2, 5\)"):
        quantize(tiny, tmp_path / "out", fmt=fmt, group_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # nothing written


# ---- INT4 (W4A16, pack-quantized) ----

@pytest.fixture(scope="module")
def smol_int4(smollm2_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("q4") / "smollm2-int4-g32-sym"
    r = run("quantize", str(smollm2_gguf), str(out), "--format", "int4", "--group-size", "32", "--symmetric")
    assert r.returncode == 0, r.stderr
    return out


def test_int4_loads_in_transformers_and_agrees(smol_int4):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("compressed_tensors")
    llm = LLM(smol_int4, n_ctx=2048, progress=False)
    ids = llm.tokenizer.encode(PROSE.read_text())  # all of it: 1,179 tokens
    ours = llm.logits(ids)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(smol_int4), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.97


@pytest.mark.parametrize("symmetric, group", [(True, 32), (False, 64), (False, 128)])
def test_int4_matches_the_compressed_tensors_compressor(symmetric, group):
    # The library's own compressor, given our scales (and zero points) and the weights they
    # represent exactly ((q - zero) * scale, in fp32), must pack them into our bytes bit for bit,
    # and its decompressor must give back our dequantized weights.
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llama_local.quant import int4
    w = np.random.default_rng(group).standard_normal((40, 256)).astype(np.float32) * 0.05
    w[3] = 0.0                    # a row of zeros: the smallest scale
    w[5, :group] = np.abs(w[5, :group])  # a group with no negative values (zero point at the edge)
    q, scale, zero = int4.quantize_int4(w, group, symmetric)
    s = scale.astype(np.float32).repeat(group, axis=1)
    z = 0 if symmetric else zero.astype(np.float32).repeat(group, axis=1)
    exact = (q - z) * s
    if symmetric:
        # The scale search never does worse, group by group, than compressed-tensors' max/7.5.
        s0 = (np.abs(w).reshape(40, -1, group).max(axis=2) / 7.5)
        s0 = np.where(s0 == 0, int4.ZERO_SCALE, s0).astype(ml_dtypes.bfloat16).astype(np.float32)
        s0 = s0.repeat(group, axis=1)
        err0 = ((np.clip(np.round(w / s0), -8, 7) * s0 - w) ** 2).reshape(40, -1, group).sum(axis=2)
        err = ((exact - w) ** 2).reshape(40, -1, group).sum(axis=2)
        assert np.all(err <= err0 * (1 + 1e-6) + 1e-30) and err.sum() < err0.sum()
    else:  # min-max: every value within a step (half for rounding, half for the rounded zero point)
        assert np.abs(exact - w).max() <= s.max() * 1.0001
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**int4.weight_config(group, symmetric)))
    state = {"weight": torch.from_numpy(exact),
             "weight_scale": torch.from_numpy(scale.astype(np.float32)).to(torch.bfloat16)}
    if not symmetric:
        state["weight_zero_point"] = torch.from_numpy(zero.astype(np.int8))
    theirs = PackedQuantizationCompressor.compress(state, scheme)
    packed = int4.pack_int4(q, 1)
    assert np.array_equal(theirs["weight_packed"].numpy(), packed)
    ours = {"weight_packed": torch.from_numpy(packed), "weight_scale": state["weight_scale"],
            "weight_shape": torch.tensor([40, 256])}
    if not symmetric:
        assert np.array_equal(theirs["weight_zero_point"].numpy(), int4.pack_int4(zero, 0))
        ours["weight_zero_point"] = torch.from_numpy(int4.pack_int4(zero, 0))
    deq = PackedQuantizationCompressor.decompress(ours, scheme)["weight"].float().numpy()
    want = exact.astype(ml_dtypes.bfloat16).astype(np.float32)  # the library dequantizes in bf16
    np.testing.assert_array_equal(deq, want)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_row_blocks_do_not_change_the_result(symmetric, monkeypatch):
    # The search runs over row blocks on a pool of threads; blocks of 3 rows (the last one short)
    # must give what one block of all rows gives, importance weights included.
    from llama_local.quant import int4
    rng = np.random.default_rng(3)
    w = (rng.standard_t(4, size=(50, 256)) * 0.02).astype(np.float32)
    importance = rng.random(256).astype(np.float32)
    whole = int4.quantize_int4(w, 64, symmetric, importance=importance)
    monkeypatch.setattr(int4, "CHUNK_ELEMENTS", 3 * 256)
    blocks = int4.quantize_int4(w, 64, symmetric, importance=importance)
    for a, b in zip(whole, blocks):
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_int4_symmetric_rounds_closer_than_q4_0():
    # llama.cpp's Q4_0 (ggml's quantize_row_q4_0_ref): d = the group's largest-magnitude value / -8
    # in fp16, so that value lands on the code -8. The symmetric search takes that sign too and looks
    # around it: on heavy-tailed weights, its squared error must come out lower in total.
    from llama_local.quant import int4
    rng = np.random.default_rng(7)
    w = (rng.standard_t(4, size=(64, 512)) * 0.02).astype(np.float32)
    g = w.reshape(64, -1, 32)
    biggest = np.take_along_axis(g, np.abs(g).argmax(axis=2)[:, :, None], axis=2)
    d = (biggest / -8).astype(np.float16).astype(np.float32)
    q40 = np.clip(np.round(g / d), -8, 7) * d
    q, scale, _ = int4.quantize_int4(w, 32, True)
    ours = q.reshape(g.shape) * scale.astype(np.float32)[:, :, None]
    assert ((ours - g) ** 2).sum() < 0.97 * ((q40 - g) ** 2).sum()
    assert (scale.astype(np.float32) < 0).mean() > 0.3   # the largest value is positive in about half the groups


def test_int4_asymmetric_output_loads_and_answers(smollm2_gguf, tmp_path):
    out = tmp_path / "int4-g64"
    r = run("quantize", str(smollm2_gguf), str(out), "--format", "int4", "--group-size", "64")
    assert r.returncode == 0, r.stderr
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "pack-quantized" and qc["config_groups"]["group_0"]["weights"]["symmetric"] is False
    assert "model.layers.0.mlp.up_proj.weight_zero_point" in Checkpoint(out).keys()
    llm = LLM(out, n_ctx=256, progress=False)
    text = "".join(c.text for c in llm.generate("The capital of France is", max_tokens=6, temperature=0))
    assert "Paris" in text


def test_a_group_that_does_not_divide_is_refused_naming_the_tensor(smollm2_gguf, tmp_path):
    r = run("quantize", str(smollm2_gguf), str(tmp_path / "o"), "--format", "int4", "--group-size", "128")
    assert r.returncode == 2
    assert "'model.layers.0.self_attn.q_proj.weight': its input dimension 576" in r.stderr and "try 32 or 64" in r.stderr
    assert not (tmp_path / "o").exists()


def test_fp8_dynamic_activations_change_only_the_config(smol_fp8, smollm2_gguf, tmp_path):
    out = tmp_path / "fp8-dynamic"
    r = run("quantize", str(smollm2_gguf), str(out), "--format", "fp8", "--dynamic-activations")
    assert r.returncode == 0, r.stderr
    assert digest(out / "model.safetensors") == digest(smol_fp8 / "model.safetensors")  # the same weights
    group = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    plain = json.loads((smol_fp8 / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    assert plain["input_activations"] is None
    assert group["input_activations"]["strategy"] == "token" and group["input_activations"]["dynamic"] is True
    ct = pytest.importorskip("compressed_tensors")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert ct.QuantizationConfig.model_validate(qc).config_groups["group_0"].input_activations.dynamic is True
    assert "Paris" in "".join(c.text for c in LLM(out, n_ctx=128, progress=False).generate(
        "The capital of France is", max_tokens=6, temperature=0))
    bad = run("quantize", str(smollm2_gguf), str(tmp_path / "x"), "--format", "int4", "--dynamic-activations")
    assert bad.returncode == 2 and "--format fp8 only" in bad.stderr


@pytest.mark.parametrize("fmt", ["fp8", "int4"])
def test_the_lm_head_is_quantized_on_request(smollm2_gguf, tmp_path, fmt):
    # SmolLM2 ties its head to the embeddings: --quantize-lm-head writes a quantized lm_head beside
    # the bf16 embeddings and unties them; transformers loads that and agrees with us.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("compressed_tensors")
    out = tmp_path / fmt
    args = ["--group-size", "32", "--symmetric"] if fmt == "int4" else []
    r = run("quantize", str(smollm2_gguf), str(out), "--format", fmt, "--quantize-lm-head", *args)
    assert r.returncode == 0, r.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["quantization_config"]["ignore"] == []
    c = Checkpoint(out)
    assert str(c.info("model.embed_tokens.weight")[0]) == "bfloat16"
    head = "lm_head.weight" if fmt == "fp8" else "lm_head.weight_packed"
    assert str(c.info(head)[0]) == ("float8_e4m3fn" if fmt == "fp8" else "int32")
    assert "model.layers.0.mlp.down_proj.weight" + ("_packed" if fmt == "int4" else "") in c.keys()
    llm = LLM(out, n_ctx=512, progress=False)
    formats = llm.info()["weight_formats"]
    vocab, hidden = c.info("model.embed_tokens.weight")[1]
    assert formats["bf16"] == vocab * hidden * 2   # the embeddings, read as the embeddings only
    quantized = sum(v for k, v in formats.items() if k not in ("bf16", "f32"))
    body = sum(int(np.prod(c.info(n)[1])) for n in c.keys() if n.startswith("model.layers.") and "proj" in n
               and n.endswith(".weight" if fmt == "fp8" else ".weight_packed")) * (1 if fmt == "fp8" else 4)
    assert quantized >= body + vocab * hidden * (1 if fmt == "fp8" else 0.5)   # ... and a quantized head
    ids = llm.tokenizer.encode(PROSE.read_text())[:400]
    ours = llm.logits(ids)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.97
