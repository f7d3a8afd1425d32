"""`LLM.chat`: OpenAI-style chat completions on top of `llm.generate`.

The prompt comes from the model's own chat template (rendered as transformers renders it), or,
for a Llama 3 tokenizer without one, from Meta's Llama 3.1 format. Replies are parsed for tool
calls when tools were offered (or the model opened a <|python_tag|> call), and returned in
OpenAI's `chat.completion` / `chat.completion.chunk` shapes. Llama 3 replies also carry Meta's
`stop_reason`: "end_of_turn" (<|eot_id|>), "end_of_message" (<|eom_id|>: the model waits for a
tool result) or "out_of_tokens".
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any, Iterator

from .. import llama3
from .llama3_format import Llama3ChatFormat
from .tool_calls import ToolCallStreamFilter


def build_prompt(tokenizer, messages: list, tools: list | None, chat_template_kwargs: dict | None) -> list[int]:
    """Prompt ids for `messages` with the model's template, or Llama 3.1's format without one."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    kwargs = dict(chat_template_kwargs or {})
    template = tokenizer.chat_template
    if template is None and tokenizer.is_llama3:
        return Llama3ChatFormat(tokenizer).encode_dialog(messages, add_generation_prompt=True, tools=tools or None, **kwargs)
    if template is not None and "date_string" in template and "date_string" not in kwargs:
        # Meta's HF template falls back to a fixed "26 Jul 2024"; the model should see today.
        kwargs["date_string"] = datetime.now().strftime("%d %b %Y")
    return tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True, **kwargs)


class Reply:
    """Accumulates one generation: text through the tool-call filter, ids, finish state."""

    def __init__(self, tokenizer, parse_tools: bool):
        self.tokenizer = tokenizer
        self.is_llama3 = tokenizer.is_llama3
        self.python_tag_id = tokenizer.token_to_id(llama3.PYTHON_TAG) if self.is_llama3 else None
        self.filter = ToolCallStreamFilter(parse_tools=parse_tools)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.last_token: int | None = None

    def feed(self, chunk) -> str:
        self.completion_tokens += 1
        self.last_token = chunk.token_id
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if self.python_tag_id is not None and chunk.token_id == self.python_tag_id:
            self.filter.parse_tools = True  # a tool call whether or not tools were offered
            self.filter.mark_python_tag()
            text = chunk.text.replace(llama3.PYTHON_TAG, "")
        else:
            text = chunk.text
        return self.filter.feed(text)

    def meta_stop_reason(self) -> str | None:
        if not self.is_llama3:
            return None
        if self.finish_reason == "length" or self.finish_reason is None:
            return "out_of_tokens"
        if self.last_token == self.tokenizer.token_to_id(llama3.EOM):
            return "end_of_message"
        return "end_of_turn"

    def finish(self) -> tuple[str, list[dict], str, str | None]:
        stop_reason = self.meta_stop_reason()
        rest, tool_calls, _ = self.filter.finish(stop_reason)
        finish_reason = "tool_calls" if tool_calls else (self.finish_reason or "length")
        return rest, tool_calls, finish_reason, stop_reason


def generation_kwargs(tokenizer, sampling: dict) -> dict:
    kwargs = dict(sampling)
    # Stop on every id the model's files (and, for Llama 3, Meta) name as an end of reply.
    stop_ids = set(kwargs.pop("stop_token_ids", None) or ()) | set(tokenizer.eos_token_ids)
    kwargs["stop_token_ids"] = sorted(stop_ids)
    return kwargs


def chat_completion(
    llm,
    messages: list,
    tools: list | None = None,
    stream: bool = False,
    chat_template_kwargs: dict | None = None,
    **sampling: Any,
):
    """One chat turn: a `chat.completion` dict, or with stream=True a generator of chunks.

    `sampling` goes to `llm.generate` (max_tokens, temperature, top_p, top_k, min_p,
    repeat_penalty, seed, stop, stop_token_ids). `chat_template_kwargs` go to the template
    (e.g. date_string, builtin_tools) or, for Llama 3.1's own format, date_string and
    tool_prompt_format ("json" | "function_tag").
    """
    tokenizer = llm.tokenizer
    prompt_ids = build_prompt(tokenizer, messages, tools, chat_template_kwargs)
    gen_kwargs = generation_kwargs(tokenizer, sampling)
    meta = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": getattr(llm, "model_name", "llama_local"),
    }
    parse_tools = bool(tools)
    if stream:
        return _stream(llm, tokenizer, prompt_ids, gen_kwargs, parse_tools, meta)

    reply = Reply(tokenizer, parse_tools)
    content = "".join(reply.feed(chunk) for chunk in llm.generate(prompt_ids, **gen_kwargs))
    rest, tool_calls, finish_reason, stop_reason = reply.finish()
    message: dict[str, Any] = {"role": "assistant", "content": None if tool_calls else content + rest}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if stop_reason is not None:
        message["stop_reason"] = stop_reason
    return {
        **{"id": meta["id"], "object": "chat.completion", "created": meta["created"], "model": meta["model"]},
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": reply.completion_tokens,
            "total_tokens": len(prompt_ids) + reply.completion_tokens,
        },
    }


def _stream(llm, tokenizer, prompt_ids, gen_kwargs, parse_tools, meta) -> Iterator[dict]:
    def chunk(delta: dict, finish_reason: str | None = None, **extra) -> dict:
        return {
            "id": meta["id"], "object": "chat.completion.chunk", "created": meta["created"], "model": meta["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, **extra}],
        }

    reply = Reply(tokenizer, parse_tools)
    yield chunk({"role": "assistant", "content": ""})
    gen = llm.generate(prompt_ids, **gen_kwargs)
    try:
        for c in gen:
            text = reply.feed(c)
            if text:
                yield chunk({"content": text})
    finally:
        # A consumer that stops early must not leave the engine mid-generation.
        close = getattr(gen, "close", None)
        if close is not None:
            close()
    rest, tool_calls, finish_reason, stop_reason = reply.finish()
    if rest:
        yield chunk({"content": rest})
    if tool_calls:
        yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(tool_calls)]})
    extra = {"stop_reason": stop_reason} if stop_reason is not None else {}
    final = chunk({}, finish_reason, **extra)
    final["usage"] = {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": reply.completion_tokens,
        "total_tokens": len(prompt_ids) + reply.completion_tokens,
    }
    yield final
