"""Content-addressed objects: blobs named by their xxh3-128 hash, written once however many
experiments share them, staged and synced once per batch, verified when read."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import xxhash

from ..errors import (
    IntegrityError,
)
from ..hashing import CHUNK, hash_bytes, hash_file
from .files import StoreFiles, fsync_dir, fsync_file, sync_filesystem

FEW_OBJECTS = 16  # batches up to this many objects are fsynced file by file


class StoreObjects(StoreFiles):
    """Objects: put, read, verify, batches."""

    _known_objects: set[str]  # objects this process knows are stored (cleared by a gc)
    _batch: threading.local  # the objects staged by this thread's open `object_batch`

    def object_path(self, digest: str) -> Path:
        return self.objects_dir / digest[:2] / digest[2:]

    def has_object(self, digest: str) -> bool:
        if digest in self._known_objects or digest in (getattr(self._batch, "pending", None) or ()):
            return True
        if self.object_path(digest).exists():
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
        batch: dict[str, Path] | None = getattr(self._batch, "pending", None)
        if batch is None:
            self._write_atomic(self.object_path(digest), data)
            self._known_objects.add(digest)
        elif digest not in batch:
            temp = self._temp_path()
            try:
                with self._file_writes(), open(temp, "wb") as handle:
                    handle.write(data)
            except BaseException:  # a full disk: no partial file left behind in tmp/
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            batch[digest] = temp
        return digest

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
        pending: dict[str, Path] = {}
        self._batch.pending = pending
        try:
            yield
            with self._file_writes():
                self._publish_batch(pending)
        finally:
            self._batch.pending = None
            for temp in pending.values():
                with contextlib.suppress(OSError):
                    temp.unlink()

    def _publish_batch(self, pending: dict[str, Path]) -> None:
        """Make the staged objects durable, then visible."""
        if not pending:
            return
        # A few files: fsync each (cheap, touches only ours). Many: one syncfs, which
        # beats a thousand fsyncs but also flushes other processes' dirty pages.
        few = len(pending) <= FEW_OBJECTS
        if few:
            for temp in pending.values():
                fsync_file(temp)
        else:
            sync_filesystem(self.tmp_dir)
        folders = set()
        for digest, temp in pending.items():
            target = self.object_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            folders.add(target.parent)
            self._known_objects.add(digest)
        if few:
            for folder in folders:
                fsync_dir(folder)
        else:
            sync_filesystem(self.objects_dir)

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
                    target.parent.mkdir(parents=True, exist_ok=True)
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
        except FileNotFoundError as error:
            raise IntegrityError(
                f"object {digest[:12]} is missing from {self.root}; "
                "run `nbexp fsck` to see what is affected"
            ) from error
        if verify and hash_bytes(data) != digest:
            raise IntegrityError(
                f"object {digest[:12]} is corrupt (its content no longer matches its hash); "
                "run `nbexp fsck` to see what is affected"
            )
        return data

    def object_size(self, digest: str) -> int:
        try:
            return self.object_path(digest).stat().st_size
        except FileNotFoundError as error:
            raise IntegrityError(
                f"object {digest[:12]} is missing from {self.root}; "
                "run `nbexp fsck` to see what is affected"
            ) from error

    def read_object_into(self, digest: str, view: memoryview) -> None:
        """Read an object straight into `view` (exactly its size), verifying its hash there:
        restoring a large buffer then costs one copy, not three."""
        try:
            with open(self.object_path(digest), "rb", buffering=0) as handle:
                count = handle.readinto(view)
                extra = handle.read(1)
        except FileNotFoundError as error:
            raise IntegrityError(
                f"object {digest[:12]} is missing from {self.root}; "
                "run `nbexp fsck` to see what is affected"
            ) from error
        if count != len(view) or extra or hash_bytes(view) != digest:
            raise IntegrityError(
                f"object {digest[:12]} is corrupt (its content no longer matches its hash); "
                "run `nbexp fsck` to see what is affected"
            )

    def copy_object_to(self, digest: str, destination: str | os.PathLike[str]) -> None:
        """Write an object back out as a file, verifying it on the way."""
        source = self.object_path(digest)
        if not source.exists():
            raise IntegrityError(f"object {digest[:12]} is missing from {self.root}")
        shutil.copyfile(source, destination)
        if hash_file(destination)[0] != digest:
            raise IntegrityError(f"object {digest[:12]} is corrupt; run `nbexp fsck`")

    def iter_objects(self) -> Iterator[str]:
        for folder in sorted(self.objects_dir.iterdir()):
            if folder.is_dir():
                for item in folder.iterdir():
                    yield folder.name + item.name

    def check_arrival(self, temp: Path, digest: str) -> int:
        """Verify that a file that arrived from elsewhere hashes to `digest`; returns its size.
        A file that does not match is deleted. `adopt_objects` then makes it an object."""
        try:
            hasher = xxhash.xxh3_128()
            size = 0
            with open(temp, "rb") as handle:
                while chunk := handle.read(8 * CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
            if hasher.hexdigest() != digest:
                raise IntegrityError(
                    f"object {digest[:12]} arrived corrupt (its content does not match its hash)"
                )
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return size

    def adopt_objects(self, arrived: dict[str, Path]) -> None:
        """Move verified files (`check_arrival`) into the store as the objects they hash to.
        Their bytes are made durable first and their names after, with one filesystem sync
        each rather than one fsync per file, so a record saved afterwards never names a
        missing or partial object."""
        if not arrived:
            return
        sync_filesystem(self.tmp_dir)
        for digest, temp in arrived.items():
            target = self.object_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            self._known_objects.add(digest)
        sync_filesystem(self.objects_dir)
