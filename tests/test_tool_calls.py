"""Tool-call parsing against Meta's decode_assistant_message_from_content, and the stream filter."""

from __future__ import annotations

import json

import pytest

from llama3_reference import meta_chat_format
from llama_local.chat.tool_calls import ToolCallStreamFilter, parse_assistant_text

from llama_models.datatypes import StopReason  # noqa: E402

REPLIES = [
    '<|python_tag|>brave_search.call(query="latest price of 1oz gold")<|eom_id|>',
    'brave_search.call(query="who won the 2024 euro")',
    '<|python_tag|>wolfram_alpha.call(query="100th decimal of pi")<|eom_id|>',
    "<|python_tag|>def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n\nprint(is_prime(7))<|eom_id|>",
    '<|python_tag|>{\n    "type": "function",\n    "name": "trending_songs",\n    "parameters": {\n        "n": "10",\n        "genre": "all"\n    }\n}<|eom_id|>',
    '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3, "metric": true}}<|eot_id|>',
    '<function=trending_songs>{"n": 10}</function><|eot_id|>',
    'Sure. <function=get_weather>{"city": "Zürich", "unit": "celsius"}</function>',
    '{"type": "function", "name": "brave_search", "parameters": {"q": "llama 3.1 release"}}',
    '[get_boiling_point(liquid_name="water", celsius=True)]',
    "The answer is 42.<|eot_id|>",
    "Plain reply with no stop token",
]


def _meta(text):
    msg = meta_chat_format().decode_assistant_message_from_content(text, StopReason.end_of_turn)
    calls = [(c.tool_name.value if hasattr(c.tool_name, "value") else c.tool_name, c.arguments) for c in msg.tool_calls]
    return msg, calls


@pytest.mark.parametrize("text", REPLIES)
def test_parse_equals_meta(text):
    meta_msg, meta_calls = _meta(text)
    ours = parse_assistant_text(text, "end_of_turn")
    ours_calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in ours["tool_calls"]]
    assert ours_calls == meta_calls
    assert ours["content"] == meta_msg.content
    assert ours["stop_reason"] == meta_msg.stop_reason.value
    for c in ours["tool_calls"]:
        assert c["type"] == "function" and c["id"].startswith("call_")
        assert isinstance(c["function"]["arguments"], str)


def test_every_form_is_found():
    names = [[c["function"]["name"] for c in parse_assistant_text(t)["tool_calls"]] for t in REPLIES]
    assert names == [
        ["brave_search"], ["brave_search"], ["wolfram_alpha"], ["code_interpreter"], ["trending_songs"],
        ["get_weather"], ["trending_songs"], ["get_weather"], ["brave_search"], ["get_boiling_point"], [], [],
    ]


def test_function_tag_with_nested_arguments():
    # Meta's regex stops at the first "}" and loses the call; the full object is read here.
    text = '<function=book>{"guest": {"name": "Ann", "tags": ["vip"]}, "nights": 2}</function>'
    call = parse_assistant_text(text)["tool_calls"][0]["function"]
    assert call["name"] == "book"
    assert json.loads(call["arguments"]) == {"guest": {"name": "Ann", "tags": ["vip"]}, "nights": 2}


def test_arguments_shape_and_non_call_json():
    call = parse_assistant_text('{"name": "f", "arguments": {"x": 1}}')["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"x": 1}
    plain = parse_assistant_text('{"answer": 42}')
    assert plain["tool_calls"] == [] and plain["content"] == '{"answer": 42}'


def _run_stream(deltas, python_tag_at=None):
    f = ToolCallStreamFilter()
    shown = []
    for i, d in enumerate(deltas):
        if i == python_tag_at:
            f.mark_python_tag()
        shown.append(f.feed(d))
    rest, calls, stop = f.finish("end_of_turn")
    return shown, rest, calls, stop


def test_stream_releases_plain_content_at_once():
    shown, rest, calls, _ = _run_stream(["Hello", " there", ", how", " are you?"])
    assert shown == ["Hello", " there", ", how", " are you?"]
    assert rest == "" and calls == []


def test_stream_holds_json_tool_call():
    deltas = ['{"name": "get_weather", ', '"parameters": {"city": ', '"Paris"}}', "<|eot_id|>"]
    shown, rest, calls, stop = _run_stream(deltas)
    assert "".join(shown) == "" and rest == ""
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert stop == "end_of_turn"


def test_stream_python_tag_token_without_text():
    # The decoder may drop the special token's text; the token id alone marks a code call.
    shown, rest, calls, stop = _run_stream(["", "print(", "6 * 7)", "<|eom_id|>"], python_tag_at=0)
    assert "".join(shown) == "" and rest == ""
    assert calls[0]["function"]["name"] == "code_interpreter"
    assert json.loads(calls[0]["function"]["arguments"]) == {"code": "print(6 * 7)"}
    assert stop == "end_of_message"


def test_stream_function_tag_after_text():
    deltas = ["Let me check. ", "<fun", "ction=get_weather>", '{"city": "Rome"}', "</function>"]
    shown, rest, calls, _ = _run_stream(deltas)
    assert "".join(shown) == "Let me check. "
    assert "<" not in "".join(shown)  # the partial marker never leaked
    assert calls[0]["function"]["name"] == "get_weather"


def test_stream_partial_marker_that_is_not_one_is_released():
    shown, rest, calls, _ = _run_stream(["a <fun", "ny> b"])
    assert "".join(shown) + rest == "a <funny> b" and calls == []


def test_stream_json_that_is_not_a_call_comes_out_whole():
    shown, rest, calls, _ = _run_stream(['{"answer": ', "42}", "<|eot_id|>"])
    assert "".join(shown) == "" and rest == '{"answer": 42}' and calls == []


def test_stream_without_tools_passes_everything():
    f = ToolCallStreamFilter(parse_tools=False)
    assert f.feed('{"name": "f", "parameters": {}}') == '{"name": "f", "parameters": {}}'
    assert f.finish() == ("", [], None)


def test_stream_tool_name_inside_a_word_is_not_held():
    shown, rest, calls, _ = _run_stream(["ho", "w", " now", " xbrave_search.call(1) "])
    assert shown == ["ho", "w", " now", " xbrave_search.call(1) "]
    assert rest == "" and calls == []
