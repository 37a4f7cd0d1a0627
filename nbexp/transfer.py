"""Moving files to and from a remote: atomic writes over fsspec, a thread pool, progress.

`RemoteFiles` is one remote's folder seen as keys (`records/ab/<id>.json`,
`objects/ab/<rest>`, `tags/<id>.json`). A key becomes visible whole or not at all: object
stores (S3, GCS, Azure) make a single PUT atomic, so keys are written directly; on file
systems (`file://`, SFTP, ...) the bytes go to `tmp/` first and are then moved into place.
Listings are one paginated request per thousand keys on object stores, which is what keeps
the number of requests of a push or pull proportional to what is new. Nothing here knows
what a record is; `remote.py` decides what travels and verifies it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from .store import write_atomically

T = TypeVar("T")

# Back ends whose single PUT of a whole object is atomic: readers see all of it or nothing.
ATOMIC_PUT_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "memory"}
)
DEFAULT_WORKERS = 16
# Up to this size an object is read into memory, verified and sent as those exact bytes.
IN_MEMORY_LIMIT = 64 * 2**20
# A listing request returns up to this many keys (S3, GCS and Azure all page by 1,000).
LISTING_PAGE = 1000
# A download arrives in pieces of this size: a key this small costs one request.
PIECE = 8 * 2**20


class Sink(Protocol):
    """Where a download's bytes go, piece by piece (the receiver hashes them on the way)."""

    def expect(self, size: int) -> None:
        """The key's size, when the back end says it before the bytes (it may refuse)."""

    def write(self, piece: bytes | bytearray | memoryview) -> None: ...


class UnreadableKey(ValueError):
    """A key nbexp does not read: larger than anything it writes under that name, or not a
    regular file (a folder, device or pipe) on a file-system remote."""


@dataclass(frozen=True)
class Entry:
    """One key of a listing: its size and, where the back end says, when it was written."""

    size: int
    modified: float | None = None
    stamp: str = ""


