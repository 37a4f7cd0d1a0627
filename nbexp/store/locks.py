"""Advisory file locks (flock) — the one place the store takes them.

Supported platforms: Linux and macOS (POSIX `flock`); on a network file system the locks
are only as good as its flock support. Windows is not supported.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from typing import IO, Any


def exclusive(handle: IO[Any] | int, *, wait: bool = True) -> None:
    """Take the file's exclusive lock; without `wait`, raise BlockingIOError if it is held."""
    fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)


def shared(handle: IO[Any]) -> None:
    fcntl.flock(handle, fcntl.LOCK_SH)


def unlock(handle: IO[Any]) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def holding(handle: IO[Any], *, exclusive_lock: bool = True) -> Iterator[None]:
    """The file's lock (exclusive, or shared) for the block."""
    if exclusive_lock:
        exclusive(handle)
    else:
        shared(handle)
    try:
        yield
    finally:
        unlock(handle)
