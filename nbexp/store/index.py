"""The SQLite index: a cache of the records that makes listing, filtering and resolving
references fast. It is rebuilt from the records whenever it is missing or cannot be read
(`index_guard`), so a damaged index costs a rebuild, never an answer."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import operator
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import query as query_language
from .. import refs
from ..errors import (
    AmbiguousRefError,
    DamagedIndexError,
    QueryError,
    RefError,
    StoreError,
)
from ..hashing import hash_file
from ..record import SHORT_ID_LENGTH, Experiment
from . import listing_cache
from .files import StoreFiles, file_identity, is_utf8

_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL, status TEXT NOT NULL,
    duration REAL, note TEXT, tags TEXT NOT NULL, params TEXT NOT NULL, metrics TEXT NOT NULL,
    notebook TEXT, sweep TEXT
);
CREATE INDEX IF NOT EXISTS experiments_created ON experiments(created);
CREATE INDEX IF NOT EXISTS experiments_listing ON experiments(created DESC, id);
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


# The index's generation: a random name given when the file is made, and a counter raised by
# every change to the listed rows or the column list (in the same transaction as the change),
# so a cached listing (`listing_cache`) is known to be current with one tiny read.
_GENERATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS generation (
    one INTEGER PRIMARY KEY CHECK (one = 1), name TEXT NOT NULL, changes INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS generation_insert AFTER INSERT ON experiments
    BEGIN UPDATE generation SET changes = changes + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_update AFTER UPDATE ON experiments
    BEGIN UPDATE generation SET changes = changes + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_delete AFTER DELETE ON experiments
    BEGIN UPDATE generation SET changes = changes + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_columns_insert AFTER INSERT ON columns
    BEGIN UPDATE generation SET changes = changes + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_columns_update AFTER UPDATE ON columns
    BEGIN UPDATE generation SET changes = changes + 1; END;
CREATE TRIGGER IF NOT EXISTS generation_columns_delete AFTER DELETE ON columns
    BEGIN UPDATE generation SET changes = changes + 1; END;
CREATE TABLE IF NOT EXISTS changed_rows (change INTEGER PRIMARY KEY, id TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS changed_rows_insert AFTER INSERT ON experiments
    BEGIN INSERT INTO changed_rows (id) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS changed_rows_update AFTER UPDATE ON experiments
    BEGIN INSERT INTO changed_rows (id) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS changed_rows_delete AFTER DELETE ON experiments
    BEGIN INSERT INTO changed_rows (id) VALUES (OLD.id); END;
CREATE TRIGGER IF NOT EXISTS changed_rows_kept AFTER INSERT ON changed_rows
    WHEN NEW.change % 1000 = 0
    BEGIN DELETE FROM changed_rows WHERE change <= NEW.change - 10000; END;
"""
# `changed_rows` logs the id of every row the triggers above see change (the newest 9,000
# to 10,000 changes are kept): a cached listing is brought up to date by reading those rows
# alone. Ids only grow (a new entry is the largest + 1, and the largest is never deleted).

# A cached listing with more changed rows than this since it was written is made again from
# SQL, which then costs less than putting each row in its place.
PATCH_AT_MOST = 200


def _add_generation(connection: sqlite3.Connection) -> None:
    """The generation table and its triggers (indexes made before them get them on open)."""
    connection.executescript(_GENERATION_SCHEMA)
    if connection.execute("SELECT NOT EXISTS (SELECT 1 FROM generation)").fetchone()[0]:
        connection.execute(
            "INSERT OR IGNORE INTO generation VALUES (1, lower(hex(randomblob(16))), 0)"
        )


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


INSERT_ROW = (
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
    # a key already listed as it is: no write (nor a page in the WAL) for nothing
    " WHERE excluded.scalar < scalar"
)


BUSY_TIMEOUT = 60.0  # seconds a process waits for another's lock on the index


SORTABLE = ("created", "name", "status", "duration", "id")


_PHYSICAL = re.compile(r"^v[0-9]+$")  # the plain columns' names, chosen by _materialise_columns


