"""ChatSession: a conversation with a model, turn after turn.

Each turn renders the whole history with the model's chat template (or Llama 3.1's format) and
hands the ids to `LLM.generate`, which reuses the longest prefix that its KV cache already holds:
only the new tokens are prefilled, so the time to the first token does not grow with the
conversation. The date that Llama 3.1's system header shows is pinned when the session starts,
so that earlier turns re-render to the same tokens; a template that still renders them
differently costs a longer prefill (from the first differing token), never a wrong answer.

When the next turn would not fit n_ctx, the oldest turns are dropped (the system prompt stays) and
the session says so through `on_notice` and `last_stats["dropped_messages"]`.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ContextOverflowError, LlamaLocalError
from ..fsutil import atomic_write_text
from .completion import Reply, build_prompt, generation_kwargs

SAVE_FORMAT = "llama_local.chat"
SAVE_VERSION = 1
ROLES = ("system", "user", "assistant", "tool", "ipython")
# Keys a message keeps when it goes to the template; ours ("interrupted") stay in the history only.
TEMPLATE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name", "stop_reason")
SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")


class ChatSession:
    """Multi-turn chat state over one LLM.

        session = ChatSession(llm, system="You are terse.")
        for delta in session.send("Hi!"):
            print(delta, end="", flush=True)

    `send()` yields text deltas as they are produced. Stopping early (break, close(), Ctrl-C)
    keeps the partial reply in the history, marked `"interrupted": True`.
    """

    def __init__(self, llm, system: str | None = None, tools: list[dict] | None = None,
                 on_notice: Callable[[str], None] | None = None, **sampling: Any):
        self.llm = llm
        self.system = system
        self.tools = tools or None
        self.sampling: dict[str, Any] = {}
        self.set_sampling(**sampling)
        self.on_notice = on_notice
        self.messages: list[dict[str, Any]] = []      # the conversation without the system prompt
        self.date_string = datetime.now().strftime("%d %b %Y")
        self.last_stats: dict[str, Any] = {}
        self.last_tool_calls: list[dict] = []
        self.loaded_model: str | None = None
        self._n_tokens = 0

    # ---- state ----

    @property
    def history(self) -> list[dict[str, Any]]:
        """OpenAI-style messages, the system prompt first when there is one."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.messages]

    @property
    def n_tokens(self) -> int:
        """Tokens the conversation takes in the context (as of the last turn)."""
        return self._n_tokens

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx

    def set_sampling(self, **sampling: Any) -> None:
        """Change the session's sampling settings (None removes one: the model's default applies)."""
        unknown = set(sampling) - set(SAMPLING_KEYS)
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {sorted(unknown)}; expected {', '.join(SAMPLING_KEYS)}")
        merged = {**self.sampling, **sampling}
        merged = {k: v for k, v in merged.items() if v is not None}
        max_tokens = merged.get("max_tokens", 1)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        self.llm.sampling_params(**{k: v for k, v in merged.items() if k != "max_tokens"})  # validates
        self.sampling = merged

    def clear(self) -> None:
        """Forget the conversation (the system prompt and settings stay)."""
        self.messages = []
        self._n_tokens = 0
        self.last_stats = {}
        self.last_tool_calls = []

    # ---- turns ----

    def send(self, text: str, **sampling: Any) -> Iterator[str]:
        """Add a user message and stream the reply's text deltas."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a message must be non-empty text")
        self.messages.append({"role": "user", "content": text})
        return self._start_reply(sampling, pending=1)

    def send_tool_result(self, content: str, **sampling: Any) -> Iterator[str]:
        """Feed the result of a tool call back (role "tool"; "ipython" in Llama 3.1's format)
        and stream the model's answer to it. Nothing is executed here: the caller ran the tool."""
        if not self.messages or self.messages[-1].get("role") not in ("assistant", "tool"):
            raise LlamaLocalError("a tool result follows an assistant reply; there is none to answer")
        self.messages.append({"role": "tool", "content": str(content)})
        return self._start_reply(sampling, pending=1)

    def regenerate(self, **sampling: Any) -> Iterator[str]:
        """Drop the last reply and answer the last user message again."""
        last_user = _last_index(self.messages, "user")
        if last_user is None:
            raise LlamaLocalError("there is no message to regenerate a reply for")
        del self.messages[last_user + 1:]
        return self._start_reply(sampling, pending=0)

    def _start_reply(self, sampling: dict, pending: int) -> Iterator[str]:
        # Everything that can fail (settings, context room) fails here, before the caller
        # iterates, and leaves the history as it was.
        unknown = set(sampling) - set(SAMPLING_KEYS) - {"stop"}
        if unknown:
            del self.messages[len(self.messages) - pending:]
            raise ValueError(f"unknown sampling setting(s) {sorted(unknown)}")
        params = {**self.sampling, **{k: v for k, v in sampling.items() if v is not None}}
        params.setdefault("max_tokens", 512)
        try:
            prompt_ids, dropped = self._fit(params["max_tokens"], pending)
        except BaseException:
            del self.messages[len(self.messages) - pending:]
            raise
        return self._stream(prompt_ids, params, dropped)

    def _template_messages(self) -> list[dict[str, Any]]:
        return [{k: m[k] for k in TEMPLATE_KEYS if k in m} for m in self.history]

    def _render(self) -> list[int]:
        return build_prompt(self.llm.tokenizer, self._template_messages(), self.tools,
                            {"date_string": self.date_string})

    def _fit(self, max_tokens: int, pending: int) -> tuple[list[int], int]:
        """The prompt ids, after dropping the oldest turns until the prompt and room for the
        reply (max_tokens, at most a quarter of n_ctx) fit the context."""
        reserve = min(max_tokens, max(1, self.n_ctx // 4))
        dropped = 0
        kept = list(self.messages)  # restored if even the newest turn alone does not fit
        while True:
            ids = self._render()
            if len(ids) + reserve <= self.n_ctx:
                break
            # The oldest turn runs from the first message to the next user message; the turn
            # being answered is never dropped.
            nxt = _next_index(self.messages, "user", 1)
            if nxt is None or nxt >= len(self.messages) - pending:
                if len(ids) < self.n_ctx:
                    break  # only this turn is left: it fits, with less room for the reply
                self.messages = kept
                raise ContextOverflowError(
                    f"this message needs {len(ids)} tokens with the system prompt and the chat "
                    f"template; the context holds {self.n_ctx} (n_ctx)")
            dropped += nxt
            del self.messages[:nxt]
        if dropped:
            note = (f"the context (n_ctx={self.n_ctx}) is full: dropped the {dropped} oldest "
                    f"message{'s' if dropped != 1 else ''}" + (" (the system prompt stays)" if self.system else ""))
            if self.on_notice:
                self.on_notice(note)
        return ids, dropped

    def _stream(self, prompt_ids: list[int], params: dict, dropped: int) -> Iterator[str]:
        tokenizer = self.llm.tokenizer
        reply = Reply(tokenizer, parse_tools=bool(self.tools))
        gen_kwargs = generation_kwargs(tokenizer, params)
        t0 = time.perf_counter()
        ttft = None
        parts: list[str] = []
        finished = False
        self.last_tool_calls = []
        gen = self.llm.generate(prompt_ids, **gen_kwargs)
        try:
            for chunk in gen:
                text = reply.feed(chunk)
                if ttft is None:
                    ttft = time.perf_counter() - t0
                if text:
                    parts.append(text)
                    yield text
            rest, tool_calls, finish_reason, stop_reason = reply.finish()
            if rest:
                parts.append(rest)
                yield rest
            finished = True
        finally:
            gen.close()
            message: dict[str, Any] = {"role": "assistant", "content": "".join(parts)}
            if finished:
                if tool_calls:
                    message["content"] = None
                    message["tool_calls"] = tool_calls
                    self.last_tool_calls = tool_calls
                if stop_reason is not None:
                    message["stop_reason"] = stop_reason
            else:
                message["interrupted"] = True
                finish_reason = "interrupted"
            self.messages.append(message)
            s = self.llm.last_stats
            self._n_tokens = len(prompt_ids) + reply.completion_tokens
            self.last_stats = {
                "prompt_tokens": len(prompt_ids),
                "reused_tokens": s.get("reused_tokens", 0),
                "prefilled_tokens": len(prompt_ids) - s.get("reused_tokens", 0),
                "completion_tokens": reply.completion_tokens,
                "ttft_s": ttft,
                "prefill_s": s.get("prefill_s", 0.0),
                "decode_s": s.get("decode_s", 0.0),
                "n_tokens": self._n_tokens,
                "n_ctx": self.n_ctx,
                "finish_reason": finish_reason,
                "dropped_messages": dropped,
            }

    # ---- files ----

    def save(self, path: str | os.PathLike) -> Path:
        """Write the conversation as JSON (messages, model, sampling settings, version)."""
        doc = {
            "format": SAVE_FORMAT, "version": SAVE_VERSION,
            "model": getattr(self.llm, "model_name", None),
            "sampling": self.sampling, "tools": self.tools,
            "messages": self.history,
        }
        return atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")

    def load(self, path: str | os.PathLike) -> None:
        """Restore a conversation written by save(). A file that is not one raises
        LlamaLocalError naming it and what is wrong; the session is then left unchanged."""
        path = Path(path).expanduser()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LlamaLocalError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LlamaLocalError(f"{path}: not a saved chat (not valid JSON: {e})") from None
        system, messages, sampling, tools = _parse_saved(doc, str(path))
        old = (self.system, self.messages, self.sampling, self.tools)
        try:
            self.sampling = {}
            self.set_sampling(**sampling)
        except (ValueError, LlamaLocalError) as e:
            self.system, self.messages, self.sampling, self.tools = old
            raise LlamaLocalError(f"{path}: bad sampling settings ({e})") from None
        self.system, self.messages, self.tools = system, messages, tools
        self.loaded_model = doc.get("model")
        self.last_stats, self.last_tool_calls = {}, []
        self._n_tokens = len(self._render()) if messages else 0

    def export_markdown(self, path: str | os.PathLike) -> Path:
        """The conversation as a Markdown transcript."""
        lines = [f"# Chat with {getattr(self.llm, 'model_name', 'a model')}", ""]
        for m in self.history:
            role = m["role"]
            title = {"system": "System", "user": "You", "assistant": "Assistant"}.get(role, "Tool result")
            lines.append(f"## {title}" + (" (interrupted)" if m.get("interrupted") else ""))
            lines.append("")
            if m.get("content"):
                lines.append(str(m["content"]))
            for call in m.get("tool_calls") or []:
                fn = call.get("function", {})
                lines.append(f"Tool call: `{fn.get('name')}({fn.get('arguments')})`")
            lines.append("")
        return atomic_write_text(path, "\n".join(lines))


def _last_index(messages: list[dict], role: str) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == role:
            return i
    return None


def _next_index(messages: list[dict], role: str, start: int) -> int | None:
    for i in range(start, len(messages)):
        if messages[i].get("role") == role:
            return i
    return None


def _parse_saved(doc: Any, where: str) -> tuple[str | None, list[dict], dict, list | None]:
    def bad(why: str) -> LlamaLocalError:
        return LlamaLocalError(f"{where}: not a saved chat ({why})")

    if not isinstance(doc, dict) or doc.get("format") != SAVE_FORMAT:
        raise bad(f"expected a JSON object with \"format\": \"{SAVE_FORMAT}\"")
    version = doc.get("version")
    if not isinstance(version, int) or version > SAVE_VERSION:
        raise bad(f"version {version!r}; this llama_local reads version {SAVE_VERSION} and older")
    messages = doc.get("messages")
    if not isinstance(messages, list):
        raise bad("\"messages\" must be a list")
    system = None
    out: list[dict] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad(f"messages[{i}] must be an object with a role in {', '.join(ROLES)}")
        content = m.get("content")
        if not (isinstance(content, str) or (content is None and m.get("tool_calls"))):
            raise bad(f"messages[{i}].content must be text")
        if m["role"] == "system":
            if i != 0:
                raise bad(f"messages[{i}]: a system message may only come first")
            system = content
            continue
        out.append(dict(m))
    sampling = doc.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise bad("\"sampling\" must be an object")
    sampling = {k: v for k, v in sampling.items() if k in SAMPLING_KEYS}
    tools = doc.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad("\"tools\" must be a list")
    return system, out, sampling, tools
