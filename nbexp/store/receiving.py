"""Objects arriving from a remote (a pull), each written to the disk once.

A download is hashed piece by piece as its bytes arrive and counts only once the hash
matches: a damaged, truncated or overlong one never enters the store. Where its bytes go:

- A pull of more than `objects.FEW_OBJECTS` objects builds one pack. A verified object of at
  most `HELD_OBJECT` bytes (a state chunk is 1 MiB) is appended at the pack's end in the order
  the pull planned — the records' order, so a variable's chunks lie in sequence and its restore
  maps them as one range —, whichever download finished first: one that finished before its
  predecessors waits in memory for them (past `HOLD` bytes waiting, finished downloaders wait
  too instead of fetching more).
- A larger object streams into its own file in tmp/ and becomes a loose object, as do the
  objects of a smaller pull.

`adopt` makes them durable, then visible: the pack (fsynced, renamed, its index after it),
then the loose files (synced, renamed, their folders synced); the pull imports the records
that name them only after that. Nothing `adopt` did not publish outlives the block: whatever
a killed pull leaves is a temp file in tmp/, which gc collects.

A remote may serve a huge or endless file: no download may leave the store's disk with less
than `Room.keep` free; it stops with one line (`OutOfRoom`) instead of filling the disk.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import xxhash

from ..errors import IntegrityError, StoreError
from . import objects
from .files import sync_filesystem
from .packs import PackWriter

if TYPE_CHECKING:
    from .objects import StoreObjects

# A verified object this small waits in memory for its turn in the pack; a larger one is
# streamed into a file of its own (a loose object) and never held whole in memory.
HELD_OBJECT = 8 << 20
# At most about this many bytes of verified objects wait in memory for their predecessors.
HOLD = 128 << 20
# Free space a pull always leaves on the store's disk (or 5% of a smaller disk).
KEEP_FREE = 256 << 20
# Free space is looked at again after this many bytes have arrived.
LOOK_EVERY = 64 << 20


class OutOfRoom(StoreError):
    """A pull stopped before its downloads could fill the store's disk."""


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


