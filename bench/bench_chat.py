#!/usr/bin/env python3
"""Time to first token over a conversation: does it stay flat as the history grows?

    python bench/bench_chat.py                      # SmolLM2 (the demo model), 6 turns
    python bench/bench_chat.py --model path/to/model.gguf --turns 8 --json out.json

Each turn sends a long user message (~200 tokens) and takes a greedy reply of --reply tokens
through ChatSession, which reuses the KV cache of everything already in context. The same
conversation is then replayed with the cache emptied before every turn (what a chat that
re-sends the whole history costs), so the table shows both: the time to first token of turn N
with reuse should stay near turn 1's; without it, it grows with the history.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402,F401  (puts the source tree on sys.path when llama_local is not installed)

from llama_local import ChatSession, LLM  # noqa: E402

TOPICS = ["the history of Rome", "how bread is made", "the water cycle", "chess openings",
          "the planets of the solar system", "the invention of printing", "coral reefs", "jazz"]


def user_message(turn: int) -> str:
    topic = TOPICS[turn % len(TOPICS)]
    filler = (f"I have been reading about {topic} and I would like a short summary of it. "
              "Please keep the answer focused, mention one surprising fact, and avoid lists. ") * 4
    return filler + f"What is the single most important thing to know about {topic}?"


def converse(llm: LLM, turns: int, reply: int, reuse: bool) -> list[dict]:
    session = ChatSession(llm, system="You are a helpful assistant.", temperature=0.0, max_tokens=reply)
    llm._cached = []  # each conversation starts cold, as a new chat does
    rows = []
    for t in range(turns):
        if not reuse:
            llm._cached = []  # forget the KV cache: the whole history is prefilled again
        for _ in session.send(user_message(t)):
            pass
        s = session.last_stats
        rows.append({"turn": t + 1, "prompt_tokens": s["prompt_tokens"], "prefilled_tokens": s["prefilled_tokens"],
                     "ttft_s": s["ttft_s"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: the bundled SmolLM2 demo")
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--reply", type=int, default=48, help="tokens per reply (greedy)")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.model is None:
        from llama_local.demo import demo_model_path
        args.model = str(demo_model_path())
    llm = LLM(args.model, n_ctx=args.n_ctx, n_threads=args.threads, progress=False)
    converse(llm, 1, 4, True)  # warm-up: first-touch of the weights and scratch buffers
    with_reuse = converse(llm, args.turns, args.reply, reuse=True)
    without = converse(llm, args.turns, args.reply, reuse=False)

    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"time to first token per turn: {llm.model_name}, {llm.model.n_threads} threads, "
                    f"{args.reply}-token replies")
    for col in ("turn", "prompt tok", "prefilled (reuse)", "TTFT reuse", "vs turn 1",
                "TTFT no reuse", "vs turn 1"):
        t.add_column(col, justify="right")
    r1, n1 = with_reuse[0]["ttft_s"], without[0]["ttft_s"]
    for a, b in zip(with_reuse, without):
        t.add_row(str(a["turn"]), str(a["prompt_tokens"]), str(a["prefilled_tokens"]),
                  f"{a['ttft_s'] * 1e3:.1f} ms", f"{a['ttft_s'] / r1:.2f}x",
                  f"{b['ttft_s'] * 1e3:.1f} ms", f"{b['ttft_s'] / n1:.2f}x")
    Console().print(t)
    last = with_reuse[-1]["ttft_s"] / r1
    print(f"turn {args.turns} / turn 1 time to first token: {last:.2f}x with KV reuse "
          f"(target <= 2x), {without[-1]['ttft_s'] / n1:.2f}x without")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": llm.model_name, "with_reuse": with_reuse,
                                               "without_reuse": without}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
