"""The store: `.nbexp/` on disk — immutable records, content-addressed objects, an index.

Layout::

    .nbexp/
      records/ab/<id>.json   one immutable JSON record per experiment
      tags/<id>.json         tags added after the run (the only mutable per-experiment file)
      origins/<id>.json      where a pulled experiment came from (remote name and URL)
      objects/ab/<rest>      content-addressed blobs, named by their xxh3-128 hash
      index.sqlite           listing/filtering index, rebuildable from records (`reindex`)
      tmp/                   files being written; renamed into place only once complete
      config.json            settings, e.g. remotes (`nbexp remote add`)

Every file becomes visible by an atomic rename after fsync, so a crash leaves either the
old state or the new one, never half a record (files a killed process left in tmp/ are never
read, and `nbexp gc` removes them once they are old: `clean_tmp`). Saving and deleting touch
two places, a record file and its index row; a locked note in tmp/ covers the moment between,
and the next process to open the store finishes what a killed one left half done
(`_finish_interrupted`). SQLite in WAL mode with a busy timeout lets many kernels and CLI
processes share a store. A write the disk or SQLite refuses (full, read-only, locked) is one
StoreError line saying what is wrong and what to do. Nothing here imports IPython.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import secrets
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import xxhash

from . import query as query_language
from . import refs
from .errors import (
    AmbiguousRefError,
    DamagedIndexError,
    IntegrityError,
    NbexpError,
    QueryError,
    RecordError,
    RefError,
    StoreError,
)
from .hashing import CHUNK, canonical_json, hash_bytes, hash_file, hash_json
from .paths import crafted
from .record import SHORT_ID_LENGTH, Experiment

STORE_DIRNAME = ".nbexp"
STORE_ENV = "NBEXP_STORE"
MIN_PREFIX = refs.MIN_PREFIX

_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL, status TEXT NOT NULL,
    duration REAL, note TEXT, tags TEXT NOT NULL, params TEXT NOT NULL, metrics TEXT NOT NULL,
    notebook TEXT, sweep TEXT
);
CREATE INDEX IF NOT EXISTS experiments_created ON experiments(created);
CREATE INDEX IF NOT EXISTS experiments_name ON experiments(name, created);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, hash TEXT
);
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS columns (
    section TEXT NOT NULL, key TEXT NOT NULL, scalar INTEGER NOT NULL, physical TEXT,
    PRIMARY KEY (section, key)
);
"""
# Every param and metric name ever indexed, and whether all its values are plain numbers or
# strings: listings then ask SQLite for flat columns (json_extract) instead of parsing two
# JSON documents per row in Python — the difference between 0.5 s and 4 s at 100k rows.
_REBUILD_COLUMNS = """
UPDATE columns SET scalar = 1;
INSERT INTO columns (section, key, scalar)
    SELECT 'params', j.key, min(j.type IN ('integer', 'real', 'text', 'null')
        OR coalesce((CASE j.type WHEN 'object' THEN j.value ->> '$."$float"' END) IN ('inf', '-inf'), 0))
    FROM experiments e, json_each(e.params) j GROUP BY j.key ORDER BY min(e.created)
    ON CONFLICT (section, key) DO UPDATE SET scalar = excluded.scalar;
INSERT INTO columns (section, key, scalar)
    SELECT 'metrics', j.key, min(j.type IN ('integer', 'real', 'text', 'null')
        OR coalesce((CASE j.type WHEN 'object' THEN j.value ->> '$."$float"' END) IN ('inf', '-inf'), 0))
    FROM experiments e, json_each(e.metrics) j GROUP BY j.key ORDER BY min(e.created)
    ON CONFLICT (section, key) DO UPDATE SET scalar = excluded.scalar;
"""
_INSERT_ROW = (
    "INSERT OR REPLACE INTO experiments (id, name, created, status, duration, note, tags, "
    "params, metrics, notebook, sweep, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_ROW_COLUMNS = (
    "id, name, created, status, duration, note, tags, params, metrics, notebook, sweep, origin"
)
MAX_PHYSICAL_COLUMNS = 1500  # SQLite allows 2000 columns a table; the rest stay JSON-only
_UPSERT_COLUMN = (
    "INSERT INTO columns (section, key, scalar) VALUES (?, ?, ?) "
    "ON CONFLICT (section, key) DO UPDATE SET scalar = min(scalar, excluded.scalar)"
)

FEW_OBJECTS = 16  # batches up to this many objects are fsynced file by file
UNINDEXED_SUFFIX = ".unindexed"  # tmp/<id>.unindexed: a record being published (_publishing)
DELETING_SUFFIX = ".deleting"  # tmp/<id>.deleting: an experiment being deleted (delete)
TEMP_GRACE_SECONDS = 3600.0  # tmp/ files younger than this are never collected (as remote gc)
_TEMP_NAME = re.compile(r"^(?:\.probe-)?(\d+)-[0-9a-f]+(?:\.tmp)?$")  # _temp_path, the probe
BUSY_TIMEOUT = 60.0  # seconds a process waits for another's lock on the index
SORTABLE = ("created", "name", "status", "duration", "id")
_PHYSICAL = re.compile(r"^v[0-9]+$")  # the plain columns' names, chosen by _materialise_columns


def find_store_root(start: str | os.PathLike[str] | None = None) -> Path:
    """Where the store of `start` (default: cwd) lives, per SPEC §2; not created here.

    `NBEXP_STORE` wins when no explicit start folder is given.
    """
    override = os.environ.get(STORE_ENV)
    if override and start is None:
        return Path(override).expanduser().absolute()
    here = Path(start or os.getcwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / STORE_DIRNAME).is_dir():
            return folder / STORE_DIRNAME
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder / STORE_DIRNAME
    return here / STORE_DIRNAME


@dataclass(frozen=True)
class Problem:
    """One thing `fsck` found wrong."""

    kind: str
    item: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.item}: {self.detail}"


