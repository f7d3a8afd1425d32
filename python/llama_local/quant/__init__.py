"""Quantizing checkpoints into the ecosystem's on-disk formats (compressed-tensors)."""
