"""The tokenizer of a model: Hugging Face `tokenizers` underneath, Meta's behaviour on top.

`Tokenizer.load(path)` takes a tokenizer.json, a model directory (tokenizer.json with
tokenizer_config.json, generation_config.json and config.json beside it), or Meta's tiktoken
`tokenizer.model` (converted by tiktoken_convert). Whatever the source:

* `encode` never adds BOS/EOS unless asked, and encodes special-token text found in the input as
  ordinary text unless `allow_special=True`, so a user who types "<|eot_id|>" cannot end a turn.
* For a Llama 3 vocabulary, long runs of whitespace or non-whitespace are cut exactly where Meta's
  tokenizer cuts them (25,000 characters; 400,000-character chunks), so ids equal Meta's for any
  text, not only for text that tiktoken can take in one piece.
* `eos_token_ids` collects every id that ends a generation, from all the files that name one, and
  always 128001/128008/128009 for Llama 3, whose released configs disagree on which to list.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import llama3
from ..chat import template as ct
from ..errors import ModelFormatError

# Meta's tokenizer.py: tiktoken panics on very long inputs and on very long runs of one class
# (https://github.com/openai/tiktoken/issues/195), so Meta cuts the text first. The cut changes
# the ids, so matching Meta's ids means cutting at the same places.
_META_MAX_ENCODE_CHARS = 400_000
_META_MAX_RUN_CHARS = 25_000


def _meta_split(s: str) -> Iterable[str]:
    """Meta's `_split_whitespaces_or_nonwhitespaces` over 400k-char chunks, with a fast path."""
    for start in range(0, len(s), _META_MAX_ENCODE_CHARS):
        chunk = s[start : start + _META_MAX_ENCODE_CHARS]
        if len(chunk) <= _META_MAX_RUN_CHARS:
            yield chunk  # no run can exceed the limit
            continue
        run_len = 0
        run_is_space = chunk[0].isspace()
        slice_start = 0
        for i, ch in enumerate(chunk):
            is_space = ch.isspace()
            if run_is_space ^ is_space:
                run_len = 1
                run_is_space = is_space
            else:
                run_len += 1
                if run_len > _META_MAX_RUN_CHARS:
                    yield chunk[slice_start:i]
                    slice_start = i
                    run_len = 1
        yield chunk[slice_start:]
    if not s:
        yield s


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path}: invalid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: not UTF-8 text ({e})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _token_content(value: Any) -> str | None:
    # tokenizer_config.json writes special tokens as "text" or {"content": "text", ...}.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _as_id_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class Tokenizer:
    """A text ↔ token-id codec with the model's special tokens, stop ids and chat template."""

    def __init__(
        self,
        hf_tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        extra_special_tokens: dict[str, str] | None = None,
        extra_eos_token_ids: Iterable[int] = (),
        add_bos_token: bool | None = None,
        chat_template: str | dict[str, str] | None = None,
        source: str | None = None,
    ):
        """Wrap a `tokenizers.Tokenizer`.

        `bos_token`/`eos_token` are token strings; when None, a Llama 3 vocabulary uses Meta's
        (<|begin_of_text|>, <|end_of_text|>). `extra_special_tokens` are further template
        variables (unk_token, pad_token). `add_bos_token` None means: ask the post-processor.
        """
        self._hf = hf_tokenizer
        # encode_special_tokens is a mutable flag on the Rust object; the lock keeps one
        # caller's allow_special from leaking into another thread's encode.
        self._lock = threading.Lock()
        self.source = source

        vocab = hf_tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size: int = max(vocab.values()) + 1 if vocab else 0
        added = hf_tokenizer.get_added_tokens_decoder()
        self.special_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special)
        self._added_tokens = {i: t for i, t in added.items()}

        self.is_llama3: bool = (
            hf_tokenizer.token_to_id(llama3.BEGIN_OF_TEXT) == llama3.BOS_ID
            and hf_tokenizer.token_to_id(llama3.EOT) == llama3.EOT_ID
        )
        if bos_token is None and self.is_llama3:
            bos_token = llama3.BEGIN_OF_TEXT
        if eos_token is None and self.is_llama3:
            eos_token = llama3.END_OF_TEXT
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_id: int | None = self._required_id(bos_token, "bos_token")
        self.eos_id: int | None = self._required_id(eos_token, "eos_token")

        eos_ids = set(extra_eos_token_ids)
        if self.eos_id is not None:
            eos_ids.add(self.eos_id)
        if self.is_llama3:
            eos_ids |= llama3.STOP_IDS
        self.eos_token_ids: frozenset[int] = frozenset(i for i in eos_ids if 0 <= i < self.vocab_size)

        if add_bos_token is None:
            add_bos_token = self._post_processor_adds_bos() if hf_tokenizer.post_processor else self.is_llama3
        self.add_bos_token: bool = bool(add_bos_token)

        self._special_tokens_map = {"bos_token": bos_token, "eos_token": eos_token, **(extra_special_tokens or {})}
        self._special_tokens_map = {k: v for k, v in self._special_tokens_map.items() if v is not None}
        self._templates = chat_template

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load from a tokenizer.json, a model directory, or a Meta tiktoken tokenizer.model.

        A tokenizer.json named so picks up tokenizer_config.json, generation_config.json and
        config.json from its directory, as a model directory would.
        """
        p = Path(path)
        if p.is_dir():
            if (p / "tokenizer.json").is_file():
                return cls._load_hf(p / "tokenizer.json", p)
            for cand in (p / "tokenizer.model", p / "original" / "tokenizer.model"):
                if cand.is_file():
                    return cls._load_meta(cand, p)
            raise ModelFormatError(
                f"{p}: no tokenizer found (expected tokenizer.json, or Meta's tiktoken tokenizer.model)"
            )
        if not p.exists():
            raise ModelFormatError(f"{p}: no such tokenizer file or directory")
        if p.suffix == ".json":
            return cls._load_hf(p, p.parent if p.name == "tokenizer.json" else None)
        return cls._load_meta(p, p.parent)

    @classmethod
    def _load_hf(cls, tokenizer_json: Path, config_dir: Path | None) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_file(str(tokenizer_json))
        except Exception as e:  # the Rust side raises plain Exception with its parse error
            raise ModelFormatError(f"{tokenizer_json}: not a Hugging Face tokenizer.json ({e})") from None
        return cls._with_configs(hf, config_dir, source=str(tokenizer_json))

    @classmethod
    def _load_meta(cls, tokenizer_model: Path, config_dir: Path | None) -> "Tokenizer":
        from .tiktoken_convert import convert_tokenizer_model

        try:
            hf = convert_tokenizer_model(tokenizer_model)
        except ModelFormatError as e:
            raise ModelFormatError(
                f"{e} — only Meta's tiktoken tokenizer.model (Llama 3) is supported; "
                "for SentencePiece models use their tokenizer.json"
            ) from None
        return cls._with_configs(hf, config_dir, source=str(tokenizer_model))

    @classmethod
    def _with_configs(cls, hf, config_dir: Path | None, source: str) -> "Tokenizer":
        tcfg: dict = {}
        eos_ids: list[int] = []
        template: Any = None
        if config_dir is not None:
            if (config_dir / "tokenizer_config.json").is_file():
                tcfg = _read_json(config_dir / "tokenizer_config.json")
            for name in ("generation_config.json", "config.json"):
                if (config_dir / name).is_file():
                    eos_ids += _as_id_list(_read_json(config_dir / name).get("eos_token_id"))
            template = cls._read_template(config_dir, tcfg)
        extra = {k: _token_content(tcfg.get(k)) for k in ("unk_token", "pad_token")}
        return cls(
            hf,
            bos_token=_token_content(tcfg.get("bos_token")),
            eos_token=_token_content(tcfg.get("eos_token")),
            extra_special_tokens={k: v for k, v in extra.items() if v is not None},
            extra_eos_token_ids=eos_ids,
            add_bos_token=tcfg.get("add_bos_token") if isinstance(tcfg.get("add_bos_token"), bool) else None,
            chat_template=template,
            source=source,
        )

    @staticmethod
    def _read_template(config_dir: Path, tcfg: dict) -> str | dict[str, str] | None:
        # Newer transformers save the template beside the config rather than inside it.
        if (config_dir / "chat_template.jinja").is_file():
            return (config_dir / "chat_template.jinja").read_text(encoding="utf-8")
        template = tcfg.get("chat_template")
        if template is None and (config_dir / "chat_template.json").is_file():
            template = _read_json(config_dir / "chat_template.json").get("chat_template")
        if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
            template = {t["name"]: t["template"] for t in template if isinstance(t, dict) and "name" in t}
        if template is not None and not isinstance(template, (str, dict)):
            raise ModelFormatError(f"{config_dir / 'tokenizer_config.json'}: chat_template is not a string")
        return template

    def _required_id(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        i = self._hf.token_to_id(token)
        if i is None:
            raise ModelFormatError(f"{self.source or 'tokenizer'}: {what} {token!r} is not in the vocabulary")
        return i

    def _post_processor_adds_bos(self) -> bool:
        plain = self._hf.encode("a", add_special_tokens=False).ids
        full = self._hf.encode("a", add_special_tokens=True).ids
        return self.bos_id is not None and len(full) > len(plain) and full[0] == self.bos_id

    # ------------------------------------------------------------------ codec

    def encode(self, text: str, bos: bool = False, eos: bool = False, allow_special: bool = False) -> list[int]:
        """Token ids of `text`; special-token text is plain text unless `allow_special`."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        pieces = _meta_split(text) if self.is_llama3 else (text,)
        ids: list[int] = []
        with self._lock:
            self._hf.encode_special_tokens = not allow_special
            for piece in pieces:
                ids.extend(self._hf.encode(piece, add_special_tokens=False).ids)
        if bos:
            if self.bos_id is None:
                raise ValueError("this tokenizer has no BOS token")
            ids.insert(0, self.bos_id)
        if eos:
            if self.eos_id is None:
                raise ValueError("this tokenizer has no EOS token")
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids` (invalid UTF-8 becomes U+FFFD, as in tiktoken)."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return self._hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._hf.id_to_token(int(token_id))

    @property
    def hf_tokenizer(self):
        """The underlying `tokenizers.Tokenizer` (e.g. to save it as tokenizer.json)."""
        return self._hf

    # ------------------------------------------------------------------ chat

    @property
    def chat_template(self) -> str | None:
        """The default chat template (the "default" one when a model ships several)."""
        if isinstance(self._templates, dict):
            return self._templates.get("default")
        return self._templates

    def _template_for(self, tools, chat_template: str | None) -> str | None:
        if isinstance(self._templates, dict):
            if chat_template is not None and chat_template in self._templates:
                return self._templates[chat_template]
            if chat_template is None and tools is not None and "tool_use" in self._templates:
                return self._templates["tool_use"]
        return chat_template if chat_template is not None else self.chat_template

    def control_tokens(self, template: str) -> tuple[str, ...]:
        """Tokens that user text must not be able to produce: every special token, plus any
        other added token that the template itself writes (as transformers decides)."""
        literal = ct.template_literal_text(template)
        return tuple(
            t.content
            for t in self._added_tokens.values()
            if t.special or (t.content in literal and not t.content.isspace())
        )

    def render_chat_template(
        self,
        messages: list,
        tools: list | None = None,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        documents: list | None = None,
        **template_kwargs,
    ) -> str:
        """The prompt text (what apply_chat_template tokenizes; for display and debugging)."""
        template = self._template_for(tools, chat_template)
        if template is None:
            return self.decode(self._llama3_fallback(messages, tools, add_generation_prompt, template_kwargs))
        return ct.render(
            template, messages, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt,
            **{**self._special_tokens_map, **template_kwargs},
        )

    def apply_chat_template(
        self,
        messages: list,
        tools: list | None = None,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        documents: list | None = None,
        sanitize_control_tokens: bool = True,
        **template_kwargs,
    ) -> list[int]:
        """Prompt ids for a conversation, as transformers' `apply_chat_template(tokenize=True)`.

        The template writes BOS itself if the model wants it; nothing more is added. With
        `sanitize_control_tokens` (default, unlike transformers) control tokens typed inside
        messages, tools or kwargs are encoded as plain text — the same ids transformers gives
        with `sanitize_control_tokens=True`. A Llama 3 tokenizer without a template uses Meta's
        format (Llama3ChatFormat), which treats message text the same way.
        """
        template = self._template_for(tools, chat_template)
        if template is None:
            return self._llama3_fallback(messages, tools, add_generation_prompt, template_kwargs)
        variables = {**self._special_tokens_map, **template_kwargs}
        if not sanitize_control_tokens:
            text = ct.render(template, messages, tools=tools, documents=documents,
                             add_generation_prompt=add_generation_prompt, **variables)
            return self.encode(text, allow_special=True)

        pattern = ct.control_token_pattern(self.control_tokens(template))
        text = ct.render(
            template,
            ct.mark_control_tokens(ct.normalize_messages(messages), pattern),
            tools=ct.mark_control_tokens(tools, pattern),
            documents=ct.mark_control_tokens(documents, pattern),
            add_generation_prompt=add_generation_prompt,
            # The special tokens the template writes (bos_token, ...) stay unmarked: they are
            # the template's own; only the caller's kwargs are user text.
            **{**self._special_tokens_map, **ct.mark_control_tokens(template_kwargs, pattern)},
        )
        return self._encode_marked(text, pattern)

    def _encode_marked(self, text: str, pattern) -> list[int]:
        # transformers' encode_marked_chat: pieces alternate template text / user-typed control
        # token; each later piece is encoded after a "\n" that is then removed, so that
        # tokenizers which add a prefix space at the start of a string do not add one here.
        pieces = ct.split_marked(text, pattern)
        newline_ids = self.encode("\n")
        ids = self.encode(pieces[0], allow_special=True)
        for i, piece in enumerate(pieces[1:], start=1):
            if not piece:
                continue
            as_text = i % 2 == 1
            piece_ids = self.encode("\n" + piece, allow_special=not as_text)
            if piece_ids[: len(newline_ids)] == newline_ids:
                piece_ids = piece_ids[len(newline_ids):]
            else:
                piece_ids = self.encode(piece, allow_special=not as_text)
            if as_text and self.token_to_id(piece) in piece_ids:
                raise ValueError(f"cannot encode {piece!r} as text: the tokenizer produces that token from text")
            ids += piece_ids
        return ids

    def _llama3_fallback(self, messages, tools, add_generation_prompt, template_kwargs) -> list[int]:
        if not self.is_llama3:
            raise ValueError(
                f"{self.source or 'this tokenizer'} has no chat_template (tokenizer_config.json) "
                "and is not a Llama 3 vocabulary; pass chat_template=..."
            )
        from ..chat.llama3_format import Llama3ChatFormat

        allowed = {"tool_prompt_format", "date_string"}
        unknown = set(template_kwargs) - allowed
        if unknown:
            raise TypeError(f"Llama 3 chat format takes no argument(s) {sorted(unknown)}; it takes {sorted(allowed)}")
        return Llama3ChatFormat(self).encode_dialog(
            messages, add_generation_prompt=add_generation_prompt, tools=tools, **template_kwargs
        )

    def __repr__(self) -> str:
        return (
            f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_token_ids={sorted(self.eos_token_ids)}, llama3={self.is_llama3})"
        )
