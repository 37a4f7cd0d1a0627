"""Pack files: many objects in one append-only file plus an index, as git and restic keep
them, so a snapshot of a thousand new chunks costs one file, one fsync and one rename
instead of a thousand of each.

On disk, in `.nbexp/packs/` (beside `objects/`, where a store written before packs, or an
older nbexp, never looks)::

    pack-<name>.pack   b"NBEXPPK1", the objects' bytes back to back (each starting at a
                       multiple of 8, so the chunks of one array stay contiguous and
                       aligned), then a copy of the index, its length (8, little endian)
                       and b"NBEXPEND": a damaged .idx is replaced by the pack's own copy.
    pack-<name>.idx    b"NBEXPIX1", count (8), count × (digest 16, offset 8, length 8), and
                       the xxh3-128 of everything before it (16): a damaged index is noticed.

Restore maps a pack (`map_objects`, copy-on-write) instead of copying its bytes into new
memory: the chunks of one array written in one batch are contiguous, so the array's buffer
is the mapped file itself, verified by hash, and pages nobody writes are never copied.

A pack becomes visible when its index appears: the pack is renamed into place first, its
index second, both fsynced before and the folder after. A pack without an index (a writer
killed between the two renames) names nothing and is collected by gc. Packs are immutable;
gc writes the live objects of a pack that holds garbage into a new pack and then deletes
the old one (index first), so a reader always finds every live object in some pack.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from .files import fsync_dir

PACK_MAGIC = b"NBEXPPK1"
PACK_END = b"NBEXPEND"
INDEX_MAGIC = b"NBEXPIX1"
ALIGN = 8  # objects start at multiples of this (an 8-byte dtype's chunks stay aligned)
_ENTRY = struct.Struct("<16sQQ")  # an index entry: digest, offset of the bytes, length
_COUNT = struct.Struct("<Q")
_TRAILER = 16  # xxh3-128 digest of the index


@dataclass(frozen=True)
class Location:
    """Where a packed object's bytes are."""

    pack: str  # the pack's name, `pack-<32 hex>`
    offset: int
    length: int


def _digest_bytes(digest: str) -> bytes:
    return bytes.fromhex(digest)


def encode_index(entries: dict[str, tuple[int, int]]) -> bytes:
    body = bytearray(INDEX_MAGIC)
    body += _COUNT.pack(len(entries))
    for digest, (offset, length) in sorted(entries.items()):
        body += _ENTRY.pack(_digest_bytes(digest), offset, length)
    body += xxhash.xxh3_128_digest(bytes(body))
    return bytes(body)


def decode_index(data: bytes) -> dict[str, tuple[int, int]] | None:
    """An index's entries, or None if it is damaged (its trailer no longer matches)."""
    if len(data) < len(INDEX_MAGIC) + _COUNT.size + _TRAILER or not data.startswith(INDEX_MAGIC):
        return None
    body, trailer = data[:-_TRAILER], data[-_TRAILER:]
    if xxhash.xxh3_128_digest(body) != trailer:
        return None
    (count,) = _COUNT.unpack_from(body, len(INDEX_MAGIC))
    start = len(INDEX_MAGIC) + _COUNT.size
    if len(body) != start + count * _ENTRY.size:
        return None
    return {
        digest.hex(): (offset, length)
        for digest, offset, length in _ENTRY.iter_unpack(body[start:])
    }


def within(entries: dict[str, tuple[int, int]], size: int) -> bool:
    """Whether every entry lies inside the objects of a pack of `size` bytes (an index that
    points past them is damaged: nothing is ever read from beyond them, nor that much)."""
    end = size - _COUNT.size - len(PACK_END)
    return all(
        len(PACK_MAGIC) <= offset and offset + length <= end for offset, length in entries.values()
    )


