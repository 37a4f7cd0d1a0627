"""Files of the store written so that a crash leaves the old state or the new one: atomic
writes (temp file, fsync, rename), syncs, locked notes of work in progress, where pulled
experiments came from, and an OSError turned into one StoreError line naming the fix."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import (
    StoreError,
)
from . import locks

STORE_ENV = "NBEXP_STORE"


class StoreFiles:
    """The folders of one store and how files get into them."""

    read_only: bool = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.records_dir = self.root / "records"
        self.objects_dir = self.root / "objects"
        self.tags_dir = self.root / "tags"
        self.tmp_dir = self.root / "tmp"
        self.index_path = self.root / "index.sqlite"
        self._lock = threading.RLock()

    def _writable(self, doing: str) -> None:
        """A StoreError when this store was opened read-only (`open_store(read_only=True)`)."""
        if self.read_only:
            raise StoreError(
                f"the store at {self.root} was opened read-only, and {doing} writes to it; "
                "open it with open_store(path) to change it"
            )

    def _temp_path(self) -> Path:
        return self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.tmp"

    def _write_atomic(
        self, target: Path, data: bytes | bytearray | memoryview, *, sync_dir: bool = False
    ) -> None:
        """Write `data` to `target` so that readers see all of it or nothing."""
        with self._file_writes():
            write_atomically(self._temp_path(), target, lambda handle: handle.write(data))
        if sync_dir:
            fsync_dir(target.parent)

    def _publish(self, target: Path, data: bytes) -> Syncing:
        """Write `data` to `target` for readers to see all of it or nothing (a temp file
        renamed into place), and start making its bytes and its name durable: the file's
        fsync and its folder's run side by side in helper threads while the caller goes on
        (the record's index row is written meanwhile); `Syncing.wait` returns once both are
        on disk. Only for records, whose note (`records._publishing`) covers the moment a
        power cut could leave the name on disk before the bytes, or the index row before
        either: the next open deletes a record that was never acknowledged and does not
        match its id, and the row of one that is missing."""
        temp = self._temp_path()
        with self._file_writes():
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
                folders: tuple[Path, ...] = (target.parent,)
                try:
                    os.replace(temp, target)
                except FileNotFoundError:  # the record's folder is new: its name too
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temp, target)
                    folders = (target.parent, target.parent.parent)
            except BaseException:
                os.close(descriptor)
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            return Syncing(descriptor, folders)

    @contextlib.contextmanager
    def _file_writes(self) -> Iterator[None]:
        """Around writes to the store's files: an OSError (disk full, file too large,
        read-only) becomes one StoreError line that says what to do, with the system's
        reason in parentheses, instead of a bare "OSError: [Errno 28]"."""
        try:
            yield
        except OSError as error:
            raise self._write_failure(error) from error

    def _write_failure(self, error: OSError) -> StoreError:
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            what, fix = "the disk is full", "free some space, then try again"
        elif error.errno == errno.EFBIG:
            what = "a file would exceed the size limit"
            fix = "raise the limit (`ulimit -f`) or free some space, then try again"
        elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            what = "it is read-only"
            fix = f"make it writable (chmod/chattr) or point {STORE_ENV} at a writable folder"
        elif error.errno == errno.EIO:
            what, fix = "the disk reported an error", "check the disk, then try again"
        else:
            what, fix = "a write failed", "fix the folder, then try again"
        return StoreError(f"cannot write to the store at {self.root}: {what} ({reason}); {fix}")

    @contextlib.contextmanager
    def _locked_note(self, name: str, content: bytes = b"") -> Iterator[Path]:
        """tmp/NAME, locked by this process while the block runs: it names work in progress
        that the next process to open the store finishes if this one dies before removing
        the note (`_finish_interrupted`). It appears already locked, so live work is never
        finished by someone else, nor collected by `clean_tmp`. `content` says what the
        work was, where its name alone does not."""
        note = self.tmp_dir / name
        temp = self._temp_path()
        # a bare descriptor: a file object would ask the system three more questions
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(descriptor, view) :]
                locks.exclusive(descriptor)
                os.replace(temp, note)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            yield note
        finally:
            os.close(descriptor)

    def write_file(self, target: Path, data: bytes) -> None:
        """Write a small file of the store (e.g. config.json) atomically and durably."""
        self._write_atomic(target, data, sync_dir=True)

    @property
    def origins_dir(self) -> Path:
        return self.root / "origins"

    def origin(self, experiment_id: str) -> dict[str, Any] | None:
        """Where a pulled experiment came from ({"remote", "url", "pulled"}); None if local."""
        path = f"{self.root}{os.sep}origins{os.sep}{experiment_id}.json"
        if not os.access(path, os.F_OK):  # most experiments are local: no exception to raise
            return None
        try:
            with open(path, "rb") as handle:
                value = json.loads(handle.read())
        except FileNotFoundError:
            return None
        except ValueError:  # unreadable: still not local, so never trusted by default
            return {"remote": "?", "url": ""}
        return value if isinstance(value, dict) else {"remote": "?", "url": ""}

    def origin_name(self, experiment_id: str) -> str | None:
        origin = self.origin(experiment_id)
        return None if origin is None else str(origin.get("remote", "?"))


def write_atomically(temp: Path, target: Path, fill: Callable[[IO[bytes]], Any]) -> None:
    """Fill `temp`, fsync it, rename it to `target`: readers see all of it or nothing, and a
    failure leaves no temp file behind."""
    try:
        with open(temp, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_filesystem(folder: Path) -> None:
    """Flush the filesystem holding `folder` (Linux syncfs), or everything (sync) elsewhere."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            if libc.syncfs(descriptor) == 0:
                return
        finally:
            os.close(descriptor)
    os.sync()


