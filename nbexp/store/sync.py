"""What the store must remember about its remotes, kept outside the disposable index.

The settings (`config.json`: remotes, the default one) and, per remote, what was last
exchanged with it: each experiment's tags as they were after the last push or pull and the
remote's stamp of its tags file. Those tags are the base of the three-way merge that lets a
removed tag stay removed; kept in the index's cache table they were lost whenever the index
was rebuilt, and removed tags came back. Here they live in `sync/<remote>.json`, written
atomically once per push or pull under a lock, merged with what another process wrote
meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..hashing import hash_bytes
from . import locks

if TYPE_CHECKING:
    from . import Store

CONFIG_NAME = "config.json"


def read_config(store: Store) -> dict[str, Any]:
    """The store's settings (empty when there are none); damage is one line naming the fix."""
    path = store.root / CONFIG_NAME
    try:
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise StoreError(f"{path} is not valid JSON ({error}); fix or delete it") from error
    return config if isinstance(config, dict) else {}


@contextlib.contextmanager
def editing_config(store: Store) -> Iterator[dict[str, Any]]:
    """Read, change and atomically rewrite config.json, one process at a time."""
    store._writable("changing the settings")
    with store._file_writes():
        handle = open(store.root / "config.lock", "a+")  # noqa: SIM115 (closed below)
    with handle, locks.holding(handle):
        config = read_config(store)
        yield config
        store.write_file(
            store.root / CONFIG_NAME,
            (json.dumps(config, indent=1, sort_keys=True) + "\n").encode(),
        )


class SyncMarkers:
    """Per experiment, what was last exchanged with one remote: {"tags": [...], "stamp": ...}.

    Read once, changed in memory (safely from a transfer's threads), written by `save`."""

    def __init__(self, store: Store, remote_url: str) -> None:
        self._store = store
        self._url = remote_url
        self._path = store.root / "sync" / f"{hash_bytes(remote_url.encode())[:16]}.json"
        self._markers = self._read(self._path)
        self._changed: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _read(path: Path) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return {}
        markers = data.get("markers") if isinstance(data, dict) else None
        return markers if isinstance(markers, dict) else {}

    def get(self, experiment_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._changed.get(experiment_id) or self._markers.get(experiment_id)
        if found is None:  # kept by an nbexp from before sync/: in the index's cache table
            found = self._store.cache_get(f"remote-tags:{self._url}:{experiment_id}")
        return dict(found) if isinstance(found, dict) else {}

    def put(self, experiment_id: str, marker: dict[str, Any]) -> None:
        with self._lock:
            self._changed[experiment_id] = marker

    def save(self) -> None:
        """Write the changes, merged into what other processes saved meanwhile."""
        if not self._changed:
            return
        lock_path = self._path.with_suffix(".lock")
        with self._store._file_writes():  # a full or read-only disk: one line, not OSError
            self._path.parent.mkdir(exist_ok=True)
            handle = open(lock_path, "a+")  # noqa: SIM115 (closed below)
        with handle, locks.holding(handle):
            markers = self._read(self._path)
            with self._lock:
                markers.update(self._changed)
                self._changed.clear()
            data = {"remote": self._url, "markers": markers}
            self._store.write_file(self._path, json.dumps(data, sort_keys=True).encode())
            self._markers = markers
