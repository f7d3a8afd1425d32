"""The terminal chat behind `llama-local chat`: prompt_toolkit for input, rich for output.

In a terminal: input history in a file (Up/Down, Ctrl-R), tab completion of slash commands,
multi-line input between triple quotes (and pasted text as one message), a spinner until the first
token, Markdown rendered block by block as it streams, Ctrl-C stopping a reply (the partial reply
stays in the conversation, marked interrupted). When stdin or stdout is not a terminal (a pipe, a
test), it reads lines and answers in plain text: replies on stdout, everything else on stderr.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, TextIO

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from ..errors import ContextOverflowError, LlamaLocalError
from .session import SAMPLING_KEYS, ChatSession

HELP = """\
/help                 this list
/system [TEXT]        show or set the system prompt (setting it starts a new conversation)
/set [KEY VALUE]      show or change a setting: temperature, top_p, top_k, min_p, max_tokens,
                      seed, repeat_penalty ("/set KEY default" restores the model's default)
/clear                forget the conversation
/regen                answer the last message again
/save FILE            save the conversation as JSON        /load FILE   restore one
/export FILE.md       write the conversation as Markdown
/tool RESULT          answer the model's tool call with RESULT (nothing is run for you)
/stats                speed and context figures of the last reply
/model                the model: configuration, weight formats, memory
/exit                 leave (also Ctrl-D)
Text between \"\"\" and \"\"\" is one message, over several lines."""

COMMANDS = ("/help", "/system", "/set", "/clear", "/regen", "/save", "/load", "/export", "/tool",
            "/stats", "/model", "/exit", "/quit", "/bye")
INT_SETTINGS = ("top_k", "max_tokens", "seed")


def history_path() -> Path:
    """Where the input history lives: $LLAMA_LOCAL_HISTORY, else the XDG state directory."""
    env = os.environ.get("LLAMA_LOCAL_HISTORY")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "llama_local" / "chat_history"


class _PromptInput:
    """Lines from the terminal through prompt_toolkit."""

    def __init__(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import NestedCompleter
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        path = history_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(path))
        except OSError:
            history = None  # a read-only home: the chat still works, without saved history
        tree: dict = {c: None for c in COMMANDS}
        tree["/set"] = {k: None for k in SAMPLING_KEYS}
        keys = KeyBindings()

        @keys.add("escape", "enter")  # Alt-Enter: a newline inside the message
        def _(event):
            event.current_buffer.insert_text("\n")

        self.session = PromptSession(history=history, completer=NestedCompleter.from_nested_dict(tree),
                                     key_bindings=keys, complete_while_typing=False)

    def read(self, continuation: bool = False) -> str:
        return self.session.prompt("... " if continuation else ">>> ")


class _PipeInput:
    """Lines from a pipe or file; EOFError at the end."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def read(self, continuation: bool = False) -> str:
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


def read_message(read: Callable[..., str]) -> str:
    """One message: a line, or everything between a line opening with \"\"\" and one closing it."""
    first = read()
    if not first.lstrip().startswith('"""'):
        return first
    body = first.lstrip()[3:]
    if body.rstrip().endswith('"""'):
        return body.rstrip()[:-3]
    lines = [body] if body else []
    while True:
        line = read(continuation=True)
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines).strip("\n")
        lines.append(line)


