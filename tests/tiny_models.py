"""The tests' one tiny-model factory: random Llama models that take a second to build, written in
each format llama_local reads, from one description of their shape (config.json's field names).

    model = make_tiny_llama(d, num_attention_heads=4)   # Hugging Face directory (transformers
                                                         # writes it); returns the torch model
    tiny = make_tiny_gguf(d / "m.gguf", hidden_size=64)  # GGUF as llama.cpp's converter writes
                                                         # one; tiny.path, .config, .weights
    w = meta_weights(params)                             # Meta's original/ layout: params.json,
    write_meta_dir(d / "original", w, params)            # consolidated.NN.pth, tokenizer.model

The writers restate each format from its own reference, not from llama_local: GGUF tensor names
come from gguf-py, the q/k permutation is convert_hf_to_gguf.py's as written there, the shard axes
are Meta's. A reader that disagrees with the format then fails a test, instead of agreeing with
a copy of itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

# The shape every tiny model starts from; each test overrides what it needs.
DEFAULTS = dict(vocab_size=320, hidden_size=128, intermediate_size=224, num_hidden_layers=2,
                num_attention_heads=8, num_key_value_heads=2, head_dim=None, tie_word_embeddings=False,
                rope_theta=10000.0, rope_scaling=None, max_position_embeddings=1024, rms_norm_eps=1e-6)
# GGUF files start wider: two heads of 128 (Llama 3's head_dim) over one KV head, so that q/k
# permutation errors and RoPE scaling tables have room to show; the vocabulary is `byte_vocab`'s.
GGUF_DEFAULTS = dict(hidden_size=256, num_attention_heads=2, num_key_value_heads=1, head_dim=128,
                     intermediate_size=96, max_position_embeddings=4096, rope_theta=500000.0,
                     rms_norm_eps=1e-5)
# The quick GGUF of the error-path tests: one layer, tied head, hidden 64.
GGUF_SMALL = dict(num_hidden_layers=1, tie_word_embeddings=True, hidden_size=64, head_dim=32, intermediate_size=64)


def tiny_config(**overrides) -> dict:
    """config.json's fields for a tiny Llama: DEFAULTS with `overrides` on top, head_dim filled in."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown tiny-model parameters {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    c = {**DEFAULTS, **overrides}
    c["head_dim"] = c["head_dim"] or c["hidden_size"] // c["num_attention_heads"]
    return c


# ---------------------------------------------------------------------------------------------
# Hugging Face directory (written by transformers)

