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

from ..errors import NbexpError
from ..store import Store, open_store
from . import actions, render
from .grid import Grid, button
from .model import TableModel
from .watch import watch

PAGE_SIZE = 50
POLL_SECONDS = 1.5
PLOT_LIMIT = 2000  # rows plotted when nothing is selected


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
            store if store is not None else open_store(),
            page_size=page_size,
            lower_is_better=lower_is_better,
            higher_is_better=higher_is_better,
        )
        self._lock = threading.RLock()  # the watcher thread refreshes too
        self._syncing = False
        self._chooser_boxes: dict[str, w.Checkbox] = {}
        self._stop_watching: Callable[[], None] | None = None
        self.grid = Grid(
            page_size,
            on_sort=lambda key: self._act(lambda: self.model.sort_by(key)),
            on_check=self._on_check,
            on_check_page=self._on_check_page,
            on_turn=lambda step: self._act(lambda: self.model.turn(step)),
        )
        self.grid.legend.value = render.LEGEND
        super().__init__(children=self._build())
        self.add_class("nbexp-browser")
        query = (query or "").strip() or None
        with self._lock:
            if refs is not None:
                self.model.pin(refs)
                self.show_all_button.layout.display = None
            self.model.discover(full=True)
            self._sync_chooser()
            self._syncing = True
            self.query.value = query or ""
            self._syncing = False
            self._apply_query(query)
            if self.model.query != query:  # a bad filter: show everything under its message
                self.model.load()
                self._draw()
            if refs is not None and len(self.model.selected) == 2:
                self._on_compare()
        self._stop_watching = watch(self.model.store, self, poll_interval)

    # -- building -------------------------------------------------------------------------

    def _build(self) -> list[w.Widget]:
        self.query = w.Text(
            placeholder="filter, e.g. metrics.f1 > 0.8 and params.depth < 10 (Enter applies)",
            continuous_update=False,
            layout=w.Layout(flex="1 1 auto", width="auto"),
        )
        self.query.add_class("nbexp-query")
        self.query.observe(self._on_query, "value")
        self.show_all_button = button(
            "show all", "every experiment, not only those asked for", "nbexp-show-all"
        )
        self.show_all_button.layout.display = "none"
        self.show_all_button.on_click(lambda _: self._on_show_all())
        refresh = button("↻", "re-read the store", "nbexp-refresh", width="36px")
        refresh.on_click(lambda _: self.refresh(full=True))
        self.columns_toggle = w.ToggleButton(
            description="Columns", tooltip="choose the columns", layout=w.Layout(width="auto")
        )
        self.columns_toggle.add_class("nbexp-columns-toggle")
        self.columns_toggle.observe(self._on_columns_toggle, "value")
        self.message = w.HTML("", layout=w.Layout(min_height="18px"))
        self.message.add_class("nbexp-message")
        self.chooser = w.Box(layout=w.Layout(display="none", flex_flow="row wrap"))
        self.chooser.add_class("nbexp-chooser")

        self.selection = w.HTML("nothing selected")
        self.selection.add_class("nbexp-selection")
        self.compare_button = button("Compare", "diff of the two selected", "nbexp-compare")
        self.compare_button.on_click(lambda _: self._on_compare())
        self.restore_button = button(
            "Restore", "put the selected experiment's variables into this kernel", "nbexp-restore"
        )
        self.restore_button.on_click(lambda _: self._on_restore())
        self.export_button = button(
            "Export", "write a script reproducing each selected experiment", "nbexp-export"
        )
        self.export_button.on_click(lambda _: self._on_export())
        self.tag_text = w.Text(placeholder="tag", layout=w.Layout(width="110px"))
        self.tag_text.add_class("nbexp-tag-text")
        self.tag_button = button("Tag", "tag the selected experiments", "nbexp-tag")
        self.tag_button.on_click(lambda _: self._on_tag())
        self.delete_button = button("Delete…", "delete the selected experiments", "nbexp-delete")
        self.delete_button.on_click(lambda _: self._on_delete())
        self.clear_button = button("Clear", "clear the selection", "nbexp-clear")
        self.clear_button.on_click(lambda _: self._select(lambda: self.model.selected.clear()))

        self.plot_y = w.Dropdown(description="plot", layout=w.Layout(width="220px"))
        self.plot_y.style.description_width = "32px"
        self.plot_x = w.Dropdown(description="by", layout=w.Layout(width="230px"))
        self.plot_x.style.description_width = "24px"
        self.plot_x.observe(lambda _: self._fill_plot_y(), "value")
        self.plot_button = button(
            "Plot", "plot the selection (else the filtered rows)", "nbexp-plot"
        )
        self.plot_button.on_click(lambda _: self._on_plot())

        self.confirm_text = w.HTML("")
        confirm_yes = button("Delete", "delete them now", "nbexp-confirm-delete")
        confirm_yes.button_style = "danger"
        confirm_yes.on_click(lambda _: self._on_confirm_delete())
        confirm_no = button("Cancel", "keep them", "nbexp-cancel-delete")
        confirm_no.on_click(lambda _: self._hide_confirm())
        self.confirm = w.HBox(
            [self.confirm_text, confirm_yes, confirm_no],
            layout=w.Layout(display="none", align_items="center"),
        )
        self.result = w.Output(layout=w.Layout(max_width="100%", overflow="auto"))
        self.result.add_class("nbexp-result")

        bar = w.HBox(
            [self.query, self.show_all_button, refresh, self.columns_toggle],
            layout=w.Layout(width="100%"),
        )
        selected = w.HBox(
            [
                self.selection,
                self.compare_button,
                self.restore_button,
                self.export_button,
                self.tag_text,
                self.tag_button,
                self.delete_button,
                self.clear_button,
            ],
            layout=w.Layout(align_items="center", flex_flow="row wrap"),
        )
        plot = w.HBox([self.plot_y, self.plot_x, self.plot_button])
        style = w.HTML(render.STYLE, layout=w.Layout(height="0px", margin="0"))
        return [
            style,
            bar,
            self.message,
            self.chooser,
            self.grid,
            selected,
            plot,
            self.confirm,
            self.result,
        ]

    # -- drawing --------------------------------------------------------------------------

    def _draw(self) -> None:
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
        chosen = list(model.selected.values())
        if chosen:
            names = html.escape(", ".join(row["name"] for row in chosen[:3]))
            more = "…" if len(chosen) > 3 else ""
            self.selection.value = f"<b>{len(chosen)} selected</b>: {names}{more}&nbsp;"
        else:
            self.selection.value = "nothing selected&nbsp;"
        self.compare_button.disabled = len(chosen) != 2
        self.restore_button.disabled = len(chosen) != 1
        for item in (self.export_button, self.tag_button, self.delete_button, self.clear_button):
            item.disabled = not chosen
        self._fill_plot_x()

    def _fill_plot_x(self) -> None:
        options = [
            ("across experiments", actions.PLOT_RUNS),
            *((f"against {name}", f"params.{name}") for name in self.model.params),
            ("params (parallel)", actions.PLOT_PARALLEL),
            ("logged series", actions.PLOT_SERIES),
        ]
        _set_options(self.plot_x, options)
        self._fill_plot_y()

    def _fill_plot_y(self) -> None:
        if self.plot_x.value == actions.PLOT_SERIES:
            chosen = list(self.model.selected) or [row["id"] for row in self.model.rows]
            _set_options(self.plot_y, actions.series_names(self.model.store, chosen))
        else:
            _set_options(self.plot_y, self.model.metrics)

    def _say(self, text: str, *, error: bool = False) -> None:
        css = "nbexp-message-error" if error else "nbexp-message-info"
        self.message.value = f"<span class='{css}'>{html.escape(text)}</span>" if text else ""

    def _show(self, value: Any) -> None:
        self.result.outputs = (actions.bundle(value),)

    def _act(self, action: Callable[[], Any]) -> bool:
        """Change the model, redraw; an NbexpError becomes the widget's one-line message."""
        with self._lock:
            try:
                action()
            except NbexpError as error:
                self._say(str(error), error=True)
                return False
            self._draw()
            return True

    # -- public ---------------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
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
                self._say(str(error), error=True)
                return
            self._sync_chooser()
            self._draw()

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
            self._draw()

    def store_changed(self) -> None:
        """Called by the store watcher: experiments were added or deleted (any kernel)."""
        self.refresh()

    def watching_stopped(self) -> None:
        """Called by the store watcher when newer tables took over refreshing."""
        self._stop_watching = None
        self._say("this table no longer refreshes itself (newer tables do); ↻ refreshes it")

    def close(self) -> None:
        stop, self._stop_watching = self._stop_watching, None
        if stop is not None:
            stop()
        pending: list[w.Widget] = [*self.children, *self.grid.owned()]
        pending += list(self._chooser_boxes.values())
        seen: set[int] = set()
        while pending:
            widget = pending.pop()
            if id(widget) not in seen:
                seen.add(id(widget))
                pending.extend(getattr(widget, "children", ()))
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
                self._say(f"bad filter: {error}", error=True)
                return
            self._say("")
            self._draw()

    def _on_query(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._apply_query(change["new"].strip() or None)

    def _select(self, change: Callable[[], Any]) -> None:
        with self._lock:
            self._hide_confirm()
            self._act(change)

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
        self.chooser.layout.display = "flex" if change["new"] else "none"

    def _sync_chooser(self) -> None:
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

    # -- actions --------------------------------------------------------------------------

    def _on_compare(self) -> None:
        ids = list(self.model.selected)
        if len(ids) != 2:
            self._say(f"Compare needs exactly two selected experiments ({len(ids)} selected)")
            return
        self._result(lambda: actions.diff(self.model.store, ids[0], ids[1]))

    def _on_plot(self) -> None:
        metric, x = self.plot_y.value, self.plot_x.value
        if not metric:
            self._say("nothing to plot: pick a metric (or, for logged series, a series)")
            return
        rows = list(self.model.selected.values())
        note = ""
        if not rows:
            model = self.model
            rows = model.store.rows(model.query, limit=PLOT_LIMIT, ids=model.pinned)
            note = f"nothing selected: plotted the {len(rows):,} filtered experiments"
        self._result(lambda: actions.plot(self.model.store, rows, metric, x), note)

    def _on_restore(self) -> None:
        ids = list(self.model.selected)
        if len(ids) != 1:
            self._say(f"Restore needs exactly one selected experiment ({len(ids)} selected)")
            return
        self._result(lambda: actions.restore(self.model.store, ids[0]))

    def _on_export(self) -> None:
        if not self.model.selected:
            self._say("select the experiments to export")
            return
        self._result(lambda: actions.export(self.model.store, list(self.model.selected)))

    def _result(self, make: Callable[[], Any], note: str = "") -> None:
        """Run an action and show what it returns below the table (or its error above)."""
        with self._lock:
            try:
                value = make()
            except NbexpError as error:
                self._say(str(error), error=True)
                return
            self._say(note)
            self._show(value)

    def _on_tag(self) -> None:
        name = self.tag_text.value.strip()
        ids = list(self.model.selected)
        if not ids:
            self._say("select the experiments to tag")
            return
        with self._lock:
            try:
                actions.tag(self.model.store, ids, name)
                self.model.load()
            except NbexpError as error:
                self._say(str(error), error=True)
                return
            self.tag_text.value = ""
            self._draw()
            self._say(f"tagged {len(ids)} experiment{'' if len(ids) == 1 else 's'} {name}")

    def _on_delete(self) -> None:
        chosen = list(self.model.selected.values())
        if not chosen:
            self._say("select the experiments to delete")
            return
        names = html.escape(", ".join(row["name"] for row in chosen[:5]))
        more = f" and {len(chosen) - 5} more" if len(chosen) > 5 else ""
        plural = "" if len(chosen) == 1 else "s"
        self.confirm_text.value = (
            f"<b>Delete {len(chosen)} experiment{plural}</b> ({names}{more})? The records go "
            "now, their stored objects at the next <code>nbexp gc</code>.&nbsp;"
        )
        self.confirm.layout.display = "flex"

    def _hide_confirm(self) -> None:
        self.confirm.layout.display = "none"

    def _on_confirm_delete(self) -> None:
        with self._lock:
            self._hide_confirm()
            ids = list(self.model.selected)
            try:
                labels = actions.delete(self.model.store, ids)
            except NbexpError as error:
                self._say(str(error), error=True)
                return
            self.model.selected.clear()
            self.refresh()
            self._say(f"deleted {', '.join(labels)}")


def _set_options(dropdown: w.Dropdown, options: list[Any]) -> None:
    """Replace a dropdown's options, keeping its value when still offered, else the first."""
    if list(dropdown.options) == options:
        if dropdown.value is None and options:
            dropdown.index = 0
        return
    current = dropdown.value
    values = [option[1] if isinstance(option, tuple) else option for option in options]
    dropdown.options = options
    if current in values:
        dropdown.value = current
    elif options:
        dropdown.index = 0


def browse(
    query: str | None = None,
    *,
    refs: Iterable[str] | None = None,
    store: Store | None = None,
    **options: Any,
) -> ExperimentBrowser:
    """The experiment table for `store` (default: this project's), filtered by `query`."""
    return ExperimentBrowser(query, refs=refs, store=store, **options)
