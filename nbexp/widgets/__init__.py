"""The experiment table in the notebook (SPEC §6): the only part of nbexp that imports
ipywidgets, and only when a table is made.

- `browser`: the ipywidgets table (sort, filter, page, columns, selection and its actions)
- `render`: the page as HTML and the listing as text, from index rows (no widgets)
- `actions`: what the buttons do, over the store (diff, plot, restore, export, tag, delete)
- `watch`: noticing new experiments (this kernel's cells, other kernels) to refresh tables
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .browser import ExperimentBrowser


def browse(query: str | None = None, **options: Any) -> ExperimentBrowser:
    """The experiment table (an ipywidgets VBox); see `browser.ExperimentBrowser`."""
    from .browser import browse as _browse

    return _browse(query, **options)


__all__ = ["browse"]