class RemoteFiles:
    """The keys under `root` of an fsspec filesystem."""

    def __init__(self, fs: Any, root: str) -> None:
        from fsspec.implementations.local import LocalFileSystem

        self.fs = fs
        self.root = root.rstrip("/")
        self.is_local = isinstance(fs, LocalFileSystem)
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self._protocols = frozenset(protocols)
        self.atomic_put = any(protocol in ATOMIC_PUT_PROTOCOLS for protocol in protocols)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    # -- listing --------------------------------------------------------------------

    def listing(self, prefix: str) -> dict[str, Entry]:
        """Every key under `prefix` (which ends with `/`), with its size and time."""
        if self.is_local:
            return self._local_listing(prefix)
        try:
            if self.atomic_put and "s3" in self._protocols:
                # a server-side prefix: no extra requests to tell "empty" from "missing"
                found = self.fs.find(self.root, prefix=prefix, detail=True)
            else:
                found = self.fs.find(self.path(prefix.rstrip("/")), detail=True)
        except FileNotFoundError:
            return {}
        cut = len(self.root) + 1
        entries: dict[str, Entry] = {}
        for name, info in found.items():
            if info.get("type") == "directory":
                continue
            key = self.fs._strip_protocol(name)[cut:]
            entries[key] = Entry(
                size=int(info.get("size") or 0),
                modified=_modified(info),
                stamp=str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""),
            )
        return entries

    def _local_listing(self, prefix: str) -> dict[str, Entry]:
        entries: dict[str, Entry] = {}
        base = Path(self.path(prefix.rstrip("/")))
        folders = [base]
        while folders:
            folder = folders.pop()
            try:
                items = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for item in items:
                if item.is_dir(follow_symlinks=False):
                    folders.append(Path(item.path))
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = item.stat()
                    key = os.path.relpath(item.path, self.root).replace(os.sep, "/")
                    entries[key] = Entry(stat.st_size, stat.st_mtime, str(stat.st_mtime_ns))
        return entries

    def listing_of(self, kind: str, keys: Iterable[str], expected: int) -> dict[str, Entry]:
        """A listing that covers `keys` (all under `kind/ab/`, of which the remote holds about
        `expected`) in the fewest requests: one listing per 2-character prefix involved, or
        one listing of all of `kind/`, whichever needs fewer pages."""
        prefixes = sorted({key.split("/")[1] for key in keys})
        if not prefixes:
            return {}
        whole = -(-max(expected, 1) // LISTING_PAGE)
        per_prefix = len(prefixes) * -(-max(expected, 1) // (256 * LISTING_PAGE))
        if whole <= per_prefix:
            return self.listing(f"{kind}/")
        entries: dict[str, Entry] = {}
        with ThreadPoolExecutor(max_workers=min(len(prefixes), DEFAULT_WORKERS)) as pool:
            for part in pool.map(lambda p: self.listing(f"{kind}/{p}/"), prefixes):
                entries.update(part)
        return entries

    # -- reading --------------------------------------------------------------------

    def read(self, key: str, limit: int | None = None) -> bytes:
        """A key's bytes; FileNotFoundError when it does not exist. With `limit`, a key of
        more bytes is refused (UnreadableKey) after reading at most one byte past it: a
        remote serving a huge or endless file never fills the memory."""
        if self.is_local:
            with _open_regular(self.path(key)) as handle:
                data = handle.read(-1 if limit is None else limit + 1)
        else:
            # from offset 0: one ranged GET, where a plain cat_file asks for the size first
            end = None if limit is None else limit + 1
            data = self.fs.cat_file(self.path(key), start=0, end=end)
        if limit is not None and len(data) > limit:
            raise UnreadableKey(
                f"{self.path(key)} is larger than {limit} bytes, more than nbexp writes there"
            )
        return bytes(data)

    def download(self, key: str, sink: Sink) -> int:
        """Stream a key's bytes into `sink`, piece by piece (not verified here: the sink
        hashes them). The size is said first where it costs no request (a local file), or
        once the key turns out larger than one piece; bytes past it are never read.
        FileNotFoundError when the key does not exist. Returns how many bytes came."""
        if self.is_local:
            with _open_regular(self.path(key)) as handle:
                size = os.fstat(handle.fileno()).st_size
                sink.expect(size)
                return _pour(lambda at, count: handle.read(count), size, sink)
        path = self.path(key)
        first = self.fs.cat_file(path, start=0, end=PIECE)  # one GET, all of a small key
        if len(first) < PIECE:
            sink.write(first)
            return len(first)
        known = self.fs.size(path)
        if known is None:  # the back end cannot say: pieces until one comes short
            done = 0
            piece = first
            while True:
                sink.write(piece)  # the sink stops an endless key (`Room`)
                done += len(piece)
                if len(piece) < PIECE:
                    return done
                piece = self.fs.cat_file(path, start=done, end=done + PIECE)
        size = int(known)
        sink.expect(size)
        sink.write(first[:size])
        if size <= len(first):
            return size
        return len(first) + _pour(
            lambda at, count: self.fs.cat_file(path, start=at, end=at + count),
            size,
            sink,
            start=len(first),
        )

    # -- writing --------------------------------------------------------------------

    def prepare(self) -> None:
        """Make sure the root exists where a file system needs folders."""
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def write(self, key: str, data: bytes) -> None:
        """Make `key` hold `data`, atomically."""
        if self.is_local:
            self._local_write(key, lambda sink: sink.write(data))
        elif self.atomic_put:
            self.fs.pipe_file(self.path(key), data)
        else:
            temp = self._temp_key()
            self._making_folders(temp, self.fs.pipe_file, self.path(temp), data)
            self._making_folders(key, self.fs.mv, self.path(temp), self.path(key))

    def upload(self, source: Path, key: str) -> None:
        """Make `key` hold the content of a local file, atomically."""
        if self.is_local:
            import shutil

            def copy(sink: IO[bytes]) -> None:
                with open(source, "rb") as handle:
                    shutil.copyfileobj(handle, sink, 8 * 2**20)

            self._local_write(key, copy)
        elif self.atomic_put:
            self.fs.put_file(str(source), self.path(key))
        else:
            temp = self._temp_key()
            self._making_folders(temp, self.fs.put_file, str(source), self.path(temp))
            self._making_folders(key, self.fs.mv, self.path(temp), self.path(key))

    def _making_folders(self, key: str, call: Callable[..., Any], *args: Any) -> None:
        """`call(*args)`, which writes `key`, creating its folder if the back end needs one
        (an extra request only the first time a folder is used)."""
        try:
            call(*args)
        except FileNotFoundError:
            self.fs.makedirs(self.path(key).rsplit("/", 1)[0], exist_ok=True)
            call(*args)

    def delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        if self.is_local:
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(key))
            return
        self.fs.rm([self.path(key) for key in keys])

    def _temp_key(self) -> str:
        return f"tmp/{os.getpid()}-{secrets.token_hex(8)}.tmp"

    def _local_write(self, key: str, fill: Callable[[IO[bytes]], Any]) -> None:
        temp = Path(self.path(self._temp_key()))
        temp.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(temp, Path(self.path(key)), fill)


@contextlib.contextmanager
def _open_regular(path: str) -> Iterator[IO[bytes]]:
    """A local file opened for reading, refused unless it is a regular file: a remote folder
    may hold a link to a device (/dev/zero: endless) or a pipe (never ends, or blocks)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise UnreadableKey(f"{path} is not a regular file (a folder, a device or a pipe)")
        os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb", buffering=0)
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle


def _pour(read: Callable[[int, int], bytes], size: int, sink: Sink, *, start: int = 0) -> int:
    """Pass `read(offset, count)`'s pieces from `start` up to `size` bytes into `sink`; a
    key that ends early is an OSError (the sink then never counts it whole)."""
    done = start
    while done < size:
        piece = read(done, min(PIECE, size - done))
        if not piece:
            raise OSError(f"the remote sent {done} of {size} bytes, then nothing")
        sink.write(piece)
        done += len(piece)
    return done - start


def _modified(info: Mapping[str, Any]) -> float | None:
    """The write time of a listing entry in seconds since the epoch, if the back end says."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created", "time"):
        value = info.get(field)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
            return moment.timestamp()
        with contextlib.suppress(ValueError):
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
            return moment.timestamp()
    return None


