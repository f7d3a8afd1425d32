"""GPTQ: the algorithm on synthetic layers, the engine's calibration inputs, and `quantize --method gptq`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llama_local import LLM
from llama_local.quant import gptq, int4

PROSE = Path(__file__).parent / "data" / "prose.txt"


def run(*args):
    return subprocess.run([sys.executable, "-m", "llama_local.cli", *args], capture_output=True, text=True,
                          timeout=600)


def dequantized(q, scale, zero, group):
    s = scale.astype(np.float32).repeat(group, axis=1)
    z = 0 if zero is None else zero.astype(np.float32).repeat(group, axis=1)
    return (q.astype(np.float32) - z) * s


def output_error(w, wq, x):
    return float((((x @ (wq - w).T)) ** 2).sum())


@pytest.mark.parametrize("symmetric, group", [(True, 32), (False, 64), (True, 128)])
def test_gptq_beats_rounding_on_inputs_it_did_not_see(symmetric, group):
    # Inputs that live near a few directions (as a layer's do): GPTQ, calibrated on one sample,
    # must cut the output error on another sample of the same distribution far below
    # round-to-nearest's (it does by 10-15x here; rounding ignores the inputs altogether).
    rng = np.random.default_rng(group)
    n, k = 48, 256
    basis = np.linalg.qr(rng.standard_normal((k, k)))[0]
    spectrum = np.exp(-np.arange(k) / 16)
    calib, held = ((rng.standard_normal((2048, k)) * spectrum) @ basis.T for _ in range(2))
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    h = (calib.T @ calib).astype(np.float64)
    q, scale, zero = gptq.gptq_int4(w, h, group, symmetric)
    assert q.dtype == np.int8 and q.min() >= -8 and q.max() <= 7 and scale.shape == (n, k // group)
    assert (zero is None) == symmetric
    rq, rs, rz = int4.quantize_int4(w, group, symmetric)
    ours = output_error(w, dequantized(q, scale, zero, group), held)
    rtn = output_error(w, dequantized(rq, rs, rz, group), held)
    assert ours < 0.25 * rtn, (ours, rtn)


def test_scales_are_searched_for_the_inputs_energy_and_fixed_before_gptq():
    # The scale search weights each column's squared error by its importance (diag H): with skewed
    # importances it must find scales with less weighted error than the unweighted search.
    rng = np.random.default_rng(1)
    n, k, group = 64, 128, 32
    w = rng.standard_normal((n, k)).astype(np.float32)
    importance = np.exp(3 * rng.standard_normal(k)).astype(np.float32)

    def weighted_error(q, scale):
        return float((((dequantized(q, scale, None, group) - w) ** 2) * importance).sum())
    q0, s0, _ = int4.quantize_int4(w, group, True)
    q1, s1, _ = int4.quantize_int4(w, group, True, importance=importance)
    assert weighted_error(q1, s1) < 0.97 * weighted_error(q0, s0)
    # Static groups (actorder "weight"): GPTQ keeps those scales, found on the original weights,
    # however it then moves the columns.
    x = rng.standard_normal((512, k)) * np.sqrt(importance)
    h = x.T @ x
    _, scale, _ = gptq.gptq_int4(w, h, group, True)
    _, expected, _ = int4.quantize_int4(w, group, True, importance=np.diag(h))
    np.testing.assert_array_equal(scale.astype(np.float32), expected.astype(np.float32))


def test_a_group_size_that_does_not_divide_is_refused():
    with pytest.raises(Exception, match="'x'.*not a multiple of the group size 32"):
        gptq.gptq_int4(np.zeros((4, 48), np.float32), np.eye(48), 32, True, name="x")


def test_outlier_tokens_are_clipped_and_the_sink_is_weighted():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    x[5] *= 100                                 # a massive-activation token
    median = np.median(np.linalg.norm(x, axis=1))
    out = gptq.token_weighted(x, sink=False)
    norms = np.linalg.norm(out, axis=1)
    assert norms[5] == pytest.approx(gptq.CLIP_NORM * median, rel=1e-5)
    np.testing.assert_array_equal(np.delete(out, 5, axis=0), np.delete(x, 5, axis=0))
    sink = gptq.token_weighted(x, sink=True)
    np.testing.assert_allclose(sink[0], x[0] * np.sqrt(64), rtol=1e-6)   # every query of the window reads it
    np.testing.assert_array_equal(sink[1:5], x[1:5])


def test_the_engine_hands_over_the_inputs_transformers_computes(smollm2_dir):
    # Model.observe_inputs: each decoder layer's linear inputs, as the reference model's modules see them.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    llm = LLM(smollm2_dir, n_ctx=256, progress=False)
    ids = llm.tokenizer.encode(PROSE.read_text())[:200]
    seen = {}

    def observe(layer, which, x):
        if layer in (0, 17, 29):
            seen[(layer, which)] = x.copy()
    llm.model.observe_inputs(np.asarray(ids, dtype=np.int32), observe)
    assert {w for _, w in seen} == {0, 1, 2, 3}
    model = transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    ref, hooks = {}, []
    modules = {0: "self_attn.q_proj", 1: "self_attn.o_proj", 2: "mlp.up_proj", 3: "mlp.down_proj"}
    for layer in (0, 17, 29):
        for which, name in modules.items():
            def hook(mod, inp, out, key=(layer, which)):
                ref[key] = inp[0][0].numpy().copy()
            hooks.append(model.model.layers[layer].get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for key, x in ref.items():
        assert seen[key].shape == x.shape, key
        err = np.linalg.norm(seen[key] - x) / np.linalg.norm(x)
        assert err < 2e-2, (key, err)   # bf16 weights, fp32 arithmetic in a different order
    # Calibration leaves the engine usable: the next generation starts from an empty cache.
    assert "Paris" in "".join(c.text for c in llm.generate("The capital of France is", max_tokens=6, temperature=0))


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    # Text unlike the prose the model is scored on: Python's own reference documentation.
    from pydoc_data.topics import topics
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics)), encoding="utf-8")
    return path


def test_quantize_with_gptq_end_to_end(smollm2_gguf, calibration_file, tmp_path):
    out = tmp_path / "gptq"
    r = run("quantize", str(smollm2_gguf), str(out), "--format", "int4", "--group-size", "32", "--symmetric",
            "--method", "gptq", "--calibration", str(calibration_file), "--calibration-tokens", "1024")
    assert r.returncode == 0, r.stderr
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    weights = qc["config_groups"]["group_0"]["weights"]
    assert qc["format"] == "pack-quantized" and weights["group_size"] == 32 and weights["actorder"] == "weight"
    rtn = tmp_path / "rtn"
    assert run("quantize", str(smollm2_gguf), str(rtn), "--format", "int4", "--group-size", "32",
               "--symmetric").returncode == 0
    from llama_local.formats.safetensors_io import Checkpoint
    name = "model.layers.3.mlp.down_proj.weight_packed"
    assert not np.array_equal(Checkpoint(out).tensor(name), Checkpoint(rtn).tensor(name))
    from llama_local.evaluate.perplexity import perplexity
    text = PROSE.read_text()
    base = perplexity(LLM(smollm2_gguf, n_ctx=128, progress=False), text, ctx=128).ppl
    ours = perplexity(LLM(out, n_ctx=128, progress=False), text, ctx=128).ppl
    assert ours < 1.25 * base, (ours, base)
    llm = LLM(out, n_ctx=2048, progress=False)
    assert "Paris" in "".join(c.text for c in llm.generate("The capital of France is", max_tokens=6, temperature=0))
    # actorder "weight" is compressed-tensors' own: transformers loads the output and agrees.
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("compressed_tensors")
    llm.reset()
    ids = llm.tokenizer.encode(text)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    assert (llm.logits(ids).argmax(-1) == ref.argmax(-1)).mean() >= 0.97


def test_gptq_needs_int4_and_a_readable_calibration_text(smollm2_gguf, calibration_file, tmp_path):
    dst = tmp_path / "o"
    r = run("quantize", str(smollm2_gguf), str(dst), "--format", "int4", "--method", "gptq")
    assert r.returncode == 2 and "--calibration" in r.stderr
    r = run("quantize", str(smollm2_gguf), str(dst), "--format", "fp8", "--method", "gptq",
            "--calibration", str(calibration_file))
    assert r.returncode == 2 and "--format int4" in r.stderr
    r = run("quantize", str(smollm2_gguf), str(dst), "--format", "int4", "--method", "gptq",
            "--calibration", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "missing.txt: no such file" in r.stderr
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    r = run("quantize", str(smollm2_gguf), str(dst), "--format", "int4", "--group-size", "32", "--method", "gptq",
            "--calibration", str(short))
    assert r.returncode == 2 and "calibration text is" in r.stderr
    r = run("quantize", str(smollm2_gguf), str(dst), "--format", "int4", "--group-size", "32", "--method", "gptq",
            "--calibration", str(calibration_file), "--calibration-tokens", "0")
    assert r.returncode == 2 and "--calibration-tokens 0" in r.stderr
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 100)
    r = run("quantize", str(smollm2_gguf), str(dst), "--format", "int4", "--method", "gptq",
            "--calibration", str(binary))
    assert r.returncode == 2 and "UTF-8" in r.stderr
    assert not dst.exists()
