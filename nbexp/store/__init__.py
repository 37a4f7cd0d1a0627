"""The store: `.nbexp/` on disk — immutable records, content-addressed objects, an index.

Layout::

    .nbexp/
      records/ab/<id>.json   one immutable JSON record per experiment
      tags/<id>.json         tags added after the run (the only mutable per-experiment file)
      origins/<id>.json      where a pulled experiment came from (remote name and URL)
      objects/ab/<rest>      content-addressed blobs, named by their xxh3-128 hash (loose)
      packs/pack-<h>.pack    many objects of one batch in one file (a large snapshot), and
      packs/pack-<h>.idx     its index: digest → offset, length (see `packs`)
      index.sqlite           listing/filtering index, rebuilt from the records when needed
      cache/listing          the whole listing, column by column (see `listing_cache`)
      sync/<remote>.json     what each remote had when we last exchanged tags with it
      gc.lock, gc.generation gc's store-wide lock, and what tells writers a gc ran
      tmp/                   files being written; renamed into place only once complete
      config.json            settings, e.g. remotes (`nbexp remote add`)

Every file becomes visible by an atomic rename, so a crash leaves either the old state or the
new one, never half a record (files a killed process left in tmp/ are never read, and
`nbexp gc` removes them once they are old: `clean_tmp`). Objects and small files are fsynced
before their rename; a record is fsynced after it, together with its folder (one wait for the
disk, during which its index row is written), and saving returns once both are on disk. Saving and deleting touch
two places, a record file and its index row; a locked note in tmp/ covers the moment between,
and the next process to open the store finishes what a killed one left half done. SQLite in
WAL mode with a busy timeout lets many kernels and CLI processes share a store. A write the
disk or SQLite refuses (full, read-only, locked) is one StoreError line saying what is wrong
and what to do. Nothing here imports IPython.

The store is a house of small rooms, one concern a module, joined here into `Store`:
`files` (atomic writes, notes, origins), `locks` (flock), `objects` (loose and packed:
`packs`), `index` (SQLite, healing,
listings, references), `records` (save, load, delete, tags, pulled records), `sync` (what
remotes need remembered), `maintenance` (reindex, gc, tmp cleaning, fsck). No other module
touches the store's files.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
from pathlib import Path

from .. import refs
from ..errors import StoreError
from .files import STORE_ENV, write_atomically
from .index import SORTABLE, new_index_in_memory, set_aside_index, sort_key
from .maintenance import TEMP_GRACE_SECONDS, Problem, StoreMaintenance
from .packs import PackSet
from .records import DELETING_SUFFIX, UNINDEXED_SUFFIX
from .sync import SyncMarkers, editing_config, read_config

__all__ = [
    "DELETING_SUFFIX",
    "MIN_PREFIX",
    "SORTABLE",
    "STORE_DIRNAME",
    "STORE_ENV",
    "TEMP_GRACE_SECONDS",
    "UNINDEXED_SUFFIX",
    "Problem",
    "Store",
    "SyncMarkers",
    "editing_config",
    "find_store_root",
    "open_store",
    "read_config",
    "set_aside_index",
    "sort_key",
    "store_root",
    "writable",
    "write_atomically",
]

STORE_DIRNAME = ".nbexp"
MIN_PREFIX = refs.MIN_PREFIX


def find_store_root(start: str | os.PathLike[str] | None = None) -> Path:
    """Where the store of `start` (default: cwd) lives, per SPEC §2; not created here.

    `NBEXP_STORE` wins when no explicit start folder is given.
    """
    override = os.environ.get(STORE_ENV)
    if override and start is None:
        relative = not os.path.isabs(override)  # "~/x" too: its HOME is part of the answer
        return _override_root(
            override,
            os.getcwd() if relative else "",
            os.environ.get("HOME", "") if relative else "",
        )
    here = Path(start or os.getcwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / STORE_DIRNAME).is_dir():
            return folder / STORE_DIRNAME
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder / STORE_DIRNAME
    return here / STORE_DIRNAME


@functools.lru_cache(maxsize=16)
def _override_root(override: str, cwd: str, home: str) -> Path:
    """`NBEXP_STORE` as a folder (read on every run: resolved once per value and folder)."""
    return Path(override).expanduser().absolute()


class Store(StoreMaintenance):
    """One `.nbexp/` folder. Cheap to open; safe to use from several processes at once.

    `read_only=True` (the server extension, listings, the widget) creates nothing and writes
    no record, object or tag; a folder without a store reads as an empty store. Where the
    folder is writable it still keeps the index true, as a writer opening it would: an index
    it cannot read is rebuilt on disk (else in memory), and index rows a killed writer left
    unwritten are finished (`_finish_interrupted`)."""

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False) -> None:
        super().__init__(root)
        self.read_only = read_only
        self._known_objects = set()
        self._batch = threading.local()
        self._packs = PackSet(self.root / "packs")
        self._seen_gc_generation = None
        self._healing = False  # True while _rebuild_index runs
        self._index_identity = None
        if read_only:
            if not self.root.is_dir():  # no store yet: read as an empty one, nothing created
                self._db = new_index_in_memory()
                return
        else:
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
        if not read_only:
            self._finish_interrupted()
        else:
            self._finish_interrupted_if_writable()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}{', read_only=True' if self.read_only else ''})"

    def sync_markers(self, remote_url: str) -> SyncMarkers:
        """What was last exchanged with the remote at `remote_url` (see `sync`)."""
        return SyncMarkers(self, remote_url)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._packs.close()


_stores: dict[tuple[Path, bool], Store] = {}
_stores_lock = threading.Lock()


def store_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The `.nbexp` folder that `open_store(path)` opens."""
    if path is None:
        return find_store_root()
    candidate = Path(path).expanduser().absolute()
    return candidate if candidate.name == STORE_DIRNAME else find_store_root(candidate)


def open_store(path: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> Store:
    """The store for `path` (a `.nbexp` folder or a folder inside a project; default: cwd).
    `read_only=True` for readers: nothing is created or written (see `Store`)."""
    return _open(store_root(path), read_only)


def writable(store: Store) -> Store:
    """`store` itself when it may write, else the same folder opened for writing (a widget
    reads through a read-only store, and its Tag and Delete buttons write)."""
    return _open(store.root, False) if store.read_only else store


def _open(root: Path, read_only: bool) -> Store:
    with _stores_lock:
        store = _stores.get((root, read_only))
        if store is None or not store.root.exists():
            store = Store(root, read_only=read_only)
            _stores[(root, read_only)] = store
        return store
