"""Streaming Markdown to a terminal without redrawing the whole reply on every token.

A reply is cut into blocks (paragraphs, lists, code fences). A block that is finished (a blank
line follows it outside a code fence, or its fence closed) is rendered once with rich's Markdown
and printed above a small live region; the live region shows only the open block, raw. So the
work per token is bounded by one block, not the reply, and nothing already printed flickers.
"""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.text import Text


def finished_prefix(text: str) -> int:
    """Length of the longest prefix of `text` made of finished Markdown blocks."""
    end = 0
    pos = 0
    fence: str | None = None     # the marker (``` or ~~~) of the open code fence, if any
    prev_blank = False
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break                # the last line is still being written
        pos += len(line)
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                fence = None
                end = pos        # a closed fence is a finished block
            continue
        if stripped.startswith("```") or stripped.startswith("~~~"):
            fence = stripped[:3]
            continue
        blank = stripped == ""
        if blank and not prev_blank:
            end = pos
        prev_blank = blank
    return end


class MarkdownStream:
    """Feed text deltas; finished blocks are printed rendered, the open one is shown raw."""

    def __init__(self, console: Console, spinner_text: str = "thinking…"):
        self.console = console
        self.text = ""
        self.done = 0
        self.live = Live(Spinner("dots", text=Text(spinner_text, style="dim")), console=console,
                         transient=True, refresh_per_second=12)
        self.live.start()

    def feed(self, delta: str) -> None:
        if not delta:
            return
        self.text += delta
        cut = self.done + finished_prefix(self.text[self.done:])
        if cut > self.done:
            self._print(self.text[self.done:cut])
            self.done = cut
        self.live.update(Text(self.text[self.done:]))

    def _print(self, block: str) -> None:
        if block.strip():
            self.live.console.print(Markdown(block))

    def close(self, suffix: str = "") -> None:
        """Render what is left (plus an optional note, e.g. that the reply was interrupted)."""
        self.live.update(Text(""))
        self.live.stop()
        rest = self.text[self.done:]
        self.done = len(self.text)
        self._print(rest)
        if suffix:
            self.console.print(Text(suffix, style="dim"))
