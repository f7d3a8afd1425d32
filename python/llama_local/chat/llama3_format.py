"""Llama 3.1's chat format, exactly as Meta's reference writes it.

Token layout (llama-models `llama3/chat_format.py`):

    <|begin_of_text|>
    <|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>     per message
    <|start_header_id|>assistant<|end_header_id|>\\n\\n                     generation prompt

The `tool` role is written as `ipython`. An assistant message that ended on a tool call the
executor must run ends with <|eom_id|> (its `stop_reason` is "end_of_message"), every other
message with <|eot_id|>. Message text is always encoded as plain text: special-token text that a
user typed cannot forge a header.

The system prompt is built as llama-models' `LLama31Interface.recommended_system_message` and
`prompt_templates/system_prompts.py` build it (and as prompt_format.md for Llama 3.1 shows):
"Environment: ipython" when any tool is on, "Tools: brave_search, wolfram_alpha" for the built-in
search tools, the knowledge cut-off and today's date, then the caller's system message. Custom
tools are described in an extra user message, in JSON form or in the `<function=...>` form.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .. import llama3
from .tool_calls import BUILTIN_TOOLS, parse_assistant_text

TOOL_PROMPT_FORMATS = ("json", "function_tag")


def today_date_string() -> str:
    """Meta's "Today Date" format: 21 September 2024."""
    return datetime.now().strftime("%d %B %Y")


def _text_parts(content: Any, where: str) -> list[str]:
    """Message content as Meta encodes it: a string, or text parts encoded one by one."""
    if content is None:
        return [""]
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        parts = []
        for item in content:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict) and item.get("type", "text") == "text" and isinstance(item.get("text"), str):
                parts.append(item["text"])
            else:
                raise ValueError(f"{where}: only text content is supported, got {item!r}")
        return parts
    raise ValueError(f"{where}: content must be a string or a list of text parts, got {type(content).__name__}")


def _htmlsafe_json(value: Any) -> str:
    # Meta renders its function-tag prompt with plain jinja2, whose `tojson` sorts keys and
    # escapes <, >, & and ' — reproduce that byte for byte.
    return (
        json.dumps(value, sort_keys=True)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


def split_tools(tools: list[dict] | None) -> tuple[list[str], list[dict]]:
    """OpenAI-style tools → (built-in tool names, Meta ToolDefinition-like dicts for custom tools).

    A built-in tool is given as {"type": "brave_search"} (any of brave_search, wolfram_alpha,
    photogen, code_interpreter) or as a function tool with that name. A custom tool is
    {"type": "function", "function": {"name", "description", "parameters": <JSON schema>}}; its
    schema becomes Meta's {param: {param_type, description, required, default}}.
    """
    builtin: list[str] = []
    custom: list[dict] = []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise ValueError(f"tools[{i}] must be a dict, got {tool!r}")
        kind = tool.get("type", "function")
        fn = tool.get("function", tool) if kind == "function" else {}
        name = kind if kind in BUILTIN_TOOLS else fn.get("name")
        if name in BUILTIN_TOOLS:
            builtin.append(name)
            continue
        if kind != "function" or not isinstance(name, str) or not name:
            raise ValueError(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ...}}}}, got {tool!r}")
        schema = fn.get("parameters") or {}
        required = set(schema.get("required") or [])
        params = {}
        for pname, pschema in (schema.get("properties") or {}).items():
            pschema = pschema if isinstance(pschema, dict) else {}
            params[pname] = {
                "param_type": pschema.get("type", "string"),
                "description": pschema.get("description"),
                "required": pname in required,
                "default": pschema.get("default"),
            }
        custom.append({"tool_name": name, "description": fn.get("description"), "parameters": params})
    return builtin, custom


def system_prompt_text(
    builtin_tools: list[str], custom_tools: list[dict], instruction: str | None, date_string: str | None = None
) -> str:
    """Meta's recommended system message (BuiltinToolGenerator + SystemDefaultGenerator)."""
    text = ""
    if builtin_tools or custom_tools:
        text += "Environment: ipython\n"
        listed = [t for t in builtin_tools if t != "code_interpreter"]
        if listed:
            text += "Tools: " + ", ".join(listed).strip()
        text += "\n"
    text += "Cutting Knowledge Date: December 2023\n"
    text += f"Today Date: {date_string or today_date_string()}"
    if instruction:
        text += "\n\n" + instruction
    return text + "\n"


