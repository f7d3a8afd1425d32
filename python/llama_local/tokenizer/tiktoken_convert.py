"""Meta's `tokenizer.model` (tiktoken BPE ranks) → a Hugging Face `tokenizers.Tokenizer`.

A tiktoken file lists every token as base64 bytes and its rank; there is no merge list. Byte-level
BPE in `tokenizers` needs merges, and they can be recovered from the ranks: tiktoken merges the
adjacent pair whose concatenation has the lowest rank, so the merge that *creates* token T is the
last merge of running that same BPE on T's bytes with only the ranks below rank(T). This is the
standard recovery (transformers' `TikTokenConverter` does the same); with it, plus Meta's split
regex and `ignore_merges` (tiktoken looks a whole pre-token up before merging), the converted
tokenizer gives Meta's ids for any text.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from .. import llama3
from .byte_level import bytes_to_unicode
from ..errors import ModelFormatError


def load_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a tiktoken BPE file ("<base64 token> <rank>" per line).

    Unlike Meta's loader, a malformed line is an error rather than a logged warning: a skipped
    line would silently shift nothing but leave a hole that changes tokenization.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: tokenizer.model not found") from None
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: not a tiktoken BPE file (not UTF-8 text: {e})") from None
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except ValueError as e:
            raise ModelFormatError(
                f"{path}:{lineno}: not a tiktoken BPE line ('<base64> <rank>'): {line[:80]!r} ({e})"
            ) from None
    if not ranks:
        raise ModelFormatError(f"{path}: empty tiktoken BPE file")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ModelFormatError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps")
    return ranks


def _last_merge(ranks: dict[bytes, int], token: bytes, max_rank: int) -> tuple[bytes, bytes] | None:
    """Run tiktoken's BPE on `token` using only ranks < max_rank; return the final pair."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_i, best_rank = i, r
        if best_i < 0:
            return None  # unreachable by merges; `ignore_merges` still finds it whole
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab (GPT-2 characters → id) and merges in rank order."""
    byte_map = bytes_to_unicode()

    def as_str(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[as_str(token)] = rank
        if len(token) > 1:
            pair = _last_merge(ranks, token, rank)
            if pair is not None:
                merges.append((as_str(pair[0]), as_str(pair[1])))
    return vocab, merges


def convert_tiktoken(
    ranks: dict[bytes, int],
    special_tokens: list[str] | None = None,
    pattern: str = llama3.SPLIT_PATTERN,
):
    """Build a `tokenizers.Tokenizer` equivalent to tiktoken with these ranks and specials.

    Special tokens get ids len(ranks), len(ranks)+1, ... in the order given (Meta's order by
    default). No post-processor adds BOS: callers decide (Tokenizer.encode(bos=True)).
    """
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if special_tokens is None:
        special_tokens = llama3.special_tokens()
    vocab, merges = vocab_and_merges(ranks)
    bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False, ignore_merges=True)
    tok = HFTokenizer(bpe)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    first = len(ranks)
    for i, t in enumerate(special_tokens):
        if tok.token_to_id(t) != first + i:
            raise ModelFormatError(f"special token {t!r} did not get id {first + i}")
    return tok


def convert_tokenizer_model(path: str | os.PathLike):
    """Meta `tokenizer.model` → `tokenizers.Tokenizer` with Llama 3's 256 special tokens."""
    return convert_tiktoken(load_tiktoken_ranks(path))
