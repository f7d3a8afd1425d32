"""How a Llama's tensors are laid out in each format, written once: llama.cpp's GGUF names for the
Hugging Face tensor names, and the row order of the q/k projections.

RoPE row order. Hugging Face's rotate_half pairs row i of a head with row i + head_dim/2 (halves).
Meta's original checkpoints rotate interleaved pairs (rows 2i, 2i+1) as complex numbers, and
llama.cpp's converter permutes Hugging Face's rows into that same interleaved order
(`LlamaModel.permute`). So one permutation and its inverse cover every format:

    permute_qk    halves -> interleaved   (what llama.cpp's convert_hf_to_gguf.py does)
    unpermute_qk  interleaved -> halves   (GGUF and Meta's original/ -> Hugging Face; what
                                           transformers' convert_llama_weights_to_hf does)

(The compiled core undoes the permutation itself for a GGUF read in place: `qk_heads` in a spec.)
"""

from __future__ import annotations

import re

import numpy as np

# Hugging Face name -> GGUF name, for the tensors outside the layers ...
GGUF_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
# ... and for each layer's, "model.layers.{i}.<key>.weight" <-> "blk.{i}.<value>.weight", in the
# order of Hugging Face's state dict.
GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# Llama 3.1's RoPE scaling, which llama.cpp stores as a table of divisors (see rope.llama3_factors).
GGUF_ROPE_FREQS = "rope_freqs.weight"

_HF_GLOBAL = {g: h for h, g in GGUF_GLOBAL_NAMES.items()}
_HF_LAYER = {g: h for h, g in GGUF_LAYER_NAMES.items()}
_GGUF_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
_HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor of a Llama, or None when it is not one of them."""
    if gguf_name in _HF_GLOBAL:
        return _HF_GLOBAL[gguf_name]
    m = _GGUF_LAYER_RE.fullmatch(gguf_name)
    if m and m.group(2) in _HF_LAYER:
        return f"model.layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}.weight"
    return None


def gguf_name(hf_name: str) -> str:
    """The GGUF name llama.cpp's converter gives a Hugging Face Llama tensor (ValueError if none)."""
    if hf_name in GGUF_GLOBAL_NAMES:
        return GGUF_GLOBAL_NAMES[hf_name]
    m = _HF_LAYER_RE.fullmatch(hf_name)
    if m and m.group(2) in GGUF_LAYER_NAMES:
        return f"blk.{m.group(1)}.{GGUF_LAYER_NAMES[m.group(2)]}.weight"
    raise ValueError(f"no GGUF name for tensor {hf_name!r}")


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: each head's rows from Hugging Face's halves order to
    interleaved pairs, [n_heads, 2, hd/2, ...] -> [n_heads, hd/2, 2, ...]. `n_heads` is the head
    count of this projection (the KV heads for k_proj)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of permute_qk: each head's interleaved pairs (Meta's and llama.cpp's order) back
    to the halves that Hugging Face's rotate_half expects; row 2i goes to i, row 2i+1 to i + hd/2."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
