"""`llama-local chat [MODEL]`: the terminal chat (chat/terminal.py)."""

from __future__ import annotations

import argparse

from .options import add_model_options, add_sampling_options, load_model, sampling_kwargs


def register(sub) -> None:
    c = sub.add_parser("chat", help="chat in the terminal (no MODEL: the bundled SmolLM2 demo)",
                       description="MODEL: a path (directory, .gguf, Meta original/), a Hugging Face "
                       "repo id in the local HF cache, or an Ollama model (ollama:NAME[:TAG] or NAME:TAG). "
                       "`llama-local list` shows what is found.")
    c.add_argument("model", nargs="?")
    c.add_argument("--system", default=None, help="system prompt")
    add_model_options(c)
    add_sampling_options(c, max_tokens=1024, stop=False)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..chat.session import ChatSession
    from ..chat.terminal import TerminalChat
    llm = load_model(args, args.model)
    sampling = {k: v for k, v in sampling_kwargs(args).items() if k != "stop"}
    session = ChatSession(llm, system=args.system, **sampling)
    return TerminalChat(session).run()
