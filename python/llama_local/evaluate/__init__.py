"""Measuring a model's quality: perplexity as llama.cpp's perplexity tool computes it."""
