"""The actions on the selected experiments: Compare, Plot, Restore, Export, Tag and Delete
(with a confirm step), and the Output area below the table where their results appear.

Each button calls a plain function in `actions`; an NbexpError becomes the table's one-line
message (`Host.say`), never a traceback.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any, Protocol

import ipywidgets as w

from .. import api
from ..errors import NbexpError
from . import actions
from .grid import Kit
from .model import TableModel

PLOT_LIMIT = 2000  # rows plotted when nothing is selected


class Host(Protocol):
    """What the bar needs of the table it sits under."""

    model: TableModel

    def say(self, text: str, *, error: bool = False) -> None: ...

    def redraw(self) -> None: ...

    def refresh(self, *, full: bool = False) -> None: ...

    def clear_selection(self) -> None: ...


class ActionBar(w.VBox):
    """The selection line, the plot line, the delete confirmation and the result area."""

    def __init__(self, host: Host, kit: Kit, lock: threading.RLock) -> None:
        self.host = host
        self._lock = lock
        self.selection = kit.html("nothing selected")
        self.selection.add_class("nbexp-selection")
        self.compare_button = kit.button("Compare", "diff of the two selected", "nbexp-compare")
        self.compare_button.on_click(lambda _: self.compare())
        self.restore_button = kit.button(
            "Restore", "put the selected experiment's variables into this kernel", "nbexp-restore"
        )
        self.restore_button.on_click(lambda _: self.restore())
        self.export_button = kit.button(
            "Export", "write a script reproducing each selected experiment", "nbexp-export"
        )
        self.export_button.on_click(lambda _: self.export())
        self.tag_text = w.Text(placeholder="tag", layout=w.Layout(width="110px"))
        self.tag_text.add_class("nbexp-tag-text")
        self.tag_button = kit.button("Tag", "tag the selected experiments", "nbexp-tag")
        self.tag_button.on_click(lambda _: self.tag())
        self.delete_button = kit.button(
            "Delete…", "delete the selected experiments", "nbexp-delete"
        )
        self.delete_button.on_click(lambda _: self.ask_delete())
        self.clear_button = kit.button("Clear", "clear the selection", "nbexp-clear")
        self.clear_button.on_click(lambda _: host.clear_selection())

        self.plot_y = w.Dropdown(description="plot", layout=w.Layout(width="220px"))
        self.plot_y.style.description_width = "32px"
        self.plot_x = w.Dropdown(description="by", layout=w.Layout(width="230px"))
        self.plot_x.style.description_width = "24px"
        self.plot_x.observe(lambda _: self._fill_plot_y(), "value")
        self.plot_button = kit.button(
            "Plot", "plot the selection (else the filtered rows)", "nbexp-plot"
        )
        self.plot_button.on_click(lambda _: self.plot())

        self.confirm_text = kit.html()
        confirm_yes = kit.button("Delete", "delete them now", "nbexp-confirm-delete")
        confirm_yes.button_style = "danger"
        confirm_yes.on_click(lambda _: self.delete())
        confirm_no = kit.button("Cancel", "keep them", "nbexp-cancel-delete")
        confirm_no.on_click(lambda _: self.hide_confirm())
        self.confirm = w.HBox(
            [self.confirm_text, confirm_yes, confirm_no],
            layout=w.Layout(display="none", align_items="center"),
        )
        self.result = w.Output(layout=w.Layout(max_width="100%", overflow="auto"))
        self.result.add_class("nbexp-result")
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
        super().__init__([selected, plot, self.confirm, self.result])

    @property
    def model(self) -> TableModel:
        return self.host.model

    def update(self) -> None:
        """Follow the selection: its names, which buttons apply, what can be plotted."""
        chosen = list(self.model.selected.values())
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
        options = [
            ("across experiments", actions.PLOT_RUNS),
            *((f"against {name}", f"params.{name}") for name in self.model.params),
            ("params (parallel)", actions.PLOT_PARALLEL),
            ("logged series", actions.PLOT_SERIES),
        ]
        _set_options(self.plot_x, options)
        self._fill_plot_y()

    def _fill_plot_y(self) -> None:
        if self.plot_x.value == actions.PLOT_SERIES:  # names of series live in the records
            chosen = list(self.model.selected) or [row["id"] for row in self.model.rows]
            _set_options(self.plot_y, actions.series_names(self.model.store, chosen))
        else:
            _set_options(self.plot_y, self.model.metrics)

    def show(self, value: Any) -> None:
        self.result.outputs = (actions.bundle(value),)

    def _result(self, make: Callable[[], Any], note: str = "") -> None:
        """Run an action and show what it returns below the table (or its error above)."""
        with self._lock:
            try:
                value = make()
            except NbexpError as error:
                self.host.say(str(error), error=True)
                return
            self.host.say(note)
            self.show(value)

    # -- the actions ----------------------------------------------------------------------

    def compare(self) -> None:
        ids = list(self.model.selected)
        if len(ids) != 2:
            self.host.say(f"Compare needs exactly two selected experiments ({len(ids)} selected)")
            return
        self._result(lambda: actions.diff(self.model.store, ids[0], ids[1]))

    def plot(self) -> None:
        metric, x = self.plot_y.value, self.plot_x.value
        if not metric:
            self.host.say("nothing to plot: pick a metric (or, for logged series, a series)")
            return
        rows = list(self.model.selected.values())
        note = ""
        if not rows:
            model = self.model
            rows = api.rows(model.query, limit=PLOT_LIMIT, ids=model.pinned, store=model.store)
            note = f"nothing selected: plotted the {len(rows):,} filtered experiments"
        self._result(lambda: actions.plot(self.model.store, rows, metric, x), note)

    def restore(self) -> None:
        ids = list(self.model.selected)
        if len(ids) != 1:
            self.host.say(f"Restore needs exactly one selected experiment ({len(ids)} selected)")
            return
        self._result(lambda: actions.restore(self.model.store, ids[0]))

    def export(self) -> None:
        if not self.model.selected:
            self.host.say("select the experiments to export")
            return
        self._result(lambda: actions.export(self.model.store, list(self.model.selected)))

    def tag(self) -> None:
        name = self.tag_text.value.strip()
        ids = list(self.model.selected)
        if not ids:
            self.host.say("select the experiments to tag")
            return
        with self._lock:
            try:
                actions.tag(self.model.store, ids, name)
                self.model.load()
            except NbexpError as error:
                self.host.say(str(error), error=True)
                return
            self.tag_text.value = ""
            self.host.redraw()
            self.host.say(f"tagged {len(ids)} experiment{'' if len(ids) == 1 else 's'} {name}")

    def ask_delete(self) -> None:
        chosen = list(self.model.selected.values())
        if not chosen:
            self.host.say("select the experiments to delete")
            return
        names = html.escape(", ".join(row["name"] for row in chosen[:5]))
        more = f" and {len(chosen) - 5} more" if len(chosen) > 5 else ""
        plural = "" if len(chosen) == 1 else "s"
        self.confirm_text.value = (
            f"<b>Delete {len(chosen)} experiment{plural}</b> ({names}{more})? The records go "
            "now, their stored objects at the next <code>nbexp gc</code>.&nbsp;"
        )
        self.confirm.layout.display = "flex"

    def hide_confirm(self) -> None:
        self.confirm.layout.display = "none"

    def delete(self) -> None:
        with self._lock:
            self.hide_confirm()
            ids = list(self.model.selected)
            try:
                labels = actions.delete(self.model.store, ids)
            except NbexpError as error:
                self.host.say(str(error), error=True)
                return
            self.model.selected.clear()
            self.host.refresh()
            self.host.say(f"deleted {', '.join(labels)}")


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
