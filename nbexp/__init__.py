"""nbexp: version machine-learning experiments inside Jupyter notebooks.

`%load_ext nbexp`, then `%%experiment` on a cell. Heavy modules (pandas, IPython, GitPython)
are imported only when the function that needs them is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ExpectationFailed, NbexpError
from .series import log

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "ExpectationFailed",
    "NbexpError",
    "__version__",
    "compare",
    "diff",
    "drift",
    "experiments",
    "export",
    "get",
    "load",
    "load_ipython_extension",
    "log",
    "open_store",
    "plot",
    "pull",
    "push",
    "remove",
    "restore",
    "tag",
    "unload_ipython_extension",
]


def experiments(query: str | None = None, *, sort: str | None = None) -> Any:
    """The experiments of this project's store as a pandas DataFrame, newest first."""
    from .api import experiments as _experiments

    return _experiments(query, sort=sort)


def get(ref: str) -> Any:
    """One experiment (id prefix, name, tag, `last`, `last~N`) as an `Experiment` record."""
    from .api import get as _get

    return _get(ref)


def restore(ref: str, names: list[str] | None = None, *, recompute: bool = False) -> Any:
    """Put an experiment's variables (all, or `names`) back into the live kernel."""
    from .api import restore as _restore

    return _restore(ref, names, recompute=recompute)


def load(ref: str, names: list[str] | None = None) -> Any:
    """An experiment's variables as a lazy namespace, without touching the kernel's."""
    from .api import load as _load

    return _load(ref, names)


def push(remote: str | None = None, refs: list[str] | None = None) -> Any:
    """Send experiments (all, or `refs`) to a remote (`nbexp remote add`); only what it lacks."""
    from .api import push as _push

    return _push(remote, refs)


def pull(remote: str | None = None, refs: list[str] | None = None) -> Any:
    """Fetch experiments (all, or `refs`) from a remote; only what this store lacks."""
    from .api import pull as _pull

    return _pull(remote, refs)


def export(ref: str, path: Any, format: str = "script", force: bool = False) -> Any:
    """Write a script (format="notebook": a papermill notebook) reproducing an experiment."""
    from .api import export as _export

    return _export(ref, path, format, force)


def diff(a: Any, b: Any) -> Any:
    """What differs between two experiments: params, metrics, code, data drift, env, state."""
    from .api import diff as _diff

    return _diff(a, b)


def drift(ref: Any, data: Any, *, input: str | None = None) -> Any:
    """How far new data (a path or a DataFrame) has drifted from what an experiment read, per
    column (PSI, KS, TVD): a DataFrame; nothing is recorded."""
    from .api import drift as _drift

    return _drift(ref, data, input=input)


def plot(metric: str, refs: list[Any] | None = None, **options: Any) -> Any:
    """A matplotlib Figure: `metric` across experiments, `by=PARAM` (a line per `color=`),
    its logged series (`step=True`) or `kind="parallel"`; filter with `query=` or `sweep=`."""
    from .api import plot as _plot

    return _plot(metric, refs, **options)


def compare(refs: Any = None, query: str | None = None, **options: Any) -> Any:
    """The experiment table (an ipywidgets widget): sort, filter, select, then Compare, Plot,
    Restore, Export, Tag or Delete. `refs`: only these experiments, selected; `query`: a filter."""
    from .api import compare as _compare

    return _compare(refs, query, **options)


def tag(ref: str, tag_name: str, *, remove: bool = False) -> Any:
    """Tag an experiment, or take the tag off with `remove=True`."""
    from .api import tag as _tag

    return _tag(ref, tag_name, remove=remove)


def remove(ref: str) -> Any:
    """Delete an experiment's record (its objects are freed by `nbexp gc`)."""
    from .api import remove as _remove

    return _remove(ref)


def open_store(path: str | None = None) -> Store:
    """The store (`.nbexp/`) for `path` or the working directory, created on first use."""
    from .store import open_store as _open_store

    return _open_store(path)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nbexp`: register the magics."""
    from .magic import ExperimentMagics

    ipython.register_magics(ExperimentMagics)
    from .cellerrors import watch

    watch(ipython)  # which later cells fail, so exports reproduce only what they ran
    # What the first experiment would otherwise do once (read every installed package's
    # metadata, ~0.15 s; import psutil; ...): a child process, and steps run while the
    # kernel is idle (`warmup`), never beside the user's cells.
    from .warmup import start

    start(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext nbexp`: nothing to undo beyond the magics IPython drops itself."""


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension serving the store to the lab panel (enabled on install);
    `nbexp.server_extension` (which imports jupyter_server) loads only when the server asks."""
    return [{"module": "nbexp.server_extension"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (the Experiments panel), built from `labextension/`
    into `nbexp/labextension/`; used by `jupyter labextension develop`. Wheels install it
    under `share/jupyter/labextensions/nbexp` (shared-data)."""
    return [{"src": "labextension", "dest": "nbexp"}]
