"""A `tokenizers.Tokenizer` built from the vocabulary a GGUF file stores in its metadata.

A GGUF carries no tokenizer.json: it has llama.cpp's `tokenizer.ggml.*` keys (tokens, token types,
merges or scores, and a pre-tokenizer *name*). This rebuilds the Hugging Face tokenizer those keys
describe, the way transformers does when it loads a GGUF (`integrations/gguf/gguf_tokenizer_mapping.py`),
so that our tokenizer.json encodes exactly as `AutoTokenizer.from_pretrained(..., gguf_file=...)`.

The pre-tokenizer is where a wrong guess changes ids silently, so a pre-tokenizer name we do not know
is refused rather than defaulted. The regexes are llama.cpp's (`llama-vocab.cpp`), written the way
the models' own tokenizer.json files spell them.
"""

from __future__ import annotations

from typing import Callable, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from .. import llama3
from .byte_level import bytes_to_unicode
from ..errors import ModelFormatError

# llama.cpp token types (gguf.TokenType)
CONTROL, USER_DEFINED = 3, 4

_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split_then_bytes(regex: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _gpt2() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    # llama.cpp: "\p{N}" first, then the GPT-2 regex -- what StarCoder/SmolLM's own tokenizer.json
    # says with Digits(individual_digits). transformers' GGUF loader uses plain GPT-2 here; the two
    # agree as long as the vocabulary has no multi-digit merges, which SmolLM2's has not.
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


# tokenizer.ggml.pre -> pre-tokenizer, for byte-level BPE vocabularies (tokenizer.ggml.model "gpt2")
PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    **dict.fromkeys(["default", "gpt-2", "gpt2", "mpt", "olmo", "jais"], _gpt2),
    **dict.fromkeys(["llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx", "falcon3"],
                    lambda: _split_then_bytes(llama3.SPLIT_PATTERN)),
    **dict.fromkeys(["smollm", "starcoder", "refact", "command-r", "codeshell"], _digits_then_gpt2),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "stablelm2"], lambda: _split_then_bytes(_QWEN2_SPLIT)),
    "tekken": lambda: _split_then_bytes(_TEKKEN_SPLIT),
}


def build_tokenizer(tokenizer_model: str, pre: str | None, tokens: Sequence[str],
                    token_types: Sequence[int] | None, merges: Sequence[str] | None,
                    scores: Sequence[float] | None, special_ids: dict[str, int | None],
                    add_bos: bool, add_eos: bool, add_space_prefix: bool | None,
                    where: str) -> Tokenizer:
    """The tokenizer for `tokenizer.ggml.model` = "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE).

    `special_ids` maps bos/eos/unk/pad to ids (or None); `where` names the file in errors.
    """
    if tokenizer_model == "gpt2":
        tok = _byte_level_bpe(tokens, merges, pre, where)
    elif tokenizer_model == "llama":
        tok = _sentencepiece_bpe(tokens, merges, scores, add_space_prefix, where)
    else:
        raise ModelFormatError(f"{where}: tokenizer.ggml.model {tokenizer_model!r} is not supported "
                               f"(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece)")
    _add_special_tokens(tok, tokenizer_model, tokens, token_types, special_ids)
    _set_post_processor(tok, tokens, special_ids, add_bos, add_eos)
    return tok


def _split_merges(merges: Sequence[str], vocab: dict[str, int], where: str) -> list[tuple[str, str]]:
    """(left, right) pairs, each of them and their concatenation a token of the vocabulary."""
    out = []
    for i, m in enumerate(merges):
        pair = m.split(" ")
        if len(pair) != 2:
            raise ModelFormatError(f"{where}: tokenizer.ggml.merges[{i}] = {m!r} is not two tokens")
        for piece in (pair[0], pair[1], pair[0] + pair[1]):
            if piece not in vocab:
                raise ModelFormatError(f"{where}: tokenizer.ggml.merges[{i}] = {m!r} names {piece!r}, "
                                       f"which is not in tokenizer.ggml.tokens")
        out.append((pair[0], pair[1]))
    return out