def scan_pack(path: Path) -> dict[str, tuple[int, int]]:
    """A pack's entries from the copy of its index at its end (when its .idx is damaged);
    empty if that copy is damaged too."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        tail = _COUNT.size + len(PACK_END)
        if size < len(PACK_MAGIC) + tail:
            return {}
        handle.seek(size - tail)
        (length,) = _COUNT.unpack(handle.read(_COUNT.size))
        if handle.read(len(PACK_END)) != PACK_END or length > size - tail - len(PACK_MAGIC):
            return {}
        handle.seek(size - tail - length)
        entries = decode_index(handle.read(length)) or {}
        return entries if within(entries, size - length) else {}


class PackWriter:
    """One new pack being filled in tmp/; `publish` makes it durable and then visible."""

    def __init__(self, temp: Path) -> None:
        self.temp = temp
        self.entries: dict[str, tuple[int, int]] = {}
        self._handle = open(temp, "wb")  # noqa: SIM115 (closed by publish or discard)
        self._handle.write(PACK_MAGIC)
        self._position = len(PACK_MAGIC)

    def __contains__(self, digest: str) -> bool:
        return digest in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def _start(self, digest: str, length: int) -> int:
        """Pad to the next multiple of ALIGN; where the object's bytes go."""
        padding = -self._position % ALIGN
        if padding:
            self._handle.write(bytes(padding))
        start = self._position + padding
        self.entries[digest] = (start, length)
        self._position = start + length
        return start

    def add(self, digest: str, data: bytes | bytearray | memoryview) -> None:
        self._start(digest, memoryview(data).nbytes)
        self._handle.write(data)

    def add_from(self, digest: str, source: int, offset: int, length: int) -> None:
        """Append `length` bytes of the open file `source` from `offset` (copied in the
        kernel where it can be: staged files, the live objects of a pack being repacked)."""
        start = self._start(digest, length)
        self._handle.flush()
        target = self._handle.fileno()
        copied = 0
        try:
            while copied < length:
                count = os.copy_file_range(
                    source, target, length - copied, offset + copied, start + copied
                )
                if count == 0:
                    raise OSError(f"short copy into the pack ({copied} of {length} bytes)")
                copied += count
        except (AttributeError, OSError) as error:
            if isinstance(error, OSError) and error.errno is None:
                raise
            while copied < length:  # no copy_file_range here (or across file systems)
                piece = os.pread(source, min(length - copied, 8 << 20), offset + copied)
                if not piece:
                    raise OSError("short read while copying into the pack") from error
                os.pwrite(target, piece, start + copied)
                copied += len(piece)
        self._handle.seek(self._position)

    def publish(self, folder: Path, index_temp: Path) -> str:
        """fsync the pack and its index, rename both into `folder` (the index last: that is
        what makes the objects visible), fsync the folder; returns the pack's name."""
        index = encode_index(self.entries)
        name = "pack-" + xxhash.xxh3_128_hexdigest(index)
        self._handle.write(index + _COUNT.pack(len(index)) + PACK_END)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        try:
            with open(index_temp, "wb") as handle:
                handle.write(index)
                handle.flush()
                os.fsync(handle.fileno())
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(self.temp, folder / f"{name}.pack")
            os.replace(index_temp, folder / f"{name}.idx")
        except BaseException:
            with contextlib.suppress(OSError):
                index_temp.unlink()
            raise
        fsync_dir(folder)
        return name

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()


