"""The Python API behind `import nbexp`: plain functions over the store, no IPython needed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .record import Experiment
from .subrecords import IndexRow

if TYPE_CHECKING:
    import pandas as pd

    from .store import Store


def _store(store: Store | str | os.PathLike[str] | None) -> Store:
    """The store for a verb that may write (a read-only one given is opened for writing)."""
    from .store import Store, open_store, writable  # imported when used: `nbexp --version`

    return writable(store) if isinstance(store, Store) else open_store(store)


def reading(store: Store | str | os.PathLike[str] | None = None) -> Store:
    """The store for a verb that only reads (listings, `get`, `diff`): opened read-only, so
    nothing is created or written, and a store the user may not write still lists. A folder
    without a store yet reads as an empty one."""
    from .store import Store, open_store

    return store if isinstance(store, Store) else open_store(store, read_only=True)


def rows(
    query: str | None = None,
    *,
    sort: str | None = None,
    descending: bool = False,
    limit: int | None = None,
    offset: int = 0,
    ids: Sequence[str] | None = None,
    store: Store | str | None = None,
) -> list[IndexRow]:
    """The index rows of the experiments matching `query` (and among `ids`, when given),
    newest first (or by `sort`), `limit` of them from `offset`: id, name, created, status,
    duration, note, tags, params, metrics, notebook, sweep, origin."""
    found = reading(store).rows(
        query, sort=sort, descending=descending, limit=limit, offset=offset, ids=ids
    )
    return cast("list[IndexRow]", found)  # the index's row layout (store.index.rows)


def count(query: str | None = None, *, store: Store | str | None = None) -> int:
    """How many experiments match `query` (all without one)."""
    return reading(store).count(query)


def newest(*, store: Store | str | None = None) -> tuple[int, str | None]:
    """How many experiments there are and the newest one's id: what changes when one is
    recorded, pulled or deleted (tables compare it to know when to refresh)."""
    target = reading(store)
    latest = target.rows(limit=1)
    return target.count(), (latest[0]["id"] if latest else None)


def column_names(*, store: Store | str | None = None) -> list[str]:
    """Every `params.*` and `metrics.*` name some experiment has, in first-seen order (read
    from the index's column list: no row is read)."""
    return reading(store).listed_keys()


def metric_names(query: str | None = None, *, store: Store | str | None = None) -> list[str]:
    """The metric names of the experiments matching `query`, the most common first."""
    return reading(store).keys("metrics", query)


def metric_bounds(
    query: str | None = None, *, store: Store | str | None = None
) -> dict[str, tuple[Any, Any]]:
    """`metrics.NAME` → (lowest, highest) numeric value among the experiments matching
    `query` (one SQL aggregate)."""
    return reading(store).metric_bounds(query)


def resolve(ref: str, *, store: Store | str | None = None) -> str:
    """The full id an id prefix, name, tag, `last` or `last~N` stands for."""
    return reading(store).resolve(ref)


def change_token(*, store: Store | str | None = None) -> str:
    """A value that changes whenever the store's listing may have (pollers compare it)."""
    return reading(store).change_token()


@dataclass(frozen=True)
class Page:
    """One page of a listing: the rows, how many match in all, and their metric names."""

    rows: list[IndexRow]
    total: int
    metric_names: list[str]


def page(
    query: str | None = None,
    *,
    sort: str | None = None,
    descending: bool = False,
    limit: int = 100,
    offset: int = 0,
    store: Store | str | None = None,
) -> Page:
    """A page of the experiments matching `query` (the Jupyter panel's listing)."""
    target = reading(store)
    found = rows(query, sort=sort, descending=descending, limit=limit, offset=offset, store=target)
    return Page(found, count(query, store=target), metric_names(query, store=target))


def table(
    query: str | None = None,
    *,
    sort: str | None = None,
    limit: int | None = None,
    store: Store | str | None = None,
) -> tuple[list[str], list[Sequence[Any]]]:
    """The listing column by column: short id, name, created, status, duration, tags, origin
    (only when some listed experiment was pulled), then `params.*` and `metrics.*`."""
    names, columns = reading(store).listing(query, sort=sort, limit=limit, short_ids=True)
    origin = names.index("origin")
    if columns[origin].count(None) == len(columns[origin]):  # only pulled experiments have one
        del names[origin], columns[origin]
    return names, columns


def listing_text(
    query: str | None = None,
    *,
    sort: str | None = None,
    limit: int | None = None,
    fmt: str = "table",
    store: Store | str | None = None,
) -> bytes:
    """`nbexp list`'s output as UTF-8: the padded table (`fmt="table"`) or CSV (`"csv"`).
    An unchanged store gives back the text it gave last time for the same options, kept
    beside its index, instead of formatting every experiment again; after a change (a tag,
    a removal, a new record) that text is patched with the rows that changed."""
    from . import __version__
    from . import listing_text as text

    target = reading(store)
    empty = "no experiments" + (f" match `{query}`" if query else " yet") + "\n"

    def render() -> bytes | tuple[bytes, Any]:
        if sort is None and limit is None:  # in the listing's own order: patchable later
            names, columns = target.listing_columns(query)
            made, rows = text.render(fmt, names, columns, empty)
            return made, (rows.dump() if rows is not None else None)
        header, columns = table(query, sort=sort, limit=limit, store=target)
        if fmt == "csv":  # numbers at full precision; only tags and lists are rewritten
            shown = text.csv(header, columns)
        elif not columns[0]:
            shown = empty
        else:
            shown = text.table(header, columns)
        return shown.encode("utf-8", "backslashreplace")

    def patch(kept: bytes, data: Any, changed: list[str]) -> tuple[bytes, Any] | None:
        rows = text.Rows.load(data)
        if rows is None or rows.fmt != fmt:
            return None
        names, fresh = target.listing_columns(query, ids=changed)
        made = text.patch(kept, rows, names, fresh, changed)
        return None if made is None else (made, rows.dump())

    # everything the text depends on besides the store: a new nbexp may print it otherwise
    options = repr((text.FORMAT, __version__, fmt, query, sort, limit))
    if sort is None and limit is None:
        return target.listing_text(options, render, patch)
    return target.listing_text(options, render)


def experiments(
    query: str | None = None, *, sort: str | None = None, store: Store | str | None = None
) -> pd.DataFrame:
    """One row per experiment, newest first: id, name, created, status, duration, tags,
    then `params.*` and `metrics.*` columns. `query` filters, e.g. "metrics.f1 > 0.8"."""
    import pandas as pd

    names, columns = table(query, sort=sort, store=store)
    # from columns, not rows: each column is converted once, as a whole
    data: dict[str, Any] = {
        name: list(values) if values else pd.Series(dtype=object)
        for name, values in zip(names, columns, strict=True)
    }
    data["created"] = pd.to_datetime(data["created"], utc=True, format="ISO8601")
    return pd.DataFrame(data, columns=names)


def get(ref: str, *, salvage: bool = False, store: Store | str | None = None) -> Experiment:
    """One experiment by id prefix, name, tag, `last` or `last~N` (`salvage`: see
    `Store.load`)."""
    return reading(store).get(ref, salvage=salvage)


def origin(experiment_id: str, *, store: Store | str | None = None) -> str | None:
    """The remote a pulled experiment came from, None for one recorded here."""
    return reading(store).origin_name(experiment_id)


def tag(
    ref: str, tag_name: str, *, remove: bool = False, store: Store | str | None = None
) -> Experiment:
    """Add a tag to an experiment, or take it off with `remove=True` (records stay immutable;
    tags live beside them, and push/pull carry additions and removals to remotes)."""
    target = _store(store)
    experiment_id = target.resolve(ref)
    if remove:
        return target.remove_tag(experiment_id, tag_name)
    return target.add_tag(experiment_id, tag_name)


def remove(ref: str, *, store: Store | str | None = None) -> Experiment:
    """Delete an experiment's record; its objects are freed by `nbexp gc`."""
    target = _store(store)
    experiment = target.get(ref)
    target.delete(experiment.id)
    return experiment


def diff(a: str | Experiment, b: str | Experiment, *, store: Store | str | None = None) -> Any:
    """What differs between two experiments (refs or records): params, metrics with deltas,
    code, data drift from the recorded profiles (no data is read), environment, git, state."""
    from .comparison import diff as _diff

    if isinstance(a, Experiment) and isinstance(b, Experiment):
        return _diff(a, b)
    target = reading(store)
    return _diff(
        a if isinstance(a, Experiment) else target.get(a),
        b if isinstance(b, Experiment) else target.get(b),
    )


@dataclass(frozen=True)
class DriftCheck:
    """`drift_check`: the experiment, and one comparison per new data (`datadrift.Drift`)."""

    experiment: Experiment
    found: list[Any]


def drift_check(
    ref: str | Experiment,
    data: Sequence[Any],
    *,
    input: str | None = None,
    store: Store | str | None = None,
) -> DriftCheck:
    """How far each new data (paths or DataFrames) drifted from what an experiment read;
    nothing is recorded. `datadrift` renders it (text, JSON, a DataFrame)."""
    from . import datadrift as _drift

    experiment = ref if isinstance(ref, Experiment) else reading(store).get(ref)
    return DriftCheck(
        experiment, [_drift.compare(experiment, item, input_name=input) for item in data]
    )


def drift(
    ref: str | Experiment, data: Any, *, input: str | None = None, store: Store | str | None = None
) -> pd.DataFrame:
    """How far new data (a path or a DataFrame) drifted from what an experiment read: one row
    per column (PSI, KS, TVD, level); nothing is recorded."""
    from . import datadrift as _drift

    return _drift.frame(drift_check(ref, [data], input=input, store=store).found)


def plot(
    metric: str,
    refs: list[str | Experiment] | None = None,
    *,
    by: str | None = None,
    color: str | None = None,
    step: bool = False,
    kind: str | None = None,
    params: list[str] | None = None,
    query: str | None = None,
    sweep: str | None = None,
    store: Store | str | None = None,
) -> Any:
    """A matplotlib Figure of experiments (`refs`, else those matching `query` / in `sweep`):
    the metric across runs; against the param `by` (a line per value of `color`); its logged
    series (`step=True`); or params against it (kind="parallel")."""
    from .plots import plot as _plot

    target = reading(store)
    items: list[Any]
    if refs:
        items = [ref if isinstance(ref, Experiment) else target.get(ref) for ref in refs]
    else:
        found = target.rows(query)
        if sweep == "last":  # the newest experiment's sweep that has one
            sweep = next((row["sweep"] for row in target.rows() if row["sweep"]), None) or ""
        items = [row for row in found if sweep is None or row["sweep"] == sweep]
        if step:  # logged series live in the records, not the index
            items = [target.load(row["id"]) for row in items]
    return _plot(items, metric, by=by, color=color, step=step, kind=kind, params=params)


def export(
    ref: str | Experiment,
    path: str | os.PathLike[str] | None = None,
    format: str = "script",
    force: bool = False,
    *,
    store: Store | str | None = None,
) -> Path:
    """Write a standalone script (or, format="notebook", a papermill notebook) that
    reproduces the experiment; `path` defaults to `<name>.py` / `<name>.ipynb`."""
    from .exporter import default_path, write

    experiment = ref if isinstance(ref, Experiment) else reading(store).get(ref)
    return write(experiment, path or default_path(experiment, format), format, force=force)


def compare(
    refs: str | list[str] | None = None,
    query: str | None = None,
    *,
    store: Store | str | None = None,
    **options: Any,
) -> Any:
    """The experiment table widget (SPEC §6): `refs` shows only those experiments, selected
    (two: their diff below); `query` filters. Options: `lower_is_better=[...]`,
    `higher_is_better=[...]` (metric names), `page_size=50`, `poll_interval=1.5` (s; None: off)."""
    from .widgets import browse

    chosen = [refs] if isinstance(refs, str) else refs
    return browse(query, refs=chosen, store=reading(store), **options)


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
    ref: str | Experiment,
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
    experiment = ref if isinstance(ref, Experiment) else target.get(ref, salvage=True)
    live = namespace if namespace is not None else _live_namespace()
    return restore_into(live, target, experiment, names, recompute=recompute)


def load(ref: str, names: list[str] | None = None, *, store: Store | str | None = None) -> Any:
    """An experiment's variables as a lazy namespace (`old = load("rf-v1"); old.model`),
    loaded on first access, leaving the kernel's own variables untouched."""
    from .restorer import LazyNamespace

    target = _store(store)
    return LazyNamespace(target, target.get(ref, salvage=True), names)


def push(
    remote: str | None = None,
    refs: list[str] | None = None,
    *,
    progress: bool = True,
    workers: int | None = None,
    store: Store | str | None = None,
) -> Any:
    """Send experiments (all, or `refs`) and the objects the remote lacks; returns a report."""
    from .remote import push as _push
    from .transfer import DEFAULT_WORKERS

    jobs = DEFAULT_WORKERS if workers is None else workers
    return _push(_store(store), remote, refs or (), progress=progress, workers=jobs)


def pull(
    remote: str | None = None,
    refs: list[str] | None = None,
    *,
    progress: bool = True,
    workers: int | None = None,
    store: Store | str | None = None,
) -> Any:
    """Fetch experiments (all, or `refs`, resolved on the remote) and the objects this store
    lacks; returns a report. Their state restores only from a trusted remote."""
    from .remote import pull as _pull
    from .transfer import DEFAULT_WORKERS

    jobs = DEFAULT_WORKERS if workers is None else workers
    return _pull(_store(store), remote, refs or (), progress=progress, workers=jobs)


# -- the store's upkeep -----------------------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    """What `gc` found (and with `delete`, removed) in a local store."""

    objects: list[str]  # unreferenced objects' digests
    size: int  # their bytes
    temporary: int  # leftover temporary files in tmp/ (see `Store.clean_tmp`)
    temporary_size: int
    deleted: bool
    small_packs: int = 0  # small pack files merged into one (or, without `delete`, to merge)


def gc(*, delete: bool = False, remote: str | None = None, store: Store | str | None = None) -> Any:
    """Objects no record references, and what killed processes left in tmp/, removed only
    with `delete`, small pack files merged into one (a `Collected`); with `remote`, the
    remote's own unreferenced objects, kept while young since a push may be writing the
    record that needs them
    (`remote.RemoteGarbage`)."""
    target = _store(store)
    if remote is not None:
        from .remote import gc_remote

        return gc_remote(target, remote, delete=delete)
    small = len(target.small_packs())
    garbage, size = target.gc(delete=delete)
    temps, temps_size = target.clean_tmp(delete=delete)
    return Collected(garbage, size, temps, temps_size, delete, small if small >= 2 else 0)


def fsck(*, store: Store | str | None = None) -> list[Any]:
    """Verify every record and object; the problems found (empty: healthy)."""
    return list(_store(store).fsck())


def reindex(*, store: Store | str | None = None) -> int:
    """Rebuild the index from the records; how many experiments were indexed."""
    return _store(store).reindex()


def status(ref: str | None = None, *, store: Store | str | None = None) -> Staleness:
    """Which experiments (all, or `ref`) are stale: an input file or their cell changed."""
    from .staleness import stale

    target = _store(store)
    rows_ = target.rows(ids=[target.resolve(ref)]) if ref else target.rows()
    found = stale(target, [row["id"] for row in rows_])
    return Staleness(
        rows_,
        {key: list(changes) for key, changes in found.items()},
        {row["id"]: target.origin_name(row["id"]) for row in rows_} if ref else {},
    )


@dataclass(frozen=True)
class Staleness:
    """`status`: the experiments checked (index rows), what changed for the stale ones (id →
    changes), and for a single experiment asked for, the remote it was pulled from."""

    rows: list[dict[str, Any]]
    changes: dict[str, list[Any]]
    origins: dict[str, str | None]


# -- reproducing ------------------------------------------------------------------------------


def export_text(
    ref: str | Experiment, format: str = "script", *, store: Store | str | None = None
) -> str:
    """The export (`format`: script or notebook) as text, nothing written."""
    from .exporter import render

    experiment = ref if isinstance(ref, Experiment) else reading(store).get(ref)
    return str(render(experiment, format))


def export_stage(
    ref: str | Experiment,
    script: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    store: Store | str | None = None,
) -> tuple[Path, Path, str]:
    """The experiment's script and its stage in dvc.yaml, so `dvc repro STAGE` runs it:
    (script, dvc.yaml, stage name)."""
    from .dvcstage import write as write_stage

    experiment = ref if isinstance(ref, Experiment) else reading(store).get(ref)
    written, dvc_yaml, stage = write_stage(experiment, script, force=force)
    return Path(written), Path(dvc_yaml), str(stage)


def artifact(
    ref: str,
    path: str,
    output: str | None = None,
    *,
    force: bool = False,
    store: Store | str | None = None,
) -> tuple[str, Experiment]:
    """Write a file the run wrote back out, verified (never over a different file without
    `force`; `output` "-" is stdout): where it went, and the experiment."""
    from .artifacts import write_artifact

    target = _store(store)
    experiment = target.get(ref)
    return str(write_artifact(target, experiment, path, output, force=force)), experiment


def rerun(
    ref: str,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    check_data: bool = True,
    timeout: float | None = None,
    store: Store | str | None = None,
) -> Any:
    """Run the experiment's export in a fresh process, compare its metrics with the
    recorded ones and record the rerun, linked to its source (a `rerun.RerunResult`)."""
    from .rerun import rerun as _rerun

    return _rerun(_store(store), ref, rtol=rtol, atol=atol, check_data=check_data, timeout=timeout)


def branch(ref: str, name: str, *, store: Store | str | None = None) -> Any:
    """A git branch at the experiment's commit holding its recorded changes, script,
    notebook and record; the working tree is untouched (a `branch.BranchResult`)."""
    from .branch import branch as _branch

    return _branch(_store(store), ref, name)


# -- remotes ----------------------------------------------------------------------------------


def remotes(*, store: Store | str | None = None) -> tuple[dict[str, Any], str | None]:
    """The configured remotes (name → `remote.Remote`) and the default one's name."""
    from .remote import default_remote
    from .remote import remotes as configured

    target = _store(store)
    return configured(target), default_remote(target)


def remote_add(
    name: str,
    url: str,
    options: Sequence[str] | dict[str, Any] = (),
    *,
    trusted: bool = False,
    default: bool = False,
    store: Store | str | None = None,
) -> Any:
    """Name a remote (any fsspec URL); `options` are fsspec storage options, as a dict or
    KEY=VALUE words (credentials are refused: the back end's environment variables work)."""
    from .remote import add_remote, parse_options

    parsed = options if isinstance(options, dict) else parse_options(options)
    return add_remote(_store(store), name, url, parsed, trusted=trusted, default=default)


def remote_remove(name: str, *, store: Store | str | None = None) -> Any:
    """Forget a remote; experiments pulled from it stay."""
    from .remote import remove_remote

    return remove_remote(_store(store), name)


def remote_trust(name: str, trusted: bool = True, *, store: Store | str | None = None) -> Any:
    """Whether state pulled from this remote may be restored (unpickling runs code)."""
    from .remote import set_trusted

    return set_trusted(_store(store), name, trusted)
