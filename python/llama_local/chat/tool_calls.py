"""Tool calls in Llama 3.x output: parsing every form Meta's reference parses, in OpenAI's shape.

Forms (llama-models `ChatFormat.decode_assistant_message_from_content` and `tool_utils.py`):

* built-in:      <|python_tag|>brave_search.call(query="...")       → brave_search {"query": ...}
* code:          <|python_tag|>print(1 + 1)                           → code_interpreter {"code": ...}
* custom JSON:   {"type": "function", "name": ..., "parameters": {}}  (Meta's shape)
                 {"name": ..., "parameters": {}}                      (the HF template's shape)
* function tag:  <function=name>{"arg": 1}</function>
* python list:   [name(arg=1)]                                        (Llama 3.2/3.3 style)

Output calls are `{"id", "type": "function", "function": {"name", "arguments": <JSON str>}}`.
`ToolCallStreamFilter` does the same for a stream of text deltas: it lets ordinary content
through as it comes and holds back anything that may be a tool call until the end.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from dataclasses import dataclass

from ..llama3 import END_HEADER, EOM, EOT, PYTHON_TAG, START_HEADER

ASSISTANT_HEADER = f"{START_HEADER}assistant{END_HEADER}\n\n"
BUILTIN_TOOLS = ("brave_search", "wolfram_alpha", "photogen", "code_interpreter")

# Meta's patterns, verbatim (tool_utils.py).
BUILTIN_TOOL_PATTERN = re.compile(r'\b(?P<tool_name>\w+)\.call\(query="(?P<query>[^"]*)"\)')
CUSTOM_TOOL_CALL_PATTERN = re.compile(r"<function=(?P<function_name>[^}]+)>(?P<args>{.*?})")


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def openai_tool_call(name: str, arguments: dict | str, call_id: str | None = None) -> dict:
    """One call in OpenAI's shape; `arguments` is serialized to the JSON string OpenAI sends."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id or new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def _json_object(s: str) -> dict | None:
    try:
        value = json.loads(s)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _function_tag_call(text: str) -> tuple[str, dict] | None | bool:
    """`<function=name>{...}</function>`: (name, args); False when the tag is there but its
    arguments do not parse (Meta then gives up on custom calls); None when there is no tag."""
    m = CUSTOM_TOOL_CALL_PATTERN.search(text)
    if not m:
        return None
    name = m.group("function_name")
    args = _json_object(m.group("args"))
    if args is None:
        # Meta's regex stops at the first "}", which cuts nested objects; read the whole object.
        try:
            value, _ = json.JSONDecoder().raw_decode(text, m.start("args"))
            args = value if isinstance(value, dict) else None
        except json.JSONDecodeError:
            args = None
    if args is None:
        # Meta's own fallback: single-quoted pseudo-JSON.
        args = _json_object(m.group("args").replace("'", '"'))
    return (name, args) if args is not None else False


def _python_list_calls(text: str) -> list[tuple[str, dict]] | None:
    """`[f(a=1), g(b="x")]` with keyword arguments of literal values only (no code runs)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr) or not isinstance(tree.body[0].value, ast.List):
        return None
    elts = tree.body[0].value.elts
    if not elts:
        return None
    calls = []
    for node in elts:
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
            return None
        try:
            calls.append((node.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}))
        except (ValueError, SyntaxError, TypeError):
            return None
    return calls


def extract_custom_tool_calls(text: str) -> list[tuple[str, dict]] | None:
    """Meta's `maybe_extract_custom_tool_call`, tolerant where Meta would raise; all python-list calls."""
    tagged = _function_tag_call(text)
    if tagged is False:
        return None
    if tagged is not None:
        return [tagged]
    obj = _json_object(text)
    if obj is not None:
        if obj.get("type") == "function" or "name" in obj:
            name = obj.get("name")
            # "parameters" is what Llama 3.1 is prompted for; "arguments" is what many models write.
            args = obj.get("parameters", obj.get("arguments", {}))
            if isinstance(args, str):
                args = _json_object(args) or {}
            if isinstance(name, str) and isinstance(args, dict):
                return [(name, args)]
        return None
    return _python_list_calls(text)


def parse_tool_calls(content: str, ipython: bool) -> list[tuple[str, dict]]:
    """Tool calls in an assistant message body (python tag and stop token already removed).

    Mirrors Meta's decision order: custom forms first, then the built-in `x.call(query=...)`,
    then — only after <|python_tag|> — the whole body as code for the code interpreter.
    """
    custom = extract_custom_tool_calls(content)
    if custom:
        calls = []
        for name, args in custom:
            # Meta: a built-in tool written in the custom format keeps only its first value.
            if name in BUILTIN_TOOLS and args:
                args = {"query": next(iter(args.values()))}
            calls.append((name, args))
        return calls
    m = BUILTIN_TOOL_PATTERN.search(content)
    if m:
        return [(m.group("tool_name"), {"query": m.group("query")})]
    if ipython:
        return [("code_interpreter", {"code": content})]
    return []


