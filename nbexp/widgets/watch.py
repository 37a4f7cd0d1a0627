"""Noticing that a store changed, so open tables can refresh themselves.

One `Watcher` per store, shared by every table on it: a daemon thread compares a cheap
signature (row count and newest id: two indexed SQLite reads) every `interval` seconds,
which also sees experiments recorded by other kernels and the CLI; and a `post_run_cell`
hook wakes that thread right after each cell of this kernel, so a `%%experiment` shows up at
once without the refresh holding up the next cell.
The thread and the hook exist only while a table listens, and stop when the last one closes.
At most MAX_LISTENERS tables per store refresh themselves: a notebook re-run many times
would otherwise keep every old, invisible table refreshing; the oldest are told to stop.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .. import api
from ..errors import NbexpError
from ..store import Store

MAX_LISTENERS = 8
Signature = tuple[int, str | None]


class Listener(Protocol):
    def store_changed(self) -> None: ...

    def watching_stopped(self) -> None: ...


def signature(store: Store) -> Signature:
    """Changes whenever an experiment is added or deleted (tags do not change it)."""
    return api.newest(store=store)


class Watcher:
    """Calls its listeners' `store_changed` when the store's signature changes."""

    def __init__(self, store: Store, interval: float | None) -> None:
        self.store = store
        self.interval = interval
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Signature | None = None

    @property
    def listening(self) -> int:
        return len(self._listeners)

    def add(self, listener: Listener) -> None:
        dropped: list[Listener] = []
        with self._lock:
            if self._last is None:
                self._last = self._signature()
            self._listeners.append(listener)
            while len(self._listeners) > MAX_LISTENERS:
                dropped.append(self._listeners.pop(0))
            if self.interval and self._thread is None:
                self._stop.clear()
                self._wake.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"nbexp-watch {self.store.root}", daemon=True
                )
                self._thread.start()
        for listener in dropped:
            listener.watching_stopped()

    def remove(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
            thread = self._thread if not self._listeners else None
            if thread is not None:
                self._thread = None
                self._stop.set()
                self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _signature(self) -> Signature | None:
        try:
            return signature(self.store)
        except (NbexpError, OSError, ValueError, sqlite3.Error):
            return None  # a store being rebuilt or removed: try again next time

    def check(self) -> bool:
        """Compare the signature now; tell the listeners when it changed. Returns whether."""
        with self._check_lock:
            current = self._signature()
            if current is None or current == self._last:
                return False
            self._last = current
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener.store_changed()
            except Exception:  # one broken table must not stop the others' refreshes
                continue
        return True

    def poke(self) -> None:
        """Check soon: at once on the watching thread when there is one, else right here."""
        if self._thread is not None:
            self._wake.set()
        else:
            self.check()

    def _run(self) -> None:
        stop, wake = self._stop, self._wake
        while True:
            wake.wait(self.interval)
            wake.clear()
            if stop.is_set():
                return
            self.check()


_watchers: dict[tuple[Path, float | None], Watcher] = {}
_registry_lock = threading.Lock()
_hooked: list[Any] = []  # the shell whose post_run_cell runs `_after_cell`, if any


def watch(store: Store, listener: Listener, interval: float | None) -> Callable[[], None]:
    """Start telling `listener` about changes to `store`; returns the function that stops it."""
    key = (store.root, interval)
    with _registry_lock:
        watcher = _watchers.get(key)
        if watcher is None or watcher.store is not store:
            watcher = _watchers[key] = Watcher(store, interval)
        _hook_cells()
    watcher.add(listener)

    def stop() -> None:
        watcher.remove(listener)
        with _registry_lock:
            if not watcher.listening and _watchers.get(key) is watcher:
                del _watchers[key]
            if not _watchers:
                _unhook_cells()

    return stop


def check_all() -> None:
    """Check every watched store soon (after a cell ran): on the watching threads when they
    run, so a table refreshing itself never holds up the next cell."""
    with _registry_lock:
        watchers = list(_watchers.values())
    for watcher in watchers:
        watcher.poke()


def _after_cell(result: Any = None) -> None:
    check_all()


def _hook_cells() -> None:
    if _hooked:
        return
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    shell = get_ipython()
    if shell is not None:
        shell.events.register("post_run_cell", _after_cell)
        _hooked.append(shell)


def _unhook_cells() -> None:
    while _hooked:
        shell = _hooked.pop()
        with contextlib.suppress(ValueError):
            shell.events.unregister("post_run_cell", _after_cell)
