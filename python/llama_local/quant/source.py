"""The tensors of anything LLM() loads, one at a time in float32, under Hugging Face names.

A Hugging Face directory is read through its memory-mapped safetensors; a GGUF file is
dequantized tensor by tensor with gguf-py (llama.cpp's q/k row permutation undone); a Meta
original/ directory goes through its cached conversion. Only one tensor is in memory at a time.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ModelFormatError

# What a Hugging Face model directory holds besides its weights (copied as they are).
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja")


@dataclass
class SourceTensor:
    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]   # float32


class Source:
    """config (dict), tensors(), write_side_files(dir): a model to quantize."""

    def __init__(self, spec: str):
        from ..formats.locate import is_gguf_file, resolve_model
        from ..formats.meta_original import ensure_converted_meta, find_original_dir
        p = resolve_model(spec)
        self.path = p
        self._gguf = None
        if p.is_file():
            if not (p.suffix.lower() == ".gguf" or is_gguf_file(p)):
                raise ModelFormatError(f"{p}: expected a model directory or a .gguf file")
            from ..formats.gguf_import import GGUFFile
            self._gguf = GGUFFile(p)
            self.config = dict(self._gguf.config)
            return
        if not (p / "config.json").is_file():
            original = find_original_dir(p)
            if original is None:
                raise ModelFormatError(f"{p}: not a model directory (no config.json, no Meta original/)")
            p = ensure_converted_meta(original)
        from ..formats.safetensors_io import Checkpoint
        self._dir = p
        self._ckpt = Checkpoint(p)
        try:
            self.config = json.loads((p / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{p / 'config.json'}: not valid JSON ({e})") from None
        if self.config.get("quantization_config"):
            method = self.config["quantization_config"].get("quant_method")
            raise ModelFormatError(f"{p}: already quantized (quant_method {method!r}); quantize a bf16, fp16 "
                                   "or fp32 checkpoint, or a GGUF file")

    def tensors(self) -> Iterator[SourceTensor]:
        if self._gguf is not None:
            from ..formats.gguf_import import load_tensor
            f = self._gguf
            for name, t, heads in f.plan:
                shape = tuple(int(d) for d in reversed(t.shape))
                yield SourceTensor(name, shape, lambda t=t, heads=heads, shape=shape: load_tensor(
                    t, heads, shape, f.path, np.float32))
            return
        for name in self._ckpt.keys():
            _, shape = self._ckpt.info(name)
            yield SourceTensor(name, tuple(shape),
                               lambda name=name: np.asarray(self._ckpt.tensor(name), dtype=np.float32))

    def write_side_files(self, directory: Path) -> None:
        """Everything but the weights (config.json as the source has it; the caller rewrites it)."""
        if self._gguf is not None:
            self._gguf.write_side_files(directory)
            return
        for name in SIDE_FILES:
            if (self._dir / name).is_file():
                shutil.copyfile(self._dir / name, directory / name)
