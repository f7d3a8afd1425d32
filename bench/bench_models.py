"""Models for the benchmarks: a seeded random Llama-3.2-1B-shaped checkpoint, and GGUF copies
of a Hugging Face bf16 directory for llama.cpp.

Both engines must read the same weights, so a GGUF here is always written *from* an HF
directory (memory-mapped, one tensor at a time): bf16 -> F16 (exact for every value above
f16's subnormal range, i.e. |x| >= 6.1e-5) or bf16 -> BF16 (bit-exact), q/k rows permuted the
way llama.cpp's convert_hf_to_gguf.py does, norms in F32 as convert_hf_to_gguf.py writes them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

_REPO = Path(__file__).resolve().parent.parent
# An installed llama_local (with its compiled core) wins; else this source tree.
try:
    import llama_local  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_REPO / "python"))

from llama_local import llama3, rope  # noqa: E402
from llama_local.tokenizer.byte_level import bytes_to_unicode  # noqa: E402
from llama_local.fsutil import atomic_output_dir  # noqa: E402
from llama_local.formats import llama_layout  # noqa: E402
from llama_local.formats.llama_layout import GGUF_ROPE_FREQS, gguf_name  # noqa: E402
from llama_local.formats.safetensors_io import Checkpoint, LazyTensor, write_safetensors  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
GENERATOR_VERSION = 2  # bump when the generated files change, so cached copies are rebuilt


# --------------------------------------------------------------------------------------------
# The synthetic model
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and initialisation of a random Llama-architecture model."""
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int = llama3.VOCAB_SIZE
    tied: bool = True
    rope_theta: float = rope.LLAMA3_THETA
    rope_scaling: dict = field(default_factory=lambda: dict(rope.LLAMA32_SCALING))
    rms_eps: float = 1e-5
    max_positions: int = rope.LLAMA31_CONTEXT
    std: float = 0.02
    # Per-projection std overrides (e.g. {"q_proj": 0.2}); the --verify model uses them to
    # make attention sharp, so that a wrong q/k permutation or RoPE changes the logits.
    std_overrides: tuple = ()
    seed: int = 1234

    def fingerprint(self) -> str:
        d = asdict(self)
        d["generator_version"] = GENERATOR_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


LLAMA_1B = SyntheticSpec(name="llama-3.2-1b-random", hidden=2048, intermediate=8192, layers=16,
                         heads=32, kv_heads=8, head_dim=64)

# Same structure (GQA 4:1, Llama 3 RoPE scaling, tied head, Llama 3 vocabulary), small enough
# for transformers to run in a second; sharp attention so that q/k/RoPE mistakes show.
VERIFY_SMALL = SyntheticSpec(name="llama-verify-small", hidden=256, intermediate=768, layers=2,
                             heads=8, kv_heads=2, head_dim=32,
                             std_overrides=(("q_proj", 0.15), ("k_proj", 0.15), ("v_proj", 0.06),
                                            ("o_proj", 0.06)))


def special_token_id(vocab_size: int, token: str) -> int:
    """The id of a Llama 3 special token in a synthetic vocabulary (the specials come last)."""
    return llama3.token_id(token, first=vocab_size - llama3.NUM_SPECIAL_TOKENS)