_sync_workers: tuple[int, Any] = (0, None)  # (pid, thread pool): a forked child makes its own


def _sync_pool() -> Any:
    global _sync_workers
    pid = os.getpid()
    if _sync_workers[0] != pid or _sync_workers[1] is None:
        from concurrent.futures import ThreadPoolExecutor

        _sync_workers = (pid, ThreadPoolExecutor(4, thread_name_prefix="nbexp-sync"))
    return _sync_workers[1]


class Syncing:
    """The fsyncs of a file just renamed into place (its open `descriptor`, closed by
    `wait`) and of its folder (and the folder's parent, when the folder is new), started side
    by side in helper threads (which the GIL does not hold back during the calls) as soon as
    the file is in place: one wait for the disk, as early as it can start, overlapping
    whatever the caller does before `wait`. An error of the file's fsync is raised by
    `wait`, as `os.fsync` raises it (a folder's fsync that fails is ignored, as `fsync_dir`
    ignores it)."""

    def __init__(self, descriptor: int, folders: tuple[Path, ...]) -> None:
        self._descriptor = descriptor
        self._folders = folders  # the file's, and its parent when the folder is new
        self._waits: list[Any] = []
        with contextlib.suppress(RuntimeError):  # shutting down: no new threads (see `wait`)
            pool = _sync_pool()
            self._waits.append(pool.submit(os.fsync, descriptor))
            for folder in folders:
                self._waits.append(pool.submit(fsync_dir, folder))

    def wait(self) -> None:
        """Return once the file's bytes and its name are on disk."""
        try:
            if not self._waits:
                os.fsync(self._descriptor)
            for folder in self._folders[len(self._waits) - 1 :] if self._waits else self._folders:
                fsync_dir(folder)  # those that could not be handed to a thread
            for waiting in self._waits:
                waiting.result()
        finally:
            self._waits = []
            if self._descriptor >= 0:
                os.close(self._descriptor)
                self._descriptor = -1


def make_folder_durably(folder: Path) -> None:
    """Create `folder` (a fan-out folder such as `records/ab/`) and make its name durable:
    fsyncing a file's folder keeps the file's name, not the folder's own in its parent."""
    try:
        folder.mkdir()
    except FileExistsError:
        return
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
    fsync_dir(folder.parent)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def process_alive(pid: int) -> bool:
    """Whether a process of this pid runs here (a reused pid errs on the side of keeping)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def is_utf8(text: str) -> bool:
    """False for a path holding bytes the file system could not decode (os.fsdecode turns
    them into lone surrogates, which neither SQLite nor JSON-as-UTF-8 can keep)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None if it is missing: tells a replaced file apart."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def say(line: str) -> None:
    """A one-line notice for the user (stderr): what the store did on its own."""
    print(line, file=sys.stderr, flush=True)
