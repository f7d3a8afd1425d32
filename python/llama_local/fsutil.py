"""Writing outputs atomically: a tool writes into a temporary sibling and renames at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_output_dir(dst: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `dst`; on success it becomes `dst`.

    On any exception (KeyboardInterrupt included) the temporary directory is removed, so an
    interrupted conversion never leaves a half-written model behind. An existing `dst` is refused
    unless `force`, and then it is replaced only after the new one is complete.
    """
    dst = Path(dst)
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} already exists (pass force=True / --force to replace it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    # mkdtemp makes the directory private (0700); the finished one gets a directory's usual mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            os.rename(dst, old)
            os.rename(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise



def atomic_write_text(dst: str | os.PathLike, text: str) -> Path:
    """Write `text` to `dst` through a temporary sibling renamed at the end: a reader (or a
    crash) never sees half a file, and an existing `dst` stays intact until the new one is whole."""
    dst = Path(dst).expanduser()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.partial-", dir=dst.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dst
