"""Checkpoint formats: HF safetensors, GGUF read in place, Meta original/; each yields the core's weight specs."""
