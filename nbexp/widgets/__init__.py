"""The experiment table in the notebook (SPEC §6): the only part of nbexp that imports
ipywidgets, and only when a table is made.

- `browser`: `ExperimentBrowser`, the table widget: filter box, columns, grid, action bar
- `grid`: the header of sort buttons, the row checkboxes and the page as one HTML table
- `actionbar`: Compare, Plot, Restore, Export, Tag, Delete and the result area
- `model`: what the table shows (filter, sort, page, selection, columns, best values)
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


def has_widget_frontend(shell: Any) -> bool:
    """Whether the shell is a Jupyter kernel's (widgets can show), not terminal IPython."""
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


__all__ = ["browse", "has_widget_frontend"]