def _byte_level_bpe(tokens, merges, pre, where) -> Tokenizer:
    if merges is None:
        raise ModelFormatError(f"{where}: byte-level BPE vocabulary without tokenizer.ggml.merges")
    pre = pre or "default"
    if pre not in PRE_TOKENIZERS:
        raise ModelFormatError(
            f"{where}: tokenizer.ggml.pre {pre!r} is not a pre-tokenizer llama_local knows; guessing "
            f"would change token ids silently (known: {', '.join(sorted(PRE_TOKENIZERS))})")
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    # Tokens are normally already spelled in the byte alphabet; llama.cpp writes some added tokens in
    # plain UTF-8, which transformers respells so that they can be reached by the byte-level model.
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_split_merges(merges, vocab, where), dropout=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(tokens, merges, scores, add_space_prefix, where) -> Tokenizer:
    """Llama 2-style vocabularies: BPE over "▁"-spelled pieces with <0xNN> byte fallback."""
    vocab = {t: i for i, t in enumerate(tokens)}
    if merges is not None:
        pairs = _split_merges(merges, vocab, where)
    elif scores is not None:
        pairs = _merges_from_scores(vocab, dict(zip(tokens, scores)))
    else:
        raise ModelFormatError(f"{where}: SentencePiece vocabulary has neither merges nor scores")
    # A file that does not say gets the SentencePiece default, a space prepended (transformers too).
    prefix = True if add_space_prefix is None else bool(add_space_prefix)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=True, byte_fallback=True, dropout=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prefix else "never",
                                                 split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def _merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """SentencePiece keeps no merges; every split of a piece into two pieces is one, best score first.

    Same order as transformers' `generate_merges`: by score (descending), then by the pieces'
    lengths, ties within a piece broken by the ids of its halves.
    """
    merges = []
    for piece, score in scores.items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _add_special_tokens(tok, tokenizer_model, tokens, token_types, special_ids) -> None:
    """Control tokens become special added tokens, user-defined ones plain added tokens.

    Without this they would be cut into pieces instead of matched whole. In a byte-level vocabulary
    a control token spelled outside the byte alphabet is a llama.cpp mislabel, skipped (transformers
    does the same, so the vocabulary keeps the size the model expects).
    """
    alphabet = set(bytes_to_unicode().values()) if tokenizer_model == "gpt2" else None
    types = list(token_types) if token_types is not None else [1] * len(tokens)
    ids = {i for i, t in enumerate(types) if t == CONTROL and (alphabet is None or set(tokens[i]) <= alphabet)}
    # bos/eos/unk/pad are special whatever their type says (transformers registers them as such).
    ids |= {i for i in special_ids.values() if i is not None}
    special = [AddedToken(tokens[i], normalized=False, special=True) for i in sorted(ids)]
    vocab = tok.get_vocab()
    user = [AddedToken(tokens[i], normalized=False, special=False)
            for i, t in enumerate(types) if t == USER_DEFINED and i not in ids and tokens[i] in vocab]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _set_post_processor(tok, tokens, special_ids, add_bos, add_eos) -> None:
    bos, eos = special_ids.get("bos"), special_ids.get("eos")
    add_bos = add_bos and bos is not None
    add_eos = add_eos and eos is not None
    single = ([f"{tokens[bos]}:0"] if add_bos else []) + ["$A:0"] + ([f"{tokens[eos]}:0"] if add_eos else [])
    pair = single + ([f"{tokens[bos]}:1"] if add_bos else []) + ["$B:1"] + ([f"{tokens[eos]}:1"] if add_eos else [])
    special = ([(tokens[bos], bos)] if add_bos else []) + ([(tokens[eos], eos)] if add_eos else [])
    tok.post_processor = processors.TemplateProcessing(single=" ".join(single), pair=" ".join(pair),
                                                       special_tokens=special)
