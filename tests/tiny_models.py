"""Tiny random Llama models written in Hugging Face layout, for oracle tests against transformers."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers


def word_level_tokenizer(vocab_size: int) -> Tokenizer:
    """A tokenizer whose ids are the words "t0".."t{n-1}": enough for tests that feed ids."""
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def make_tiny_llama(out_dir: Path, *, vocab_size=320, hidden_size=128, intermediate_size=224,
                    num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=None,
                    tie_word_embeddings=False, rope_scaling=None, rope_theta=10000.0,
                    max_position_embeddings=1024, dtype="float32", seed=0):
    """Save a random LlamaForCausalLM to out_dir; returns the torch model (float32, eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    kwargs = {}
    if rope_scaling is not None:
        kwargs["rope_scaling"] = rope_scaling
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                      num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                      num_key_value_heads=num_key_value_heads,
                      head_dim=head_dim or hidden_size // num_attention_heads,
                      tie_word_embeddings=tie_word_embeddings, rope_theta=rope_theta,
                      max_position_embeddings=max_position_embeddings, **kwargs)
    model = LlamaForCausalLM(cfg).eval()
    # Random init leaves norms at 1; give them spread so a wrong norm weight would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model.to(torch_dtype).save_pretrained(out_dir)
    word_level_tokenizer(vocab_size).save(str(Path(out_dir) / "tokenizer.json"))
    return model.float()


def rounds_bf16_activations(llm) -> bool:
    """Whether this LLM's prefill on bf16 weights rounds the activations to bf16 (the AVX512-BF16
    kernels do, as llama.cpp's BF16 path and torch's bf16 matmuls do); its logits are then held
    to twice the reference framework's own bf16 error instead of fp32's."""
    return llm.model.isa == "avx512bf16"


def torch_bf16_error(model, ids, ref) -> float:
    """Max relative error against `ref` of the transformers model run in bf16 (a copy)."""
    import copy

    import numpy as np
    import torch
    m = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        got = m(torch.tensor([ids])).logits[0].float().numpy()
    return float(np.abs(got - ref).max() / np.abs(ref).max())
