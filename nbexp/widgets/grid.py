"""The table's widgets: a header of sort buttons, a column of selection checkboxes beside one
HTML table of the page's rows, and the pager.

Redrawing a page sends one HTML value and only the checkbox and button traits that changed,
so sorting or paging 10,000 experiments costs one small round trip. The checkboxes (as many
as the longest page so far) and header buttons are made once and reused; rows and checkboxes
line up because both are ROW_HEIGHT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
from ipywidgets.widgets.widget_bool import CheckboxStyle
from ipywidgets.widgets.widget_string import HTMLStyle

from .render import ROW_HEIGHT, Column

CHECK_WIDTH = 28


class Kit:
    """Layouts and styles shared by many widgets. Each widget otherwise brings a Layout and a
    style model of its own, and a table of 300 models took the browser over a second to show;
    sharing them halves the count."""

    def __init__(self) -> None:
        self.auto = w.Layout(width="auto")
        self.button_style = w.ButtonStyle()
        self.check_style = CheckboxStyle()
        self.html_style = HTMLStyle()
        self.row = w.Layout(height=f"{ROW_HEIGHT}px", width=f"{CHECK_WIDTH}px", margin="0")
        self.row_hidden = w.Layout(display="none")
        self.fixed = w.Layout(flex="0 0 auto")

    def button(self, description: str, tooltip: str, css: str, **layout: Any) -> w.Button:
        """A compact button (as wide as its text unless told) with a CSS class to find it by."""
        made = w.Button(
            description=description,
            tooltip=tooltip,
            layout=w.Layout(**layout) if layout else self.auto,
            style=self.button_style,
        )
        made.add_class(css)
        return made

    def html(self, value: str = "", **layout: Any) -> w.HTML:
        return w.HTML(
            value, layout=w.Layout(**layout) if layout else self.auto, style=self.html_style
        )

    def owned(self) -> list[w.Widget]:
        return [
            self.auto,
            self.button_style,
            self.check_style,
            self.html_style,
            self.row,
            self.row_hidden,
            self.fixed,
        ]


class Grid(w.VBox):
    """Header, checkboxes, table and pager. It reports clicks; it keeps no state of its own."""

    def __init__(
        self,
        *,
        on_sort: Callable[[str], object],
        on_check: Callable[[int, bool], None],
        on_check_page: Callable[[bool], None],
        on_turn: Callable[[int], object],
        kit: Kit,
    ) -> None:
        self.kit = kit
        self._on_sort = on_sort
        self._syncing = False
        self.heads: dict[str, w.Button] = {}
        self.check_page = self._checkbox("select every row on this page", "nbexp-page-check")
        self.check_page.observe(
            lambda change: None if self._syncing else on_check_page(change["new"]), "value"
        )
        self._on_check = on_check
        self.checks: list[w.Checkbox] = []  # one per row shown so far, reused page to page
        self.check_column = w.VBox([], layout=kit.fixed)
        self.header = w.HBox([self.check_page], layout=kit.fixed)
        self.header.add_class("nbexp-header")
        self.table = w.HTML("", layout=kit.fixed, style=kit.html_style)
        self.table.add_class("nbexp-grid")
        body = w.HBox(
            [self.check_column, self.table],
            layout=kit.fixed,
        )
        scroller = w.VBox(
            [self.header, body],
            layout=w.Layout(overflow="auto hidden", max_width="100%", align_items="flex-start"),
        )
        self.prev_button = kit.button("◀ Prev", "previous page", "nbexp-prev")
        self.prev_button.on_click(lambda _: on_turn(-1))
        self.next_button = kit.button("Next ▶", "next page", "nbexp-next")
        self.next_button.on_click(lambda _: on_turn(+1))
        self.pager = kit.html()
        self.pager.add_class("nbexp-pager")
        self.legend = kit.html()
        pager = w.HBox(
            [
                self.prev_button,
                self.next_button,
                self.pager,
                w.Box(layout=w.Layout(flex="1 1 auto")),
                self.legend,
            ],
            layout=w.Layout(align_items="center", width="100%"),
        )
        super().__init__([scroller, pager], layout=w.Layout(width="100%"))

    def _checkbox(self, tooltip: str, css: str) -> w.Checkbox:
        check = w.Checkbox(
            value=False,
            indent=False,
            description="",
            tooltip=tooltip or None,
            layout=self.kit.row,
            style=self.kit.check_style,
        )
        check.add_class("nbexp-check")
        check.add_class(css)
        return check

    def _row_check(self, index: int) -> w.Checkbox:
        check = self._checkbox("", "nbexp-row-check")
        check.observe(
            lambda change: None if self._syncing else self._on_check(index, change["new"]),
            "value",
        )
        return check

    def draw(
        self,
        *,
        columns: Sequence[Column],
        widths: Sequence[int],
        html: str,
        checked: Sequence[bool],
        sort_key: str,
        descending: bool,
        page_text: str,
        has_previous: bool,
        has_next: bool,
    ) -> None:
        self._draw_header(columns, widths, sort_key, descending)
        self.table.value = html
        if len(checked) > len(self.checks):
            self.checks += [self._row_check(i) for i in range(len(self.checks), len(checked))]
            self.check_column.children = self.checks
        self._syncing = True
        try:
            for index, check in enumerate(self.checks):
                shown = index < len(checked)
                check.value = shown and checked[index]
                check.layout = self.kit.row if shown else self.kit.row_hidden
            self.check_page.value = bool(checked) and all(checked)
        finally:
            self._syncing = False
        self.pager.value = page_text
        self.prev_button.disabled = not has_previous
        self.next_button.disabled = not has_next

    def _draw_header(
        self, columns: Sequence[Column], widths: Sequence[int], sort_key: str, descending: bool
    ) -> None:
        children: list[w.Widget] = [self.check_page]
        for column, width in zip(columns, widths, strict=True):
            head = self.heads.get(column.key)
            if head is None:
                head = self.kit.button(column.label, "", "nbexp-head", flex="0 0 auto")
                head.add_class(f"nbexp-head-{column.group}")
                head.on_click(lambda _, key=column.key: self._on_sort(key))
                self.heads[column.key] = head
            arrow = (" ▼" if descending else " ▲") if column.key == sort_key else ""
            head.description = column.label + arrow
            head.tooltip = f"{column.key}: click to sort" if column.sortable else column.key
            head.disabled = not column.sortable
            head.layout.width = f"{width}px"
            children.append(head)
        if list(self.header.children) != children:
            self.header.children = children

    def owned(self) -> list[w.Widget]:
        """Every widget the grid made (to close them with it)."""
        return [*self.heads.values(), *self.checks, self.check_page, self.check_column]