def synthetic_vocab(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Token strings, GGUF token types and BPE merges of a byte-level BPE vocabulary.

    Ids 0..255 are the 256 byte tokens (so any text tokenizes), then the 676 lower-case letter
    pairs with their merges (llama.cpp refuses a "gpt2" vocabulary without merges), the last 256
    ids are Llama 3's special tokens (as the Llama 3.1 release names them), the rest are unique
    filler words that no merge reaches. The benchmark feeds token ids; the tokenizer only has to
    be valid in both engines.
    """
    specials = llama3.special_tokens(with_step_and_image=False)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = [a + b for a in letters for b in letters]
    n_normal = vocab_size - len(specials)
    if n_normal < 256 + len(pairs):
        raise ValueError(f"vocab_size {vocab_size} too small (need >= {512 + len(pairs)})")
    tokens = ([bytes_to_unicode()[b] for b in range(256)] + pairs
              + [f"tok{i}" for i in range(256 + len(pairs), n_normal)] + specials)
    # gguf.TokenType: NORMAL = 1, CONTROL = 3
    types = [1] * n_normal + [3] * len(specials)
    merges = [f"{p[0]} {p[1]}" for p in pairs]
    return tokens, types, merges


def _tensor_plan(spec: SyntheticSpec) -> list[tuple[str, tuple[int, ...]]]:
    h, i, d = spec.hidden, spec.intermediate, spec.head_dim
    plan = [("model.embed_tokens.weight", (spec.vocab, h))]
    for L in range(spec.layers):
        p = f"model.layers.{L}."
        plan += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (spec.heads * d, h)),
            (p + "self_attn.k_proj.weight", (spec.kv_heads * d, h)),
            (p + "self_attn.v_proj.weight", (spec.kv_heads * d, h)),
            (p + "self_attn.o_proj.weight", (h, spec.heads * d)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (i, h)),
            (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
        ]
    plan.append(("model.norm.weight", (h,)))
    if not spec.tied:
        plan.append(("lm_head.weight", (spec.vocab, h)))
    return plan


def _make_tensor(spec: SyntheticSpec, index: int, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 1:  # RMSNorm weights
        return np.ones(shape, dtype=BF16)
    std = spec.std
    for key, s in spec.std_overrides:
        if f".{key}." in name:
            std = s
    rng = np.random.default_rng([spec.seed, index])
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(std)
    return x.astype(BF16)


def hf_config(spec: SyntheticSpec) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab,
        "max_position_embeddings": spec.max_positions,
        "rms_norm_eps": spec.rms_eps,
        "rope_theta": spec.rope_theta,
        "rope_scaling": dict(spec.rope_scaling),
        "tie_word_embeddings": spec.tied,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": spec.std,
        "bos_token_id": special_token_id(spec.vocab, llama3.BEGIN_OF_TEXT),
        "eos_token_id": special_token_id(spec.vocab, llama3.END_OF_TEXT),
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }


def _write_tokenizer(directory: Path, vocab_size: int) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens, types, merges = synthetic_vocab(vocab_size)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    tok.save(str(directory / "tokenizer.json"))
    bos, eos = llama3.BEGIN_OF_TEXT, llama3.END_OF_TEXT
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
        "model_max_length": rope.LLAMA31_CONTEXT, "clean_up_tokenization_spaces": True}, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": bos, "eos_token": eos}, indent=2))


def ensure_synthetic_hf(spec: SyntheticSpec, workdir: Path, log=print) -> Path:
    """The HF-layout directory of `spec` under `workdir`, generated once (seeded) and cached."""
    out = Path(workdir) / f"{spec.name}-{spec.fingerprint()}"
    if (out / "model.safetensors").is_file():
        return out
    plan = _tensor_plan(spec)
    n_params = sum(math.prod(s) for _, s in plan)
    log(f"generating {spec.name}: {n_params / 1e9:.2f} B parameters, bf16, -> {out}")
    with atomic_output_dir(out, force=True) as tmp:
        tensors = [(name, LazyTensor(BF16, shape, lambda i=i, n=name, s=shape: _make_tensor(spec, i, n, s)))
                   for i, (name, shape) in enumerate(plan)]
        write_safetensors(tmp / "model.safetensors", tensors, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(spec), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps({
            "bos_token_id": special_token_id(spec.vocab, llama3.BEGIN_OF_TEXT),
            "eos_token_id": special_token_id(spec.vocab, llama3.END_OF_TEXT),
            "do_sample": False}, indent=2))
        _write_tokenizer(tmp, spec.vocab)
        (tmp / "bench_spec.json").write_text(json.dumps(asdict(spec), indent=2))
    return out


# --------------------------------------------------------------------------------------------
# HF bf16 directory -> GGUF for llama.cpp
# --------------------------------------------------------------------------------------------

def llama3_rope_factors(head_dim: int, theta: float, rs: dict) -> np.ndarray:
    """The `rope_freqs.weight` tensor convert_hf_to_gguf.py writes for rope_type llama3 (it
    falls back to Llama 3.1's values for a field config.json leaves out)."""
    p = {**rope.LLAMA31_SCALING, **rs}
    return rope.llama3_factors(theta, head_dim, p["factor"], p["low_freq_factor"], p["high_freq_factor"],
                               p["original_max_position_embeddings"])


def _rope_scaling(cfg: dict) -> dict | None:
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if rs and (rs.get("rope_type") or rs.get("type")) == "llama3":
        return rs
    return None


def _add_synthetic_kv(w, cfg: dict, ftype: int, name: str) -> None:
    import gguf

    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w.add_name(name)
    w.add_type("model")
    w.add_vocab_size(cfg["vocab_size"])
    w.add_context_length(cfg.get("max_position_embeddings", rope.LLAMA3_CONTEXT))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    w.add_rope_freq_base(float(cfg.get("rope_theta", rope.DEFAULT_THETA)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_rope_dimension_count(head_dim)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_file_type(ftype)
    tokens, types, merges = synthetic_vocab(cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.get("bos_token_id", special_token_id(cfg["vocab_size"], llama3.BEGIN_OF_TEXT)))
    w.add_eos_token_id(cfg.get("eos_token_id", special_token_id(cfg["vocab_size"], llama3.END_OF_TEXT)))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _copy_kv(w, reader, ftype: int) -> None:
    """Copy every metadata field of `reader` (tokenizer, hparams) except file type/arch."""
    import gguf

    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name in (gguf.Keys.General.ARCHITECTURE,
                                                   gguf.Keys.General.FILE_TYPE):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
    w.add_file_type(ftype)


def write_gguf_from_hf(hf_dir: Path, out: Path, ftype: str = "f16", kv_from: Path | None = None,
                       permute_qk: bool = True, rope_factors: bool = True, log=print) -> Path:
    """Write `out` (a llama.cpp GGUF) holding the weights of the HF directory `hf_dir`.

    ftype: "f16", "bf16" or "q8_0" (gguf-py's quantizer, llama.cpp's rounding) for the 2-D weights
    (1-D norms and rope factors stay F32).
    kv_from: a GGUF whose metadata (hparams, tokenizer) to copy, e.g. the GGUF an HF directory
    was converted from; without it the metadata comes from config.json plus the synthetic
    vocabulary of `synthetic_vocab`.
    permute_qk=False or rope_factors=False write deliberately wrong files (--verify's negative
    controls: without the q/k permutation, or without Llama 3's rope_freqs tensor).
    """
    import gguf

    hf_dir, out = Path(hf_dir), Path(out)
    cfg = json.loads((hf_dir / "config.json").read_text())
    ckpt = Checkpoint(hf_dir)
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[ftype]
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[ftype]

    names = [n for n in ckpt.keys() if not n.endswith("rotary_emb.inv_freq")]
    if cfg.get("tie_word_embeddings") and "lm_head.weight" in names:
        names.remove("lm_head.weight")

    def order(n: str):  # the embedding, then the layers by index, then the rest by GGUF name
        g = gguf_name(n)
        if n.startswith("model.layers."):
            return (1, int(n.split(".")[2]), g)
        return (0 if n == "model.embed_tokens.weight" else 2, 0, g)

    names.sort(key=order)

    def load(hf_name: str) -> np.ndarray:
        a = np.asarray(ckpt.tensor(hf_name))
        if a.ndim == 1:
            return a.astype(np.float32)
        if permute_qk and hf_name.endswith("q_proj.weight"):
            a = llama_layout.permute_qk(a, n_head)
        elif permute_qk and hf_name.endswith("k_proj.weight"):
            a = llama_layout.permute_qk(a, n_kv)
        if ftype == "f16":
            return a.astype(np.float32).astype(np.float16)
        if ftype == "q8_0":
            return gguf.quants.quantize(a.astype(np.float32), qtype)
        return np.ascontiguousarray(a.astype(BF16)).view(np.uint16)

    extra: list[tuple[str, np.ndarray]] = []
    rs = _rope_scaling(cfg)
    if rs is not None and rope_factors:
        extra.append((GGUF_ROPE_FREQS,
                      llama3_rope_factors(head_dim, float(cfg.get("rope_theta", rope.DEFAULT_THETA)), rs)))

    w = gguf.GGUFWriter(None, "llama")
    if kv_from is not None:
        _copy_kv(w, gguf.GGUFReader(kv_from), int(file_type))
    else:
        _add_synthetic_kv(w, cfg, int(file_type), hf_dir.name)
    for n, a in extra:
        w.add_tensor_info(n, a.shape, a.dtype, a.nbytes)
    for n in names:
        dt, shape = ckpt.info(n)
        if len(shape) == 1:
            w.add_tensor_info(gguf_name(n), shape, np.dtype(np.float32), 4 * shape[0])
        elif ftype == "f16":
            w.add_tensor_info(gguf_name(n), shape, np.dtype(np.float16), 2 * math.prod(shape))
        elif ftype == "q8_0":
            byte_shape = gguf.quant_shape_to_byte_shape(tuple(shape), qtype)
            w.add_tensor_info(gguf_name(n), byte_shape, np.dtype(np.uint8), math.prod(byte_shape), raw_dtype=qtype)
        else:
            w.add_tensor_info(gguf_name(n), shape, np.dtype(np.uint16), 2 * math.prod(shape),
                              raw_dtype=qtype)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    log(f"writing {out.name} ({ftype}) from {hf_dir}")
    try:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for _, a in extra:
            w.write_tensor_data(a)
        for n in names:
            w.write_tensor_data(load(n))
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        if tmp.exists():
            tmp.unlink()
        raise
    return out


def ensure_bf16_dir(gguf_path: Path, workdir: Path, log=print) -> Path:
    """`llama-local convert` of a GGUF file into `workdir` (bf16 HF directory), once."""
    from llama_local.formats.gguf_import import convert_gguf
    out = Path(workdir) / f"{Path(gguf_path).stem}.bf16-hf"
    if not (out / "config.json").is_file() or out.stat().st_mtime < Path(gguf_path).stat().st_mtime:
        log(f"converting {gguf_path} -> {out}")
        convert_gguf(gguf_path, out, force=True, progress=False)
    return out


# What `llama-local quantize` writes for bench_cpu's --weights ct-*: (quantize() arguments, the GGUF
# type of llama.cpp's file of the same weights at the same size class). The LM head is quantized
# too, as llama.cpp's files have it (Q6_K in a Q4_0 file, Q8_0 in a Q8_0 file).
CT_VARIANTS = {"ct-int4": (dict(fmt="int4", group_size=32, symmetric=True), "q4_0"),
               "ct-fp8": (dict(fmt="fp8"), "q8_0")}


def _newest_mtime(hf_dir: Path) -> float:
    """When an HF directory's weights or config last changed (what is made from it is stale before)."""
    return max(p.stat().st_mtime for p in [*hf_dir.glob("*.safetensors"), hf_dir / "config.json"])


def ensure_ct(hf_dir: Path, variant: str, log=print) -> Path:
    """`llama-local quantize` of a bf16 HF directory (with --quantize-lm-head), next to it, once."""
    from llama_local.quant.writer import quantize
    hf_dir = Path(hf_dir)
    out = hf_dir.with_name(f"{hf_dir.name}.{variant}")
    if not (out / "config.json").is_file() or (out / "config.json").stat().st_mtime < _newest_mtime(hf_dir):
        log(f"quantizing {hf_dir.name} -> {out.name} with llama-local quantize")
        quantize(hf_dir, out, force=True, quantize_lm_head=True, **CT_VARIANTS[variant][0])
    return out


# llama.cpp's file types (llama_ftype) for the GGUFs its quantizer writes
LLAMACPP_FTYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_m": 12,
                   "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}


def ensure_llamacpp_quantized(src: Path, ftype: str, log=print) -> Path:
    """`src` (an F16/BF16 GGUF) quantized by llama.cpp's own quantizer (llama-cpp-python's
    llama_model_quantize, in a subprocess), next to it; written once."""
    src = Path(src)
    out = src.with_name(src.name.rsplit(".", 2)[0] + f".{ftype}.gguf")
    if out.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    log(f"quantizing {src.name} -> {out.name} with llama.cpp")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    code = ("import ctypes, sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            "p.ftype = int(sys.argv[3]); p.nthread = 2\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n")
    try:
        r = subprocess.run([sys.executable, "-c", code, str(src), str(tmp), str(LLAMACPP_FTYPES[ftype])],
                           capture_output=True, text=True)
        if r.returncode != 0 or not tmp.is_file():
            raise RuntimeError(f"llama.cpp could not quantize {src} to {ftype}: {r.stderr[-2000:]}")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def ensure_gguf(hf_dir: Path, ftype: str = "f16", kv_from: Path | None = None,
                out_dir: Path | None = None, log=print) -> Path:
    """The cached GGUF of `hf_dir` (next to it, or in `out_dir`), written when missing or stale."""
    hf_dir = Path(hf_dir)
    out = Path(out_dir or hf_dir.parent) / f"{hf_dir.name}.{ftype}.gguf"
    if out.is_file() and out.stat().st_mtime >= _newest_mtime(hf_dir):
        return out
    return write_gguf_from_hf(hf_dir, out, ftype=ftype, kv_from=kv_from, log=log)


def ensure_gguf_mix(src: Path, ftype: str, use_llamacpp: bool | None = None, log=print) -> Path:
    """`src` (an F16/BF16 GGUF) in llama.cpp's `ftype` type mix (q4_k_m, q5_k_m, q6_k, q8_0),
    next to it, written once: by llama.cpp's own quantizer when llama-cpp-python is installed
    (`use_llamacpp` None: whenever it is), else by round to nearest into the same type per
    tensor (tests/gguf_quantize.py). The second is for speed on a machine without llama.cpp (a
    GPU machine, say): same types, so the same kernels and bytes read; only the rounding is
    plainer, which a speed measurement does not see."""
    if use_llamacpp is None:
        use_llamacpp = importlib.util.find_spec("llama_cpp") is not None
    if use_llamacpp:
        return ensure_llamacpp_quantized(src, ftype, log=log)
    src = Path(src)
    out = src.with_name(src.name.rsplit(".", 2)[0] + f".{ftype}-rtn.gguf")
    if out.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    if str(_REPO / "tests") not in sys.path:
        sys.path.insert(0, str(_REPO / "tests"))
    from gguf_quantize import requantize_gguf

    log(f"quantizing {src.name} -> {out.name} (round to nearest in llama.cpp's {ftype} types)")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        requantize_gguf(src, tmp, ftype)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


# --------------------------------------------------------------------------------------------
# Bytes read per decoded token
# --------------------------------------------------------------------------------------------

def hf_bytes_per_token(hf_dir: Path) -> int:
    """Weight bytes a decode step reads from an HF checkpoint: every tensor once, except the
    embedding, of which one row; plus the LM head (the embedding matrix again when tied)."""
    hf_dir = Path(hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text())
    ckpt = Checkpoint(hf_dir)
    total = 0
    for n in ckpt.keys():
        dt, shape = ckpt.info(n)
        nb = math.prod(shape) * dt.itemsize
        if n == "model.embed_tokens.weight":
            total += nb // shape[0]
            if cfg.get("tie_word_embeddings") or not any(k.startswith("lm_head.") for k in ckpt.keys()):
                total += nb
        elif n == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        else:
            total += nb
    return total


def gguf_bytes_per_token(path: Path) -> int:
    """Same count for a GGUF file (quantized row sizes included)."""
    import gguf

    r = gguf.GGUFReader(path)
    total = 0
    has_output = any(t.name == gguf_name("lm_head.weight") for t in r.tensors)
    for t in r.tensors:
        nb = int(t.n_bytes)
        if t.name == GGUF_ROPE_FREQS:
            continue
        if t.name == gguf_name("model.embed_tokens.weight"):
            rows = int(t.shape[-1])  # GGUF shapes are [in, out]
            total += nb // rows
            if not has_output:
                total += nb
        else:
            total += nb
    return total
