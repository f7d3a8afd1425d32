"""UTF-8-safe incremental detokenization and stop strings across chunk edges."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from llama_local.streaming import IncrementalDecoder, StopStringMatcher


class ByteTokenizer:
    """One token per UTF-8 byte (like byte-fallback tokens): characters span several tokens."""

    def __init__(self):
        vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
        self.tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        self.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        self.tok.decoder = decoders.ByteLevel()

    def encode(self, text):
        return self.tok.encode(text).ids

    def decode(self, ids):
        return self.tok.decode(ids)


@pytest.mark.parametrize("text", ["hello world", "héllo wörld", "日本語のテキスト", "emoji 👩‍👩‍👧 ok 🎉",
                                  "ไทย हिन्दी"])
def test_incremental_decoding_releases_only_whole_characters(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text.encode())
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_split_across_chunks_is_not_leaked():
    m = StopStringMatcher(["<|end|>"])
    out = []
    for piece in ["Hello <", "|en", "d|> more"]:
        text, stopped = m.push(piece)
        out.append(text)
        if stopped:
            break
    assert "".join(out) == "Hello "
    assert stopped


def test_held_back_prefix_is_released_when_it_turns_out_not_to_stop():
    m = StopStringMatcher(["STOP"])
    assert m.push("a ST") == ("a ", False)
    assert m.push("ART") == ("START", False)
    assert m.flush() == ""


def test_earliest_of_several_stop_strings_wins():
    m = StopStringMatcher(["bb", "a"])
    assert m.push("xxbba") == ("xx", True)
