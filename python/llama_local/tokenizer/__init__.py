"""Tokenizers: HF `tokenizers`, with Meta's tokenizer.model and GGUF vocabularies converted to it."""

from .tokenizer import Tokenizer

__all__ = ["Tokenizer"]