def index_guard(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` on an index that heals itself: one another process replaced is reopened
    (`_follow_index`), and a damaged one is rebuilt from the records (`_rebuild_index`, one
    line on stderr) and the call tried once more. Other failures (a lock held too long, a
    read-only file, a full disk) are one StoreError line naming the fix (`_index_failure`)
    instead of a traceback from sqlite3. Errors that mean a bug in nbexp (ProgrammingError,
    IntegrityError, ...) pass unchanged."""

    @functools.wraps(method)
    def guarded(self: StoreIndex, *args: Any, **kwargs: Any) -> Any:
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


class StoreIndex(StoreFiles):
    """The index: opening and healing it, rows, listings, references, caches."""

    _db: sqlite3.Connection
    _healing: bool  # True while _rebuild_index runs
    _index_identity: tuple[int, int] | None  # the index file this connection reads
    # a read-only index read as an immutable file (see `_open_index_read_only`): its stamp
    _frozen_index: tuple[int, int, int] | None = None

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
        self._index_identity = file_identity(self.index_path)
        if not existed and self._has_records():
            self._db = connection
            self._rebuild_index("the store's index was missing")
            return self._db
        return connection

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
        identity = file_identity(self.index_path)
        frozen = self._frozen_index
        if identity != getattr(self, "_index_identity", None) or (
            frozen is not None and frozen != frozen_stamp(self.index_path)
        ):
            with self._lock:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = self._open_healthy_index()

    def _open_index(self) -> sqlite3.Connection:
        check_header(self.index_path)
        if self.read_only:
            return self._open_index_read_only()
        try:
            connection = sqlite3.connect(
                self.index_path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            _enable_wal(connection, BUSY_TIMEOUT)
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_INDEX_SCHEMA)
            _add_origin_column(connection)
            _add_generation(connection)
            layout = {row[1] for row in connection.execute("PRAGMA table_info(columns)")}
            if "physical" not in layout:  # an index from before plain columns: rebuild the list
                connection.executescript("DROP TABLE columns;" + _INDEX_SCHEMA)
                _add_generation(connection)  # the triggers on `columns` went with it
            empty = connection.execute("SELECT NOT EXISTS (SELECT 1 FROM columns)").fetchone()[0]
            if (
                empty
                and connection.execute("SELECT EXISTS (SELECT 1 FROM experiments)").fetchone()[0]
            ):
                connection.execute("BEGIN")
                refill_columns(connection)
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

    def _open_index_read_only(self) -> sqlite3.Connection:
        """The index as it is, for reading only: nothing is created, migrated or fixed. An
        index that is missing or lacks what this version reads is a DamagedIndexError (the
        read-only store then rebuilds it, on disk where it may, else in memory); a lock held
        past the busy timeout is the StoreError that says so, as for a writer."""
        if not self.index_path.exists():
            raise DamagedIndexError(f"the store's index {self.index_path} is missing")
        self._frozen_index = None
        try:
            try:
                connection = self._connect_read_only("mode=ro")
            except sqlite3.OperationalError:
                # SQLite reads a WAL-mode index through its -shm file, which it cannot create
                # in a folder no one may write (`chattr +i`, a read-only mount): read the file
                # as it is, unless a -wal holds changes not yet in it. Nobody is writing it
                # now (a writer would have made the -shm); `_follow_index` reopens it when
                # the file or its -wal changes.
                stamp = frozen_stamp(self.index_path)
                if os.access(self.root, os.W_OK) or stamp[2] > 0:
                    raise
                connection = self._connect_read_only("mode=ro&immutable=1")
                self._frozen_index = stamp
        except sqlite3.DatabaseError as error:
            failure = self._index_failure(error, opening=True)
            if not isinstance(failure, DamagedIndexError):  # locked, say: not damage
                raise failure from error
            raise DamagedIndexError(
                f"the store's index {self.index_path} cannot be read ({error})"
            ) from error
        except (UnicodeDecodeError, ValueError) as error:
            raise DamagedIndexError(
                f"the store's index {self.index_path} is damaged ({error})"
            ) from error
        return connection

    def _connect_read_only(self, options: str) -> sqlite3.Connection:
        connection = sqlite3.connect(
            f"file:{quote(str(self.index_path))}?{options}",
            uri=True,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            connection.execute(f"SELECT {_ROW_COLUMNS} FROM experiments LIMIT 0").fetchall()
            connection.execute("SELECT section, key, scalar, physical FROM columns LIMIT 0")
        except BaseException:
            connection.close()
            raise
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

    @index_guard
    def _index_upsert(
        self,
        experiment: Experiment,
        body: dict[str, Any] | None = None,
        cache: dict[str, Any] | None = None,
    ) -> None:
        """Index one experiment: its row, with its flat params and metrics in their plain
        columns, written once; and `cache` entries (see `cache_put`) in the same transaction."""
        body = body if body is not None else experiment.to_dict()
        keys = [
            (section, key, int(_is_flat(value)))
            for section in ("params", "metrics")
            for key, value in body[section].items()
        ]
        with self._lock, self._db:
            physical = _listed_columns(self._db, keys)
            values = [
                (body[section][key], column)
                for (section, key), column in physical.items()
                if _is_flat(body[section][key])
            ]
            row = (
                *self._index_row(experiment, body),
                *(_sqlite_number(value) for value, _ in values),
            )
            columns = "".join(f", {column}" for _, column in values)
            self._db.execute(
                f"INSERT OR REPLACE INTO experiments ({_ROW_COLUMNS}{columns}) "
                f"VALUES ({','.join('?' * len(row))})",
                row,
            )
            if cache:  # a cache: a table it cannot write (another nbexp's) costs only that
                self._db.execute("SAVEPOINT cache_entries")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO cache VALUES (?, ?)",
                        [(key, json.dumps(value)) for key, value in cache.items()],
                    )
                except sqlite3.Error:
                    self._db.execute("ROLLBACK TO cache_entries")
                self._db.execute("RELEASE cache_entries")

    @index_guard
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

    @index_guard
    def rebuild_columns(self) -> None:
        """Recompute the param/metric name list from the index (after bulk index writes)."""
        with self._lock, self._db:
            refill_columns(self._db)

    def table(
        self,
        query: str | None = None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[str], list[list[Any]]]:
        """The listing row by row (`listing`'s columns turned into rows)."""
        names, columns = self.listing(query, sort=sort, limit=limit, offset=offset)
        return names, [list(row) for row in zip(*columns, strict=True)]

    @index_guard
    def listing(
        self,
        query: str | None = None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        short_ids: bool = False,
    ) -> tuple[list[str], list[Sequence[Any]]]:
        """The listing column by column — id, name, created, status, duration, tags, origin,
        then `params.*` and `metrics.*` — computed by SQLite in one query. Columns no listed
        experiment has a value for are left out. Column by column because every reader (the
        DataFrame, the CLI's table and CSV) formats and converts whole columns: at 100,000
        experiments the values are most of the cost, so no per-row dict is built, and only
        the JSON of non-flat values is parsed (`short_ids`: ids cut to their short form).
        The whole listing with short ids (what `nbexp list` and `experiments()` ask for) is
        read from `listing_cache`, brought up to date first when the index changed."""
        whole = not (query and query.strip()) and not sort and limit is None and not offset
        if whole and short_ids:
            cached = self._whole_listing()
            if cached is not None:
                return _shown(cached.names, cached.columns, short_ids=True)
        return self._listing(query, sort, limit, offset, short_ids)

    def _caches_writable(self) -> bool:
        """Whether this process may write the store's caches of its records (the index, the
        listing): always for a writer; for a read-only store only when its folder, tmp/ and
        index are writable (not a read-only mount, `chmod a-w` or `chattr +i`)."""
        if not self.read_only:
            return True
        paths = [self.root, self.tmp_dir]
        if self.index_path.exists():
            paths.append(self.index_path)
        return all(os.access(path, os.W_OK) for path in paths)

    @property
    def listing_cache_path(self) -> Path:
        return self.root / "cache" / "listing"

    def _generation(self) -> listing_cache.Generation | None:
        """The index's generation, or None for an index without one (read-only, older)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT name, changes FROM generation").fetchone()
            except sqlite3.OperationalError:  # no such table: an index from before it
                return None
        return (str(row[0]), int(row[1])) if row else None

    def _change_log(self) -> tuple[int, int | None] | None:
        """(the newest, the oldest) entry of `changed_rows`; None for an index without it."""
        with self._lock:
            try:
                newest, oldest = self._db.execute(
                    "SELECT coalesce(max(change), 0), min(change) FROM changed_rows"
                ).fetchone()
            except sqlite3.OperationalError:  # an index from before the log (read-only)
                return None
        return int(newest), oldest

    def _whole_listing(self) -> listing_cache.Cached | None:
        """The whole listing (every key column, full ids) from `listing_cache`: as it is
        while the index is unchanged, else patched with the rows changed since (or made
        again from SQL), then written back. None for an index without a generation."""
        generation = self._generation()
        if generation is None:
            return None
        cached = listing_cache.read(self.listing_cache_path)
        if cached is not None and cached.generation == generation:
            return cached
        log = self._change_log()  # read before the rows: a change after it is seen next time
        newest = log[0] if log is not None else 0
        updated = None
        if cached is not None and log is not None and cached.generation[0] == generation[0]:
            updated = self._patched(cached, *log)
        if updated is None:
            keys = self._key_columns()
            names, columns = self._listing_columns(None, None, None, 0, False, keys)
            updated = listing_cache.Cached(generation, newest, keys, names, columns)
        else:
            updated = dataclasses.replace(updated, generation=generation, last_change=newest)
        if self._caches_writable() and generation == self._generation():
            data = listing_cache.encode(updated)
            if data is not None:
                with contextlib.suppress(StoreError, OSError):  # a cache: best effort
                    self._write_atomic(self.listing_cache_path, data)
        return updated

    @index_guard
    def listing_text(
        self,
        options: str,
        render: Callable[[], bytes | tuple[bytes, Any]],
        patch: Callable[[bytes, Any, list[str]], tuple[bytes, Any] | None] | None = None,
    ) -> bytes:
        """`render()` — a listing's text for `options` (e.g. `nbexp list`'s table), or the
        text and what patches it — kept in `cache/` and given back as it is while the index
        is unchanged (`listing_cache`'s texts): one read instead of listing and formatting
        every experiment again. After a change, `patch(text, rows, changed ids)` brings the
        kept text up to date when it can (rows: what `render` or `patch` gave with it)."""
        generation = self._generation()
        if generation is None:
            alone = render()
            return alone[0] if isinstance(alone, tuple) else alone
        folder = self.listing_cache_path.parent
        path = listing_cache.text_path(folder, options)
        kept = listing_cache.read_text(path, generation, options)
        if kept is not None:
            if self._caches_writable():
                listing_cache.mark_used(path)
            return kept
        log = self._change_log()  # read before the rows: a change after it is seen next time
        made: bytes | tuple[bytes, Any] | None = None
        if patch is not None and log is not None:
            made = self._patched_text(path, options, generation, *log, patch)
        if made is None:
            made = render()
        text, rows = made if isinstance(made, tuple) else (made, None)
        # kept only when nothing changed while it was made: it is then the text of `generation`
        if self._caches_writable() and generation == self._generation():
            with contextlib.suppress(OSError):  # a cache: best effort
                listing_cache.write_unsynced(
                    self._temp_path(), path, listing_cache.encode_text(generation, options, text)
                )
                kept_rows = None
                if rows is not None and log is not None:
                    kept_rows = listing_cache.encode_rows(
                        listing_cache.KeptRows(generation, log[0], rows), options
                    )
                rows_path = listing_cache.rows_path(path)
                if kept_rows is None:
                    rows_path.unlink(missing_ok=True)
                else:
                    listing_cache.write_unsynced(self._temp_path(), rows_path, kept_rows)
                listing_cache.mark_used(path)
                listing_cache.prune_texts(folder)
        return text

    def _patched_text(
        self,
        path: Path,
        options: str,
        generation: listing_cache.Generation,
        newest: int,
        oldest: int | None,
        patch: Callable[[bytes, Any, list[str]], tuple[bytes, Any] | None],
    ) -> tuple[bytes, Any] | None:
        """The kept text for `options` patched with the rows changed since it was made, or
        None when it cannot be: no text or rows kept for it, another index file, a log that
        no longer reaches back to it, too many changes, or `patch` declining."""
        kept = listing_cache.read_rows(listing_cache.rows_path(path), options)
        if kept is None or kept.generation[0] != generation[0] or newest < kept.last_change:
            return None
        if newest > kept.last_change and (oldest is None or oldest > kept.last_change + 1):
            return None  # entries after the text was made were dropped from the log
        text = listing_cache.read_text(path, kept.generation, options)
        if text is None:
            return None
        with self._lock:
            changed = [
                row[0]
                for row in self._db.execute(
                    "SELECT DISTINCT id FROM changed_rows WHERE change > ? LIMIT ?",
                    (kept.last_change, PATCH_AT_MOST + 1),
                )
            ]
        if len(changed) > PATCH_AT_MOST:
            return None
        return patch(text, kept.rows, changed)

    @index_guard
    def listing_columns(
        self, query: str | None = None, ids: Iterable[str] | None = None
    ) -> tuple[list[str], list[Sequence[Any]]]:
        """Every column of the listing in its order — id (in full), name, created, status,
        duration, tags, origin, then every `params.*` and `metrics.*` key the index lists,
        a row with a value there or not —, of the experiments matching `query` (`ids`: only
        those). The whole listing comes from `listing_cache`: do not change its lists."""
        if not (query and query.strip()) and ids is None:
            cached = self._whole_listing()
            if cached is not None:
                return cached.names, cached.columns
        return self._listing_columns(query, None, None, 0, False, self._key_columns(), ids)

    def _patched(
        self, cached: listing_cache.Cached, newest: int, oldest: int | None
    ) -> listing_cache.Cached | None:
        """`cached` with the rows changed since it was written read again from SQL and put
        in their places (deleted ones taken out); None when it cannot be patched — the key
        columns changed otherwise than by new keys at the end, the log no longer reaches
        back to it, or too many rows changed."""
        keys = self._key_columns()
        if keys[: len(cached.keys)] != cached.keys or newest < cached.last_change:
            return None
        if newest > cached.last_change and (oldest is None or oldest > cached.last_change + 1):
            return None  # entries after the cache were dropped from the log
        with self._lock:
            changed = [
                row[0]
                for row in self._db.execute(
                    "SELECT DISTINCT id FROM changed_rows WHERE change > ?", (cached.last_change,)
                )
            ]
        if len(changed) > PATCH_AT_MOST:
            return None
        added = keys[len(cached.keys) :]
        names = [*cached.names, *(f"{section}.{key}" for section, key, _, _ in added)]
        rows = len(cached.columns[0])
        # patched in place (the file's lists are this call's own): a copy would give every
        # value a second reference, and marshal then notes each one for sharing when the
        # listing is written again (4x slower)
        columns: list[list[Any]] = [
            column if isinstance(column, list) else list(column) for column in cached.columns
        ]
        columns += [[None] * rows for _ in added]
        fresh_names, fresh = self._listing_columns(None, None, None, 0, False, keys, changed)
        if fresh_names != names:
            return None
        ids, created = columns[0], columns[2]
        gone = set(changed)
        places = (
            sorted((i for i, ident in enumerate(ids) if ident in gone), reverse=True)
            if len(changed) > 8
            else sorted((ids.index(i) for i in changed if i in ids), reverse=True)
        )
        for place in places:
            for column in columns:
                del column[place]
        for row in range(len(fresh[0])):
            place = listing_cache.place(created, ids, fresh[2][row], fresh[0][row])
            for column, values in zip(columns, fresh, strict=True):
                column.insert(place, values[row])
        return listing_cache.Cached(cached.generation, newest, keys, names, list(columns))

    def _listing(
        self,
        query: str | None,
        sort: str | None,
        limit: int | None,
        offset: int,
        short_ids: bool,
    ) -> tuple[list[str], list[Sequence[Any]]]:
        """The listing from SQL (no cache), columns without a value left out."""
        names, columns = self._listing_columns(
            query, sort, limit, offset, short_ids, self._key_columns()
        )
        return _shown(names, columns, short_ids=False)

    def _listing_columns(
        self,
        query: str | None,
        sort: str | None,
        limit: int | None,
        offset: int,
        short_ids: bool,
        keys: list[tuple[str, str, Any, Any]],
        ids: Iterable[str] | None = None,
    ) -> tuple[list[str], list[Sequence[Any]]]:
        """Every column of the listing (of `keys`, whether or not a row has a value), from
        one query; `ids`: only those rows."""
        names = ["id", "name", "created", "status", "duration", "tags", "origin"]
        select = [f"substr(id, 1, {SHORT_ID_LENGTH})" if short_ids else "id", *names[1:]]
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
        sql, where_args = self._select(query, ids, columns=", ".join(select))
        order, order_args = self._order(sort, False)
        sql += f" ORDER BY {order}"
        args += where_args + order_args
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self._lock:
            raw = self._db.execute(sql, args).fetchall()
        # lists, never tuples: the cache patches them in place, and readers compare them
        columns: list[Sequence[Any]] = (
            list(map(list, zip(*raw, strict=True))) if raw else [[] for _ in names]
        )
        del raw
        from ..record import decode_value

        with self._unreadable_rows():
            columns[5] = [[] if text == "[]" else json.loads(text) for text in columns[5]]
            for position in nested:
                columns[position] = [
                    None if text is None else decode_value(json.loads(text))
                    for text in columns[position]
                ]
        return names, columns

    def _key_columns(self) -> list[tuple[str, str, Any, Any]]:
        with self._lock:
            return self._db.execute(
                "SELECT section, key, scalar, physical FROM columns "
                "ORDER BY section = 'metrics', rowid"
            ).fetchall()

    @index_guard
    def listed_keys(self) -> list[str]:
        """The `params.*` and `metrics.*` columns `listing` shows for the whole store, in its
        order, found without reading the rows out: each key's check stops at the first
        experiment that has it (a table's column names must not cost the whole table)."""
        keys = self._key_columns()
        found: list[Any] = []
        for start in range(0, len(keys), 500):  # SQLite caps a SELECT at 2000 columns
            checks: list[str] = []
            args: list[Any] = []
            for section, key, scalar, physical in keys[start : start + 500]:
                if scalar and physical:
                    checks.append(f"EXISTS (SELECT 1 FROM experiments WHERE {physical} NOT NULL)")
                else:  # JSON null counts as absent, as `listing` decodes it to None
                    checks.append(
                        "EXISTS (SELECT 1 FROM experiments "
                        f"WHERE coalesce({section} -> ?, 'null') != 'null')"
                    )
                    args.append(_json_path(key))
            with self._lock:
                found.extend(self._db.execute(f"SELECT {', '.join(checks)}", args).fetchone())
        return [
            f"{section}.{key}" for (section, key, _, _), has in zip(keys, found, strict=True) if has
        ]

    @index_guard
    def metric_bounds(self, query: str | None = None) -> dict[str, tuple[Any, Any]]:
        """The smallest and largest number (not a bool, not nan) of each metric among the
        experiments matching `query`: `metrics.NAME` → (min, max), computed by SQLite over
        the plain columns; only metrics holding other values too are read out and scanned."""
        keys = [row for row in self._key_columns() if row[0] == "metrics"]
        bounds: dict[str, tuple[Any, Any]] = {}
        plain = [(key, physical) for _, key, scalar, physical in keys if scalar and physical]
        for start in range(0, len(plain), 500):
            chunk = plain[start : start + 500]
            columns = ", ".join(f"MIN({physical}), MAX({physical})" for _, physical in chunk)
            sql, args = self._select(query, None, columns=columns)
            with self._lock:
                found = self._db.execute(sql, args).fetchone()
            for position, (key, physical) in enumerate(chunk):
                low, high = found[2 * position], found[2 * position + 1]
                if isinstance(high, str) and not isinstance(low, str):
                    # SQLite sorts numbers before text: the numbers' largest needs its own look
                    number = f"CASE WHEN typeof({physical}) IN ('integer', 'real') THEN 1 END"
                    sql, args = self._select(query, None, columns=f"MAX({physical})")
                    sql += f" AND {number}" if " WHERE " in sql else f" WHERE {number}"
                    with self._lock:
                        high = self._db.execute(sql, args).fetchone()[0]
                if low is not None and not isinstance(low, str):
                    bounds[f"metrics.{key}"] = (low, high)
        from ..record import decode_value

        for _, key, scalar, physical in keys:
            if scalar and physical:
                continue
            sql, args = self._select(query, None, columns="metrics -> ?")
            with self._lock:
                texts = [row[0] for row in self._db.execute(sql, [_json_path(key), *args])]
            with self._unreadable_rows():
                numbers = [
                    value
                    for text in texts
                    if text is not None
                    for value in [decode_value(json.loads(text))]
                    if isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and value == value  # not nan
                ]
            if numbers:
                bounds[f"metrics.{key}"] = (min(numbers), max(numbers))
        return bounds

    @index_guard
    def count(self, query: str | None = None) -> int:
        sql, args = self._select(query, None, columns="COUNT(*)")
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    @index_guard
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

    @index_guard
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
            plain = {
                (section, key): str(physical)
                for section, key, scalar, physical in self._key_columns()
                if scalar and physical and _PHYSICAL.match(str(physical))
            }  # flat keys compared in their plain columns, as `listing` reads them
            where, where_args = query_language.to_sql(query_language.parse(query), plain)
            clauses.append(f"({where})")
            args.extend(where_args)
        if ids is not None:
            id_list = list(ids)
            clauses.append(f"id IN ({','.join('?' * len(id_list)) or 'NULL'})")
            args.extend(id_list)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return sql, args

    @index_guard
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

    @index_guard
    def names_count(self, prefix: str) -> int:
        """How many experiments have a name starting with `prefix` (case-sensitive). A range
        over the name index, not `LIKE` (which ignores case, so it scans every row: 22 ms per
        record at 100,000 experiments)."""
        if not prefix:
            raise ValueError("names_count needs a prefix")
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM experiments WHERE name >= ? AND name < ?",
                    (prefix, after),
                ).fetchone()[0]
            )

    @index_guard
    def file_hash(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """(hash, size) of a file, re-read only when its size, mtime or inode changed."""
        absolute = os.path.abspath(path)
        if not is_utf8(absolute) or self.read_only:  # UTF-8 names only; readers keep nothing
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

    @index_guard
    def cache_get(self, key: str) -> Any | None:
        """A small JSON value memoised by the store (e.g. a file's tabular profile by hash)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    @index_guard
    def cache_put(self, key: str, value: Any) -> None:
        if self.read_only:  # a cache: a reader simply does not keep what it computed
            return
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?)", (key, json.dumps(value)))

    def change_token(self) -> str:
        """A value that changes whenever another process changes the index (SQLite's
        `data_version` on this connection), or, for an index held in memory, whenever a
        record is added or removed: pollers compare it instead of re-reading listings."""
        self._follow_index()  # an index replaced by another process is reopened first
        if self._index_identity is None or self._index_identity != file_identity(self.index_path):
            try:
                return f"records:{self.records_dir.stat().st_mtime_ns}"
            except OSError:
                return "records:none"
        with self._lock:
            (value,) = self._db.execute("PRAGMA data_version").fetchone()
        device, inode = self._index_identity
        frozen = "" if self._frozen_index is None else ":{}:{}:{}".format(*self._frozen_index)
        return f"index:{device}:{inode}:{value}{frozen}"

    def _rebuild_index(self, why: str) -> sqlite3.Connection:
        """Rebuild the index from the records (StoreMaintenance)."""
        raise NotImplementedError

    def _has_records(self) -> bool:
        raise NotImplementedError


def _listed_columns(
    connection: sqlite3.Connection, keys: list[tuple[str, str, int]]
) -> dict[tuple[str, str], str]:
    """List (section, key, flat) in `columns` and give each its plain column, as
    `_UPSERT_COLUMN` and `_materialise_columns` do; returns {(section, key): column}. A
    record's keys are usually listed already, each with its column: then one read does."""
    listed = {
        (section, key): (scalar, physical)
        for section, key, scalar, physical in connection.execute(
            "SELECT section, key, scalar, physical FROM columns"
        )
    }
    changed = [
        (section, key, flat)
        for section, key, flat in keys
        if (section, key) not in listed or flat < listed[section, key][0]
    ]
    if not changed and all(listed[section, key][1] is not None for section, key, _ in keys):
        return {(section, key): listed[section, key][1] for section, key, _ in keys}
    connection.executemany(_UPSERT_COLUMN, changed)
    return _materialise_columns(connection, [(section, key) for section, key, _ in keys])


def _materialise_columns(
    connection: sqlite3.Connection, wanted: list[tuple[str, str]] | None = None
) -> dict[tuple[str, str], str]:
    """Give each listed key (all keys when None) a plain column of `experiments`, holding its
    flat values; returns {(section, key): column} for those that have one."""
    rows = connection.execute("SELECT rowid, section, key, physical FROM columns").fetchall()
    chosen = set(wanted) if wanted is not None else None
    if chosen is not None:
        rows = [row for row in rows if (row[1], row[2]) in chosen]
    if chosen is not None and all(row[3] is not None for row in rows):
        # every key has its column: made with it, in the same transaction (a column lost
        # to damage fails the write, and the index is rebuilt: `index_guard`)
        return {(section, key): physical for _, section, key, physical in rows}
    existing = {row[1] for row in connection.execute("PRAGMA table_info(experiments)")}
    result: dict[tuple[str, str], str] = {}
    for rowid, section, key, physical in rows:
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


def refill_columns(connection: sqlite3.Connection) -> None:
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


def _shown(
    names: list[str], columns: list[Sequence[Any]], *, short_ids: bool
) -> tuple[list[str], list[Sequence[Any]]]:
    """The listing as readers get it: key columns no row has a value for left out, and
    (`short_ids`) ids cut to their short form."""
    present = [i for i, column in enumerate(columns) if i < 7 or column.count(None) < len(column)]
    if len(present) < len(names):
        names = [names[i] for i in present]
        columns = [columns[i] for i in present]
    else:
        names, columns = list(names), list(columns)
    if short_ids:
        columns[0] = list(map(operator.itemgetter(slice(0, SHORT_ID_LENGTH)), columns[0]))
    return names, columns


def _decode(text: str) -> dict[str, Any]:
    from ..record import decode_value

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


def frozen_stamp(index: Path) -> tuple[int, int, int]:
    """What changes when a writer touches an index: its mtime and size, its -wal's size."""
    try:
        stat = index.stat()
        mtime, size = stat.st_mtime_ns, stat.st_size
    except OSError:
        mtime = size = -1
    try:
        wal = Path(f"{index}-wal").stat().st_size
    except OSError:
        wal = 0
    return mtime, size, wal


def new_index_in_memory() -> sqlite3.Connection:
    """An empty index of this version's layout in memory (a read-only store's fallback)."""
    connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    connection.executescript(_INDEX_SCHEMA)
    _add_origin_column(connection)
    _add_generation(connection)
    connection.isolation_level = "DEFERRED"
    return connection


def set_aside_index(root: str | os.PathLike[str]) -> None:
    """Move a damaged index to index.sqlite.damaged (replacing an older one; its WAL and
    shared memory go with it) so a fresh one can be built from the records. Nothing is
    deleted that a user might want to look at."""
    index_path = Path(root) / "index.sqlite"
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(index_path) + suffix)
        with contextlib.suppress(FileNotFoundError):
            os.replace(source, Path(str(index_path) + ".damaged" + suffix))


_SQLITE_MAGIC = b"SQLite format 3\x00"


# index file → a descriptor kept open (see `_read_header`), the most recently used last
_header_handles: dict[tuple[int, int], int] = {}
_HEADER_HANDLES_KEPT = 64  # beyond that (a test suite's thousand stores), the oldest close
_header_lock = threading.Lock()


def _read_header(index_path: Path) -> bytes:
    """The index file's first 100 bytes, through one descriptor per file kept open. Closing
    any descriptor of a file drops every POSIX lock this process holds on it, SQLite's too:
    a second store opened in a kernel that already has one (a read-only reader beside the
    recorder) would otherwise let another process take the index for unused when it
    closes, and delete the WAL and shared memory under this process's connections. The
    descriptors of the least recently read files close once more than 64 are open."""
    info = os.stat(index_path)
    key = (info.st_dev, info.st_ino)
    with _header_lock:
        handle = _header_handles.pop(key, None)
        if handle is None:
            handle = os.open(index_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            opened = os.fstat(handle)
            key = (opened.st_dev, opened.st_ino)
            if key in _header_handles:  # replaced between stat and open: one per file
                os.close(_header_handles.pop(key))
        _header_handles[key] = handle
        while len(_header_handles) > _HEADER_HANDLES_KEPT:
            os.close(_header_handles.pop(next(iter(_header_handles))))
        return os.pread(handle, 100, 0)


def check_header(index_path: Path) -> None:
    """A DamagedIndexError for an index whose header SQLite would misread: a wrong magic, or
    read/write format bytes (18, 19) other than 1 (legacy) or 2 (WAL) — with a flipped byte
    18 SQLite takes the file for read-only and every write fails as if it were."""
    try:
        header = _read_header(index_path)
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


def first_clause(why: str) -> str:
    """An error line up to its advice: "the index … is damaged (…)" without "; rebuild …"."""
    return why.split("; rebuild it", 1)[0]