class Room:
    """The store's disk as downloads fill it: each stops with `OutOfRoom` before the disk has
    less than `keep` bytes free (a remote serving a huge or endless file cannot fill it).

    Bytes count from the moment they arrive (`arrived`) until they are on the disk or dropped
    (`landed`): while they wait in memory — a download not yet finished, an object waiting for
    its turn in the pack — the free space the disk reports does not show them yet."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._pending = 0  # bytes arrived that are not on the disk yet (nor dropped)
        self._budget = 0  # bytes that may arrive before free space is looked at again
        self._stopped: OutOfRoom | None = None
        self.keep = min(KEEP_FREE, self._space()[1] // 20)

    def _space(self) -> tuple[int, int]:
        """(free, total) bytes of the store's file system."""
        found = os.statvfs(self._folder)
        return found.f_bavail * found.f_frsize, found.f_blocks * found.f_frsize

    def _refusal(self, why: str) -> OutOfRoom:
        return OutOfRoom(
            f"pull stopped before filling the disk: {why} (a pull leaves at least "
            f"{_size(self.keep)} free there); free some space, or pull fewer experiments "
            "(`nbexp pull REMOTE REF`)"
        )

    def claim(self, size: int, digest: str) -> None:
        """An object the remote says is `size` bytes is about to arrive: refused at once if
        it cannot fit (the others still may)."""
        if self._stopped is not None:
            raise self._stopped
        free = self._space()[0]
        with self._lock:
            pending = self._pending
        if size > free - self.keep - pending:
            raise self._refusal(
                f"object {digest[:12]} on the remote is {_size(size)} and the store's disk has "
                f"{_size(free)} free"
            )

    def arrived(self, count: int) -> None:
        """`count` more bytes arrived: is there still room for them? Free space is looked at
        again once a quarter of the room last seen has arrived (at most LOOK_EVERY bytes), so
        a nearly full disk is watched closely; with too little, every download stops. The
        look and the count happen under one lock, so parallel downloads cannot all take the
        same last bytes of room."""
        with self._lock:
            if self._stopped is not None:
                raise self._stopped
            self._budget -= count
            if self._budget < 0:
                free = self._space()[0]
                room = free - self.keep - self._pending
                if room < count:
                    self._stopped = self._refusal(f"the store's disk has only {_size(free)} free")
                    raise self._stopped
                self._budget = min(LOOK_EVERY, (room - count) // 4)
            self._pending += count

    def landed(self, count: int) -> None:
        """`count` bytes that `arrived` are now on the disk, or were dropped."""
        with self._lock:
            self._pending -= count


class _Download:
    """One object's bytes as they arrive (`expect`, then `write` piece by piece): hashed on
    the way, held in memory up to `memory` bytes, else streamed into a file in tmp/."""

    def __init__(self, arrivals: Arrivals, digest: str, memory: int) -> None:
        self.digest = digest
        self.size = 0
        self.data: bytes | bytearray = b""  # a one-piece object: that piece itself, no copy
        self.path: Path | None = None  # the file in tmp/ holding it, once it outgrew memory
        self._arrivals = arrivals
        self._memory = memory
        self._declared: int | None = None
        self._hasher = xxhash.xxh3_128()
        self._file: IO[bytes] | None = None

    def expect(self, size: int) -> None:
        """The remote says the object is `size` bytes (a huge one is refused before any)."""
        self._declared = size
        self._arrivals.room.claim(size, self.digest)
        if size > self._memory:
            self._spill()

    def write(self, piece: bytes | bytearray | memoryview) -> None:
        count = memoryview(piece).nbytes
        if self._declared is not None and self.size + count > self._declared:
            raise IntegrityError(
                f"object {self.digest[:12]} on the remote is longer than the remote says "
                f"({self._declared} bytes)"
            )
        self._arrivals.room.arrived(count)
        self._hasher.update(piece)
        self.size += count
        if self._file is None and self.size > self._memory:
            self._spill()
        if self._file is not None:
            try:
                with self._arrivals.store._file_writes():
                    self._file.write(piece)
            finally:
                self._arrivals.room.landed(count)
        elif not self.data and isinstance(piece, bytes):
            self.data = piece  # immutable: kept as it is, not copied
        else:
            if isinstance(self.data, bytes):
                self.data = bytearray(self.data)
            self.data += piece

    def _spill(self) -> None:
        self.path = self._arrivals.place()
        with self._arrivals.store._file_writes():
            self._file = open(self.path, "wb")  # noqa: SIM115 (closed by finish or abandon)
            self._file.write(self.data)
        self._arrivals.room.landed(len(self.data))
        self.data = b""

    def finish(self) -> None:
        """Refuse the object unless it is whole and hashes to its digest."""
        if self._file is not None:
            with self._arrivals.store._file_writes():
                self._file.close()
        if self._declared is not None and self.size != self._declared:
            raise IntegrityError(
                f"object {self.digest[:12]} arrived truncated ({self.size} of the "
                f"{self._declared} bytes the remote says it has)"
            )
        if self._hasher.hexdigest() != self.digest:
            raise IntegrityError(
                f"object {self.digest[:12]} on the remote is corrupt (its content does not "
                "match its hash)"
            )

    def abandon(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._arrivals.room.landed(len(self.data))
        self.data = b""


class Arrivals:
    """The objects of one `receiving` block: `plan` says which will come and in what order,
    `receive` takes each one's bytes (from worker threads, in any order), `adopt` publishes
    the verified ones."""

    def __init__(self, store: StoreObjects) -> None:
        self.store = store
        self.room = Room(store.tmp_dir)
        self.sizes: dict[str, int] = {}  # digest → size, of every verified arrival
        self._changed = threading.Condition()
        self._places: dict[str, int] = {}  # digest → its place in the plan
        self._packing = False  # more than FEW_OBJECTS planned: small verified ones go to a pack
        self._pack: PackWriter | None = None
        self._next = 0  # the place whose object the pack takes next
        self._waiting: dict[int, tuple[str, bytes | bytearray]] = {}  # verified, in memory
        self._waiting_bytes = 0
        self._settled: set[int] = set()  # places that will not come to the pack
        self._appending = False
        self._downloading = 0
        self._loose: dict[str, Path] = {}  # verified objects in files of their own in tmp/
        self._temps: list[Path] = []
        self._failure: BaseException | None = None  # writing the pack failed

    def place(self) -> Path:
        """A fresh file in tmp/, deleted when the block ends unless adopted."""
        temp = self.store._temp_path()
        with self._changed:
            self._temps.append(temp)
        return temp

    def plan(self, digests: Iterable[str]) -> None:
        """These objects will arrive (each once), and lie in a pack in this order."""
        with self._changed:
            for digest in digests:
                self._places.setdefault(digest, len(self._places))
            self._packing = self._packing or len(self._places) > objects.FEW_OBJECTS
        self._append_waiting()

    def receive(self, digest: str, download: Callable[[_Download], object]) -> int:
        """Take one object's bytes through `download(sink)` (it calls `sink.expect(size)`
        where the size is known first, then `sink.write(piece)`); the object counts only if
        it arrived whole and hashes to `digest` (an IntegrityError otherwise). Returns its
        size. Thread-safe: downloads run in parallel."""
        with self._changed:
            if self._failure is not None:
                raise self._failure
            place = self._places.setdefault(digest, len(self._places))
            self._packing = self._packing or len(self._places) > objects.FEW_OBJECTS
            roomy = self._packing or self._waiting_bytes < HOLD
            self._downloading += 1
        sink = _Download(self, digest, HELD_OBJECT if roomy else 0)
        try:
            download(sink)
            sink.finish()
        except BaseException:
            sink.abandon()
            self._settle(place)
            raise
        with self._changed:
            self.sizes[digest] = sink.size
            if sink.path is not None:
                self._loose[digest] = sink.path
        if sink.path is not None:
            self._settle(place)
        else:
            self._hold(place, digest, sink.data)
        return sink.size

    def _settle(self, place: int) -> None:
        """The object of `place` will not come to the pack (failed, or a loose file)."""
        with self._changed:
            self._downloading -= 1
            self._settled.add(place)
            self._changed.notify_all()
        self._append_waiting()

    def _hold(self, place: int, digest: str, data: bytes | bytearray) -> None:
        """A verified object in memory: to the pack when its turn comes. Past HOLD bytes
        waiting, this thread waits too (it would download more) while another downloads."""
        with self._changed:
            self._downloading -= 1
            self._waiting[place] = (digest, data)
            self._waiting_bytes += len(data)
        self._append_waiting()
        with self._changed:
            while (
                self._packing
                and self._waiting_bytes > HOLD
                and self._downloading > 0
                and self._failure is None
            ):
                self._changed.wait(timeout=1.0)

    def _append_waiting(self) -> None:
        """Append the objects whose turn has come to the pack; one thread at a time."""
        while True:
            with self._changed:
                if not self._packing or self._appending or self._failure is not None:
                    return
                while self._next in self._settled:
                    self._settled.discard(self._next)
                    self._next += 1
                item = self._waiting.get(self._next)
                if item is None:
                    return
                self._appending = True
            try:
                self._append(*item)
            except BaseException as error:
                with self._changed:
                    self._failure = error
            finally:
                with self._changed:
                    self._appending = False
                    if self._failure is None:
                        del self._waiting[self._next]
                        self._waiting_bytes -= len(item[1])
                        self._next += 1
                    self._changed.notify_all()

    def _append(self, digest: str, data: bytes | bytearray) -> None:
        with self.store._file_writes():
            if self._pack is None:
                self._pack = PackWriter(self.place())
            self._pack.add(digest, data)
        self.room.landed(len(data))

    def adopt(self) -> None:
        """Make every verified arrival an object of the store: durable, then visible (the
        pack, then the loose files). A StoreError if the pack could not be written (nothing
        of it is then visible)."""
        with self._changed:
            waiting = sorted(self._waiting.items())
            self._waiting.clear()
            self._waiting_bytes = 0
            failure = self._failure
        if failure is not None:
            raise failure
        loose = dict(self._loose)
        store = self.store
        with store._file_writes():
            for _, (digest, data) in waiting:  # their predecessors never came
                if self._packing:
                    self._append(digest, data)
                else:
                    temp = self.place()
                    with open(temp, "wb") as handle:
                        handle.write(data)
                    self.room.landed(len(data))
                    loose[digest] = temp
            if self._pack is not None:
                pack, self._pack = self._pack, None
                try:
                    pack.publish(store.packs_dir, self.place())
                except BaseException:
                    pack.discard()
                    raise
                store._known_objects.update(pack.entries)
            if loose:
                sync_filesystem(store.tmp_dir)
                for digest, temp in loose.items():
                    target = store.object_path(digest)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temp, target)
                    store._known_objects.add(digest)
                sync_filesystem(store.objects_dir)
        self._loose.clear()

    def discard(self) -> None:
        """Delete what was not adopted (its files in tmp/, the unpublished pack)."""
        with self._changed:
            pack, self._pack = self._pack, None
            temps, self._temps = self._temps, []
            self._waiting.clear()
            self._changed.notify_all()
        if pack is not None:
            pack.discard()
        for temp in temps:
            with contextlib.suppress(OSError):
                temp.unlink()
