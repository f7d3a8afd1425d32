"""Finding the models a user already has, offline.

A model name given to `LLM()` or the CLI is, in this order:
- a path: a model directory, a .gguf file, a Meta original/ directory;
- an Ollama model, `ollama:NAME[:TAG]` or a bare `NAME:TAG`: the manifest under
  `$OLLAMA_MODELS/manifests/` (default ~/.ollama/models) names the GGUF blob holding the weights;
- a Hugging Face repo id `ORG/NAME` (optionally `ORG/NAME/FILE.gguf`) in the local Hugging Face
  cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else ~/.cache/huggingface/hub):
  `models--ORG--NAME/refs/main` names the snapshot directory that holds the files.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import LlamaLocalError, ModelFormatError

OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
GGUF_MAGIC = b"GGUF"


@dataclass
class FoundModel:
    name: str      # what the user would type
    kind: str      # "path", "huggingface", "ollama", "demo"
    path: Path     # what LLM() opens: a directory or a GGUF file
    size: int      # bytes of weights on disk


def is_gguf_file(path: Path) -> bool:
    """A GGUF file by its magic, whatever its name (Ollama's blobs have none)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def ollama_models_dir() -> Path:
    if os.environ.get("OLLAMA_MODELS"):
        return Path(os.environ["OLLAMA_MODELS"]).expanduser()
    return Path.home() / ".ollama" / "models"


def resolve_model(spec: str | os.PathLike) -> Path:
    """The directory or GGUF file that `spec` names (see the module docstring), or
    ModelFormatError saying where it was looked for."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    text = str(spec)
    if text.startswith("ollama:") or _looks_like_ollama(text):
        return _resolve_ollama(text.removeprefix("ollama:"))
    if _looks_like_repo_id(text):
        return _resolve_hf(text)
    raise ModelFormatError(
        f"{text}: no such file or directory, and not a model name (a Hugging Face repo id ORG/NAME "
        f"in {hf_hub_cache()}, or an Ollama model NAME:TAG in {ollama_models_dir()}); "
        "`llama-local list` shows the models found on this machine")


def _looks_like_ollama(text: str) -> bool:
    # llama3.1:8b, library/llama3.1:latest: a tag after a colon, no path separators beyond a namespace.
    name, sep, tag = text.rpartition(":")
    return bool(sep) and bool(name) and bool(tag) and "/" not in tag and not name.startswith(("/", ".", "~"))


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) in (2, 3) and all(parts) and not text.startswith((".", "~"))


# ---- Hugging Face cache ----

def _hf_snapshot(repo_dir: Path, revision: str = "main") -> Path | None:
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        return snap if snap.is_dir() else None
    snap = repo_dir / "snapshots" / revision        # a commit hash given directly
    if snap.is_dir():
        return snap
    snaps = sorted((p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime)
    return snaps[-1] if revision == "main" and snaps else None


def _resolve_hf(text: str) -> Path:
    repo, _, revision = text.partition("@")
    parts = repo.split("/")
    org, name, file = parts[0], parts[1], (parts[2] if len(parts) == 3 else None)
    cache = hf_hub_cache()
    repo_dir = cache / f"models--{org}--{name}"
    if not repo_dir.is_dir():
        raise ModelFormatError(f"{text}: not a path, and no Hugging Face model {org}/{name} in the "
                               f"cache {cache} (set HF_HUB_CACHE or HF_HOME if it lives elsewhere)")
    snap = _hf_snapshot(repo_dir, revision or "main")
    if snap is None:
        raise ModelFormatError(f"{repo_dir}: no snapshot for revision {revision or 'main'!r}")
    if file is not None:
        target = snap / file
        if not target.is_file():
            raise ModelFormatError(f"{text}: {file} is not in {snap}")
        return target
    if (snap / "config.json").is_file() or (snap / "original" / "params.json").is_file():
        return snap
    ggufs = sorted(p.name for p in snap.glob("*.gguf"))
    if len(ggufs) == 1:
        return snap / ggufs[0]
    if ggufs:
        raise ModelFormatError(f"{text} holds several GGUF files; name one as {org}/{name}/FILE: "
                               + ", ".join(ggufs))
    raise ModelFormatError(f"{snap}: the cached {org}/{name} has neither config.json nor a .gguf file "
                           "(was it only partly downloaded?)")


def _hf_models() -> list[FoundModel]:
    found = []
    cache = hf_hub_cache()
    for repo_dir in sorted(cache.glob("models--*--*")) if cache.is_dir() else []:
        _, org, name = repo_dir.name.split("--", 2)
        snap = _hf_snapshot(repo_dir)
        if snap is None:
            continue
        if (snap / "config.json").is_file() and any(snap.glob("*.safetensors")):
            found.append(FoundModel(f"{org}/{name}", "huggingface", snap,
                                    sum(_size(p) for p in snap.glob("*.safetensors"))))
        ggufs = sorted(snap.glob("*.gguf"))
        for g in ggufs:
            label = f"{org}/{name}" if len(ggufs) == 1 else f"{org}/{name}/{g.name}"
            found.append(FoundModel(label, "huggingface", g, _size(g)))
    return found


def _size(p: Path) -> int:
    try:
        return p.stat().st_size  # follows the cache's symlinks into blobs/
    except OSError:
        return 0


# ---- Ollama store ----

def _ollama_manifest_path(name: str) -> tuple[Path, str]:
    base, sep, tag = name.rpartition(":")
    if not sep:
        base, tag = name, "latest"
    parts = base.split("/")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", parts[0]]
    elif len(parts) == 2:
        parts = [OLLAMA_REGISTRY, *parts]
    return ollama_models_dir() / "manifests" / Path(*parts) / tag, f"{base}:{tag}"


def _ollama_blob(manifest: Path, label: str) -> Path:
    try:
        doc = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{manifest}: not a readable Ollama manifest ({e})") from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    digests = [layer.get("digest") for layer in layers or []
               if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER]
    if not digests or not isinstance(digests[0], str) or ":" not in digests[0]:
        raise ModelFormatError(f"{manifest}: the Ollama manifest of {label} names no model layer")
    blob = ollama_models_dir() / "blobs" / digests[0].replace(":", "-")
    if not blob.is_file():
        raise ModelFormatError(f"{label}: its weights {blob} are missing from the Ollama store")
    if not is_gguf_file(blob):
        raise ModelFormatError(f"{blob}: the model layer of {label} is not a GGUF file")
    return blob


def _resolve_ollama(name: str) -> Path:
    manifest, label = _ollama_manifest_path(name)
    if not manifest.is_file():
        raise ModelFormatError(f"{label}: not a path, and not pulled with Ollama "
                               f"(no manifest {manifest}; set OLLAMA_MODELS if the store lives elsewhere)")
    return _ollama_blob(manifest, label)


def _ollama_models() -> list[FoundModel]:
    root = ollama_models_dir() / "manifests"
    found = []
    for manifest in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []:
        parts = manifest.relative_to(root).parts
        if len(parts) < 3:
            continue
        host, *repo, tag = parts
        if host == OLLAMA_REGISTRY and repo[0] == "library":
            repo = repo[1:]
        label = "/".join(repo) + ":" + tag
        try:
            blob = _ollama_blob(manifest, label)
        except ModelFormatError:
            continue
        found.append(FoundModel(label, "ollama", blob, _size(blob)))
    return found


def list_models() -> list[FoundModel]:
    """Every model found in the Hugging Face cache, the Ollama store and the demo package."""
    found = _hf_models() + _ollama_models()
    try:
        from ..demo import demo_model_path
        demo = demo_model_path()
        found.append(FoundModel("(no MODEL argument)", "demo", demo, _size(demo)))
    except LlamaLocalError:
        pass  # the demo package is not installed
    return found
