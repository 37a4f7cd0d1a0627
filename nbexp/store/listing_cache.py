"""The whole listing (every experiment, newest first), kept column by column in one file
beside the index, so listing 100,000 experiments costs reading one file instead of SQLite
handing 1.5 million values to Python one by one (4-5x less CPU here).

It is a cache of the index, as the index is of the records: it is used only while the
index's generation — a random name given when the index file was created, and a counter
its own triggers raise on every change to the listed rows or the column list — is the
one it was made from, and a file that is cut, damaged or from another Python is never
read. Deleting `cache/` loses nothing.

The file: a magic line, the xxh3-128 of the rest, then the rest in `marshal` (core
Python values only — str, int, float, None, list, dict, bool —, unmarshalled without
running any code), which reads several times faster than pickle or JSON.
"""

from __future__ import annotations

import contextlib
import marshal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..hashing import hash_bytes

FORMAT = 1  # the layout of what `Store.listing` returns; raise it when that changes
_MAGIC = b"nbexp-listing\n"
_DIGEST_LENGTH = 32  # xxh3-128 as hex
_PYTHON = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-{marshal.version}"

Generation = tuple[str, int]  # (the index file's random name, its change counter)
Listing = tuple[list[str], list[Sequence[Any]]]


def read(path: Path, generation: Generation) -> Listing | None:
    """The cached listing when it was made from this generation of the index, else None."""
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
        body = marshal.loads(memoryview(data)[start:])
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(body, tuple) or len(body) != 5:
        return None
    made_format, python, made_from, names, columns = body
    if made_format != FORMAT or python != _PYTHON or tuple(made_from) != tuple(generation):
        return None
    return names, columns


def encode(generation: Generation, listing: Listing) -> bytes | None:
    """The file's bytes for this listing, or None when a value is not a core type."""
    names, columns = listing
    try:
        body = marshal.dumps((FORMAT, _PYTHON, list(generation), names, list(columns)))
    except ValueError:
        return None
    return _MAGIC + hash_bytes(body).encode("ascii") + body


def forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