def parse_assistant_text(text: str, stop_reason: str | None = None, parse_tools: bool = True) -> dict:
    """Meta's `decode_assistant_message_from_content` with OpenAI-shaped tool calls.

    `text` is the decoded output, special tokens included or not; a trailing <|eot_id|> or
    <|eom_id|> sets stop_reason ("end_of_turn" / "end_of_message"). As in Meta's code, the
    content is "" when a tool call was found.
    """
    content = text.strip(" ")
    if content.startswith(ASSISTANT_HEADER):
        content = content[len(ASSISTANT_HEADER):]
    ipython = content.startswith(PYTHON_TAG)
    if ipython:
        content = content[len(PYTHON_TAG):]
    if content.endswith(EOT):
        content, stop_reason = content[: -len(EOT)], "end_of_turn"
    elif content.endswith(EOM):
        content, stop_reason = content[: -len(EOM)], "end_of_message"
    calls = parse_tool_calls(content, ipython) if parse_tools else []
    tool_calls = [openai_tool_call(name, args) for name, args in calls]
    return {
        "role": "assistant",
        "content": "" if tool_calls else content,
        "tool_calls": tool_calls,
        "stop_reason": stop_reason,
    }


# Text that, at the start of a reply, may open a tool call; held back until the reply is complete.
_OPENERS = (PYTHON_TAG, "{", "[", "<function=") + tuple(f"{t}.call(" for t in BUILTIN_TOOLS)
# Text that opens a tool call in the middle of a reply (Meta searches the whole body for these).
_MID_MARKERS = (PYTHON_TAG, "<function=") + tuple(f"{t}.call(" for t in BUILTIN_TOOLS)
_MID_MARKER_RE = re.compile("|".join(("\\b" if m[0].isalnum() else "") + re.escape(m) for m in _MID_MARKERS))


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _partial_marker_len(s: str, limit: int) -> int:
    """Length (at most `limit`) of the longest suffix of `s` that is a proper prefix of a
    mid-reply marker (a tool name only counts where a word starts, as in Meta's \\b pattern)."""
    best = 0
    for m in _MID_MARKERS:
        for n in range(min(len(m) - 1, limit), best, -1):
            start = len(s) - n
            if s.endswith(m[:n]) and not (_is_word_char(m[0]) and start > 0 and _is_word_char(s[start - 1])):
                best = n
                break
    return best


@dataclass
class ToolCallStreamFilter:
    """Separates content from tool calls in a stream of text deltas.

    `feed(delta)` returns the content that can be shown now; `finish()` returns
    (remaining content, tool calls, stop_reason). Content is released as soon as it cannot be
    the start of a tool call; a reply that opens like a tool call is held until `finish`, and if
    it turns out not to be one it is released then, whole. A "<|python_tag|>" at the start of
    the text, or `mark_python_tag()` when the token came without text, marks a tool-call reply.
    Replies that start with "{" or "[" are held too (they may be JSON or python-list calls).
    """

    parse_tools: bool = True
    _text: str = ""
    _released: int = 0  # characters of _text already returned as content
    _mode: str = "start"  # start → content | held
    _tool_start: int = 0  # where the held tool-call text begins
    _ipython: bool = False

    def mark_python_tag(self) -> None:
        """The <|python_tag|> token was sampled (some decoders drop its text)."""
        if not self._text.strip():
            self._ipython = True
            if self._mode == "start":
                self._mode, self._tool_start = "held", len(self._text)

    def feed(self, delta: str) -> str:
        self._text += delta
        if not self.parse_tools:
            return self._release(len(self._text))
        if self._mode == "start":
            head = self._text.lstrip()
            if not head or any(o.startswith(head) for o in _OPENERS):
                return ""  # could still become a tool call: wait for more text
            if any(head.startswith(o) for o in _OPENERS):
                self._mode, self._tool_start = "held", 0
                return ""
            self._mode = "content"
        if self._mode == "content":
            m = _MID_MARKER_RE.search(self._text, max(0, self._released - 1))
            if m and m.start() >= self._released:
                self._mode, self._tool_start = "held", m.start()
                return self._release(m.start())
            unreleased = len(self._text) - self._released
            return self._release(len(self._text) - _partial_marker_len(self._text, unreleased))
        return ""

    def _release(self, upto: int) -> str:
        upto = max(upto, self._released)
        out = self._text[self._released : upto]
        self._released = upto
        return out

    def finish(self, stop_reason: str | None = None) -> tuple[str, list[dict], str | None]:
        """End of stream: (content not yet released, OpenAI tool calls, stop_reason)."""
        tail = self._text[self._tool_start:] if self._mode == "held" else self._text
        body = (PYTHON_TAG + tail) if self._ipython and not tail.lstrip(" ").startswith(PYTHON_TAG) else tail
        parsed = parse_assistant_text(body, stop_reason, self.parse_tools)
        if parsed["tool_calls"]:
            return "", parsed["tool_calls"], parsed["stop_reason"]
        rest = self._text[self._released:]
        for marker in (EOT, EOM):
            if rest.endswith(marker):
                rest = rest[: -len(marker)]
        if rest.lstrip(" ").startswith(PYTHON_TAG):
            rest = rest.lstrip(" ")[len(PYTHON_TAG):]
        self._released = len(self._text)
        return rest, [], parsed["stop_reason"]
