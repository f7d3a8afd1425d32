"""Llama 3.1 tool calls through ChatSession and the terminal, on a scripted engine with Meta's tokenizer."""

from __future__ import annotations

import io
import json

import pytest

from llama3_reference import our_tokenizer
from llama_local.chat.session import ChatSession
from llama_local.chat.terminal import TerminalChat
from test_chat_completion import WEATHER, FakeLLM

CALL = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'


class ScriptedLLM(FakeLLM):
    """FakeLLM with what ChatSession reads from an LLM; replies are taken from a list in turn."""

    n_ctx = 8192

    def __init__(self, tokenizer, replies: list[str]):
        super().__init__(tokenizer, replies[0])
        self.replies = list(replies)
        self.last_stats = {}

    def sampling_params(self, **kwargs):
        return kwargs

    def generate(self, prompt, **kwargs):
        self.reply = self.replies.pop(0)
        self.last_stats = {"prompt_tokens": len(prompt), "reused_tokens": 0, "prefill_s": 0.01, "decode_s": 0.01}
        return super().generate(prompt, **kwargs)


@pytest.fixture(scope="module")
def tok():
    return our_tokenizer()


def test_a_tool_call_is_a_tool_call_and_its_result_goes_back(tok):
    llm = ScriptedLLM(tok, [CALL, "It is 3 degrees in Oslo."])
    s = ChatSession(llm, tools=[WEATHER])
    assert "".join(s.send("Weather in Oslo?")) == ""  # the call's JSON is not shown as text
    (call,) = s.last_tool_calls
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    last = s.history[-1]
    assert last["content"] is None and last["tool_calls"] == [call]
    assert "Oslo" in "".join(s.send_tool_result('{"temperature_c": 3}'))
    prompt = tok.decode(llm.calls[-1][0])
    # The result goes back under Llama 3.1's ipython header, after the call the model made.
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n{"temperature_c": 3}<|eot_id|>' in prompt
    assert prompt.index("get_weather") < prompt.index("temperature_c")
    assert [m["role"] for m in s.history] == ["user", "assistant", "tool", "assistant"]


def test_the_terminal_shows_the_call_and_feeds_the_result(tok):
    llm = ScriptedLLM(tok, [CALL, "It is 3 degrees in Oslo."])
    s = ChatSession(llm, tools=[WEATHER])
    out = io.StringIO()
    code = TerminalChat(s, interactive=False, stdin=io.StringIO("Weather in Oslo?\n/tool 3 degrees\n"),
                        stdout=out).run()
    assert code == 0
    text = out.getvalue()
    assert "tool call" in text and 'get_weather({"city": "Oslo"})' in text and "/tool RESULT" in text
    assert "It is 3 degrees in Oslo." in text
    assert s.history[2] == {"role": "tool", "content": "3 degrees"}
