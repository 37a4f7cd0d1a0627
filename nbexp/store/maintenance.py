"""Keeping the store healthy: rebuilding the index from the records, collecting objects
no record uses (under a store-wide lock that writers share), cleaning what killed processes
left in tmp/, and verifying every record and object (fsck)."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import (
    DamagedIndexError,
    IntegrityError,
    MissingObjectError,
    RecordError,
    RefError,
    StoreError,
)
from ..hashing import hash_file
from ..record import SHORT_ID_LENGTH, Experiment
from . import locks
from .files import file_identity, fsync_dir, process_alive, say
from .index import (
    INSERT_ROW,
    check_header,
    first_clause,
    new_index_in_memory,
    refill_columns,
    set_aside_index,
)
from .packs import PackWriter, iter_pack_files
from .records import StoreRecords

TEMP_GRACE_SECONDS = 3600.0  # tmp/ files younger than this are never collected (as remote gc)
# Packs smaller than this are merged into one by `gc --yes` once there are two or more: every
# process that looks objects up reads each pack's index, so many small packs (small pulls,
# small snapshots) cost every lookup; a large pack is rewritten only when it holds garbage.
SMALL_PACK = 32 << 20


_NOT_A_FILE = (-1, -1)  # an index identity no file has: `_follow_index` reopens next time
_TEMP_NAME = re.compile(r"^(?:\.probe-)?(\d+)-[0-9a-f]+(?:\.tmp)?$")  # _temp_path, the probe


@dataclass(frozen=True)
class Problem:
    """One thing `fsck` found wrong."""

    kind: str
    item: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.item}: {self.detail}"


class StoreMaintenance(StoreRecords):
    """Index rebuilds, gc, tmp cleaning, fsck."""

    _seen_gc_generation: str | None  # the gc generation this process last wrote under

    def _rebuild_index(self, why: str) -> sqlite3.Connection:
        """Rebuild the index from the records, one process at a time (tmp/index.rebuild, an
        exclusive flock): a damaged file is moved aside to index.sqlite.damaged, never
        deleted, and a fresh one filled. A process that waited finds the work done. A
        read-only store builds its index in memory instead, leaving the files alone, unless
        its folder is writable: the index is a cache of the records, so a reader (`nbexp
        list`) still repairs it on disk for everyone, as a writer would."""
        if self.read_only:
            if not self._has_records():
                # nothing recorded yet, and a writer may be creating the index right now:
                # nothing to list, nothing to repair; looked at again on the next call
                with contextlib.suppress(sqlite3.Error, AttributeError):
                    self._db.close()
                self._db = new_index_in_memory()
                self._index_identity = _NOT_A_FILE
                return self._db
            if not self._caches_writable():
                return self._index_in_memory(why)
            with self._repairing():
                self._rebuild_on_disk(why)
            return self._db
        return self._rebuild_on_disk(why)

    @contextlib.contextmanager
    def _repairing(self) -> Iterator[None]:
        """A read-only store, for the block, writes its index as a writer would: to rebuild
        it, or to finish what a killed writer left half done (`_finish_interrupted`). Used
        only where this process may write the folder (`_caches_writable`)."""
        self.read_only = False
        try:
            yield
        finally:
            self.read_only = True
        with contextlib.suppress(sqlite3.Error, AttributeError):
            self._db.close()
        self._db = self._open_index()  # read-only again
        self._index_identity = file_identity(self.index_path)

    def _finish_interrupted_if_writable(self) -> None:
        """`_finish_interrupted` for a read-only store: only when notes of killed writers
        wait in tmp/ and this process may write the folder (the index rows they lack are a
        cache of the records; the listing must show what was recorded or tagged)."""
        if self._has_interrupted_work() and self._caches_writable():
            with self._repairing():
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = self._open_index()  # a writer's connection, for the block
                self._finish_interrupted()

    def _rebuild_on_disk(self, why: str) -> sqlite3.Connection:
        started = time.monotonic()
        with open(self.tmp_dir / "index.rebuild", "a+b") as lock, self._healing_now():
            locks.exclusive(lock)
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
            self._index_identity = file_identity(self.index_path)
            count = self.reindex(progress=True)
        seconds = time.monotonic() - started
        kept = " (the damaged file is kept as index.sqlite.damaged)" if not healthy else ""
        say(
            f"nbexp: {first_clause(why)}; rebuilt it from {count} record"
            f"{'' if count == 1 else 's'} in {seconds:.1f} s{kept}"
        )
        return self._db

    def _index_in_memory(self, why: str) -> sqlite3.Connection:
        """For a read-only store whose index cannot be read: the same index, in memory."""
        with self._healing_now():
            old = getattr(self, "_db", None)
            if old is not None:
                with contextlib.suppress(sqlite3.Error):
                    old.close()
            self._db = new_index_in_memory()
            self._index_identity = file_identity(self.index_path)
            count = self.reindex()
        say(
            f"nbexp: {first_clause(why)}; read {count} record{'' if count == 1 else 's'} "
            "instead (`nbexp reindex` rebuilds the index)"
        )
        return self._db

    def _has_records(self) -> bool:
        with contextlib.suppress(OSError):
            return any(folder.is_dir() for folder in self.records_dir.iterdir())
        return False

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
                say(f"nbexp: rebuilding the index: {len(rows)} records read so far…")
        if progress and shown != started:
            say(f"nbexp: rebuilding the index: all {len(rows)} records read")
        indexed = {row[0] for row in rows}
        with self._lock:
            try:
                with self._db:
                    # damage in pages this rebuild never touches (the name index, the caches)
                    # would outlive it: a damaged index is replaced instead
                    check = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
                    if check != "ok":
                        raise sqlite3.DatabaseError(f"damaged: {check}")
                    self._db.executemany(INSERT_ROW, rows)
                    others = [
                        str(row[0])
                        for row in self._db.execute("SELECT id FROM experiments")
                        if row[0] not in indexed
                    ]
                    # rows not rebuilt: keep those saved meanwhile by another process
                    gone = [(i,) for i in others if not self._loadable(i)]
                    self._db.executemany("DELETE FROM experiments WHERE id = ?", gone)
                    refill_columns(self._db)
            except sqlite3.DatabaseError as error:
                failure = self._index_failure(error, opening=True)
                if not isinstance(failure, DamagedIndexError):  # locked, read-only, disk full
                    raise failure from error
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                set_aside_index(self.root)
                self._db = self._open_index()
                self._index_identity = file_identity(self.index_path)
                with self._db:
                    self._db.executemany(INSERT_ROW, rows)
                    refill_columns(self._db)
            return len(rows)

    def _loadable(self, experiment_id: str) -> bool:
        try:
            self.load(experiment_id)
        except (RecordError, RefError):
            return False
        return True

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while writing objects a record will reference: `gc` waits for it to end.

        Taking it also notices a gc by another process since the last write, and forgets
        which objects this process believed present (gc may have deleted them).
        """
        with self._gc_lock(exclusive=False):
            generation = self._gc_generation()
            if generation != self._seen_gc_generation:
                self._forget_objects()
                self._seen_gc_generation = generation
            yield

    @contextlib.contextmanager
    def _gc_lock(self, *, exclusive: bool) -> Iterator[None]:
        """gc.lock: shared by every process writing objects or staging files in tmp/ for a
        record (`writing`), exclusive for `gc` and `clean_tmp`."""
        with self._file_writes():
            handle = open(self.root / "gc.lock", "a+")  # noqa: SIM115 (closed below)
        with handle, locks.holding(handle, exclusive_lock=exclusive):
            yield

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
        """Objects no record references, and their total size; deleted only if `delete`.

        Loose garbage is unlinked. A pack holding garbage has its live objects written into
        a new pack first (published, durable), and only then is it deleted, index first: a
        gc killed at any point leaves every live object in some pack or loose file. A pack
        whose index is damaged is rewritten the same way, and a pack without an index (a
        writer killed between its two renames) is deleted once it is old. Small packs
        (`small_packs`) are merged into one on the way, their order kept."""
        with self._gc_lock(exclusive=True):
            referenced = self.referenced_objects()
            self._packs.refresh(force=True)
            garbage: list[str] = []
            size = 0
            loose_garbage: list[str] = []
            live_loose: set[str] = set()
            for digest in self.iter_loose_objects():
                if digest in referenced:
                    live_loose.add(digest)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size += self.loose_file(digest).stat().st_size
                    loose_garbage.append(digest)
            counted = set(loose_garbage)
            damaged = self._packs.damaged()
            packs = {name: self._packs.entries(name) for name in self._packs.names()}
            rewrite: list[str] = []
            for name, entries in packs.items():
                dead = [d for d in entries if d not in referenced]
                for digest in dead:
                    if digest not in counted:
                        counted.add(digest)
                        garbage.append(digest)
                        size += entries[digest][1]
                if dead or name in damaged:
                    rewrite.append(name)
            small = self.small_packs()
            if len(small) >= 2:  # merged with those rewritten anyway: one new pack for all
                rewrite += [name for name in small if name not in rewrite]
            garbage = loose_garbage + garbage
            if delete and (garbage or rewrite):
                # A new generation before the first deletion, not after the last: a gc
                # killed halfway must still make every kernel forget which objects it
                # believed stored (`writing`), or its next record names deleted ones.
                self._write_atomic(self.root / "gc.generation", secrets.token_hex(8).encode())
                self._forget_objects()
                for digest in loose_garbage:
                    with contextlib.suppress(FileNotFoundError):
                        self.loose_file(digest).unlink()
                self._repack(packs, rewrite, referenced, live_loose)
            if delete:
                self._remove_orphan_packs()
            return garbage, size

    def small_packs(self) -> list[str]:
        """The packs under SMALL_PACK bytes (their index's entries summed), in name order:
        what `gc --yes` merges into one pack when there are two or more."""
        names = []
        for name in self._packs.names():
            entries = self._packs.entries(name)
            if sum(length for _, length in entries.values()) < SMALL_PACK:
                names.append(name)
        return names

    def _repack(
        self,
        packs: dict[str, dict[str, tuple[int, int]]],
        names: list[str],
        referenced: set[str],
        placed: set[str],
    ) -> None:
        """Replace the packs `names` (of `packs`, name → entries, read under gc's lock) by
        one pack of their live objects that no other kept pack or loose file holds, then
        delete them."""
        placed = set(placed)
        for name, entries in packs.items():
            if name not in names:
                placed.update(entries)
        writer: PackWriter | None = None
        published = ""
        try:
            for name in names:
                with open(self.packs_dir / f"{name}.pack", "rb") as source:
                    for digest, (offset, length) in sorted(
                        packs[name].items(), key=lambda item: item[1]
                    ):
                        if digest in referenced and digest not in placed:
                            if writer is None:
                                with self._file_writes():
                                    writer = PackWriter(self._temp_path())
                            with self._file_writes():
                                writer.add_from(digest, source.fileno(), offset, length)
                            placed.add(digest)
            if writer is not None:
                with self._file_writes():
                    published = writer.publish(self.packs_dir, self._temp_path())
                writer = None
        finally:
            if writer is not None:
                writer.discard()
        for name in names:
            if name == published:  # the same objects at the same places: the same pack
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.packs_dir / f"{name}.idx").unlink()
            with contextlib.suppress(FileNotFoundError):
                (self.packs_dir / f"{name}.pack").unlink()
        fsync_dir(self.packs_dir)
        self._forget_objects()

    def _remove_orphan_packs(self, grace: float = TEMP_GRACE_SECONDS) -> None:
        """Packs without an index, older than `grace`: a writer died between the renames."""
        cutoff = time.time() - grace
        names = {path.name for path in iter_pack_files(self.packs_dir)}
        for path in iter_pack_files(self.packs_dir):
            if path.suffix != ".pack" or f"{path.stem}.idx" in names:
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

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
                if stat.st_mtime > cutoff or process_alive(int(match.group(1))):
                    continue
                if delete:
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        continue
                found += 1
                size += stat.st_size
        return found, size

    def _object_state(self, digest: str) -> str:
        """ "" if the object reads back whole, else "missing" or "corrupt" (or what is wrong
        with its name, when a record names something that is no object's name)."""
        try:
            path = self.object_path(digest)
        except IntegrityError:
            return "not an object's name (32 hex digits)"
        if path.exists():
            return "" if hash_file(path)[0] == digest else "corrupt"
        try:
            self.read_object(digest)
        except MissingObjectError:
            return "missing"
        except IntegrityError:
            return "corrupt"
        return ""

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
        self._packs.refresh(force=True)
        for digest, owners in sorted(referenced.items()):
            users = ", ".join(sorted(set(owners)))  # every one: each is an experiment to fix
            state = self._object_state(digest)
            if state:
                problems.append(Problem("object", digest[:12], f"{state} (used by {users})"))
        for name in sorted(self._packs.damaged()):
            problems.append(
                Problem(
                    "pack",
                    name,
                    "its index is damaged (its objects are still found by reading the pack); "
                    "run `nbexp gc --yes` to rewrite it",
                )
            )
        try:
            check_header(self.index_path)
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
            check = [first_clause(str(error))]
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
