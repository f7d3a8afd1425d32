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
    llm = LLM(smol_fp8, n_ctx=512, progress=False)
    assert "fp8_e4m3" in llm.info()["weight_formats"]
    ids = llm.tokenizer.encode(PROSE.read_text())[:300]
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
