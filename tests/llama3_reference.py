"""Meta's references for the Llama 3 tests: the tokenizer, ChatFormat, and the system prompts.

llama-models builds its Llama 3.1 system prompt with Jinja templates (llama3/prompt_templates/
system_prompts.py) assembled by `LLama31Interface.recommended_system_message`; the installed
llama-models wheel no longer ships them, so they are copied here verbatim and rendered the way
Meta renders them (a plain `jinja2.Template`). Our chat_format builds the same text in Python;
the tests hold the two against each other and against prompt_format.md's examples.
"""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import pytest

llama_models = pytest.importorskip("llama_models", reason="Meta's llama-models package (the reference) is not installed")
pytest.importorskip("tiktoken", reason="tiktoken (used by Meta's reference tokenizer) is not installed")

from llama_models.llama3 import tokenizer as _meta_tok  # noqa: E402

TOKENIZER_MODEL = Path(_meta_tok.__file__).parent / "tokenizer.model"
PROMPT_FORMAT_MD = Path(llama_models.__file__).parent / "llama3_1" / "prompt_format.md"


@functools.lru_cache(maxsize=None)
def meta_tokenizer():
    return _meta_tok.Tokenizer(TOKENIZER_MODEL)


@functools.lru_cache(maxsize=None)
def our_tokenizer():
    from llama_local.tokenizer import Tokenizer

    return Tokenizer.load(TOKENIZER_MODEL)


def meta_chat_format():
    from llama_models.llama3.chat_format import ChatFormat

    return ChatFormat(meta_tokenizer())


# --- verbatim from llama-models llama3/prompt_templates/system_prompts.py -----------------------

BUILTIN_TOOL_TEMPLATE = textwrap.dedent(
    """
    {% if builtin_tools or custom_tools -%}
    Environment: ipython
    {% endif -%}
    {% set builtin_tools = builtin_tools | reject('equalto', 'code_interpreter') | list -%}
    {% if builtin_tools -%}
    Tools: {{ builtin_tools | join(", ") | trim -}}
    {% endif %}
    """
).lstrip("\n")

SYSTEM_DEFAULT_TEMPLATE = textwrap.dedent(
    """
    Cutting Knowledge Date: December 2023
    Today Date: {{ today }}
    """
).lstrip("\n")

JSON_CUSTOM_TOOL_TEMPLATE = textwrap.dedent(
    """
    Answer the user's question by making use of the following functions if needed.
    If none of the function can be used, please say so.
    Here is a list of functions in JSON format:
    {% for t in custom_tools -%}
    {# manually setting up JSON because jinja sorts keys in unexpected ways -#}
    {%- set tname = t.tool_name -%}
    {%- set tdesc = t.description -%}
    {%- set tparams = t.parameters -%}
    {%- set required_params = [] -%}
    {%- for name, param in tparams.items() if param.required == true -%}
        {%- set _ = required_params.append(name) -%}
    {%- endfor -%}
    {
        "type": "function",
        "function": {
            "name": "{{tname}}",
            "description": "{{tdesc}}",
            "parameters": {
                "type": "object",
                "properties": [
                    {%- for name, param in tparams.items() %}
                    {
                        "{{name}}": {
                            "type": "object",
                            "description": "{{param.description}}"
                        }
                    }{% if not loop.last %},{% endif %}
                    {%- endfor %}
                ],
                "required": {{ required_params | tojson }}
            }
        }
    }
    {% endfor %}
    Return function calls in JSON format.
    """
).lstrip("\n")

FUNCTION_TAG_CUSTOM_TOOL_TEMPLATE = textwrap.dedent(
    """
    You have access to the following functions:

    {% for t in custom_tools %}
    {#- manually setting up JSON because jinja sorts keys in unexpected ways -#}
    {%- set tname = t.tool_name -%}
    {%- set tdesc = t.description -%}
    {%- set modified_params = t.parameters.copy() -%}
    {%- for key, value in modified_params.items() -%}
        {%- if 'default' in value -%}
            {%- set _ = value.pop('default', None) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set tparams = modified_params | tojson -%}
    Use the function '{{ tname }}' to '{{ tdesc }}':
    {"name": "{{tname}}", "description": "{{tdesc}}", "parameters": {{tparams}}}

    {% endfor -%}
    Think very carefully before calling functions.
    If you choose to call a function ONLY reply in the following format with no prefix or suffix:

    <function=example_function_name>{"example_name": "example_value"}</function>

    Reminder:
    - If looking for real time information use relevant functions before falling back to brave_search
    - Function calls MUST follow the specified format, start with <function= and end with </function>
    - Required parameters MUST be specified
    - Only call one function at a time
    - Put the entire function call reply on one line
    """
).lstrip("\n")


def _render(template: str, **data) -> str:
    from jinja2 import Template

    return Template(template).render(data)


def meta_system_messages(builtin_tools, custom_tools, instruction, today, tool_prompt_format="json"):
    """llama-models `LLama31Interface.recommended_system_message` (custom_tools as model_dump dicts)."""
    import copy

    from llama_models.datatypes import RawMessage

    sys_content = ""
    if builtin_tools or custom_tools:
        sys_content += _render(BUILTIN_TOOL_TEMPLATE, builtin_tools=builtin_tools, custom_tools=custom_tools)
        sys_content += "\n"
    sys_content += _render(SYSTEM_DEFAULT_TEMPLATE, today=today)
    if instruction:
        sys_content += "\n\n"
        sys_content += instruction
    sys_content += "\n"
    messages = [RawMessage(role="system", content=sys_content)]
    if custom_tools:
        template = JSON_CUSTOM_TOOL_TEMPLATE if tool_prompt_format == "json" else FUNCTION_TAG_CUSTOM_TOOL_TEMPLATE
        # The function-tag template pops keys out of the parameter dicts: give it a copy.
        messages.append(RawMessage(role="user", content=_render(template, custom_tools=copy.deepcopy(custom_tools))))
    return messages