def word_level_tokenizer(vocab_size: int) -> Tokenizer:
    """A tokenizer whose ids are the words "t0".."t{n-1}": enough for tests that feed ids."""
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def make_tiny_llama(out_dir: Path, *, dtype="float32", seed=0, **shape):
    """Save a random LlamaForCausalLM (shape: tiny_config's parameters) and a word-level
    tokenizer to out_dir; returns the torch model (float32, eval mode) as the reference."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    c = tiny_config(**shape)
    if c["rope_scaling"] is None:
        del c["rope_scaling"]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**c)).eval()
    # Random init leaves norms at 1; give them spread so a wrong norm weight would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model.to(torch_dtype).save_pretrained(out_dir)
    word_level_tokenizer(c["vocab_size"]).save(str(Path(out_dir) / "tokenizer.json"))
    return model.float()


# ---------------------------------------------------------------------------------------------
# GGUF (written with gguf-py, as llama.cpp's converter writes it)

class TinyGGUF(NamedTuple):
    path: Path
    config: dict  # tiny_config's fields of the model in the file
    weights: dict[str, np.ndarray]  # Hugging Face name -> the float32 weight the file was written from


BYTE_MERGES = ["Ġ t", "Ġt h"]


def drop_tensor(path: Path, name: str) -> None:
    """Rewrite the safetensors file at `path` without tensor `name` (a broken checkpoint)."""
    from llama_local.formats.safetensors_io import SafetensorsFile, write_safetensors
    f = SafetensorsFile(path)
    kept = {n: np.array(f.tensor(n)) for n in f.keys() if n != name}
    del f  # unmapped before the file is replaced
    write_safetensors(path, kept)


def byte_vocab(merges=None) -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE vocabulary: the 256 byte symbols, two merges, BOS/EOS control tokens."""
    from llama_local.tokenizer.byte_level import bytes_to_unicode
    tokens = list(bytes_to_unicode().values()) + ["Ġt", "Ġth", "<|bos|>", "<|eos|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    return tokens, types, list(BYTE_MERGES if merges is None else merges)


def random_weights(c: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights under Hugging Face names for config `c` (numpy only, no torch)."""
    rng = np.random.default_rng(seed)
    h, ffn, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, h)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (ffn, h), p + "mlp.up_proj.weight": (ffn, h),
                       p + "mlp.down_proj.weight": (h, ffn)})
    return {k: (rng.standard_normal(s) * (0.02 if len(s) == 2 else 0.1) + (1.0 if len(s) == 1 else 0))
            .astype(np.float32) for k, s in shapes.items()}


def llamacpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`, as written there."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensor_name(hf_name: str, n_layers: int) -> str:
    """The GGUF name of a Hugging Face Llama tensor, by gguf-py's own name map."""
    import gguf
    name = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers).get_name(hf_name, try_suffixes=(".weight",))
    if name is None:
        raise KeyError(f"gguf-py has no name for {hf_name!r}")
    return name


def encode_tensor(arr: np.ndarray, qtype) -> np.ndarray:
    """arr in GGML type qtype: the tests' quantizer (gguf-py's, plus Q4_K and Q6_K) where there is
    one, else random blocks (for types only an error path reads)."""
    import gguf
    from gguf_quantize import quantize

    if qtype == gguf.GGMLQuantizationType.F32:
        return arr
    try:
        return quantize(arr, qtype)
    except NotImplementedError:
        shape = gguf.quant_shape_to_byte_shape(arr.shape, qtype)
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def make_tiny_gguf(path: Path, *, seed=0, types=None, qk_scale=1.0, header=None, arch="llama", drop_keys=(),
                   rope_factors=None, extra_kv=None, pre="llama-bpe", merges=None, **shape) -> TinyGGUF:
    """A GGUF of a random tiny Llama as llama.cpp's converter writes one: metadata, a byte-level
    vocabulary, q/k rows permuted, every tensor F32 unless `types` (HF name -> GGML type) says.

    shape: tiny_config's parameters over GGUF_DEFAULTS (the vocabulary fixes vocab_size).
    qk_scale: multiplies q_proj and k_proj, for sharper attention, where q/k mistakes show.
    header: config fields to write into the metadata instead of the model's (a lying header).
    drop_keys / extra_kv: metadata keys to leave out / to add. rope_factors: a rope_freqs table.
    merges: the vocabulary's BPE merges (byte_vocab's by default).
    """
    import gguf

    tokens, token_types, merges = byte_vocab(merges)
    c = tiny_config(**{**GGUF_DEFAULTS, **shape, "vocab_size": len(tokens)})
    weights = random_weights(c, seed)
    for name in weights:
        if ".q_proj." in name or ".k_proj." in name:
            weights[name] *= np.float32(qk_scale)
    h = {**c, **(header or {})}
    types = types or {}
    w = gguf.GGUFWriter(str(path), arch)
    ints = {"context_length": h["max_position_embeddings"], "embedding_length": h["hidden_size"],
            "block_count": h["num_hidden_layers"], "feed_forward_length": h["intermediate_size"],
            "attention.head_count": h["num_attention_heads"], "attention.head_count_kv": h["num_key_value_heads"],
            "rope.dimension_count": h["head_dim"], "attention.key_length": h["head_dim"]}
    floats = {"rope.freq_base": h["rope_theta"], "attention.layer_norm_rms_epsilon": h["rms_norm_eps"]}
    for key, value in ints.items():
        if f"{arch}.{key}" not in drop_keys:
            w.add_uint32(f"{arch}.{key}", value)
    for key, value in floats.items():
        if f"{arch}.{key}" not in drop_keys:
            w.add_float32(f"{arch}.{key}", value)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(True)
    w.add_chat_template("{{ messages[0]['content'] }}")
    for key, value in (extra_kv or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_float32(key, value)
    for name, arr in weights.items():
        if ".q_proj." in name:
            arr = llamacpp_permute(arr, c["num_attention_heads"])
        elif ".k_proj." in name:
            arr = llamacpp_permute(arr, c["num_key_value_heads"])
        qtype = types.get(name, gguf.GGMLQuantizationType.F32)
        w.add_tensor(gguf_tensor_name(name, c["num_hidden_layers"]), encode_tensor(arr, qtype), raw_dtype=qtype)
    if rope_factors is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_factors, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return TinyGGUF(Path(path), c, weights)


# ---------------------------------------------------------------------------------------------
# Meta's original/ layout (written with torch)

def meta_weights(params: dict, seed: int = 0) -> dict:
    """Random bf16 torch tensors under Meta's names for a params.json dict."""
    import torch

    from llama_local.formats.meta_original import ffn_hidden_dim

    g = torch.Generator().manual_seed(seed)
    d, hd = params["dim"], params["dim"] // params["n_heads"]
    ffn = ffn_hidden_dim(d, params["multiple_of"], params["ffn_dim_multiplier"])

    def rnd(*shape, scale=0.08):
        return (torch.randn(*shape, generator=g) * scale).bfloat16()

    w = {"tok_embeddings.weight": rnd(params["vocab_size"], d, scale=1.0),
         "norm.weight": (1 + rnd(d, scale=0.1).float()).bfloat16(),
         "output.weight": rnd(params["vocab_size"], d)}
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        w[p + "attention.wq.weight"] = rnd(params["n_heads"] * hd, d, scale=0.3)
        w[p + "attention.wk.weight"] = rnd(params["n_kv_heads"] * hd, d, scale=0.3)
        w[p + "attention.wv.weight"] = rnd(params["n_kv_heads"] * hd, d)
        w[p + "attention.wo.weight"] = rnd(d, params["n_heads"] * hd)
        w[p + "feed_forward.w1.weight"] = rnd(ffn, d)
        w[p + "feed_forward.w2.weight"] = rnd(d, ffn)
        w[p + "feed_forward.w3.weight"] = rnd(ffn, d)
        w[p + "attention_norm.weight"] = (1 + rnd(d, scale=0.1).float()).bfloat16()
        w[p + "ffn_norm.weight"] = (1 + rnd(d, scale=0.1).float()).bfloat16()
    return w


def meta_shard_axis(name: str, embedding_axis: int = 0) -> int | None:
    """Which axis each rank slices (Llama 3's model.py; `embedding_axis` 1 is Llama 2's layout)."""
    if name.endswith(("wq.weight", "wk.weight", "wv.weight", "w1.weight", "w3.weight", "output.weight")):
        return 0
    if name.endswith(("wo.weight", "w2.weight")):
        return 1
    if name == "tok_embeddings.weight":
        return embedding_axis
    return None  # norms: replicated


def write_meta_dir(path: Path, weights: dict, params: dict, n_shards: int = 1, embedding_axis: int = 0) -> Path:
    """params.json, Meta's real tokenizer.model and `weights` split over n_shards consolidated.NN.pth."""
    import json
    import shutil

    import torch
    from llama3_reference import TOKENIZER_MODEL  # skips the test when llama-models is missing

    path.mkdir(parents=True)
    (path / "params.json").write_text(json.dumps(params))
    shutil.copy(TOKENIZER_MODEL, path / "tokenizer.model")
    for r in range(n_shards):
        shard = {}
        for name, t in weights.items():
            axis = meta_shard_axis(name, embedding_axis)
            shard[name] = t.clone() if axis is None else t.chunk(n_shards, dim=axis)[r].clone()
        torch.save(shard, path / f"consolidated.{r:02d}.pth")
    return path


# ---------------------------------------------------------------------------------------------
# Tolerances against the reference framework

def rounds_bf16_activations(llm) -> bool:
    """Whether this LLM's prefill on bf16 or FP8 weights rounds the activations to bf16 (the
    AVX512-BF16 kernels do, as llama.cpp's BF16 path and torch's bf16 matmuls do); its logits are then held
    to twice the reference framework's own bf16 error instead of fp32's."""
    return llm.model.isa == "avx512bf16"


def assert_kernel_product(y, x, w, bf16_activations: bool) -> None:
    """y = x @ w.T from a weight kernel, w its exact weights as float32. fp32 activations: equal to
    the float64 product up to fp32 summation order. Activations rounded to bf16 (the AVX512-BF16
    prefill): at most twice torch's bf16 matmul error, and exactly that rounding times w."""
    import math

    import ml_dtypes
    w64 = w.astype(np.float64)
    exact = x.astype(np.float64) @ w64.T
    K = x.shape[1]
    if bf16_activations:
        import torch
        tb = (torch.tensor(x).bfloat16() @ torch.tensor(w.astype(np.float32)).bfloat16().T).double().numpy()
        assert np.linalg.norm(y - exact) <= 2 * np.linalg.norm(tb - exact)
        xr = x.astype(ml_dtypes.bfloat16).astype(np.float64)
        np.testing.assert_allclose(y, xr @ w64.T, rtol=0, atol=1e-6 * math.sqrt(K) * (np.abs(xr) @ np.abs(w64).T).max())
    else:
        terms = np.abs(x.astype(np.float64)) @ np.abs(w64).T
        np.testing.assert_allclose(y, exact, rtol=0, atol=1e-6 * math.sqrt(K) * terms.max())


def torch_bf16_error(model, ids, ref) -> float:
    """Max relative error against `ref` of the transformers model run in bf16 (a copy)."""
    import copy

    import torch
    m = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        got = m(torch.tensor([ids])).logits[0].float().numpy()
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def q8_0(x: "torch.Tensor") -> "torch.Tensor":
    """x with its last axis rounded to Q8_0 blocks (32 values, scale max|x| / 127), as llama.cpp
    rounds the activations of its quantized products."""
    import torch

    K = x.shape[-1]
    xb = torch.nn.functional.pad(x, (0, -K % 32)).reshape(*x.shape[:-1], -1, 32)
    d = xb.abs().amax(-1, keepdim=True) / 127
    q = torch.where(d > 0, torch.round(xb / torch.where(d > 0, d, 1)), 0)
    return (q * d).reshape(*x.shape[:-1], -1)[..., :K]


def logits_with_q8_0_activations(model, ids, only=None) -> np.ndarray:
    """transformers' logits with the input of every Linear (or of those named in `only`) rounded
    as llama.cpp rounds it: the error a llama.cpp-style integer kernel makes on these weights."""
    import torch

    hooks = [m.register_forward_pre_hook(lambda mod, args: (q8_0(args[0]),))
             for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and (only is None or name in only)]
    try:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].numpy()
    finally:
        for h in hooks:
            h.remove()
