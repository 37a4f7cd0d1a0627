"""nbexp: version machine-learning experiments inside Jupyter notebooks.

`%load_ext nbexp`, then `%%experiment` on a cell. Heavy modules (pandas, IPython, GitPython)
are imported only when the function that needs them is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import NbexpError
from .series import log

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "NbexpError",
    "__version__",
    "experiments",
    "get",
    "load",
    "load_ipython_extension",
    "log",
    "open_store",
    "restore",
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


def open_store(path: str | None = None) -> Store:
    """The store (`.nbexp/`) for `path` or the working directory, created on first use."""
    from .store import open_store as _open_store

    return _open_store(path)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nbexp`: register the magics."""
    import threading

    from .environment import warm_up
    from .magic import ExperimentMagics

    ipython.register_magics(ExperimentMagics)
    # Mapping modules to distributions reads every installed package's metadata (~0.5 s);
    # do it now, in the background, rather than during the first experiment.
    threading.Thread(target=warm_up, name="nbexp-warm-up", daemon=True).start()


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext nbexp`: nothing to undo beyond the magics IPython drops itself."""