class PackSet:
    """The packs of one store as this process last read them: digest → location, refreshed
    when the packs folder changes (its mtime), and open file descriptors to read them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._stamp: int | None = None
        self._packs: dict[str, dict[str, tuple[int, int]]] = {}  # name → entries
        self._damaged: set[str] = set()  # packs whose index could not be read (scanned)
        self._where: dict[str, Location] = {}
        self._handles: dict[str, int] = {}

    def names(self) -> list[str]:
        self.refresh()
        return sorted(self._packs)

    def entries(self, name: str) -> dict[str, tuple[int, int]]:
        return self._packs.get(name, {})

    def damaged(self) -> set[str]:
        self.refresh()
        return set(self._damaged)

    def locate(self, digest: str, *, sure: bool = False) -> Location | None:
        """Where a packed object is, None if in no pack. The packs folder's mtime says when
        to look again; `sure` looks again anyway before answering None (an mtime may not
        change between two packs published within one clock tick), for callers to whom
        None means "missing" rather than "store it"."""
        found = self._where.get(digest)
        if found is None and self.refresh(force=sure):
            found = self._where.get(digest)
        return found

    def refresh(self, *, force: bool = False) -> bool:
        """Read indexes added since the last look and forget removed packs; True if the
        set of packs changed."""
        try:
            stamp = self.folder.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and not force:
            return False
        with self._lock:
            try:
                present = {
                    entry.name[: -len(".idx")]
                    for entry in os.scandir(self.folder)
                    if entry.name.endswith(".idx") and entry.name.startswith("pack-")
                }
            except FileNotFoundError:
                present = set()
            removed = self._packs.keys() - present
            added = sorted(present - self._packs.keys())
            if not removed and not added:
                self._stamp = stamp
                return False
            packs = {name: entries for name, entries in self._packs.items() if name in present}
            damaged = self._damaged & present
            for name in added:
                loaded = self._load(name)
                if loaded is not None:
                    packs[name], bad = loaded
                    if bad:
                        damaged.add(name)
            if removed:  # rebuilt: a removed pack's objects may be in another one now
                where: dict[str, Location] = {}
                for name in sorted(packs):
                    for digest, (offset, length) in packs[name].items():
                        where.setdefault(digest, Location(name, offset, length))
            else:  # only added: the map grows in place (readers see old or new entries)
                where = self._where
                for name in added:
                    for digest, (offset, length) in packs.get(name, {}).items():
                        where.setdefault(digest, Location(name, offset, length))
            for name in [n for n in self._handles if n not in packs]:
                with contextlib.suppress(OSError):
                    os.close(self._handles.pop(name))
            self._packs, self._damaged, self._where, self._stamp = packs, damaged, where, stamp
        return True

    def _load(self, name: str) -> tuple[dict[str, tuple[int, int]], bool] | None:
        try:
            index = (self.folder / f"{name}.idx").read_bytes()
            entries = decode_index(index)
            pack = self.folder / f"{name}.pack"
            if entries is not None and within(entries, pack.stat().st_size - len(index)):
                return entries, False
            return scan_pack(pack), True
        except FileNotFoundError:  # removed meanwhile by a gc
            return None

    def forget(self) -> None:
        """Drop everything read (a gc may have rewritten the packs)."""
        with self._lock:
            for handle in self._handles.values():
                with contextlib.suppress(OSError):
                    os.close(handle)
            self._handles.clear()
            self._packs, self._damaged, self._where, self._stamp = {}, set(), {}, None

    def _handle(self, name: str) -> int:
        handle = self._handles.get(name)
        if handle is None:
            with self._lock:
                handle = self._handles.get(name)
                if handle is None:
                    handle = os.open(self.folder / f"{name}.pack", os.O_RDONLY)
                    self._handles[name] = handle
        return handle

    def reading(self, digest: str, read: Callable[[int, Location], object]) -> object:
        """`read(fd, location)` of a packed object; a pack a gc removed meanwhile is looked
        up again once (its live objects are in a newer pack). FileNotFoundError if the
        object is in no pack."""
        for attempt in range(2):
            location = self.locate(digest, sure=True)
            if location is None:
                break
            try:
                return read(self._handle(location.pack), location)
            except FileNotFoundError:
                if attempt:
                    raise
                self.refresh(force=True)
        raise FileNotFoundError(digest)

    def map_range(self, name: str, offset: int, length: int) -> memoryview | None:
        """`length` bytes of the pack from `offset` as writable copy-on-write memory mapped
        from the file (pages are mapped when touched, copied only when written), a mapping of
        its own (two restores, or two variables, never share memory). None if the pack is
        gone or shorter than that (damaged: the caller reads, and reports it), or if this
        process is short of file descriptors (each mapping holds one)."""
        if not _descriptors_to_spare():
            return None
        end = offset + length
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            handle = self._handle(name)
            if os.fstat(handle).st_size < end:
                return None
            region = mmap.mmap(
                handle,
                end - base,
                flags=mmap.MAP_PRIVATE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=base,
            )
        except (OSError, ValueError):
            return None
        # Not populated here (MADV_POPULATE_READ): one call holding the GIL for the whole
        # range cost more than the read faults the verifying threads take in parallel, each
        # of which maps the cached pages around it too (fault-around).
        return memoryview(region)[offset - base :]

    def close(self) -> None:
        self.forget()


def _descriptors_to_spare() -> bool:
    """Whether this process uses under half its file descriptor limit (Linux: /proc)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError, ValueError):
        return False
    return soft == resource.RLIM_INFINITY or used < soft // 2


def read_exactly(handle: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset` of the file; returns how many bytes there were."""
    done = 0
    total = view.nbytes
    while done < total:
        count = os.preadv(handle, [view[done:]], offset + done)
        if count == 0:
            break
        done += count
    return done


def iter_pack_files(folder: Path) -> Iterator[Path]:
    with contextlib.suppress(FileNotFoundError):
        yield from sorted(folder.iterdir())
