"""`llama-local chat [MODEL]`: the terminal chat."""

from __future__ import annotations

import argparse
import sys

from .options import add_model_options, add_sampling_options, load_model, sampling_kwargs


def register(sub) -> None:
    c = sub.add_parser("chat", help="chat in the terminal (no MODEL: the bundled SmolLM2 demo)")
    c.add_argument("model", nargs="?")
    c.add_argument("--system", default=None, help="system prompt")
    add_model_options(c)
    add_sampling_options(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    llm = load_model(args, args.model)
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print(f"Chatting with {llm.model_name}. Ctrl-C stops a reply; Ctrl-D or /exit leaves.", file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print("\n(use Ctrl-D or /exit to leave)", file=sys.stderr)
            continue
        if line.strip() in ("/exit", "/quit", "/bye"):
            return 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        try:
            for chunk in llm.chat(messages, stream=True, **sampling_kwargs(args)):
                delta = chunk["choices"][0]["delta"].get("content") or ""
                reply.append(delta)
                sys.stdout.write(delta)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [interrupted]")
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
