"""Which experiments are stale: an input file or the experiment's own cell changed since it ran.

Checking is cheap enough to run on every listing: a file is re-hashed only when its size,
mtime or inode changed (the store's stat-keyed cache), each path is checked once per call
however many experiments read it, and what a record needs checking (its input files and
notebook) is memoised by record id, since records never change.

The notebook counts as changed only when the experiment's cell is no longer in it as it ran.
Jupyter rewrites the notebook file whenever it saves outputs, so the file's hash alone would
make every experiment stale as soon as the notebook is saved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import NbexpError
from .paths import is_inside, within_project
from .record import Experiment
from .store import Store

MODIFIED = "modified"
MISSING = "missing"


@dataclass(frozen=True)
class Change:
    """One input of an experiment that is no longer what the experiment read."""

    kind: str  # "file" or "notebook"
    path: str
    reason: str  # MODIFIED or MISSING
    dvc: str | None = None  # for a DVC-tracked file: its recorded and current DVC md5

    def __str__(self) -> str:
        return f"{self.kind} {self.path} {self.reason}" + (f" ({self.dvc})" if self.dvc else "")


@dataclass
class Checker:
    """Checks experiments against the files on disk, hashing each path at most once."""

    store: Store
    _hashes: dict[str, str | None] = field(default_factory=dict)
    _cells: dict[str, set[str] | None] = field(default_factory=dict)

    def _hash(self, path: str) -> str | None:
        if path not in self._hashes:
            try:
                if not os.path.isfile(path):  # a device or a pipe would never end
                    raise FileNotFoundError(path)
                self._hashes[path] = self.store.file_hash(path)[0]
            except OSError:
                self._hashes[path] = None
        return self._hashes[path]

    def _notebook_cells(self, path: str) -> set[str] | None:
        """The bodies of the notebook's code cells (the `%%experiment` line taken off)."""
        if path not in self._cells:
            try:
                with open(path, encoding="utf-8") as handle:
                    notebook = json.load(handle)
                self._cells[path] = {
                    _body("".join(cell.get("source", "")))
                    for cell in notebook.get("cells", [])
                    if cell.get("cell_type") == "code"
                }
            except (OSError, ValueError, AttributeError, TypeError):
                self._cells[path] = None
        return self._cells[path]

    def inputs(self, experiment: Experiment) -> dict[str, Any]:
        """What of a record needs checking: its files and notebook (memoised by id)."""
        key = f"inputs:{experiment.id}"
        cached = self.store.cache_get(key)
        if cached is not None:
            return dict(cached)
        files = [
            [
                str(item.path),
                str(item.abspath or item.path),
                item.hash,
                (item.dvc or {}).get("md5"),
            ]
            for item in experiment.data
            if item.is_file and item.hash
        ]
        code = experiment.code
        notebook = [code.notebook, code.notebook_hash, _body(code.cell)] if code.notebook else None
        summary = {"files": files, "notebook": notebook}
        self.store.cache_put(key, summary)
        return summary

    def check(self, experiment: Experiment | str) -> list[Change]:
        """The changes that make an experiment (a record or a full id) stale; empty when it
        is fresh. Given an id whose inputs are memoised, the record is not even read.

        A pulled experiment ran on another machine: its inputs missing here say nothing about
        it, so only inputs present here and different count."""
        if isinstance(experiment, str):
            cached = self.store.cache_get(f"inputs:{experiment}")
            inputs = (
                dict(cached) if cached is not None else self.inputs(self.store.load(experiment))
            )
        else:
            inputs = self.inputs(experiment)
        experiment_id = experiment if isinstance(experiment, str) else experiment.id
        pulled = self.store.origin(experiment_id) is not None
        changes = []
        for shown, path, digest, *dvc_md5 in inputs["files"]:
            if pulled:  # its paths are another machine's: only files in this project count
                inside = within_project(shown, self.store.root.parent)
                if inside is None:
                    continue
                path = str(inside)
            current = self._hash(path)
            if current is None and pulled:
                continue
            if current != digest:
                reason = MISSING if current is None else MODIFIED
                changes.append(Change("file", shown, reason, _dvc_note(path, dvc_md5)))
        if inputs["notebook"] and not (
            pulled and not is_inside(inputs["notebook"][0], self.store.root.parent)
        ):
            path, digest, body = inputs["notebook"]
            current = self._hash(path)
            if current is None:
                if not pulled:
                    changes.append(Change("notebook", path, MISSING))
            elif current != digest:
                cells = self._notebook_cells(path)
                if cells is None or body not in cells:
                    changes.append(Change("notebook", path, MODIFIED))
        return changes


def _dvc_note(path: str, recorded: list[str | None]) -> str | None:
    """`dvc md5 1a2b… recorded, now 3c4d… (data/train.csv.dvc)` for a DVC-tracked input."""
    if not recorded or not recorded[0]:
        return None
    from .dvc import DvcFileError, tracked

    try:
        now = tracked(path)
    except (DvcFileError, OSError):
        now = None
    where = f" ({now.source})" if now else ""
    current = now.md5[:12] if now else "not tracked"
    return f"dvc md5 {recorded[0][:12]} recorded, now {current}{where}"


def _body(cell: str) -> str:
    """A cell without its `%%experiment` line, trailing blanks stripped, for comparison."""
    first, _, rest = cell.partition("\n")
    if first.lstrip().startswith("%%experiment"):
        cell = rest
    return "\n".join(line.rstrip() for line in cell.strip("\n").splitlines())


def check(store: Store, experiment: Experiment) -> list[Change]:
    """What changed since `experiment` ran; empty when it is fresh."""
    return Checker(store).check(experiment)


def stale(store: Store, ids: Iterable[str] | None = None) -> dict[str, list[Change]]:
    """id → changes, for every stale experiment among `ids` (default: all in the store)."""
    checker = Checker(store)
    chosen = list(ids) if ids is not None else [row["id"] for row in store.rows()]
    found: dict[str, list[Change]] = {}
    for experiment_id in chosen:
        try:
            changes = checker.check(experiment_id)
        except NbexpError:
            continue  # a damaged record is fsck's business, not staleness'
        if changes:
            found[experiment_id] = changes
    return found


def stale_ids(store: Store, ids: Iterable[str] | None = None) -> set[str]:
    """The ids of the stale experiments (for marking rows in a table)."""
    return set(stale(store, ids))
