"""The whole listing (every experiment, newest first), kept column by column in one file
beside the index, so listing 100,000 experiments costs reading one file instead of SQLite
handing 1.5 million values to Python one by one (4-5x less CPU here).

It is a cache of the index, as the index is of the records: it is used as it is only while
the index's generation — a random name given when the index file was created, and a counter
its own triggers raise on every change to the listed rows or the column list — is the one
it was made from. After a change it is brought up to date rather than made again: the
index's triggers also log the id of every row they see change (`changed_rows`, the newest
few thousand changes), and the rows logged since `last_change` are read from SQL and put in
their places. A file that is cut, damaged or from another Python is never read. Deleting
`cache/` loses nothing.

The file: a magic line, the xxh3-128 of the rest, then the rest in `marshal` (core
Python values only — str, int, float, None, list, tuple, dict, bool —, unmarshalled without
running any code), which reads several times faster than pickle or JSON.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hashing import hash_bytes

FORMAT = 2  # the layout of `Cached`; raise it when that changes
_MAGIC = b"nbexp-listing\n"
_DIGEST_LENGTH = 32  # xxh3-128 as hex
_PYTHON = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-{marshal.version}"

Generation = tuple[str, int]  # (the index file's random name, its change counter)
KeyColumn = tuple[str, str, int, Any]  # the index's `columns` row: section, key, scalar, physical
Listing = tuple[list[str], list[Sequence[Any]]]


@dataclass(frozen=True)
class Cached:
    """The whole listing as the index held it at `generation`: every key column, those
    without a value too, and ids in full (what a patch needs to find and order rows)."""

    generation: Generation
    last_change: int  # the newest `changed_rows` entry the listing includes
    keys: list[KeyColumn]  # the key columns it was made with, in the index's order
    names: list[str]
    columns: list[Sequence[Any]]


def read(path: Path) -> Cached | None:
    """The cached listing, or None when the file is missing, damaged or not ours."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    start = len(_MAGIC) + _DIGEST_LENGTH
    if not data.startswith(_MAGIC) or data[len(_MAGIC) : start].decode("ascii", "replace") != (
        hash_bytes(memoryview(data)[start:])
    ):
        return None
    try:
        with _no_collection():
            body = marshal.loads(memoryview(data)[start:])
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(body, tuple) or len(body) != 7 or body[:2] != (FORMAT, _PYTHON):
        return None
    _, _, generation, last_change, keys, names, columns = body
    try:
        return Cached(tuple(generation), last_change, [tuple(key) for key in keys], names, columns)
    except TypeError:  # not the layout FORMAT says: never trusted
        return None


def encode(cached: Cached) -> bytes | None:
    """The file's bytes for this listing, or None when a value is not a core type."""
    try:
        body = marshal.dumps(
            (
                FORMAT,
                _PYTHON,
                list(cached.generation),
                cached.last_change,
                [list(key) for key in cached.keys],
                cached.names,
                list(cached.columns),
            )
        )
    except ValueError:
        return None
    return _MAGIC + hash_bytes(body).encode("ascii") + body


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """The cycle collector paused: unmarshalling 100,000 tag lists would otherwise run it
    again and again over everything alive (half the time of reading the file), and the
    listing holds no cycles for it to find."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