class TerminalChat:
    def __init__(self, session: ChatSession, interactive: bool | None = None,
                 stdin: TextIO | None = None, stdout: TextIO | None = None):
        self.session = session
        stdin = stdin or sys.stdin
        stdout = stdout or sys.stdout
        if interactive is None:
            interactive = stdin.isatty() and stdout.isatty()
        self.interactive = interactive
        self.out = stdout
        if interactive:
            self.console = Console(file=stdout)
            self.info = self.console
            self.input = _PromptInput()
        else:
            # Plain text: the replies alone on stdout, so `echo q | llama-local chat > a.txt` works.
            self.console = Console(file=stdout, no_color=True, highlight=False, width=10_000)
            self.info = Console(file=sys.stderr, no_color=True, highlight=False, width=10_000)
            self.input = _PipeInput(stdin)
        session.on_notice = self.notice

    # ---- output ----

    def notice(self, text: str) -> None:
        self.info.print(Text(f"({text})", style="yellow"))

    def error(self, text: str) -> None:
        self.info.print(Text(text, style="bold red"))

    def banner(self) -> None:
        llm = self.session.llm
        self.info.print(Text.assemble(
            ("llama-local chat", "bold"), f" · {llm.model_name} · n_ctx {llm.n_ctx}\n",
            ("/help for commands · Ctrl-C stops a reply · Ctrl-D or /exit leaves", "dim")))

    def stats_line(self) -> str:
        s = self.session.last_stats
        if not s:
            return "no reply yet"
        pre = s["prefilled_tokens"] / s["prefill_s"] if s["prefill_s"] else 0.0
        dec = (s["completion_tokens"] - 1) / s["decode_s"] if s["decode_s"] and s["completion_tokens"] > 1 else 0.0
        return (f"prompt {s['prefilled_tokens']} new tok ({s['reused_tokens']} cached) at {pre:,.1f} tok/s · "
                f"reply {s['completion_tokens']} tok at {dec:,.1f} tok/s · "
                f"context {s['n_tokens']:,}/{s['n_ctx']:,}")

    # ---- the loop ----

    def run(self) -> int:
        if self.interactive and threading.current_thread() is threading.main_thread():
            # A program started in the background by a script (`cmd &`) inherits SIGINT ignored,
            # and Python then never raises KeyboardInterrupt. In a terminal chat Ctrl-C must stop
            # a reply whatever the parent did.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.banner()
        while True:
            try:
                text = read_message(self.input.read)
            except EOFError:
                return 0
            except KeyboardInterrupt:
                self.info.print(Text("(Ctrl-D or /exit leaves)", style="dim"))
                continue
            if not text.strip():
                continue
            if text.lstrip().startswith("/"):
                if self.command(text.strip()) == "exit":
                    return 0
                continue
            self.reply(lambda: self.session.send(text))

    def reply(self, start: Callable) -> None:
        try:
            deltas = start()
        except (ContextOverflowError, LlamaLocalError, ValueError) as e:
            self.error(str(e))
            return
        interrupted = False
        stream = None
        try:
            if self.interactive:
                from .markdown_stream import MarkdownStream
                stream = MarkdownStream(self.console)
                for delta in deltas:
                    stream.feed(delta)
            else:
                for delta in deltas:
                    self.out.write(delta)
                    self.out.flush()
        except KeyboardInterrupt:
            interrupted = True
        except (LlamaLocalError, ValueError) as e:  # the engine refused mid-turn: say so, go on
            if stream is not None:
                stream.close()
                stream = None
            self.error(str(e))
            return
        finally:
            deltas.close()
        note = "[interrupted]" if interrupted else ""
        if stream is not None:
            stream.close(note)
        else:
            self.out.write((" " + note if note else "") + "\n")
            self.out.flush()
        for call in self.session.last_tool_calls:
            fn = call.get("function", {})
            self.console.print(Panel(Text(f"{fn.get('name')}({fn.get('arguments')})"),
                                     title="tool call", subtitle="answer with /tool RESULT",
                                     expand=False, border_style="cyan"))
        self.info.print(Text(self.stats_line(), style="dim"))

    # ---- slash commands ----

    def command(self, line: str) -> str | None:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        s = self.session
        if name in ("/exit", "/quit", "/bye"):
            return "exit"
        try:
            if name == "/help":
                self.info.print(HELP, markup=False, highlight=False)
            elif name == "/clear":
                s.clear()
                self.notice("conversation cleared")
            elif name == "/system":
                if not arg:
                    self.info.print(f"system prompt: {s.system!r}")
                else:
                    s.system = arg
                    s.clear()
                    self.notice("system prompt set; new conversation")
            elif name == "/set":
                self.set(arg)
            elif name == "/regen":
                self.reply(s.regenerate)
            elif name == "/tool":
                if not arg:
                    raise ValueError("usage: /tool RESULT")
                self.reply(lambda: s.send_tool_result(arg))
            elif name == "/save":
                self.notice(f"saved to {s.save(self.path_arg(arg, 'FILE'))}")
            elif name == "/load":
                s.load(self.path_arg(arg, "FILE"))
                self.notice(f"loaded {len(s.messages)} messages" +
                            (f" (saved with {s.loaded_model})" if s.loaded_model else ""))
                self.show_history()
            elif name == "/export":
                self.notice(f"wrote {s.export_markdown(self.path_arg(arg, 'FILE.md'))}")
            elif name == "/stats":
                self.info.print(self.stats_line())
            elif name == "/model":
                from ..cli.info import info_table
                self.info.print(info_table(s.llm.info()))
            else:
                self.error(f"unknown command {name}; /help lists the commands")
        except (LlamaLocalError, ValueError, OSError) as e:
            self.error(str(e))
        return None

    def path_arg(self, arg: str, what: str) -> Path:
        if not arg:
            raise ValueError(f"usage: {what} is missing")
        parts = shlex.split(arg)
        if len(parts) != 1:
            raise ValueError(f"expected one {what}, got {arg!r}")
        return Path(parts[0]).expanduser()

    def set(self, arg: str) -> None:
        s = self.session
        if not arg:
            shown = {k: s.sampling.get(k, "default") for k in SAMPLING_KEYS}
            self.info.print(" · ".join(f"{k}={v}" for k, v in shown.items()))
            return
        parts = arg.split()
        if len(parts) != 2 or parts[0] not in SAMPLING_KEYS:
            raise ValueError(f"usage: /set KEY VALUE with KEY one of {', '.join(SAMPLING_KEYS)}")
        key, raw = parts
        if raw == "default":
            value = None
        else:
            try:
                value = int(raw) if key in INT_SETTINGS else float(raw)
            except ValueError:
                raise ValueError(f"/set {key}: {raw!r} is not a number") from None
        s.set_sampling(**{key: value})
        self.notice(f"{key} = {raw}")

    def show_history(self) -> None:
        for m in self.session.messages:
            who = {"user": ">>> ", "assistant": "", "tool": "[tool] "}.get(m["role"], "")
            content = m.get("content") or ""
            for call in m.get("tool_calls") or []:
                fn = call.get("function", {})
                content += f"[tool call {fn.get('name')}({fn.get('arguments')})]"
            self.info.print(Text(who + content, style="dim" if m["role"] != "assistant" else ""))
