"""The progress bar the converters show: bytes written, rate and time left, on stderr."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def byte_progress(enabled: bool, total_bytes: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield advance(n_bytes); a no-op when not enabled. The bar disappears when done."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("converting {task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total_bytes)
        yield lambda n: bar.advance(task, n)
