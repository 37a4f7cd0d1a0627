"""The Python API behind `import nbexp`: plain functions over the store, no IPython needed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .record import Experiment
from .store import Store, open_store

if TYPE_CHECKING:
    import pandas as pd

BASE_COLUMNS = ["id", "name", "created", "status", "duration", "tags"]


def _store(store: Store | str | os.PathLike[str] | None) -> Store:
    return store if isinstance(store, Store) else open_store(store)


def experiments(
    query: str | None = None, *, sort: str | None = None, store: Store | str | None = None
) -> pd.DataFrame:
    """One row per experiment, newest first: id, name, created, status, duration, tags,
    then `params.*` and `metrics.*` columns. `query` filters, e.g. "metrics.f1 > 0.8"."""
    import pandas as pd

    rows = _store(store).rows(query, sort=sort)
    columns: dict[str, list[Any]] = {name: [] for name in BASE_COLUMNS}
    param_names: dict[str, None] = {}
    metric_names: dict[str, None] = {}
    for row in rows:
        param_names.update(dict.fromkeys(row["params"]))
        metric_names.update(dict.fromkeys(row["metrics"]))
    extra: dict[str, list[Any]] = {f"params.{k}": [] for k in param_names} | {
        f"metrics.{k}": [] for k in metric_names
    }
    for row in rows:
        columns["id"].append(row["id"][:8])
        columns["name"].append(row["name"])
        columns["created"].append(row["created"])
        columns["status"].append(row["status"])
        columns["duration"].append(row["duration"])
        columns["tags"].append(row["tags"])
        params, metrics = row["params"], row["metrics"]
        for key in param_names:
            extra[f"params.{key}"].append(params.get(key))
        for key in metric_names:
            extra[f"metrics.{key}"].append(metrics.get(key))
    frame = pd.DataFrame({**columns, **extra})
    frame["created"] = pd.to_datetime(frame["created"], utc=True, format="ISO8601")
    return frame


def get(ref: str, *, store: Store | str | None = None) -> Experiment:
    """One experiment by id prefix, name, tag, `last` or `last~N`."""
    return _store(store).get(ref)


def tag(ref: str, tag_name: str, *, store: Store | str | None = None) -> Experiment:
    """Add a tag to an experiment (records stay immutable; tags live beside them)."""
    target = _store(store)
    return target.add_tag(target.resolve(ref), tag_name)


def remove(ref: str, *, store: Store | str | None = None) -> Experiment:
    """Delete an experiment's record; its objects are freed by `nbexp gc`."""
    target = _store(store)
    experiment = target.get(ref)
    target.delete(experiment.id)
    return experiment


def _live_namespace() -> Any:
    """The namespace to restore into: the running IPython shell's, else `__main__`'s."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        return shell.user_ns
    import __main__

    return __main__.__dict__


def restore(
    ref: str,
    names: list[str] | None = None,
    *,
    recompute: bool = False,
    namespace: Any = None,
    store: Store | str | None = None,
) -> Any:
    """Put an experiment's variables (all, or `names`) back into the live kernel; returns
    a report of what was restored, skipped (and why) and overwritten."""
    from .restorer import restore_into

    target = _store(store)
    experiment = target.get(ref)
    live = namespace if namespace is not None else _live_namespace()
    return restore_into(live, target, experiment, names, recompute=recompute)


def load(ref: str, names: list[str] | None = None, *, store: Store | str | None = None) -> Any:
    """An experiment's variables as a lazy namespace (`old = load("rf-v1"); old.model`),
    loaded on first access, leaving the kernel's own variables untouched."""
    from .restorer import LazyNamespace

    target = _store(store)
    return LazyNamespace(target, target.get(ref), names)