class Store:
    """One `.nbexp/` folder. Cheap to open; safe to use from several processes at once."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.records_dir = self.root / "records"
        self.objects_dir = self.root / "objects"
        self.tags_dir = self.root / "tags"
        self.tmp_dir = self.root / "tmp"
        self.index_path = self.root / "index.sqlite"
        self._known_objects: set[str] = set()
        self._batch = threading.local()
        self._seen_gc_generation: str | None = None
        self._lock = threading.RLock()
        self._healing = False  # True while _rebuild_index runs
        self._index_identity: tuple[int, int] | None = None
        try:
            for folder in (self.records_dir, self.objects_dir, self.tags_dir, self.tmp_dir):
                folder.mkdir(parents=True, exist_ok=True)
            probe = self.tmp_dir / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StoreError(
                f"cannot use the store at {self.root}: {error.strerror or error}; "
                f"make it writable or point {STORE_ENV} at a writable folder"
            ) from error
        self._db = self._open_healthy_index()
        self._finish_interrupted()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- atomic files ---------------------------------------------------------------

    def _temp_path(self) -> Path:
        return self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.tmp"

    def _write_atomic(
        self, target: Path, data: bytes | bytearray | memoryview, *, sync_dir: bool = False
    ) -> None:
        """Write `data` to `target` so that readers see all of it or nothing."""
        with self._file_writes():
            write_atomically(self._temp_path(), target, lambda handle: handle.write(data))
        if sync_dir:
            _fsync_dir(target.parent)

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

    # -- objects --------------------------------------------------------------------

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
                _fsync_file(temp)
        else:
            _sync_filesystem(self.tmp_dir)
        folders = set()
        for digest, temp in pending.items():
            target = self.object_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            folders.add(target.parent)
            self._known_objects.add(digest)
        if few:
            for folder in folders:
                _fsync_dir(folder)
        else:
            _sync_filesystem(self.objects_dir)

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Copy a file into the object store while hashing it; returns (hash, size)."""
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

    # -- records --------------------------------------------------------------------

    def record_path(self, experiment_id: str) -> Path:
        return self.records_dir / experiment_id[:2] / f"{experiment_id}.json"

    @staticmethod
    def make_id(body: dict[str, Any]) -> str:
        """An experiment's id: the hash of its record's content (without the id itself)."""
        return hash_json({key: value for key, value in body.items() if key != "id"})

    def save(self, experiment: Experiment) -> Experiment:
        """Write a new record (its id must be `make_id` of its content) and index it."""
        body = experiment.to_dict()
        path = self.record_path(experiment.id)
        if path.exists():
            raise StoreError(f"experiment {experiment.short_id} already exists")
        with self._file_writes(), self._publishing(experiment.id, path):
            self._write_atomic(path, canonical_json(body) + b"\n", sync_dir=True)
            # The record is written, and records are the truth: a damaged index says to run
            # `nbexp reindex` wherever it is read, and reindex lists this experiment too.
            with contextlib.suppress(DamagedIndexError):
                self._index_upsert(experiment, body)
        return experiment

    @contextlib.contextmanager
    def _publishing(self, experiment_id: str, path: Path) -> Iterator[None]:
        """Around writing a record and then its index row. A process killed between the two
        would leave a record that `nbexp list` never shows and `fsck` reports; so meanwhile
        a note in tmp/, locked by this process, names the record, and the next process to
        open the store indexes the records of notes whose writer died (`_finish_interrupted`).
        If the row cannot be written (disk full, read-only index), the record is taken
        back: the caller then says it was not recorded, and that is true."""
        with self._locked_note(f"{experiment_id}{UNINDEXED_SUFFIX}") as note:
            taken_back = True
            try:
                yield
            except BaseException:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    taken_back = False  # the note stays: the next open indexes the record
                raise
            finally:
                if taken_back:
                    with contextlib.suppress(OSError):
                        note.unlink()

    @contextlib.contextmanager
    def _locked_note(self, name: str) -> Iterator[Path]:
        """tmp/NAME, locked by this process while the block runs: it names work in progress
        that the next process to open the store finishes if this one dies before removing
        the note (`_finish_interrupted`). It appears already locked, so live work is never
        finished by someone else, nor collected by `clean_tmp`."""
        import fcntl

        note = self.tmp_dir / name
        temp = self._temp_path()
        with open(temp, "wb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                os.replace(temp, note)
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
            yield note

    def _finish_interrupted(self) -> None:
        """Finish what processes killed between a record file and its index row left half
        done, as their notes, no longer locked by anyone, say: index a record written
        without its row (`_publishing`), or remove the files of an experiment whose row is
        already deleted (`delete`)."""
        import fcntl

        try:
            notes = [
                p
                for p in self.tmp_dir.iterdir()
                if p.name.endswith((UNINDEXED_SUFFIX, DELETING_SUFFIX))
            ]
        except OSError:
            return
        for note in notes:
            experiment_id, suffix = os.path.splitext(note.name)
            # OSError: the note is gone (its writer finished) or still locked (its writer is
            # at work), or the work failed again (the note stays; `nbexp fsck` names the fix)
            with contextlib.suppress(OSError), open(note, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(handle.fileno()).st_nlink == 0:
                    continue  # its writer finished meanwhile
                try:
                    if suffix == DELETING_SUFFIX:
                        self._delete_row(experiment_id)
                        self._delete_files(experiment_id)
                    else:
                        self._index_upsert(self.load(experiment_id))
                except RefError:
                    pass  # killed before the record was written: nothing to index
                except (NbexpError, sqlite3.Error):
                    continue
                note.unlink()

    def load(self, experiment_id: str, *, salvage: bool = False) -> Experiment:
        """The record of `experiment_id`, verified against its id. With `salvage` (restoring
        and loading variables, each of which is verified against its own hash) a damaged
        record is still returned, after one line on stderr saying so."""
        path = self.record_path(experiment_id)
        try:
            body = json.loads(path.read_bytes())
        except FileNotFoundError as error:
            raise RefError(
                f"experiment {experiment_id[:SHORT_ID_LENGTH]} does not exist"
            ) from error
        except (ValueError, UnicodeDecodeError) as error:
            raise RecordError(
                f"record {experiment_id[:SHORT_ID_LENGTH]} is corrupt ({error}); run `nbexp fsck`"
            ) from error
        # The id is the hash of the content: an edited value or a flipped bit anywhere in the
        # record is caught here, before anything of it is shown, restored or exported.
        if not isinstance(body, dict) or self.make_id(body) != experiment_id:
            damage = (
                f"record {experiment_id[:SHORT_ID_LENGTH]} is damaged: its content no longer "
                "matches its id (edited, or a flipped bit on disk)"
            )
            if not salvage or not isinstance(body, dict):
                raise RecordError(
                    f"{damage}; run `nbexp fsck`, then delete it or `nbexp pull` it again "
                    "from a remote that has it"
                )
            _say(
                f"nbexp: {damage}; only variables that match their own hashes are used; "
                "run `nbexp fsck`"
            )
        experiment = Experiment.from_dict(body)
        if experiment.id != experiment_id:  # the id field itself was damaged
            raise RecordError(
                f"record {experiment_id[:SHORT_ID_LENGTH]} is corrupt (its id field says "
                f"{str(experiment.id)[:SHORT_ID_LENGTH]!r}); run `nbexp fsck`"
            )
        extra = self._read_tags(experiment_id)
        return experiment.with_tags(extra) if extra is not None else experiment

    def iter_record_ids(self) -> Iterator[str]:
        for folder in sorted(self.records_dir.iterdir()):
            if folder.is_dir():
                for item in folder.iterdir():
                    if item.suffix == ".json":
                        yield item.stem

    def delete(self, experiment_id: str) -> None:
        """Remove an experiment: its index row, record, tags and origin (its objects stay
        until `nbexp gc`).

        The row goes first, under a locked note, so no process lists an experiment whose
        record is gone; if this one is killed before the files are gone too, the next
        process to open the store removes them (`_finish_interrupted`). Either way the
        experiment ends fully present or fully gone."""
        with self._file_writes(), self._locked_note(f"{experiment_id}{DELETING_SUFFIX}") as note:
            try:
                self._delete_row(experiment_id)
            except BaseException:  # nothing was deleted: nothing to finish later
                with contextlib.suppress(OSError):
                    note.unlink()
                raise
            self._delete_files(experiment_id)  # if this fails, the note stays: retried
            note.unlink()

    def _delete_row(self, experiment_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))

    def _delete_files(self, experiment_id: str) -> None:
        for path in (
            self.record_path(experiment_id),
            self.tags_dir / f"{experiment_id}.json",
            self.origins_dir / f"{experiment_id}.json",
        ):
            path.unlink(missing_ok=True)

    # -- tags -----------------------------------------------------------------------

    def _read_tags(self, experiment_id: str) -> tuple[str, ...] | None:
        try:
            return tuple(json.loads((self.tags_dir / f"{experiment_id}.json").read_bytes()))
        except (FileNotFoundError, ValueError):
            return None

    def set_tags(self, experiment_id: str, tags: Iterable[str]) -> Experiment:
        """Replace an experiment's tags: the tags file, then its index row. If the row is
        refused (disk full, read-only index), the old tags file is put back, so nothing
        changed; a process killed in between leaves a locked note, and the next process to
        open the store re-indexes the experiment from its files (`_finish_interrupted`)."""
        experiment = self.load(experiment_id)
        ordered = tuple(dict.fromkeys(tags))
        updated = experiment.with_tags(ordered)
        path = self.tags_dir / f"{experiment_id}.json"
        previous = path.read_bytes() if path.exists() else None
        with self._file_writes(), self._locked_note(f"{experiment_id}{UNINDEXED_SUFFIX}") as note:
            try:
                self._write_atomic(path, json.dumps(ordered).encode())
                self._index_upsert(updated)
            except BaseException:
                with contextlib.suppress(OSError):  # if this fails too, the note stays
                    if previous is None:
                        path.unlink(missing_ok=True)
                    else:
                        self._write_atomic(path, previous)
                    note.unlink()
                raise
            note.unlink()
        return updated

    def add_tag(self, experiment_id: str, tag: str) -> Experiment:
        """Tag an experiment. A tag that reads as a reference (`last`, hex digits), is empty,
        or holds a secret (an environment credential, a URL password) is refused: tags are
        shown everywhere and travel to remotes."""
        from .secrets import Redactor, secret_values

        tag = refs.check_label(tag, "tag")
        if Redactor(secret_values({})).text(tag) != tag:
            raise NbexpError(
                "this tag holds a credential (a secret's value or a URL password); tags are "
                "shown everywhere and pushed to remotes, so choose another tag"
            )
        experiment = self.load(experiment_id)
        return self.set_tags(experiment_id, (*experiment.tags, tag))

    def remove_tag(self, experiment_id: str, tag: str) -> Experiment:
        experiment = self.load(experiment_id)
        if tag not in experiment.tags:
            has = ", ".join(experiment.tags) or "none"
            raise NbexpError(
                f"{experiment.name} ({experiment.short_id}) has no tag {tag!r} (its tags: {has})"
            )
        return self.set_tags(experiment_id, (t for t in experiment.tags if t != tag))

    # -- origins: experiments pulled from a remote (nbexp/remote.py) ---------------

    @property
    def origins_dir(self) -> Path:
        return self.root / "origins"

    def origin(self, experiment_id: str) -> dict[str, Any] | None:
        """Where a pulled experiment came from ({"remote", "url", "pulled"}); None if local."""
        try:
            value = json.loads((self.origins_dir / f"{experiment_id}.json").read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:  # unreadable: still not local, so never trusted by default
            return {"remote": "?", "url": ""}
        return value if isinstance(value, dict) else {"remote": "?", "url": ""}

    def origin_name(self, experiment_id: str) -> str | None:
        origin = self.origin(experiment_id)
        return None if origin is None else str(origin.get("remote", "?"))

    def temp_path(self) -> Path:
        """A fresh path in the store's `tmp/`, for a file to be renamed into place later."""
        return self._temp_path()

    def write_file(self, target: Path, data: bytes) -> None:
        """Write a small file of the store (e.g. config.json) atomically and durably."""
        self._write_atomic(target, data, sync_dir=True)

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
        _sync_filesystem(self.tmp_dir)
        for digest, temp in arrived.items():
            target = self.object_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
            self._known_objects.add(digest)
        _sync_filesystem(self.objects_dir)

    def import_record(self, data: bytes, origin: dict[str, Any]) -> Experiment:
        """Add a record that arrived from a remote, byte for byte, once its content is
        verified against its id. Its origin is written first, so a visible pulled record is
        never mistaken for a local one. Its objects must already be in the store."""
        try:
            body = json.loads(data)
            experiment = Experiment.from_dict(body)
        except (ValueError, UnicodeDecodeError, RecordError) as error:
            raise IntegrityError(f"a record arrived unreadable ({error})") from error
        if self.make_id(body) != experiment.id:
            raise IntegrityError(
                f"record {experiment.short_id} arrived corrupt (its content does not match its id)"
            )
        for recorded in experiment.recorded_paths():
            why = crafted(recorded)
            if why:  # nbexp never records such a path: the record was made to attack
                raise IntegrityError(
                    f"record {experiment.short_id} was refused: it names the file {recorded!r}, "
                    f"and {why}; nbexp never records such a path"
                )
        path = self.record_path(experiment.id)
        if path.exists():  # recorded or pulled here already: the same content, by its id
            return self.load(experiment.id)
        self._write_atomic(self.origins_dir / f"{experiment.id}.json", json.dumps(origin).encode())
        with self._file_writes(), self._publishing(experiment.id, path):
            self._write_atomic(path, data, sync_dir=True)
            self._index_upsert(experiment)
        return experiment

    # -- index ----------------------------------------------------------------------

    def _open_healthy_index(self) -> sqlite3.Connection:
        """Open the index; if it is missing while records exist, or SQLite cannot use it,
        rebuild it from the records (they are the truth; the index is a cache) and say so
        in one line. A locked, read-only or full index is not damage and is raised."""
        try:  # an empty file is as good as none: SQLite would start a fresh, empty index
            existed = self.index_path.stat().st_size > 0
        except OSError:
            existed = False
        try:
            connection = self._open_index()
        except DamagedIndexError as error:
            return self._rebuild_index(str(error))
        self._index_identity = _file_identity(self.index_path)
        if not existed and self._has_records():
            self._db = connection
            self._rebuild_index("the store's index was missing")
            return self._db
        return connection

    def _has_records(self) -> bool:
        with contextlib.suppress(OSError):
            return any(folder.is_dir() for folder in self.records_dir.iterdir())
        return False

    def _rebuild_index(self, why: str) -> sqlite3.Connection:
        """Rebuild the index from the records, one process at a time (tmp/index.rebuild, an
        exclusive flock): a damaged file is moved aside to index.sqlite.damaged, never
        deleted, and a fresh one filled. A process that waited finds the work done."""
        import fcntl

        started = time.monotonic()
        with open(self.tmp_dir / "index.rebuild", "a+b") as lock, self._healing_now():
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = getattr(self, "_db", None)
            if old is not None:
                with contextlib.suppress(sqlite3.Error):
                    old.close()
            try:
                self._db = self._open_index()  # another process may have rebuilt it meanwhile
                healthy = self._index_answers()
            except DamagedIndexError:
                healthy = False
            if not healthy:
                with contextlib.suppress(sqlite3.Error, AttributeError):
                    self._db.close()
                set_aside_index(self.root)
                self._db = self._open_index()
            self._index_identity = _file_identity(self.index_path)
            count = self.reindex(progress=True)
        seconds = time.monotonic() - started
        kept = " (the damaged file is kept as index.sqlite.damaged)" if not healthy else ""
        _say(
            f"nbexp: {_first_clause(why)}; rebuilt it from {count} record"
            f"{'' if count == 1 else 's'} in {seconds:.1f} s{kept}"
        )
        return self._db

    @contextlib.contextmanager
    def _healing_now(self) -> Iterator[None]:
        self._healing = True
        try:
            yield
        finally:
            self._healing = False

    def _index_answers(self) -> bool:
        """Whether the open index reads: SQLite finds no damage in it, and its rows decode."""
        try:
            with self._lock:
                check = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
                self._index_answers_or_raise()
        except (sqlite3.DatabaseError, DamagedIndexError):
            return False
        return bool(check == "ok")

    def _index_answers_or_raise(self) -> None:
        """A DamagedIndexError unless every row's JSON (tags, params, metrics) parses."""
        with self._unreadable_rows():
            for row in self._db.execute("SELECT tags, params, metrics FROM experiments"):
                for text in row:
                    json.loads(text)

    def _follow_index(self) -> None:
        """Reopen the index when another process replaced it (a rebuild moves a damaged file
        aside) or it was deleted: writing on into a file no one reads would lose rows."""
        identity = _file_identity(self.index_path)
        if identity != getattr(self, "_index_identity", None):
            with self._lock:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = self._open_healthy_index()

    def _open_index(self) -> sqlite3.Connection:
        _check_header(self.index_path)
        try:
            connection = sqlite3.connect(
                self.index_path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            _enable_wal(connection, BUSY_TIMEOUT)
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_INDEX_SCHEMA)
            _add_origin_column(connection)
            layout = {row[1] for row in connection.execute("PRAGMA table_info(columns)")}
            if "physical" not in layout:  # an index from before plain columns: rebuild the list
                connection.executescript("DROP TABLE columns;" + _INDEX_SCHEMA)
            empty = connection.execute("SELECT NOT EXISTS (SELECT 1 FROM columns)").fetchone()[0]
            if (
                empty
                and connection.execute("SELECT EXISTS (SELECT 1 FROM experiments)").fetchone()[0]
            ):
                connection.execute("BEGIN")
                _rebuild_columns(connection)
                connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            raise self._index_failure(error, opening=True) from error
        except (UnicodeDecodeError, ValueError) as error:  # garbage where SQLite reads text
            raise DamagedIndexError(
                f"the store's index {self.index_path} is damaged ({error}); "
                "rebuild it from the records with `nbexp reindex`"
            ) from error
        connection.isolation_level = "DEFERRED"
        return connection

    def _index_failure(self, error: sqlite3.DatabaseError, *, opening: bool = False) -> StoreError:
        """An index error as one line naming the fix, SQLite's reason in parentheses.

        A damaged file (SQLite's CORRUPT / NOTADB, which Python raises as the bare
        DatabaseError) or a layout lacking a table or column this version needs (one from
        another nbexp) is a DamagedIndexError: `nbexp reindex` rebuilds it. A lock another
        process kept past the busy timeout, a read-only file, a full disk or a failed write
        is not damage, and rebuilding would not help: each says its own fix. Any other
        error while opening counts as damage: SQLite reads the header and schema there."""
        reason = str(error)
        name = str(getattr(error, "sqlite_errorname", "") or "")  # Python 3.11+
        where = f"the store's index {self.index_path}"
        rebuild = "rebuild it from the records with `nbexp reindex`"
        if type(error) is sqlite3.DatabaseError:
            return DamagedIndexError(f"{where} is damaged ({reason}); {rebuild}")
        if "malformed JSON" in reason:  # a row's JSON was cut or overwritten
            return DamagedIndexError(f"{where} is damaged ({reason}); {rebuild}")
        if reason.startswith(("no such column", "no such table", "table experiments")):
            return DamagedIndexError(
                f"{where} has a layout this nbexp does not know ({reason}); {rebuild}"
            )
        if "locked" in reason or "busy" in reason:
            return StoreError(
                f"{where} is locked: another process held it for over {BUSY_TIMEOUT:g} s "
                f"({reason}); try again once that process is done"
            )
        if "readonly" in reason or "read-only" in reason:
            return StoreError(
                f"{where} is read-only ({reason}); make it and its folder writable "
                "(`chmod u+w`, or `chattr -i` if it is immutable), then try again"
            )
        if "full" in reason:
            return StoreError(
                f"cannot write to the store at {self.root}: the disk is full ({reason}); "
                "free some space, then try again"
            )
        if name.startswith("SQLITE_IOERR_") and not name.endswith("READ"):  # not damage
            return StoreError(
                f"cannot write to {where}: the disk refused a write ({reason}, {name}); it "
                "may be full or at a size limit: free some space, then try again"
            )
        if opening:
            return DamagedIndexError(f"{where} is unreadable ({reason}); {rebuild}")
        if "disk I/O error" in reason:
            return StoreError(
                f"{where} could not be read or written ({reason}): the disk may be full or "
                f"failing; free some space, then try again, and if it keeps failing, {rebuild}"
            )
        return StoreError(
            f"{where} failed ({reason}); try again, and if it keeps failing, {rebuild}"
        )

    def _index_row(
        self, experiment: Experiment, body: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        body = body if body is not None else experiment.to_dict()
        return (
            experiment.id,
            experiment.name,
            experiment.created,
            experiment.outcome.status,
            experiment.outcome.duration,
            experiment.note,
            json.dumps(list(experiment.tags)),
            json.dumps(body["params"]),
            json.dumps(body["metrics"]),
            experiment.code.notebook,
            experiment.links.get("sweep"),
            self.origin_name(experiment.id),
        )

    def _index_upsert(self, experiment: Experiment, body: dict[str, Any] | None = None) -> None:
        body = body if body is not None else experiment.to_dict()
        keys = [
            (section, key, int(_is_flat(value)))
            for section in ("params", "metrics")
            for key, value in body[section].items()
        ]
        with self._lock, self._db:
            self._db.execute(
                _INSERT_ROW,
                self._index_row(experiment, body),
            )
            self._db.executemany(_UPSERT_COLUMN, keys)
            physical = _materialise_columns(self._db, [(s, k) for s, k, _ in keys])
            values = [
                (body[section][key], column)
                for (section, key), column in physical.items()
                if _is_flat(body[section][key])
            ]
            if values:
                assignments = ", ".join(f"{column} = ?" for _, column in values)
                self._db.execute(
                    f"UPDATE experiments SET {assignments} WHERE id = ?",
                    [_sqlite_number(value) for value, _ in values] + [experiment.id],
                )

    def reindex(self, *, progress: bool = False) -> int:
        """Rebuild the index from the records; returns how many were indexed.

        The rebuild happens inside the existing index, in one transaction: other processes
        keep their connections (a deleted index file would silently swallow what they write
        next) and never see it half-built. Only an index SQLite cannot use is replaced.
        """
        rows = []
        started = shown = time.monotonic()
        for experiment_id in self.iter_record_ids():
            with contextlib.suppress(RecordError, RefError):
                rows.append(self._index_row(self.load(experiment_id)))
            if progress and time.monotonic() - shown > 2.0:  # only when it takes long
                shown = time.monotonic()
                _say(f"nbexp: rebuilding the index: {len(rows)} records read so far…")
        if progress and shown != started:
            _say(f"nbexp: rebuilding the index: all {len(rows)} records read")
        indexed = {row[0] for row in rows}
        with self._lock:
            try:
                with self._db:
                    # damage in pages this rebuild never touches (the name index, the caches)
                    # would outlive it: a damaged index is replaced instead
                    check = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
                    if check != "ok":
                        raise sqlite3.DatabaseError(f"damaged: {check}")
                    self._db.executemany(_INSERT_ROW, rows)
                    others = [
                        str(row[0])
                        for row in self._db.execute("SELECT id FROM experiments")
                        if row[0] not in indexed
                    ]
                    # rows not rebuilt: keep those saved meanwhile by another process
                    gone = [(i,) for i in others if not self._loadable(i)]
                    self._db.executemany("DELETE FROM experiments WHERE id = ?", gone)
                    _rebuild_columns(self._db)
            except sqlite3.DatabaseError as error:
                failure = self._index_failure(error, opening=True)
                if not isinstance(failure, DamagedIndexError):  # locked, read-only, disk full
                    raise failure from error
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                set_aside_index(self.root)
                self._db = self._open_index()
                self._index_identity = _file_identity(self.index_path)
                with self._db:
                    self._db.executemany(_INSERT_ROW, rows)
                    _rebuild_columns(self._db)
            return len(rows)

    def _loadable(self, experiment_id: str) -> bool:
        try:
            self.load(experiment_id)
        except (RecordError, RefError):
            return False
        return True

    def rows(
        self,
        query: str | None = None,
        *,
        sort: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        ids: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Index rows (id, name, created, status, duration, note, tags, params, metrics)."""
        # named, not `*`: in an index from an older layout the columns are in another order
        # (`origin` was added after the plain columns), and positions below would mislead
        sql, args = self._select(query, ids, columns=_ROW_COLUMNS)
        order, order_args = self._order(sort, descending)
        sql += f" ORDER BY {order}"
        args += order_args
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self._lock:
            cursor = self._db.execute(sql, args)
            raw = cursor.fetchall()
        with self._unreadable_rows():
            return [
                {
                    "id": row[0],
                    "name": row[1],
                    "created": row[2],
                    "status": row[3],
                    "duration": row[4],
                    "note": row[5],
                    "tags": json.loads(row[6]),
                    "params": _decode(row[7]),
                    "metrics": _decode(row[8]),
                    "notebook": row[9],
                    "sweep": row[10],
                    "origin": row[11],
                }
                for row in raw
            ]

    @contextlib.contextmanager
    def _unreadable_rows(self) -> Iterator[None]:
        """Rows whose JSON no longer parses (a cut or overwritten index) are damage."""
        try:
            yield
        except (ValueError, TypeError, KeyError) as error:
            raise DamagedIndexError(
                f"the store's index {self.index_path} is damaged (a row does not parse: "
                f"{error}); rebuild it from the records with `nbexp reindex`"
            ) from error

    def rebuild_columns(self) -> None:
        """Recompute the param/metric name list from the index (after bulk index writes)."""
        with self._lock, self._db:
            _rebuild_columns(self._db)

    def table(
        self,
        query: str | None = None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[str], list[list[Any]]]:
        """The listing as flat columns — id, name, created, status, duration, tags, origin,
        then `params.*` and `metrics.*` — computed by SQLite in one query. Columns no listed
        experiment has a value for are left out."""
        with self._lock:
            keys = self._db.execute(
                "SELECT section, key, scalar, physical FROM columns "
                "ORDER BY section = 'metrics', rowid"
            ).fetchall()
        names = ["id", "name", "created", "status", "duration", "tags", "origin"]
        select = list(names)
        args: list[Any] = []
        nested: list[int] = []
        for section, key, scalar, physical in keys:
            if scalar and physical:
                select.append(physical)  # a plain column: no JSON parsing at all
            else:
                # `->` keeps JSON types (true, lists, {"$float": "nan"}), decoded below
                select.append(f"{section} -> ?")
                args.append(_json_path(key))
                nested.append(len(names))
            names.append(f"{section}.{key}")
        sql, where_args = self._select(query, None, columns=", ".join(select))
        order, order_args = self._order(sort, False)
        sql += f" ORDER BY {order}"
        args += where_args + order_args
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self._lock:
            rows = [list(row) for row in self._db.execute(sql, args)]
        from .record import decode_value

        with self._unreadable_rows():
            for row in rows:
                row[5] = json.loads(row[5]) if row[5] != "[]" else []
                for position in nested:
                    if row[position] is not None:
                        row[position] = decode_value(json.loads(row[position]))
        present = [i for i in range(len(names)) if i < 7 or any(row[i] is not None for row in rows)]
        if len(present) < len(names):
            names = [names[i] for i in present]
            rows = [[row[i] for i in present] for row in rows]
        return names, rows

    def count(self, query: str | None = None) -> int:
        sql, args = self._select(query, None, columns="COUNT(*)")
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def keys(self, section: str, query: str | None = None) -> list[str]:
        """The param or metric names (`section`: "params" or "metrics") the experiments
        matching `query` have: the most common first, then the first indexed. Counted over
        the plain columns, so it costs about what `count` does."""
        if section not in ("params", "metrics"):
            raise ValueError(f"section must be params or metrics, not {section!r}")
        with self._lock:
            known = self._db.execute(
                "SELECT key, scalar, physical FROM columns WHERE section = ? ORDER BY rowid",
                (section,),
            ).fetchall()
        counts: list[int] = []
        for start in range(0, len(known), 500):  # SQLite caps a SELECT at 2000 columns
            counted: list[str] = []
            paths: list[str] = []
            for key, scalar, physical in known[start : start + 500]:
                if scalar and physical:
                    counted.append(f"COUNT({physical})")
                else:
                    counted.append(f"COUNT({section} -> ?)")
                    paths.append(_json_path(key))
            sql, args = self._select(query, None, columns=", ".join(counted))
            with self._lock:
                counts.extend(self._db.execute(sql, paths + args).fetchone())
        ranked = sorted((-n, i) for i, n in enumerate(counts) if n)
        return [str(known[i][0]) for _, i in ranked]

    def _order(self, sort: str | None, descending: bool) -> tuple[str, list[Any]]:
        """ORDER BY text and its parameters for a sort key (`sort_key`). A param or metric is
        looked up in the store's own column table: its plain column (a name nbexp chose) or
        a bound JSON path, never text from the caller; a key no experiment has is refused."""
        if not sort:
            return "created DESC, id", []
        column, key, reverse = sort_key(sort)
        direction = "DESC" if descending != reverse else "ASC"
        if key is None:
            return f"{column} {direction}, created DESC", []
        with self._lock:
            found = self._db.execute(
                "SELECT scalar, physical FROM columns WHERE section = ? AND key = ?",
                (column, key),
            ).fetchone()
        if found is None:
            known = self.keys(column)[:8]
            if known:  # a misspelt key; with none of this kind yet, it sorts as all missing
                listed = ", ".join(f"{column}.{name}" for name in known)
                raise QueryError(
                    f"cannot sort by `{sort}`: no experiment has {column}.{key}; "
                    f"{column} there are: {listed}"
                )
            found = (0, None)
        scalar, physical = found
        if scalar and physical and _PHYSICAL.match(str(physical)):
            value, args = str(physical), []
        else:
            value, args = f"json_extract({column}, ?)", [_json_path(key)]
        return f"{value} IS NULL, {value} {direction}, created DESC", args + args

    def _select(
        self, query: str | None, ids: Iterable[str] | None, columns: str = "*"
    ) -> tuple[str, list[Any]]:
        sql = f"SELECT {columns} FROM experiments"
        clauses: list[str] = []
        args: list[Any] = []
        if query and query.strip():
            where, where_args = query_language.to_sql(query_language.parse(query))
            clauses.append(f"({where})")
            args.extend(where_args)
        if ids is not None:
            id_list = list(ids)
            clauses.append(f"id IN ({','.join('?' * len(id_list)) or 'NULL'})")
            args.extend(id_list)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return sql, args

    # -- references -----------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """The full id for a reference (`refs`): `last` / `last~N`, a unique id prefix, a name
        (its newest run), a tag. Ids are tried before names and tags, and among experiments
        with one name or tag those recorded here come before pulled ones; `last` counts only
        experiments recorded here (all of them when none were), so a pulled record — whose
        `created` its author wrote — never stands in for a local one."""
        ref = str(ref).strip()
        if not ref:
            raise RefError("empty experiment reference; give an id prefix, a name, a tag or `last`")
        with self._lock:
            back = refs.steps_back(ref)
            if back is not None:
                return self._last(ref, back)
            lowered = ref.lower()
            if refs.could_be_id(lowered):
                matches = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT id FROM experiments WHERE id >= ? AND id < ? LIMIT 6",
                        (lowered, lowered + "g"),
                    )
                ]
                if len(matches) == 1:
                    return str(matches[0])
                if len(matches) > 1:
                    shown = ", ".join(m[: SHORT_ID_LENGTH + 2] for m in matches[:5])
                    raise AmbiguousRefError(
                        f"`{ref}` is ambiguous: it starts {len(matches)}"
                        f"{'+' if len(matches) > 5 else ''} experiment ids ({shown}); "
                        "give more characters"
                    )
            row = self._db.execute(
                "SELECT id FROM experiments WHERE name = ? "
                "ORDER BY origin IS NOT NULL, created DESC LIMIT 1",
                (ref,),
            ).fetchone()
            if row is None:
                row = self._db.execute(
                    "SELECT e.id FROM experiments e, json_each(e.tags) t WHERE t.value = ? "
                    "ORDER BY e.origin IS NOT NULL, e.created DESC LIMIT 1",
                    (ref,),
                ).fetchone()
            if row is not None:
                return str(row[0])
            if refs.is_hex(lowered) and len(lowered) < refs.MIN_PREFIX:
                raise RefError(
                    f"`{ref}` is too short to be an id prefix; give at least {refs.MIN_PREFIX} "
                    "characters"
                )
        raise RefError(
            f"no experiment matches `{ref}`; use an id prefix, a name, a tag, `last` or "
            "`last~N` (`nbexp list` shows them)"
        )

    def _last(self, ref: str, back: int) -> str:
        local = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM experiments WHERE origin IS NULL)"
        ).fetchone()[0]
        where = "WHERE origin IS NULL " if local else ""
        row = self._db.execute(
            f"SELECT id FROM experiments {where}ORDER BY created DESC, id LIMIT 1 OFFSET ?",
            (back,),
        ).fetchone()
        if row is not None:
            return str(row[0])
        total = int(self._db.execute(f"SELECT COUNT(*) FROM experiments {where}").fetchone()[0])
        here = " recorded here" if local else ""
        raise RefError(
            f"`{ref}` does not exist: the store holds {total} experiment"
            f"{'' if total == 1 else 's'}{here}"
        )

    def get(self, ref: str, *, salvage: bool = False) -> Experiment:
        return self.load(self.resolve(ref), salvage=salvage)

    def names_count(self, prefix: str) -> int:
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM experiments WHERE name LIKE ? ESCAPE '\\'",
                    (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
                ).fetchone()[0]
            )

    # -- file-hash cache ------------------------------------------------------------

    def file_hash(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """(hash, size) of a file, re-read only when its size, mtime or inode changed."""
        absolute = os.path.abspath(path)
        if not _is_utf8(absolute):  # SQLite keeps text as UTF-8: such a name is not cached
            return hash_file(absolute)
        stat = os.stat(absolute)
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns, inode, hash FROM file_hashes WHERE path = ?", (absolute,)
            ).fetchone()
        if row is not None and tuple(row[:3]) == key:
            return str(row[3]), stat.st_size
        digest, size = hash_file(absolute)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?,?,?,?,?)",
                (absolute, *key, digest),
            )
        return digest, size

    def cache_get(self, key: str) -> Any | None:
        """A small JSON value memoised by the store (e.g. a file's tabular profile by hash)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def cache_put(self, key: str, value: Any) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?)", (key, json.dumps(value)))

    # -- garbage collection ---------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while writing objects a record will reference: `gc` waits for it to end.

        Taking it also notices a gc by another process since the last write, and forgets
        which objects this process believed present (gc may have deleted them).
        """
        with self._gc_lock(exclusive=False):
            generation = self._gc_generation()
            if generation != self._seen_gc_generation:
                self._known_objects.clear()
                self._seen_gc_generation = generation
            yield

    @contextlib.contextmanager
    def _gc_lock(self, *, exclusive: bool) -> Iterator[None]:
        """gc.lock: shared by every process writing objects or staging files in tmp/ for a
        record (`writing`), exclusive for `gc` and `clean_tmp`."""
        import fcntl

        with self._file_writes():
            handle = open(self.root / "gc.lock", "a+")  # noqa: SIM115 (closed below)
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _gc_generation(self) -> str:
        try:
            return (self.root / "gc.generation").read_text()
        except FileNotFoundError:
            return ""

    def referenced_objects(self) -> set[str]:
        referenced: set[str] = set()
        for experiment_id in self.iter_record_ids():
            try:
                referenced |= self.load(experiment_id).object_hashes()
            except RefError:  # deleted meanwhile
                continue
            except RecordError as error:
                # its objects look unreferenced: collecting them would make the damage
                # permanent (the record may yet be put back from a backup or a remote)
                raise StoreError(
                    f"record {experiment_id[:SHORT_ID_LENGTH]} is unreadable, so gc cannot "
                    "tell which objects it needs; repair or delete it first (`nbexp fsck` "
                    "says how)"
                ) from error
        return referenced

    def gc(self, *, delete: bool = False) -> tuple[list[str], int]:
        """Objects no record references, and their total size; deleted only if `delete`."""
        with self._gc_lock(exclusive=True):
            referenced = self.referenced_objects()
            garbage: list[str] = []
            size = 0
            for digest in self.iter_objects():
                if digest not in referenced:
                    path = self.object_path(digest)
                    with contextlib.suppress(FileNotFoundError):
                        size += path.stat().st_size
                        garbage.append(digest)
            if delete and garbage:
                # A new generation before the first deletion, not after the last: a gc
                # killed halfway must still make every kernel forget which objects it
                # believed stored (`writing`), or its next record names deleted ones.
                self._write_atomic(self.root / "gc.generation", secrets.token_hex(8).encode())
                self._known_objects.clear()
                for digest in garbage:
                    with contextlib.suppress(FileNotFoundError):
                        self.object_path(digest).unlink()
            return garbage, size

    def clean_tmp(
        self, *, delete: bool = False, grace: float = TEMP_GRACE_SECONDS
    ) -> tuple[int, int]:
        """Temp files killed processes left in tmp/ (never read, but some are whole staged
        chunks): how many and their size; deleted only if `delete`.

        Only files older than `grace` whose writer (the pid in their name) is no longer
        running count, and only under gc's exclusive lock, which no recording or pull
        staging files there holds (`writing`). The notes of `_locked_note` are never
        touched: the next open finishes their work, and a locked one is live."""
        cutoff = time.time() - grace
        found = size = 0
        with self._gc_lock(exclusive=True):
            for path in list(self.tmp_dir.iterdir()):
                match = _TEMP_NAME.match(path.name)
                if match is None:
                    continue
                try:
                    stat = path.lstat()
                except FileNotFoundError:
                    continue
                if stat.st_mtime > cutoff or _process_alive(int(match.group(1))):
                    continue
                if delete:
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        continue
                found += 1
                size += stat.st_size
        return found, size

    # -- verification ---------------------------------------------------------------

    def fsck(self) -> list[Problem]:
        """Verify every record and object; returns the problems (empty means healthy)."""
        problems: list[Problem] = []
        referenced: dict[str, list[str]] = {}  # object → every experiment that uses it
        record_ids = set()
        unreadable = set()  # named once, as a record problem, not again as index problems
        for experiment_id in self.iter_record_ids():
            short = experiment_id[:SHORT_ID_LENGTH]
            relative = self.record_path(experiment_id).relative_to(self.root)
            fix = f"; delete {relative} (then `nbexp pull` it again if a remote has it)"
            try:
                body = json.loads(self.record_path(experiment_id).read_bytes())
                experiment = Experiment.from_dict(body)
            except (ValueError, UnicodeDecodeError, RecordError) as error:
                problems.append(Problem("record", short, f"unreadable: {error}{fix}"))
                unreadable.add(experiment_id)
                continue
            record_ids.add(experiment_id)  # readable: the index should list it
            # the id field is not hashed into the id, so it is compared on its own
            if self.make_id(body) != experiment_id or body.get("id") != experiment_id:
                problems.append(Problem("record", short, f"content does not match its id{fix}"))
            for digest in experiment.object_hashes():
                referenced.setdefault(digest, []).append(short)
        for digest, owners in sorted(referenced.items()):
            users = ", ".join(sorted(set(owners)))  # every one: each is an experiment to fix
            path = self.object_path(digest)
            if not path.exists():
                problems.append(Problem("object", digest[:12], f"missing (used by {users})"))
            elif hash_file(path)[0] != digest:
                problems.append(Problem("object", digest[:12], f"corrupt (used by {users})"))
        try:
            _check_header(self.index_path)
            with self._lock:
                check = [row[0] for row in self._db.execute("PRAGMA integrity_check(3)")]
                indexed = {row[0] for row in self._db.execute("SELECT id FROM experiments")}
                if check == ["ok"]:
                    self._index_answers_or_raise()
        except sqlite3.DatabaseError as error:
            if "locked" in str(error) or "busy" in str(error):  # no damage: say so
                raise self._index_failure(error) from error
            check = [str(error)]
        except DamagedIndexError as error:
            check = [_first_clause(str(error))]
        if check != ["ok"]:  # pages SQLite can no longer trust, even where a listing still works
            problems.append(
                Problem("index", "index.sqlite", f"damaged ({check[0]}); run `nbexp reindex`")
            )
            return problems
        for missing in sorted(record_ids - indexed):
            problems.append(
                Problem(
                    "index",
                    missing[:SHORT_ID_LENGTH],
                    "record not in the index; run `nbexp reindex`",
                )
            )
        for stale in sorted(indexed - record_ids - unreadable):
            problems.append(
                Problem(
                    "index", stale[:SHORT_ID_LENGTH], "indexed but no record; run `nbexp reindex`"
                )
            )
        return problems

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _index_guard(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` on an index that heals itself: one another process replaced is reopened
    (`_follow_index`), and a damaged one is rebuilt from the records (`_rebuild_index`, one
    line on stderr) and the call tried once more. Other failures (a lock held too long, a
    read-only file, a full disk) are one StoreError line naming the fix (`_index_failure`)
    instead of a traceback from sqlite3. Errors that mean a bug in nbexp (ProgrammingError,
    IntegrityError, ...) pass unchanged."""

    @functools.wraps(method)
    def guarded(self: Store, *args: Any, **kwargs: Any) -> Any:
        if self._healing:  # a call made while the index is being rebuilt: no second rebuild
            return method(self, *args, **kwargs)
        self._follow_index()
        for attempt in range(2):
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as error:
                if type(error) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
                    raise
                failure = self._index_failure(error)
                if attempt or not isinstance(failure, DamagedIndexError):
                    raise failure from error
            except DamagedIndexError as error:
                failure = error
                if attempt:
                    raise
            self._rebuild_index(str(failure))
        raise AssertionError("unreachable")

    return guarded


# Every method that reads or writes the index once the store is open (opening it is checked
# in _open_index; reindex and fsck handle damage themselves).
for _name in (
    "_index_upsert", "_delete_row", "rows", "table", "count", "keys", "resolve", "names_count",
    "_order",
    "file_hash", "cache_get", "cache_put", "rebuild_columns",
):  # fmt: skip
    if hasattr(Store, _name):
        setattr(Store, _name, _index_guard(getattr(Store, _name)))


def _process_alive(pid: int) -> bool:
    """Whether a process of this pid runs here (a reused pid errs on the side of keeping)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def _is_utf8(text: str) -> bool:
    """False for a path holding bytes the file system could not decode (os.fsdecode turns
    them into lone surrogates, which neither SQLite nor JSON-as-UTF-8 can keep)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _materialise_columns(
    connection: sqlite3.Connection, wanted: list[tuple[str, str]] | None = None
) -> dict[tuple[str, str], str]:
    """Give each listed key (all keys when None) a plain column of `experiments`, holding its
    flat values; returns {(section, key): column} for those that have one."""
    rows = connection.execute("SELECT rowid, section, key, physical FROM columns").fetchall()
    existing = {row[1] for row in connection.execute("PRAGMA table_info(experiments)")}
    chosen = set(wanted) if wanted is not None else None
    result: dict[tuple[str, str], str] = {}
    for rowid, section, key, physical in rows:
        if chosen is not None and (section, key) not in chosen:
            continue
        if physical is None:
            if len(existing) >= MAX_PHYSICAL_COLUMNS:
                continue
            physical = f"v{rowid}"
            connection.execute("UPDATE columns SET physical = ? WHERE rowid = ?", (physical, rowid))
        if physical not in existing:
            try:
                connection.execute(f"ALTER TABLE experiments ADD COLUMN {physical}")
            except sqlite3.OperationalError as error:  # another process added it just now
                if "duplicate column" not in str(error):
                    raise
            existing.add(physical)
        result[(section, key)] = physical
    return result


def _rebuild_columns(connection: sqlite3.Connection) -> None:
    """Recompute the key list from the index rows and refill every plain column."""
    for statement in _REBUILD_COLUMNS.split(";"):
        if statement.strip():
            connection.execute(statement)
    physical = _materialise_columns(connection)
    if physical:
        assignments = ", ".join(
            f"{column} = {query_language.json_number_sql(section)[1]}"
            for (section, _), column in physical.items()
        )
        paths = [_json_path(key) for (_, key) in physical for _ in range(3)]
        connection.execute(f"UPDATE experiments SET {assignments}", paths)


def _sqlite_number(value: Any) -> Any:
    """A flat value as its plain column holds it: an int beyond SQLite's 64 bits as the REAL
    json_extract would give for it (binding it as it is raises OverflowError, which would
    lose the whole record for `seed = 10**20`; beyond a float's range it is ±inf), and
    {"$float": "inf"} as the float it stands for."""
    if isinstance(value, dict):
        return float(value["$float"])
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def _is_flat(value: Any) -> bool:
    """A value with a plain column: a number (not a bool), a string, null, or ±inf
    ({"$float": "inf"}; not nan, which SQLite would store as NULL, losing it)."""
    if isinstance(value, dict):
        return len(value) == 1 and value.get("$float") in ("inf", "-inf")
    return value is None or (isinstance(value, (int, float, str)) and not isinstance(value, bool))


def _json_path(key: str) -> str:
    """The JSON path of one top-level key, bound as a parameter (a key is data, never SQL)."""
    return '$."' + key.replace('"', '\\"') + '"'


def _decode(text: str) -> dict[str, Any]:
    from .record import decode_value

    value: dict[str, Any] = decode_value(json.loads(text))
    return value


_SORT_KEY = re.compile(r"^(params|metrics)\.(.+)$", re.DOTALL)


def sort_key(sort: str | None) -> tuple[str, str | None, bool]:
    """A sort key (`created`, `-metrics.f1`, `params.lr`) as (column or section, key or None,
    reversed). Sort keys are data, like queries: a `StoreError` naming the keys there are for
    any other; a param or metric name never reaches the SQL text (`Store._order` binds it)."""
    text = (sort or "created").strip()
    reverse = text.startswith("-")
    key = text[1:] if reverse else text
    if key in SORTABLE:
        return key, None, reverse
    match = _SORT_KEY.match(key)
    if match and match.group(2).strip():
        return match.group(1), match.group(2), reverse
    raise QueryError(
        f"cannot sort by `{sort}`; sort by {', '.join(SORTABLE)}, params.NAME or metrics.NAME "
        "(prefix with - to reverse)"
    )


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


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_filesystem(folder: Path) -> None:
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


def _enable_wal(connection: sqlite3.Connection, patience: float = 60.0) -> None:
    """Put the index in WAL mode. Switching a new index file to WAL takes an exclusive lock
    without waiting out the busy timeout, so processes creating a store at the same moment
    got "database is locked" here (and were told the index was unreadable): wait for it
    as long as the busy timeout would. An index already in WAL mode needs no lock at all."""
    if str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + patience
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _add_origin_column(connection: sqlite3.Connection) -> None:
    """Indexes made before remotes existed lack the `origin` column: add it in place."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(experiments)")}
    if "origin" not in columns:
        try:
            connection.execute("ALTER TABLE experiments ADD COLUMN origin TEXT")
        except sqlite3.OperationalError as error:  # another process added it just now
            if "duplicate column" not in str(error):
                raise


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def store_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The `.nbexp` folder that `open_store(path)` opens."""
    if path is None:
        return find_store_root()
    candidate = Path(path).expanduser().absolute()
    return candidate if candidate.name == STORE_DIRNAME else find_store_root(candidate)


def set_aside_index(root: str | os.PathLike[str]) -> None:
    """Move a damaged index to index.sqlite.damaged (replacing an older one; its WAL and
    shared memory go with it) so a fresh one can be built from the records. Nothing is
    deleted that a user might want to look at."""
    index_path = Path(root) / "index.sqlite"
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(index_path) + suffix)
        with contextlib.suppress(FileNotFoundError):
            os.replace(source, Path(str(index_path) + ".damaged" + suffix))


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None if it is missing: tells a replaced file apart."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_header(index_path: Path) -> None:
    """A DamagedIndexError for an index whose header SQLite would misread: a wrong magic, or
    read/write format bytes (18, 19) other than 1 (legacy) or 2 (WAL) — with a flipped byte
    18 SQLite takes the file for read-only and every write fails as if it were."""
    try:
        with open(index_path, "rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return
    except OSError:
        return  # unreadable: sqlite3 says why
    if not header:
        return  # a new, empty file: SQLite writes its header
    if (
        len(header) < 100
        or not header.startswith(_SQLITE_MAGIC)
        or header[18] not in (1, 2)
        or header[19] not in (1, 2)
    ):
        raise DamagedIndexError(
            f"the store's index {index_path} is damaged (its header is not a valid SQLite "
            "header); rebuild it from the records with `nbexp reindex`"
        )


def _say(line: str) -> None:
    """A one-line notice for the user (stderr): what the store did on its own."""
    print(line, file=sys.stderr, flush=True)


def _first_clause(why: str) -> str:
    """An error line up to its advice: "the index … is damaged (…)" without "; rebuild …"."""
    return why.split("; rebuild it", 1)[0]


def open_store(path: str | os.PathLike[str] | None = None) -> Store:
    """The store for `path` (a `.nbexp` folder or a folder inside a project; default: cwd)."""
    root = store_root(path)
    with _stores_lock:
        store = _stores.get(root)
        if store is None or not store.root.exists():
            store = Store(root)
            _stores[root] = store
        return store
