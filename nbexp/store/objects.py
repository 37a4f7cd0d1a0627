"""Content-addressed objects: blobs named by their xxh3-128 hash, written once however many
experiments share them, staged and synced once per batch, verified when read.

An object lives loose (`objects/ab/<rest>`, one file) or in a pack (`packs/`, see `packs`):
a batch of more than `FEW_OBJECTS` new objects (a snapshot of large state) becomes one
pack, a smaller batch or a single object stays loose. Reads look loose first, then packed,
so stores written before packs keep working unchanged."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from ..errors import IntegrityError, MissingObjectError
from ..hashing import CHUNK, hash_bytes, hash_file
from .files import StoreFiles, fsync_dir, fsync_file, make_folder_durably
from .packs import Location, PackSet, PackWriter, read_exactly

if TYPE_CHECKING:
    from .receiving import Arrivals

# Batches up to this many objects stay loose files, fsynced one by one; a larger batch is
# written as one pack. A pack is cheaper to write from 2 objects on (bench/state.py --only
# packs), but every pack's index is read by each process that looks objects up (~0.14 ms a
# pack): small runs stay loose so the number of packs grows with large snapshots only.
FEW_OBJECTS = 16
# Buffers at least this large are restored by mapping their pack (`map_objects`); each
# mapping holds a file descriptor, so small buffers are read into memory instead.
MAP_AT_LEAST = 4 << 20
# What an object's name is: its xxh3-128 digest in lowercase hex (nothing else may become a
# path under objects/: a record names its objects, and a pulled record is anyone's writing).
DIGEST = re.compile(r"[0-9a-f]{32}")


def _missing(digest: str, root: Path) -> MissingObjectError:
    return MissingObjectError(
        f"object {digest[:12]} is missing from {root}; run `nbexp fsck` to see what is affected"
    )


def _corrupt(digest: str) -> IntegrityError:
    return IntegrityError(
        f"object {digest[:12]} is corrupt (its content no longer matches its hash); "
        "run `nbexp fsck` to see what is affected"
    )


# Verifying a mapping this large or larger is split between threads (xxhash releases the
# GIL while it hashes, and the page faults of a fresh mapping are taken by each thread).
VERIFY_IN_PARALLEL_FROM = 64 << 20
_VERIFY_THREADS = 4


def mismatched(view: memoryview, pieces: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The pieces (start, size, digest) of `view` whose bytes do not hash to their digest.

    Hashing is most of a restore's time once the bytes are mapped, so a large view is
    hashed by several threads at once, each over a run of neighbouring pieces."""
    total = sum(size for _, size, _ in pieces)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    workers = min(cores, _VERIFY_THREADS, len(pieces))
    if total < VERIFY_IN_PARALLEL_FROM or workers < 2:
        return _mismatched_among(view, pieces)
    runs: list[list[tuple[int, int, str]]] = [[] for _ in range(workers)]
    done = 0
    for piece in pieces:  # contiguous runs of about equal bytes
        runs[min(done * workers // total, workers - 1)].append(piece)
        done += piece[1]
    found = [list(run) for run in runs]  # unverified until a thread says otherwise

    def verify(index: int) -> None:
        found[index] = _mismatched_among(view, runs[index])

    threads = [
        threading.Thread(target=verify, args=(index,), name="nbexp-verify")
        for index in range(1, workers)
    ]
    for thread in threads:
        thread.start()
    verify(0)
    for thread in threads:
        thread.join()
    return [piece for pieces_found in found for piece in pieces_found]


def _mismatched_among(
    view: memoryview, pieces: list[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    # the hasher object, unlike xxh3_128_hexdigest(), lets other threads run while it hashes
    return [
        (start, size, digest)
        for start, size, digest in pieces
        if xxhash.xxh3_128(view[start : start + size]).hexdigest() != digest
    ]


class _Batch:
    """The objects an open `object_batch` staged: loose temp files until there are more
    than FEW_OBJECTS, then one pack (the staged files moved into it)."""

    def __init__(self) -> None:
        self.loose: dict[str, Path] = {}
        self.pack: PackWriter | None = None

    def __contains__(self, digest: str) -> bool:
        return digest in self.loose or (self.pack is not None and digest in self.pack)

    def discard(self) -> None:
        for temp in self.loose.values():
            with contextlib.suppress(OSError):
                temp.unlink()
        self.loose.clear()
        if self.pack is not None:
            self.pack.discard()
            self.pack = None


class StoreObjects(StoreFiles):
    """Objects: put, read, verify, batches."""

    _known_objects: set[str]  # objects this process knows are stored (cleared by a gc)
    _batch: threading.local  # the objects staged by this thread's open `object_batch`
    _packs: PackSet

    @property
    def packs_dir(self) -> Path:
        return self.root / "packs"

    def object_path(self, digest: str) -> Path:
        """Where the object would be as a loose file (a packed one is not there). A name that
        is not a digest (`../..`, a path) is refused: no object is ever outside objects/."""
        if not DIGEST.fullmatch(digest):
            raise IntegrityError(
                f"{digest[:40]!r} is not an object's name (32 hex digits); a record naming it "
                "is damaged or was made to attack, run `nbexp fsck`"
            )
        return self.objects_dir / digest[:2] / digest[2:]

    def object_location(self, digest: str) -> tuple[Path, int, int] | None:
        """(file, offset, length) of a packed object, None if it is not in a pack."""
        found = self._packs.locate(digest, sure=True)
        if found is None:
            return None
        return self.packs_dir / f"{found.pack}.pack", found.offset, found.length

    def _forget_objects(self) -> None:
        """Forget which objects this process believed stored (a gc may have changed them)."""
        self._known_objects.clear()
        self._packs.forget()

    def has_object(self, digest: str) -> bool:
        if digest in self._known_objects or digest in (getattr(self._batch, "pending", None) or ()):
            return True
        if self.object_path(digest).exists() or self._packs.locate(digest) is not None:
            self._known_objects.add(digest)
            return True
        return False

    def put_bytes(self, data: bytes | bytearray | memoryview, digest: str | None = None) -> str:
        """Store a blob once; returns its hash. Storing the same bytes again costs nothing.

        `digest`, when the caller already hashed `data`, saves hashing it twice. Inside
        `object_batch()` the write is only staged; the batch makes it durable and visible.
        """
        self._writable("storing an object")
        digest = digest or hash_bytes(data)
        if self.has_object(digest):
            return digest
        batch: _Batch | None = getattr(self._batch, "pending", None)
        if batch is None:
            self._write_atomic(self.object_path(digest), data)
            self._known_objects.add(digest)
        elif digest not in batch:
            with self._file_writes():
                if batch.pack is None and len(batch.loose) >= FEW_OBJECTS:
                    self._start_pack(batch)
                if batch.pack is not None:
                    batch.pack.add(digest, data)
                else:
                    temp = self._temp_path()
                    try:
                        with open(temp, "wb") as handle:
                            handle.write(data)
                    except BaseException:  # a full disk: no partial file left in tmp/
                        with contextlib.suppress(OSError):
                            temp.unlink()
                        raise
                    batch.loose[digest] = temp
        return digest

    def _start_pack(self, batch: _Batch) -> None:
        """The batch outgrew loose files: open its pack and move the staged files in."""
        pack = PackWriter(self._temp_path())
        batch.pack = pack
        for digest, temp in list(batch.loose.items()):
            with open(temp, "rb") as source:
                pack.add_from(digest, source.fileno(), 0, os.fstat(source.fileno()).st_size)
            del batch.loose[digest]
            with contextlib.suppress(OSError):
                temp.unlink()

    @contextlib.contextmanager
    def object_batch(self) -> Iterator[None]:
        """Stage object writes and make them durable together: one filesystem sync for the
        whole batch instead of one fsync per 1 MiB chunk. Objects become visible (renamed
        into place) only after their bytes are on disk, and the batch ends with their
        directory entries on disk too, so a record saved afterwards never names a missing
        or partial object."""
        if getattr(self._batch, "pending", None) is not None:
            yield
            return
        batch = _Batch()
        self._batch.pending = batch
        try:
            yield
            with self._file_writes():
                if batch.pack is not None:
                    batch.pack.publish(self.packs_dir, self._temp_path())
                    self._known_objects.update(batch.pack.entries)
                    batch.pack = None
                self._publish_loose(batch.loose)
        finally:
            self._batch.pending = None
            batch.discard()

    def _publish_loose(self, pending: dict[str, Path]) -> None:
        """Make the staged loose objects (at most FEW_OBJECTS) durable, then visible."""
        if not pending:
            return
        for temp in pending.values():
            fsync_file(temp)
        folders = set()
        for digest, temp in pending.items():
            target = self.object_path(digest)
            if target.parent not in folders:
                make_folder_durably(target.parent)
            os.replace(temp, target)
            folders.add(target.parent)
            self._known_objects.add(digest)
        pending.clear()
        for folder in folders:
            fsync_dir(folder)

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Copy a file into the object store while hashing it; returns (hash, size)."""
        self._writable("storing a file")
        temp = self._temp_path()
        hasher = xxhash.xxh3_128()
        size = 0
        try:
            # a file that cannot be opened is the caller's problem; what fails after, ours
            with open(path, "rb") as source, self._file_writes(), open(temp, "wb") as sink:
                while chunk := source.read(8 * CHUNK):
                    hasher.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
                sink.flush()
                os.fsync(sink.fileno())
            digest = hasher.hexdigest()
            if self.has_object(digest):
                temp.unlink()
            else:
                target = self.object_path(digest)
                with self._file_writes():
                    make_folder_durably(target.parent)
                    os.replace(temp, target)
                self._known_objects.add(digest)
            return digest, size
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    def read_object(self, digest: str, *, verify: bool = True) -> bytes:
        """An object's bytes, refused if they no longer match their hash."""
        try:
            data = self.object_path(digest).read_bytes()
        except FileNotFoundError:
            data = self._read_packed(digest)
        if verify and hash_bytes(data) != digest:
            raise _corrupt(digest)
        return data

    def _read_packed(self, digest: str) -> bytes:
        def read(handle: int, where: Location) -> bytes:
            data = bytearray(where.length)
            count = read_exactly(handle, memoryview(data), where.offset)
            return bytes(data[:count])

        try:
            return self._packs.reading(digest, read)  # type: ignore[return-value]
        except FileNotFoundError as error:
            raise _missing(digest, self.root) from error

    def object_size(self, digest: str) -> int:
        try:
            return self.object_path(digest).stat().st_size
        except FileNotFoundError:
            found = self._packs.locate(digest, sure=True)
            if found is None:
                raise _missing(digest, self.root) from None
            return found.length

    def read_object_into(self, digest: str, view: memoryview) -> None:
        """Read an object straight into `view` (exactly its size), verifying its hash there:
        restoring a large buffer then costs one copy, not three."""
        try:
            with open(self.object_path(digest), "rb", buffering=0) as handle:
                count = handle.readinto(view)
                extra = handle.read(1)
        except FileNotFoundError:

            def read(handle: int, where: Location) -> tuple[int, bool]:
                count = read_exactly(handle, view, where.offset)
                return count, where.length != view.nbytes

            try:
                count, extra = self._packs.reading(digest, read)  # type: ignore[misc]
            except FileNotFoundError as error:
                raise _missing(digest, self.root) from error
        if count != len(view) or extra or hash_bytes(view) != digest:
            raise _corrupt(digest)

    def map_objects(self, digests: list[str]) -> memoryview | None:
        """The objects' bytes back to back, verified against their hashes, as writable
        copy-on-write memory mapped from the pack that holds most of them in that order
        (no copy into new memory; pages are copied only when written). Chunks stored
        elsewhere (a changed chunk of an array, stored by a later run) are read into their
        place in the mapping. None when no pack holds at least half of the bytes so, or
        they are fewer than MAP_AT_LEAST: read them instead.

        A chunk both packed and loose is taken from the pack here (every read verifies it;
        one that does not match is read again loose-first, as `read_object_into` reads)."""
        places: list[Location | None] = []
        starts: list[int] = []
        sizes: list[int] = []
        total = 0
        votes: dict[tuple[str, int], int] = {}
        try:
            for digest in digests:
                place = self._packs.locate(digest)
                size = place.length if place is not None else self.object_size(digest)
                if place is not None:
                    key = (place.pack, place.offset - total)
                    votes[key] = votes.get(key, 0) + size
                places.append(place)
                starts.append(total)
                sizes.append(size)
                total += size
        except IntegrityError:  # missing: the read path says so
            return None
        if not votes or total < MAP_AT_LEAST:
            return None
        (pack, base), covered = max(votes.items(), key=lambda vote: vote[1])
        if base < 0 or 2 * covered < total:
            return None
        view = self._packs.map_range(pack, base, total)
        if view is None:
            return None
        mapped: list[tuple[int, int, str]] = []
        for digest, place, start, size in zip(digests, places, starts, sizes, strict=True):
            if place is not None and place.pack == pack and place.offset - start == base:
                mapped.append((start, size, digest))
            else:
                self.read_object_into(digest, view[start : start + size])
        for start, size, digest in mismatched(view, mapped):
            self.read_object_into(digest, view[start : start + size])  # or says it is corrupt
        return view

    def copy_object_to(self, digest: str, destination: str | os.PathLike[str]) -> None:
        """Write an object back out as a file, verifying it on the way."""
        source = self.object_path(digest)
        if source.exists():
            shutil.copyfile(source, destination)
        else:

            def copy(handle: int, where: Location) -> None:
                with open(destination, "wb") as sink:
                    done = 0
                    while done < where.length:
                        size = min(where.length - done, 8 * CHUNK)
                        piece = os.pread(handle, size, where.offset + done)
                        if not piece:
                            break
                        sink.write(piece)
                        done += len(piece)

            try:
                self._packs.reading(digest, copy)
            except FileNotFoundError as error:
                raise _missing(digest, self.root) from error
        if hash_file(destination)[0] != digest:
            raise IntegrityError(f"object {digest[:12]} is corrupt; run `nbexp fsck`")

    @contextlib.contextmanager
    def object_file(self, digest: str) -> Iterator[Path]:
        """A file holding exactly the object's bytes, verified, for the block (a loose
        object's own file; a packed one's bytes copied to tmp/ and deleted after)."""
        path = self.object_path(digest)
        if path.exists():
            if hash_file(path)[0] != digest:
                raise IntegrityError(f"object {digest[:12]} is corrupt in this store")
            yield path
            return
        temp = self._temp_path()
        try:
            try:
                self.copy_object_to(digest, temp)
            except MissingObjectError:
                raise
            except IntegrityError as error:
                raise IntegrityError(f"object {digest[:12]} is corrupt in this store") from error
            yield temp
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()

    def loose_file(self, name: str) -> Path:
        """The file in objects/ of a name `iter_loose_objects` listed (a stray file there,
        which gc deletes, too: its name, read from the folder, has no separator)."""
        return self.objects_dir / name[:2] / name[2:]

    def iter_loose_objects(self) -> Iterator[str]:
        for folder in sorted(self.objects_dir.iterdir()):
            if folder.is_dir():
                for item in folder.iterdir():
                    yield folder.name + item.name

    def iter_objects(self) -> Iterator[str]:
        """Every stored object once, loose or packed."""
        seen = set()
        for digest in self.iter_loose_objects():
            seen.add(digest)
            yield digest
        for name in self._packs.names():
            for digest in self._packs.entries(name):
                if digest not in seen:
                    seen.add(digest)
                    yield digest

    @contextlib.contextmanager
    def receiving(self) -> Iterator[Arrivals]:
        """Objects arriving from elsewhere (a pull), each written once and verified on the
        way (see `receiving`); what was not adopted is deleted when the block ends."""
        from .receiving import Arrivals

        self._writable("receiving objects")
        arrivals = Arrivals(self)
        try:
            yield arrivals
        finally:
            arrivals.discard()
