"""The Llama 3 vocabulary's facts, written once: its special tokens and their ids, the tokens that
end a reply, and the pre-tokenizer's split regex.

Sources: Meta's llama-models (`llama3/tokenizer.py`, `llama3/chat_format.py`) and the Llama 3.1
Hugging Face release. The RoPE facts are in `rope`, the tensor names in `formats.llama_layout`.
Everything else imports these; tests that hold our code against Meta's, transformers' or
gguf-py's own restate them on purpose, so that a wrong fact here cannot pass unnoticed.
"""

from __future__ import annotations

# Meta's tiktoken vocabulary has 128,000 BPE ranks; the 256 special tokens come after them.
FIRST_SPECIAL_ID = 128000
NUM_SPECIAL_TOKENS = 256
VOCAB_SIZE = FIRST_SPECIAL_ID + NUM_SPECIAL_TOKENS  # 128256

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
FINETUNE_RIGHT_PAD = "<|finetune_right_pad_id|>"
STEP_ID = "<|step_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOM = "<|eom_id|>"  # end of message: the reply is a tool call that the caller runs, then it goes on
EOT = "<|eot_id|>"  # end of turn
PYTHON_TAG = "<|python_tag|>"
IMAGE = "<|image|>"

# Where each named token sits among the 256 (its id minus the first special id). Every other
# slot holds <|reserved_special_token_k|>, k counting up from 0 in id order.
_OFFSETS = {BEGIN_OF_TEXT: 0, END_OF_TEXT: 1, FINETUNE_RIGHT_PAD: 4, STEP_ID: 5, START_HEADER: 6,
            END_HEADER: 7, EOM: 8, EOT: 9, PYTHON_TAG: 10, IMAGE: 11}
# Named only in Meta's tokenizer (llama-models, from Llama 3.2 on); the Llama 3.1 Hugging Face
# tokenizer.json still has reserved tokens in these two slots.
_META_ONLY = (STEP_ID, IMAGE)


def token_id(token: str, first: int = FIRST_SPECIAL_ID) -> int:
    """The id of a named special token, when the 256 special tokens start at `first`."""
    return first + _OFFSETS[token]


BOS_ID = token_id(BEGIN_OF_TEXT)  # 128000
EOS_ID = token_id(END_OF_TEXT)  # 128001
EOM_ID = token_id(EOM)  # 128008
EOT_ID = token_id(EOT)  # 128009
PYTHON_TAG_ID = token_id(PYTHON_TAG)  # 128010

# Meta's stop tokens: a reply ends on any of them. The released configs disagree on which to
# list, so a Llama 3 vocabulary always stops on all three.
STOP_TOKENS = (END_OF_TEXT, EOM, EOT)
STOP_IDS = frozenset(token_id(t) for t in STOP_TOKENS)


def special_tokens(*, with_step_and_image: bool = True) -> list[str]:
    """The 256 special-token strings in id order: Meta's (with <|step_id|> and <|image|>), or,
    with `with_step_and_image=False`, the Llama 3.1 Hugging Face release's."""
    named = {offset: token for token, offset in _OFFSETS.items()
             if with_step_and_image or token not in _META_ONLY}
    out, reserved = [], 0
    for offset in range(NUM_SPECIAL_TOKENS):
        if offset in named:
            out.append(named[offset])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


# Meta's pre-tokenizer regex (llama3/tokenizer.py `pat_str`; llama.cpp's "llama-bpe").
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
