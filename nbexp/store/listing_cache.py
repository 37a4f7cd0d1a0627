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
import json
import marshal
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import xxhash

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


# -- the listing's text ---------------------------------------------------------------------
#
# `nbexp list` of an unchanged store prints what it printed last time: the text itself (the
# table, the CSV) is kept beside the listing, one file per set of options, so such a call
# costs one read — not unmarshalling 1.5 million values and formatting them again. A file
# says the generation and the options it was made for; it is trusted only for those, after
# its hash is checked. It is written without fsync: after a crash it is damaged (then never
# read) or whole, and either way the index's generation decides whether it is current.

_TEXT_MAGIC = b"nbexp-listing-text\n"
TEXTS_KEPT = 6  # the texts last used kept (see `mark_used`); older ones deleted


def text_path(folder: Path, options: str) -> Path:
    """The file that keeps the listing's text for `options` (any string naming them)."""
    return folder / f"text-{hash_bytes(options.encode('utf-8', 'backslashreplace'))[:20]}"


def read_text(path: Path, generation: Generation, options: str) -> bytes | None:
    """The text kept at `path` when it was made at `generation` for `options`; else None
    (missing, damaged, from another index or for other options)."""
    header = _text_header(generation, options)
    start = len(_TEXT_MAGIC) + _DIGEST_LENGTH
    try:
        with open(path, "rb") as handle:
            head = handle.read(start + len(header))
            # before reading the rest: a stale text costs neither its bytes nor a hash
            if head[: len(_TEXT_MAGIC)] != _TEXT_MAGIC or head[start:] != header:
                return None
            text = handle.read()  # the text alone: 10 MB at 100,000 rows, never copied
    except OSError:
        return None
    if head[len(_TEXT_MAGIC) : start].decode("ascii", "replace") != _digest(header, text):
        return None
    return text


def encode_text(generation: Generation, options: str, text: bytes) -> list[bytes]:
    """The file's bytes for `text`, made at `generation` for `options`, in pieces (written
    one after the other: the text is not copied into a new buffer)."""
    header = _text_header(generation, options)
    return [_TEXT_MAGIC, _digest(header, text).encode("ascii"), header, text]


def _digest(*pieces: bytes) -> str:
    """`hash_bytes` of the pieces joined, without joining them."""
    hasher = xxhash.xxh3_128()
    for piece in pieces:
        hasher.update(piece)
    return str(hasher.hexdigest())


def _text_header(generation: Generation, options: str) -> bytes:
    """One line: the generation and the options (their JSON: no line break inside)."""
    name, changes = generation
    return json.dumps([name, changes, options]).encode("ascii") + b"\n"


def write_unsynced(temp: Path, target: Path, data: bytes | list[bytes]) -> None:
    """`data` (or its pieces, one after the other) to `target` through `temp` and a rename
    (readers see all of it or nothing), not fsynced: a cache checked by its hash on every
    read."""
    try:
        with open(temp, "wb") as handle:
            handle.writelines([data] if isinstance(data, bytes) else data)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def mark_used(path: Path) -> None:
    """Note that the text at `path` was just printed (its modification time set to now, from
    the fine clock: files' own times can tie within a clock tick), so pruning keeps the
    texts in use — the whole table printed every day — and drops filters typed once."""
    with contextlib.suppress(OSError):
        now = time.time_ns()
        os.utime(path, ns=(now, now))


def prune_texts(folder: Path, keep: int = TEXTS_KEPT) -> None:
    """Delete all but the `keep` texts used last (a listing's text for each filter typed
    once would otherwise pile up), each with its rows."""
    texts: list[tuple[int, str]] = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("text-"):
                with contextlib.suppress(OSError):  # deleted by another process meanwhile
                    texts.append((entry.stat().st_mtime_ns, entry.path))
    texts.sort(reverse=True)
    for _, old in texts[keep:]:
        for path in (Path(old), rows_path(Path(old))):
            with contextlib.suppress(OSError):
                os.unlink(path)


# -- what patches a kept text ---------------------------------------------------------------
#
# Beside a text, `rows-<h>` keeps what the text's maker needs to patch it after a change
# (its rows' ids, the cells' lengths: `listing_text.Rows`, opaque here) and the newest
# `changed_rows` entry the text includes: the rows changed since are read alone and put in
# their places instead of listing and formatting every experiment again. It belongs to the
# text of the same generation and options only; any other pair is never used together.

_ROWS_MAGIC = b"nbexp-listing-rows\n"


def rows_path(text: Path) -> Path:
    """`cache/rows-<h>`, beside `cache/text-<h>`."""
    return text.with_name("rows-" + text.name.removeprefix("text-"))


@dataclass(frozen=True)
class KeptRows:
    generation: Generation  # the text's
    last_change: int  # the newest `changed_rows` entry the text includes
    rows: Any


def encode_rows(kept: KeptRows, options: str) -> list[bytes] | None:
    """The rows file's bytes in pieces, or None when `kept.rows` holds a value that is not a
    core type."""
    try:
        body = marshal.dumps(
            (FORMAT, _PYTHON, list(kept.generation), kept.last_change, options, kept.rows)
        )
    except ValueError:
        return None
    return [_ROWS_MAGIC, hash_bytes(body).encode("ascii"), body]


def read_rows(path: Path, options: str) -> KeptRows | None:
    """The rows kept at `path` for `options`; None when missing, damaged or for others."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    start = len(_ROWS_MAGIC) + _DIGEST_LENGTH
    if not data.startswith(_ROWS_MAGIC) or data[len(_ROWS_MAGIC) : start].decode(
        "ascii", "replace"
    ) != hash_bytes(memoryview(data)[start:]):
        return None
    try:
        with _no_collection():
            body = marshal.loads(memoryview(data)[start:])
        version, python, generation, last_change, kept_options, rows = body
        if (version, python, kept_options) != (FORMAT, _PYTHON, options):
            return None
        name, changes = generation
        return KeptRows((str(name), int(changes)), int(last_change), rows)
    except (EOFError, ValueError, TypeError):
        return None


class Strings(Protocol):
    """A listing's ids or created times: a list, or packed in one string."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> str: ...


def place(created: Strings, ids: Strings, when: str, ident: str) -> int:
    """Where a row goes in a listing ordered as `created DESC, id` (SQLite compares text
    bytewise, as Python compares these ASCII strings)."""
    low, high = 0, len(ids)
    while low < high:
        middle = (low + high) // 2
        if created[middle] > when or (created[middle] == when and ids[middle] < ident):
            low = middle + 1
        else:
            high = middle
    return low
