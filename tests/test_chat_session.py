"""ChatSession on the real SmolLM2 model: turns, KV-prefix reuse, interruption, files, overflow."""

import json

import pytest

from llama_local import ChatSession, ContextOverflowError, LLM, LlamaLocalError

GREEDY = dict(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def llm(smollm2_gguf):
    return LLM(smollm2_gguf, n_ctx=2048, progress=False)


@pytest.fixture
def session(llm):
    return ChatSession(llm, system="Answer in one short sentence.", **GREEDY)


def test_send_streams_the_reply_into_the_history(session):
    deltas = list(session.send("What is the capital of France?"))
    assert len(deltas) > 1  # streamed, not delivered at once
    reply = "".join(deltas)
    assert "Paris" in reply
    h = session.history
    assert [m["role"] for m in h] == ["system", "user", "assistant"]
    assert h[-1]["content"] == reply
    assert session.n_tokens == session.last_stats["prompt_tokens"] + session.last_stats["completion_tokens"]


def test_a_turn_prefills_only_its_new_tokens(session):
    list(session.send("What is the capital of France?"))
    first = dict(session.last_stats)
    list(session.send("And of Germany?"))
    second = session.last_stats
    # Everything up to the end of the first reply was already in the KV cache.
    assert second["reused_tokens"] >= first["prompt_tokens"] + first["completion_tokens"] - 2
    assert second["prefilled_tokens"] < 40
    assert second["prompt_tokens"] > first["prompt_tokens"] + first["completion_tokens"]
    assert "Berlin" in session.history[-1]["content"]


def test_stopping_early_keeps_the_partial_reply_marked_interrupted(session):
    gen = session.send("Write a long poem about the sea.", max_tokens=200)
    got = [next(gen) for _ in range(3)]
    gen.close()
    last = session.history[-1]
    assert last["role"] == "assistant" and last.get("interrupted") is True
    assert last["content"] == "".join(got)
    assert session.last_stats["finish_reason"] == "interrupted"
    # The conversation goes on, on top of the cached prompt and partial reply.
    prompt_before = session.last_stats["prompt_tokens"]
    assert "".join(session.send("Thank you. Now say hello.")).strip()
    assert "interrupted" not in session.history[-1]
    assert session.last_stats["reused_tokens"] >= prompt_before


def test_regenerate_replaces_the_last_reply(session):
    list(session.send("Name a color."))
    n = len(session.history)
    again = "".join(session.regenerate(temperature=1.0, seed=3))
    assert len(session.history) == n
    assert session.history[-1]["content"] == again
    assert session.history[-2]["content"] == "Name a color."


def test_regenerate_without_a_message_is_refused(session):
    with pytest.raises(LlamaLocalError, match="no message"):
        session.regenerate()


def test_save_and_load_round_trip(session, llm, tmp_path):
    list(session.send("What is the capital of France?"))
    session.set_sampling(top_k=7)
    path = session.save(tmp_path / "chat.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "llama_local.chat" and doc["version"] == 1 and doc["model"] == llm.model_name
    other = ChatSession(llm)
    other.load(path)
    assert other.history == session.history
    assert other.sampling == session.sampling
    assert other.n_tokens > 0
    assert "Berlin" in "".join(other.send("And of Germany?"))


@pytest.mark.parametrize("content, why", [
    ("{not json", "not valid JSON"),
    ('{"format": "something else"}', "format"),
    ('{"format": "llama_local.chat", "version": 99, "messages": []}', "version 99"),
    ('{"format": "llama_local.chat", "version": 1, "messages": [{"role": "wizard", "content": "x"}]}', "messages\\[0\\]"),
    ('{"format": "llama_local.chat", "version": 1, "messages": [{"role": "user", "content": 5}]}', "content must be text"),
    ('{"format": "llama_local.chat", "version": 1, "messages": [], "sampling": {"temperature": -1}}', "sampling"),
])
def test_a_corrupt_file_is_refused_and_the_session_is_unchanged(session, tmp_path, content, why):
    list(session.send("Hi!"))
    before = session.history, dict(session.sampling)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(LlamaLocalError, match=why) as e:
        session.load(bad)
    assert str(bad) in str(e.value)
    assert (session.history, session.sampling) == before


def test_clear_keeps_the_system_prompt(session):
    list(session.send("Hi!"))
    session.clear()
    assert session.history == [{"role": "system", "content": "Answer in one short sentence."}]
    assert session.n_tokens == 0


def test_bad_settings_are_refused(llm):
    with pytest.raises(ValueError, match="unknown sampling"):
        ChatSession(llm, temprature=0.5)
    s = ChatSession(llm)
    with pytest.raises(ValueError):
        s.set_sampling(top_p=2.0)
    with pytest.raises(ValueError, match="max_tokens"):
        s.set_sampling(max_tokens=0)


def test_a_full_context_drops_the_oldest_turns_and_says_so(smollm2_gguf):
    small = LLM(smollm2_gguf, n_ctx=256, progress=False)
    notices = []
    s = ChatSession(small, system="Be brief.", on_notice=notices.append, temperature=0.0, max_tokens=16)
    filler = "Here is some text to remember: " + "apples and oranges, " * 12
    for _ in range(4):
        list(s.send(filler))
    assert notices and "dropped" in notices[0] and "n_ctx=256" in notices[0]
    assert s.history[0] == {"role": "system", "content": "Be brief."}
    assert any(s_["role"] == "user" for s_ in s.history)
    assert s.n_tokens <= 256
    # A message that cannot fit even alone is refused, and the history is as it was.
    before = s.history
    with pytest.raises(ContextOverflowError, match="context holds 256"):
        s.send("word " * 400)
    assert s.history == before


def test_a_tool_result_needs_a_reply_to_answer(llm):
    s = ChatSession(llm)
    with pytest.raises(LlamaLocalError, match="tool result"):
        s.send_tool_result("42")
