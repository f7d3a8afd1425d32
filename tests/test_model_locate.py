"""Finding models offline: a Hugging Face cache and an Ollama store built around the SmolLM2 files."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_local import LLM, ModelFormatError
from llama_local.formats.locate import list_models, resolve_model

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def stores(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.delenv("HF_HOME", raising=False)
    return tmp_path


def make_hf_cache(hub: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """The layout huggingface_hub writes: blobs/<hash>, snapshots/<rev>/<name> -> blob, refs/main."""
    org, name = repo.split("/")
    d = hub / f"models--{org}--{name}"
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(REV)
    snap = d / "snapshots" / REV
    snap.mkdir(parents=True)
    (d / "blobs").mkdir()
    for fname, src in files.items():
        blob = d / "blobs" / hashlib.sha256(fname.encode()).hexdigest()
        if isinstance(src, Path):
            blob.symlink_to(src)
        else:
            blob.write_bytes(src)
        (snap / fname).symlink_to(os.path.relpath(blob, snap))
    return snap


def make_ollama_store(root: Path, name: str, tag: str, gguf: Path, namespace="library") -> Path:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob = blobs / digest.replace(":", "-")
    blob.symlink_to(gguf)
    manifest = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 1},
        {"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": gguf.stat().st_size},
    ]}))
    return blob


def test_a_hugging_face_repo_id_is_found_in_the_cache(stores, smollm2_gguf):
    snap = make_hf_cache(stores / "hub", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                         {smollm2_gguf.name: smollm2_gguf})
    path = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF")
    assert path == snap / smollm2_gguf.name
    llm = LLM("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", n_ctx=256, progress=False)
    assert llm.model_name == "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    text = "".join(c.text for c in llm.generate("The capital of France is", max_tokens=4, temperature=0))
    assert "Paris" in text


def test_hf_home_is_honoured(tmp_path, monkeypatch, smollm2_gguf):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snap = make_hf_cache(tmp_path / "hf" / "hub", "org/model", {"model.gguf": smollm2_gguf})
    assert resolve_model("org/model") == snap / "model.gguf"


def test_a_repo_with_several_gguf_files_asks_which(stores, smollm2_gguf):
    snap = make_hf_cache(stores / "hub", "org/quants", {"a.Q4_0.gguf": smollm2_gguf, "b.Q8_0.gguf": smollm2_gguf})
    with pytest.raises(ModelFormatError, match="several GGUF files.*a.Q4_0.gguf, b.Q8_0.gguf"):
        resolve_model("org/quants")
    assert resolve_model("org/quants/b.Q8_0.gguf") == snap / "b.Q8_0.gguf"


def test_an_hf_directory_snapshot(stores):
    snap = make_hf_cache(stores / "hub", "meta-llama/Tiny", {"config.json": b"{}", "model.safetensors": b"x"})
    assert resolve_model("meta-llama/Tiny") == snap


def test_an_ollama_model_is_found_by_name(stores, smollm2_gguf):
    blob = make_ollama_store(stores / "ollama", "smollm2", "135m", smollm2_gguf)
    assert resolve_model("ollama:smollm2:135m") == blob
    assert resolve_model("smollm2:135m") == blob
    llm = LLM("smollm2:135m", n_ctx=256, progress=False)
    assert llm.model_name == "smollm2:135m"
    text = "".join(c.text for c in llm.generate("The capital of France is", max_tokens=4, temperature=0))
    assert "Paris" in text


def test_ollama_latest_and_namespaces(stores, smollm2_gguf):
    latest = make_ollama_store(stores / "ollama", "smollm2", "latest", smollm2_gguf)
    other = make_ollama_store(stores / "ollama", "tiny", "q4", smollm2_gguf, namespace="someone")
    assert resolve_model("ollama:smollm2") == latest
    assert resolve_model("someone/tiny:q4") == other


def test_list_shows_both_stores(stores, smollm2_gguf):
    make_hf_cache(stores / "hub", "org/model", {"model.gguf": smollm2_gguf})
    make_ollama_store(stores / "ollama", "smollm2", "135m", smollm2_gguf)
    names = {(m.name, m.kind) for m in list_models()}
    assert {("org/model", "huggingface"), ("smollm2:135m", "ollama")} <= names
    out = subprocess.run([sys.executable, "-m", "llama_local.cli", "list", "--json"], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    listed = {m["name"]: m for m in json.loads(out.stdout)}
    assert listed["smollm2:135m"]["bytes"] == smollm2_gguf.stat().st_size


def test_chat_finds_an_ollama_model(stores, smollm2_gguf):
    make_ollama_store(stores / "ollama", "smollm2", "135m", smollm2_gguf)
    out = subprocess.run([sys.executable, "-m", "llama_local.cli", "chat", "ollama:smollm2:135m",
                          "--temperature", "0", "--max-tokens", "20", "--system", "Answer in one short sentence."], input="What is the capital of France?\n",
                         capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


@pytest.mark.parametrize("spec, why", [
    ("org/absent", "no Hugging Face model org/absent in the cache"),
    ("ollama:absent:1b", "not pulled with Ollama"),
    ("absent:7b", "not pulled with Ollama"),
    ("./no/such/dir", "no such file or directory"),
])
def test_missing_models_name_where_they_were_looked_for(stores, spec, why):
    with pytest.raises(ModelFormatError, match=why):
        resolve_model(spec)


def test_broken_ollama_entries_are_explained(stores, smollm2_gguf):
    blob = make_ollama_store(stores / "ollama", "gone", "1b", smollm2_gguf)
    blob.unlink()
    with pytest.raises(ModelFormatError, match="missing from the Ollama store"):
        resolve_model("gone:1b")
    manifest = stores / "ollama" / "manifests" / "registry.ollama.ai" / "library" / "bad" / "1b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{ not json")
    with pytest.raises(ModelFormatError, match="not a readable Ollama manifest"):
        resolve_model("bad:1b")
