"""chat_completion on a scripted engine: prompts, OpenAI shapes, tool calls, stop reasons, streaming."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import pytest

from llama3_reference import our_tokenizer
from llama_local.chat.completion import chat_completion
from llama_local.chat.llama3_format import Llama3ChatFormat

EOT, EOM, EOS, PYTHON_TAG = 128009, 128008, 128001, 128010
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


@dataclass
class Chunk:
    text: str
    token_id: int
    finish_reason: str | None = None


class FakeLLM:
    """Yields a scripted reply the way LLM.generate does: one chunk per token, text deltas."""

    model_name = "fake-llama"

    def __init__(self, tokenizer, reply: str, stop_id: int | None = EOT, python_tag: bool = False):
        self.tokenizer = tokenizer
        self.reply, self.stop_id, self.python_tag = reply, stop_id, python_tag
        self.calls = []
        self.closed = False

    def generate(self, prompt, **kwargs):
        self.calls.append((list(prompt), kwargs))
        ids = self.tokenizer.encode(self.reply)
        chunks = [Chunk("", PYTHON_TAG)] if self.python_tag else []
        chunks += [Chunk(self.tokenizer.decode([i]), i) for i in ids]
        if self.stop_id is None:
            chunks[-1].finish_reason = "length"
        else:
            chunks.append(Chunk("", self.stop_id, "stop"))
        try:
            yield from chunks
        finally:
            self.closed = True


@pytest.fixture(scope="module")
def tok():
    return our_tokenizer()


def test_plain_reply(tok):
    llm = FakeLLM(tok, "Paris is the capital of France.")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    out = chat_completion(llm, msgs, max_tokens=50, temperature=0.0)
    prompt, kwargs = llm.calls[0]
    assert prompt == Llama3ChatFormat(tok).encode_dialog(msgs)  # no template: Meta's format, today's date
    assert kwargs["max_tokens"] == 50 and kwargs["temperature"] == 0.0
    assert set(kwargs["stop_token_ids"]) >= {EOS, EOM, EOT}
    assert out["object"] == "chat.completion" and out["model"] == "fake-llama" and out["id"].startswith("chatcmpl-")
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Paris is the capital of France.",
                                 "stop_reason": "end_of_turn"}
    assert choice["finish_reason"] == "stop"
    n = len(tok.encode("Paris is the capital of France.")) + 1
    assert out["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": n, "total_tokens": len(prompt) + n}


def test_length_finish(tok):
    out = chat_completion(FakeLLM(tok, "One two three", stop_id=None), [{"role": "user", "content": "count"}])
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["choices"][0]["message"]["stop_reason"] == "out_of_tokens"


def test_custom_tool_call(tok):
    llm = FakeLLM(tok, '{"name": "get_weather", "parameters": {"city": "Oslo"}}', stop_id=EOM, python_tag=True)
    out = chat_completion(llm, [{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER])
    assert "Here is a list of functions in JSON format" in tok.decode(llm.calls[0][0])
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] is None and msg["stop_reason"] == "end_of_message"
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_code_interpreter_call_without_tools(tok):
    # <|python_tag|> alone makes it a tool call (Meta's parser does the same).
    out = chat_completion(FakeLLM(tok, "print(6 * 7)", stop_id=EOM, python_tag=True), [{"role": "user", "content": "x"}])
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "code_interpreter"
    assert json.loads(call["function"]["arguments"]) == {"code": "print(6 * 7)"}


def test_json_reply_without_tools_is_content(tok):
    out = chat_completion(FakeLLM(tok, '{"name": "x", "parameters": {}}'), [{"role": "user", "content": "json please"}])
    assert out["choices"][0]["message"]["content"] == '{"name": "x", "parameters": {}}'
    assert out["choices"][0]["finish_reason"] == "stop"


def test_stream_plain(tok):
    llm = FakeLLM(tok, "Hello there, friend.")
    chunks = list(chat_completion(llm, [{"role": "user", "content": "hi"}], stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello there, friend."
    assert len(chunks) > 4  # content arrived token by token, not at the end
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "stop" and last["stop_reason"] == "end_of_turn" and last["delta"] == {}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_stream_tool_call_is_hidden_from_content(tok):
    reply = 'Checking. <function=get_weather>{"city": "Rome"}</function>'
    chunks = list(chat_completion(FakeLLM(tok, reply), [{"role": "user", "content": "Rome?"}], tools=[WEATHER],
                                  stream=True, chat_template_kwargs={"tool_prompt_format": "function_tag"}))
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == "Checking. "
    deltas = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert len(deltas) == 1 and deltas[0][0]["index"] == 0
    assert deltas[0][0]["function"]["name"] == "get_weather"
    assert json.loads(deltas[0][0]["function"]["arguments"]) == {"city": "Rome"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_closed_early_closes_generation(tok):
    llm = FakeLLM(tok, "a b c d e f g")
    stream = chat_completion(llm, [{"role": "user", "content": "hi"}], stream=True)
    next(stream), next(stream)
    stream.close()
    assert llm.closed


def test_template_model_gets_todays_date(tmp_path, tok):
    from pathlib import Path

    from llama_local.tokenizer import Tokenizer

    tok.hf_tokenizer.save(str(tmp_path / "tokenizer.json"))
    template = (Path(__file__).parent / "data" / "llama31_instruct_chat_template.jinja").read_text()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>",
                                                                 "eos_token": "<|eot_id|>", "chat_template": template}))
    llm = FakeLLM(Tokenizer.load(tmp_path), "ok")
    chat_completion(llm, [{"role": "user", "content": "date?"}])
    prompt = tok.decode(llm.calls[0][0])
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system")
    assert f"Today Date: {datetime.now().strftime('%d %b %Y')}\n" in prompt


def test_bad_messages(tok):
    with pytest.raises(ValueError, match="non-empty list"):
        chat_completion(FakeLLM(tok, "x"), [])