class Progress:
    """Progress of a transfer on stderr (items, bytes, rate), ending with one summary line
    (`push team: 3/3 objects, 3.0/3.0 MB, 41.2 MB/s`). Thread-safe.

    On a terminal a tqdm bar is redrawn in place and cleared at the end; elsewhere (a
    notebook, a CI log), where a redrawn bar would be a wall of carriage returns, a plain
    line is printed at most every few seconds.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "objects",
        total_bytes: int | None = None,
        enabled: bool = True,
        stream: IO[str] | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.total_bytes = total_bytes
        self.done = 0
        self.bytes = 0
        self.requested = enabled
        self.enabled = enabled and total > 0
        self._stream = stream
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._last = self._started
        self._live = bool(getattr(self._out, "isatty", lambda: False)())
        self._bar: Any = None  # the tqdm bar, made at the first advance on a terminal

    @property
    def _out(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += 1
            self.bytes += nbytes
            if not self.enabled:
                return
            if self._live:
                self._redraw()
                return
            now = time.perf_counter()
            if now - self._last >= 5.0:
                self._last = now
                self._print()

    def extend(self, count: int) -> None:
        """More items turned out to be part of this transfer."""
        with self._lock:
            self.total += count
            self.enabled = self.requested and self.total > 0
            if self._bar is not None:
                self._bar.total = self.total

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._bar.close()
                self._bar = None
            if self.enabled:
                self._print()

    def _redraw(self) -> None:
        from tqdm import tqdm  # imported on a terminal only: `import nbexp` stays light

        if self._bar is None:
            self._bar = tqdm(
                total=self.total,
                desc=self.label,
                unit=f" {self.unit}",
                file=self._out,
                leave=False,  # the summary line takes its place
                dynamic_ncols=True,
            )
        self._bar.set_postfix_str(f"{self.bytes / 1e6:.1f} MB", refresh=False)
        with contextlib.suppress(OSError, ValueError):
            self._bar.update(self.done - self._bar.n)

    def _line(self) -> str:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        size = f"{self.bytes / 1e6:.1f}"
        if self.total_bytes:
            size += f"/{self.total_bytes / 1e6:.1f}"
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit}, {size} MB, "
            f"{self.bytes / 1e6 / elapsed:.1f} MB/s"
        )

    def _print(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.write(self._line() + "\n")
            self._out.flush()


def run_parallel(
    items: Sequence[T],
    work: Callable[[T], int],
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
    then: Callable[[T], Sequence[T]] | None = None,
) -> dict[T, Exception]:
    """Run `work` on every item in a thread pool; returns the items that failed, with why.

    `work` returns the bytes it moved (for the progress line). `then(item)`, called in this
    thread after an item succeeded, may return more items to run in the same pool (a pull
    fetches a record's objects while other records are still arriving). An interrupt
    (Ctrl-C, or any exception that is not an `Exception`) cancels what has not started and
    is re-raised.
    """
    failures: dict[T, Exception] = {}
    if not items:
        return failures
    size = workers if then is not None else min(workers, len(items))
    pool = ThreadPoolExecutor(max_workers=max(1, size))
    pending: dict[Future[int], T] = {}
    try:
        pending = {pool.submit(work, item): item for item in items}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                item = pending.pop(future)
                error = future.exception()
                if error is None:
                    if progress is not None:
                        progress.advance(future.result())
                    more = then(item) if then is not None else ()
                    if more and progress is not None:
                        progress.extend(len(more))
                    for follow in more:
                        pending[pool.submit(work, follow)] = follow
                elif isinstance(error, Exception):
                    failures[item] = error
                else:
                    raise error
    except BaseException:
        # transfers already running finish (each is one key); the rest never start
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        if progress is not None:
            progress.close()
    pool.shutdown(wait=True)
    return failures