def json_tools_prompt(custom_tools: list[dict]) -> str:
    """Meta's JsonCustomToolGenerator text (values inserted raw, as Meta's template does)."""
    out = [
        "Answer the user's question by making use of the following functions if needed.\n"
        "If none of the function can be used, please say so.\n"
        "Here is a list of functions in JSON format:\n"
    ]
    for t in custom_tools:
        params = t["parameters"] or {}
        required = [n for n, p in params.items() if p.get("required") is True]
        props = ",".join(
            "\n                {\n"
            f'                    "{name}": {{\n'
            '                        "type": "object",\n'
            f'                        "description": "{p.get("description")}"\n'
            "                    }\n"
            "                }"
            for name, p in params.items()
        )
        out.append(
            "{\n"
            '    "type": "function",\n'
            '    "function": {\n'
            f'        "name": "{t["tool_name"]}",\n'
            f'        "description": "{t.get("description")}",\n'
            '        "parameters": {\n'
            '            "type": "object",\n'
            f'            "properties": [{props}\n'
            "            ],\n"
            f'            "required": {_htmlsafe_json(required)}\n'
            "        }\n"
            "    }\n"
            "}\n"
        )
    out.append("\nReturn function calls in JSON format.")
    return "".join(out)


def function_tag_tools_prompt(custom_tools: list[dict]) -> str:
    """Meta's FunctionTagCustomToolGenerator text."""
    out = ["You have access to the following functions:\n\n"]
    for t in custom_tools:
        params = {n: {k: v for k, v in p.items() if k != "default"} for n, p in (t["parameters"] or {}).items()}
        out.append(
            f"Use the function '{t['tool_name']}' to '{t.get('description')}':\n"
            f'{{"name": "{t["tool_name"]}", "description": "{t.get("description")}", '
            f'"parameters": {_htmlsafe_json(params)}}}\n\n'
        )
    out.append(
        "Think very carefully before calling functions.\n"
        "If you choose to call a function ONLY reply in the following format with no prefix or suffix:\n\n"
        '<function=example_function_name>{"example_name": "example_value"}</function>\n\n'
        "Reminder:\n"
        "- If looking for real time information use relevant functions before falling back to brave_search\n"
        "- Function calls MUST follow the specified format, start with <function= and end with </function>\n"
        "- Required parameters MUST be specified\n"
        "- Only call one function at a time\n"
        "- Put the entire function call reply on one line"
    )
    return "".join(out)


def encode_tool_call_text(name: str, arguments: dict, tool_prompt_format: str) -> str:
    """How a past tool call is written back into the prompt (Meta's ToolUtils.encode_tool_call)."""
    if name in ("brave_search", "wolfram_alpha", "photogen"):
        return f'{name}.call(query="{arguments["query"]}")'
    if name == "code_interpreter":
        return arguments["code"]
    if tool_prompt_format == "json":
        return json.dumps({"type": "function", "name": name, "parameters": arguments})
    return f"<function={name}>{json.dumps(arguments)}</function>"


def _call_name_args(call: dict, where: str) -> tuple[str, dict]:
    fn = call.get("function", call)
    name = fn.get("name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: tool call arguments are not JSON ({e}): {args!r}") from None
    if not isinstance(name, str) or not isinstance(args, dict):
        raise ValueError(f"{where}: expected {{'function': {{'name': str, 'arguments': JSON object}}}}, got {call!r}")
    return name, args


