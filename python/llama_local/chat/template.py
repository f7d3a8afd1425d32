"""Rendering a model's Jinja chat template exactly the way transformers does.

A chat template is untrusted code from a model repository, so it runs in jinja2's immutable
sandbox. The environment matches transformers' `_compile_jinja_template`: trim_blocks,
lstrip_blocks, the loopcontrols extension, a `tojson` that does not HTML-escape and takes
indent/separators, `raise_exception`, `strftime_now`, and the restricted `dict`/`namespace`
helpers. Same environment, same variables → same text → same tokens as `apply_chat_template`.

Prompt-injection safety: text that a *user* supplies (message contents, tool schemas, extra
variables) may contain control tokens such as "<|eot_id|>". `mark_control_tokens` wraps those in
private-use markers before rendering, and `split_marked` splits the rendered text back into
template-written pieces (encoded with special tokens) and user-written control-token text
(encoded as plain text). This is transformers' `sanitize_control_tokens=True` scheme.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from datetime import datetime
from typing import Any, Iterable

# Private-use code points (plane 15) that no tokenizer gives meaning to; the same ones
# transformers uses, so a string marked here renders identically there.
CONTROL_TOKEN_START = "\U000f0000"
CONTROL_TOKEN_END = "\U000f0001"


class ChatTemplateError(ValueError):
    """A chat template failed to compile or called raise_exception()."""


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson HTML-escapes '<', '>', '&' and "'", which would change the prompt.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=32)
def compile_template(source: str):
    """Compile a chat template in the sandboxed environment (cached per template text)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class TemplateDict:
        # `dict(...)` for templates without handing them the real type (no attribute games).
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        # A namespace that refuses dunder/underscore attributes, which lead to CPython internals.
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot set underscore-prefixed attributes on a namespace ({name!r})"
                )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template does not compile: {e.message} (line {e.lineno})") from None


def plain_data(value: Any) -> Any:
    """Rebuild template inputs from plain JSON-like types.

    Objects with methods (pydantic models, numpy scalars, str subclasses) could hand the template
    something the sandbox does not know is dangerous; transformers strips them the same way.
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_data(v) for v in value)
    if hasattr(value, "item") and callable(value.item) and type(value).__module__ == "numpy":
        return plain_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


def normalize_messages(messages: Iterable[Any]) -> list[dict]:
    """Messages as plain dicts without None values (OpenAI clients send content=None with tool calls)."""
    out = []
    for m in messages:
        m = plain_data(m)
        if not isinstance(m, dict):
            raise TypeError(f"chat messages must be dicts with 'role' and 'content', got {m!r}")
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def control_token_pattern(tokens: Iterable[str]) -> re.Pattern:
    """Regex matching any of `tokens`, longest first so a token wins over tokens inside it."""
    ordered = sorted(set(tokens), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered)) or "(?!)")


def mark_control_tokens(obj: Any, pattern: re.Pattern) -> Any:
    """Wrap control tokens in user-supplied strings with the private markers (dict keys untouched)."""
    if isinstance(obj, str):
        # Drop markers the user typed, so they cannot forge a "template-written" token.
        obj = obj.replace(CONTROL_TOKEN_START, "").replace(CONTROL_TOKEN_END, "")
        return pattern.sub(lambda m: CONTROL_TOKEN_START + m.group(0) + CONTROL_TOKEN_END, obj)
    if isinstance(obj, dict):
        return {k: mark_control_tokens(v, pattern) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mark_control_tokens(v, pattern) for v in obj]
    return obj


def split_marked(text: str, pattern: re.Pattern) -> list[str]:
    """Split rendered text into [template text, user token, template text, user token, ..., text].

    Odd indices are user-typed control tokens (to be encoded as plain text); a lone marker (the
    template split a marked token apart) yields None there and still breaks the text.
    """
    markers = re.compile(f"{CONTROL_TOKEN_START}({pattern.pattern}){CONTROL_TOKEN_END}|[{CONTROL_TOKEN_START}{CONTROL_TOKEN_END}]")
    return markers.split(text)


def template_literal_text(source: str) -> str:
    """Literal text and string constants of a template, NUL-joined (for finding its control tokens)."""
    import jinja2.nodes

    template = compile_template(source)
    ast = template.environment.parse(source)
    literals = {n.data for n in ast.find_all(jinja2.nodes.TemplateData)}
    literals |= {n.value for n in ast.find_all(jinja2.nodes.Const) if isinstance(n.value, str)}
    return "\0".join(literals)


def render(
    source: str,
    messages: list,
    tools: list | None = None,
    documents: list | None = None,
    add_generation_prompt: bool = True,
    **variables,
) -> str:
    """Render `source` with transformers' variables: messages, tools, documents,
    add_generation_prompt, and `variables` (special tokens such as bos_token, plus caller kwargs
    such as date_string, builtin_tools, tools_in_user_message)."""
    import jinja2

    if tools is not None:
        for t in tools:
            if not isinstance(t, dict):
                raise TypeError(f"tools must be JSON-schema dicts, got {type(t).__name__}: {t!r}")
    if documents is not None:
        for d in documents:
            if not isinstance(d, dict):
                raise TypeError("documents must be a list of dicts with 'title' and 'text' keys")
    template = compile_template(source)
    try:
        return template.render(
            messages=normalize_messages(messages),
            tools=plain_data(tools),
            documents=plain_data(documents),
            add_generation_prompt=add_generation_prompt,
            **plain_data(variables),
        )
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"chat template error: {e}") from e
