"""The experiment table in the notebook: filter, sort, page, choose columns, act on a selection.

`ExperimentBrowser` wires three parts: the `TableModel` (what is shown; all queries in the
store's SQL), the `Grid` (header buttons, checkboxes, one HTML table per page) and the action
bar, whose buttons call the plain functions in `actions` and show their result in the Output
area below. It refreshes itself when experiments are added or deleted, by this kernel or any
other (`watch`). Only ipywidgets' own widgets are used, so it works wherever widgets do
(JupyterLab, Notebook 7, VS Code).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as w

from .. import api
from ..errors import NbexpError
from ..store import Store
from ..subrecords import IndexRow
from . import render
from .actionbar import ActionBar
from .grid import Grid, Kit
from .model import TableModel
from .watch import watch

PAGE_SIZE = 50
POLL_SECONDS = 1.5


class ExperimentBrowser(w.VBox):
    """The table of a store's experiments (SPEC §6): display it in a notebook."""

    def __init__(
        self,
        query: str | None = None,
        *,
        refs: Iterable[str] | None = None,
        store: Store | None = None,
        page_size: int = PAGE_SIZE,
        lower_is_better: Iterable[str] = (),
        higher_is_better: Iterable[str] = (),
        poll_interval: float | None = POLL_SECONDS,
    ) -> None:
        self.model = TableModel(
            api.reading(store),
            page_size=page_size,
            lower_is_better=lower_is_better,
            higher_is_better=higher_is_better,
        )
        self._lock = threading.RLock()  # the watcher thread refreshes too
        self._syncing = False
        self._chooser_boxes: dict[str, w.Checkbox] = {}
        self._stop_watching: Callable[[], None] | None = None
        self.kit = Kit()
        self.grid = Grid(
            on_sort=lambda key: self._act(lambda: self.model.sort_by(key)),
            on_check=self._on_check,
            on_check_page=self._on_check_page,
            on_turn=lambda step: self._act(lambda: self.model.turn(step)),
            kit=self.kit,
        )
        self.grid.legend.value = render.LEGEND
        super().__init__(children=self._build())
        self.add_class("nbexp-browser")
        query = (query or "").strip() or None
        with self._lock:
            if refs is not None:
                try:
                    self.model.pin(refs)
                except NbexpError:
                    self.close()  # an unknown ref: no half-made widgets left in the kernel
                    raise
                self.show_all_button.layout.display = None
            self.model.discover(full=True)
            self._syncing = True
            self.query.value = query or ""
            self._syncing = False
            self._apply_query(query)
            if self.model.query != query:  # a bad filter: show everything under its message
                self.model.load()
                self.redraw()
            if refs is not None and len(self.model.selected) == 2:
                self.bar.compare()
        self._stop_watching = watch(self.model.store, self, poll_interval)

    # -- building -------------------------------------------------------------------------

    def _build(self) -> list[w.Widget]:
        kit = self.kit
        self.query = w.Text(
            placeholder="filter, e.g. metrics.f1 > 0.8 and params.depth < 10 (Enter applies)",
            continuous_update=False,
            layout=w.Layout(flex="1 1 auto", width="auto"),
        )
        self.query.add_class("nbexp-query")
        self.query.observe(self._on_query, "value")
        self.show_all_button = kit.button(
            "show all", "every experiment, not only those asked for", "nbexp-show-all", width="auto"
        )
        self.show_all_button.layout.display = "none"
        self.show_all_button.on_click(lambda _: self._on_show_all())
        refresh = kit.button("↻", "re-read the store", "nbexp-refresh")
        refresh.on_click(lambda _: self.refresh(full=True))
        self.columns_toggle = w.ToggleButton(
            description="Columns", tooltip="choose the columns", layout=w.Layout(width="auto")
        )
        self.columns_toggle.add_class("nbexp-columns-toggle")
        self.columns_toggle.observe(self._on_columns_toggle, "value")
        self.message = kit.html(min_height="18px")
        self.message.add_class("nbexp-message")
        self.chooser = w.Box(layout=w.Layout(display="none", flex_flow="row wrap"))
        self.chooser.add_class("nbexp-chooser")

        self.bar = ActionBar(self, kit, self._lock)

        bar = w.HBox(
            [self.query, self.show_all_button, refresh, self.columns_toggle],
            layout=w.Layout(width="100%"),
        )
        style = kit.html(render.STYLE, height="0px", margin="0")
        return [style, bar, self.message, self.chooser, self.grid, self.bar]

    # -- drawing --------------------------------------------------------------------------

    def redraw(self) -> None:
        """Redraw from the model: no store queries beyond the cached best values."""
        model = self.model
        columns = model.visible()
        widths = render.widths(columns, model.rows)
        self.grid.draw(
            columns=columns,
            widths=widths,
            html=render.page_html(columns, model.rows, widths, model.marks()),
            checked=[row["id"] in model.selected for row in model.rows],
            sort_key=model.sort_key,
            descending=model.sort_descending,
            page_text=model.page_text(),
            has_previous=model.has_previous,
            has_next=model.has_next,
        )
        self.bar.update()

    def say(self, text: str, *, error: bool = False) -> None:
        """The table's one-line message (red for an error); empty clears it."""
        css = "nbexp-message-error" if error else "nbexp-message-info"
        self.message.value = f"<span class='{css}'>{html.escape(text)}</span>" if text else ""

    def _act(self, action: Callable[[], Any]) -> bool:
        """Change the model, redraw; an NbexpError becomes the widget's one-line message."""
        with self._lock:
            try:
                action()
            except NbexpError as error:
                self.say(str(error), error=True)
                return False
            self.redraw()
            return True

    # -- public ---------------------------------------------------------------------------

    @property
    def rows(self) -> list[IndexRow]:
        """The index rows on the current page, in their order."""
        return list(self.model.rows)

    @property
    def selected(self) -> list[str]:
        """The full ids of the selected experiments, in the order they were selected."""
        return list(self.model.selected)

    @property
    def total(self) -> int:
        """How many experiments the filter lets through."""
        return self.model.total

    @property
    def columns(self) -> list[str]:
        """The keys of the visible columns ("name", "params.depth", ...)."""
        return [column.key for column in self.model.visible()]

    def refresh(self, *, full: bool = False) -> None:
        """Re-read the store (new, deleted or retagged experiments) and redraw the page."""
        with self._lock:
            try:
                self.model.discover(full=full)
                self.model.prune_selection()
                self.model.load()
            except NbexpError as error:
                self.say(str(error), error=True)
                return
            self._sync_chooser()
            self.redraw()

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        """Sort by a column key; without `descending`, the sorted column again reverses."""
        self._act(lambda: self.model.sort_by(key, descending))

    def select(self, refs: Iterable[str]) -> None:
        """Add experiments (id prefix, name, tag, last...) to the selection, in this order."""
        self._select(lambda: self.model.select(refs))

    def show_columns(self, keys: Iterable[str]) -> None:
        """Show exactly these columns (keys as in `columns`)."""
        wanted = set(keys)
        with self._lock:
            self.model.hidden = {c.key for c in self.model.columns() if c.key not in wanted}
            self._sync_chooser()
            self.redraw()

    def store_changed(self) -> None:
        """Called by the store watcher: experiments were added or deleted (any kernel)."""
        self.refresh()

    def watching_stopped(self) -> None:
        """Called by the store watcher when newer tables took over refreshing."""
        self._stop_watching = None
        self.say("this table no longer refreshes itself (newer tables do); ↻ refreshes it")

    def close(self) -> None:
        stop, self._stop_watching = self._stop_watching, None
        if stop is not None:
            stop()
        """Stop refreshing and close every widget of the table (their layouts and styles too),
        so nothing of it stays in the kernel."""
        pending: list[Any] = [*self.children, self.layout]
        if hasattr(self, "grid"):
            pending += [*self.grid.owned(), *self.kit.owned(), *self._chooser_boxes.values()]
        seen: set[int] = set()
        while pending:
            widget = pending.pop()
            if isinstance(widget, w.Widget) and id(widget) not in seen:
                seen.add(id(widget))
                pending += [*getattr(widget, "children", ()), getattr(widget, "layout", None)]
                pending.append(getattr(widget, "style", None))
                widget.close()
        super().close()

    def __repr__(self) -> str:
        shown = f" matching {self.model.query!r}" if self.model.query else ""
        return f"<nbexp: {self.model.total:,} experiments{shown}; shown as a table in Jupyter>"

    # -- events ---------------------------------------------------------------------------

    def _apply_query(self, query: str | None) -> None:
        with self._lock:
            try:
                self.model.set_query(query)
            except NbexpError as error:
                self.say(f"bad filter: {error}", error=True)
                return
            self.say("")
            self.redraw()

    def _on_query(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._apply_query(change["new"].strip() or None)

    def _select(self, change: Callable[[], Any]) -> None:
        with self._lock:
            self.bar.hide_confirm()  # a pending delete was for another selection
            self._act(change)

    def clear_selection(self) -> None:
        self._select(self.model.selected.clear)

    def _on_show_all(self) -> None:
        if self._act(self.model.unpin):
            self.show_all_button.layout.display = "none"

    def _on_check(self, index: int, on: bool) -> None:
        rows = self.model.rows
        if index < len(rows):
            self._select(lambda: self.model.toggle([rows[index]], on))

    def _on_check_page(self, on: bool) -> None:
        self._select(lambda: self.model.toggle(self.model.rows, on))

    def _on_columns_toggle(self, change: dict[str, Any]) -> None:
        with self._lock:
            self._sync_chooser(build=True)
        self.chooser.layout.display = "flex" if change["new"] else "none"

    def _sync_chooser(self, *, build: bool = False) -> None:
        """The column chooser's checkboxes, made when it is first opened (most never are)."""
        if not build and not self._chooser_boxes:
            return
        boxes = []
        for column in self.model.columns():
            box = self._chooser_boxes.get(column.key)
            if box is None:
                box = w.Checkbox(
                    description=column.key,
                    indent=False,
                    layout=w.Layout(width="auto", margin="0 12px 0 0"),
                )
                box.add_class("nbexp-chooser-box")
                box.observe(lambda change, key=column.key: self._on_choose(key, change), "value")
                self._chooser_boxes[column.key] = box
            self._syncing = True
            box.value = column.key not in self.model.hidden
            self._syncing = False
            boxes.append(box)
        if list(self.chooser.children) != boxes:
            self.chooser.children = boxes

    def _on_choose(self, key: str, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        hidden = self.model.hidden
        self._act(lambda: hidden.discard(key) if change["new"] else hidden.add(key))


def browse(
    query: str | None = None,
    *,
    refs: Iterable[str] | None = None,
    store: Store | None = None,
    **options: Any,
) -> ExperimentBrowser:
    """The experiment table for `store` (default: this project's), filtered by `query`."""
    return ExperimentBrowser(query, refs=refs, store=store, **options)