class Llama3ChatFormat:
    """Encodes OpenAI-style conversations into Llama 3.1 prompt tokens and parses replies."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "is_llama3", False):
            raise ValueError(f"Llama3ChatFormat needs a Llama 3 vocabulary ({llama3.BEGIN_OF_TEXT}={llama3.BOS_ID}, "
                             f"{llama3.EOT}={llama3.EOT_ID})")
        self.tokenizer = tokenizer
        sid = tokenizer.token_to_id
        self.bos_id = sid(llama3.BEGIN_OF_TEXT)
        self.start_header_id = sid(llama3.START_HEADER)
        self.end_header_id = sid(llama3.END_HEADER)
        self.eot_id = sid(llama3.EOT)
        self.eom_id = sid(llama3.EOM)
        self.eos_id = sid(llama3.END_OF_TEXT)
        self.python_tag_id = sid(llama3.PYTHON_TAG)
        # Meta's stop tokens: a Llama 3.1 reply ends on any of these.
        self.stop_token_ids = frozenset(sid(t) for t in llama3.STOP_TOKENS)

    def encode_header(self, role: str) -> list[int]:
        role = "ipython" if role == "tool" else role
        return (
            [self.start_header_id]
            + self.tokenizer.encode(role)
            + [self.end_header_id]
            + self.tokenizer.encode("\n\n")
        )

    def encode_message(self, message: dict, tool_prompt_format: str = "json", where: str = "message") -> list[int]:
        """One message, as Meta's ChatFormat.encode_message (plain-text content)."""
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool", "ipython"):
            raise ValueError(f"{where}: unknown role {role!r} (expected system, user, assistant or tool)")
        tokens = self.encode_header(role)
        calls = [_call_name_args(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(message.get("tool_calls") or [])]
        if role == "assistant" and calls and calls[0][0] == "code_interpreter":
            tokens.append(self.python_tag_id)
        content = message.get("content")
        if role in ("tool", "ipython") and not isinstance(content, (str, list, type(None))):
            content = json.dumps(content)  # a structured tool result: send it as JSON text
        for part in _text_parts(content, where):
            tokens += self.tokenizer.encode(part)
        if role == "assistant":
            for name, args in calls:
                tokens += self.tokenizer.encode(encode_tool_call_text(name, args, tool_prompt_format))
        eom = role == "assistant" and message.get("stop_reason") == "end_of_message"
        tokens.append(self.eom_id if eom else self.eot_id)
        return tokens

    def encode_raw_dialog(self, messages: list[dict], add_generation_prompt: bool = True,
                          tool_prompt_format: str = "json") -> list[int]:
        """Meta's `encode_dialog_prompt`: the messages as given, no system prompt added."""
        tokens = [self.bos_id]
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
            tokens += self.encode_message(m, tool_prompt_format, where=f"messages[{i}]")
        if add_generation_prompt:
            tokens += self.encode_header("assistant")
        return tokens

    def dialog_messages(self, messages: list[dict], tools: list[dict] | None = None,
                        tool_prompt_format: str = "json", date_string: str | None = None) -> list[dict]:
        """The conversation with Meta's system prompt (and custom-tool user message) in front."""
        if tool_prompt_format not in TOOL_PROMPT_FORMATS:
            raise ValueError(f"tool_prompt_format must be one of {TOOL_PROMPT_FORMATS}, got {tool_prompt_format!r}")
        messages = list(messages)
        instruction = None
        if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
            instruction = "\n".join(_text_parts(messages.pop(0).get("content"), "messages[0]"))
        if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            raise ValueError("only one system message is supported, and it must come first")
        builtin, custom = split_tools(tools)
        out = [{"role": "system", "content": system_prompt_text(builtin, custom, instruction, date_string)}]
        if custom:
            prompt = json_tools_prompt(custom) if tool_prompt_format == "json" else function_tag_tools_prompt(custom)
            out.append({"role": "user", "content": prompt})
        return out + messages

    def encode_dialog(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
        tool_prompt_format: str = "json",
        date_string: str | None = None,
    ) -> list[int]:
        """Prompt ids for an OpenAI-style conversation, with Meta's Llama 3.1 system prompt.

        `date_string` replaces today's date ("%d %B %Y") in the system prompt.
        """
        if not messages:
            raise ValueError("cannot encode an empty conversation")
        full = self.dialog_messages(messages, tools, tool_prompt_format, date_string)
        return self.encode_raw_dialog(full, add_generation_prompt, tool_prompt_format)

    def parse_assistant(self, text: str, stop_reason: str | None = None) -> dict:
        """Model output → {"role", "content", "tool_calls", "stop_reason"} (see tool_calls)."""
        return parse_assistant_text(text, stop_reason)
