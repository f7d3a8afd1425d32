"""Converted copies of checkpoints that LLM() loads directly (a .gguf file, a Meta original/ dir).

`LLM("x.gguf")` converts once into `$LLAMA_LOCAL_CACHE/<kind>/<name>-<hash>` (default root
~/.cache/llama_local) and loads that afterwards. The hash covers each source file's size, mtime and
first and last MiB -- enough to notice a replaced file without reading gigabytes -- and the
converter's version, so a fixed converter does not reuse old output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator


def cache_root() -> Path:
    return Path(os.environ.get("LLAMA_LOCAL_CACHE") or Path.home() / ".cache" / "llama_local")


def _hash_file(h, path: Path) -> None:
    st = path.stat()
    h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 1 << 20:
            f.seek(max(st.st_size - (1 << 20), 1 << 20))
            h.update(f.read())


def cache_dir(kind: str, source: str | os.PathLike, converter_version: int) -> Path:
    """Where the converted copy of `source` (a file, or a directory of files) is kept."""
    src = Path(source)
    h = hashlib.sha256(f"{kind}:v{converter_version}:".encode())
    files = sorted(p for p in src.iterdir() if p.is_file()) if src.is_dir() else [src]
    for p in files:
        _hash_file(h, p)
    name = src.stem if src.is_file() else (src.parent.name if src.name == "original" else src.name)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model"
    return cache_root() / kind / f"{name}-{h.hexdigest()[:16]}"


def ensure_converted(kind: str, source: str | os.PathLike, converter_version: int,
                     convert: Callable[[Path, Path], object]) -> Path:
    """The converted directory of `source`, made by convert(source, dst) on first use.

    A lock file serializes concurrent processes (the second one waits, then finds the directory);
    converters write through a temporary directory renamed into place only when complete, so a
    killed run leaves none behind.
    """
    dst = cache_dir(kind, source, converter_version)
    if (dst / "config.json").is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(dst.with_name(dst.name + ".lock")):
        if (dst / "config.json").is_file():
            return dst
        # Under the lock, leftovers of this entry are from runs killed before they could clean up.
        for stale in dst.parent.glob(f".{dst.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if dst.exists():
            shutil.rmtree(dst)
        convert(Path(source), dst)
    return dst


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename alone keeps the cache whole
        yield
        return
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
