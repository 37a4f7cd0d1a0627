"""The table's widgets: a header of sort buttons, a column of selection checkboxes beside one
HTML table of the page's rows, and the pager.

Redrawing a page sends one HTML value and only the checkbox and button traits that changed,
so sorting or paging 10,000 experiments costs one small round trip. The checkboxes and header
buttons are made once and reused; rows and checkboxes line up because both are ROW_HEIGHT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w

from .render import ROW_HEIGHT, Column

CHECK_WIDTH = 28


def button(description: str, tooltip: str, css: str, **layout: Any) -> w.Button:
    """A compact button (as wide as its text unless told) with a CSS class to find it by."""
    layout.setdefault("width", "auto")
    made = w.Button(description=description, tooltip=tooltip, layout=w.Layout(**layout))
    made.add_class(css)
    return made


class Grid(w.VBox):
    """Header, checkboxes, table and pager. It reports clicks; it keeps no state of its own."""

    def __init__(
        self,
        page_size: int,
        *,
        on_sort: Callable[[str], object],
        on_check: Callable[[int, bool], None],
        on_check_page: Callable[[bool], None],
        on_turn: Callable[[int], object],
    ) -> None:
        self._on_sort = on_sort
        self._syncing = False
        self.heads: dict[str, w.Button] = {}
        self.check_page = self._checkbox("select every row on this page", "nbexp-page-check")
        self.check_page.observe(
            lambda change: None if self._syncing else on_check_page(change["new"]), "value"
        )
        self.checks = [self._checkbox("", "nbexp-row-check") for _ in range(page_size)]
        for index, check in enumerate(self.checks):
            check.observe(
                lambda change, i=index: None if self._syncing else on_check(i, change["new"]),
                "value",
            )
        self.header = w.HBox([self.check_page], layout=w.Layout(flex="0 0 auto"))
        self.header.add_class("nbexp-header")
        self.table = w.HTML("", layout=w.Layout(flex="0 0 auto", margin="0"))
        self.table.add_class("nbexp-grid")
        body = w.HBox(
            [w.VBox(self.checks, layout=w.Layout(flex="0 0 auto")), self.table],
            layout=w.Layout(flex="0 0 auto"),
        )
        scroller = w.VBox(
            [self.header, body],
            layout=w.Layout(overflow="auto hidden", max_width="100%", align_items="flex-start"),
        )
        self.prev_button = button("◀ Prev", "previous page", "nbexp-prev", width="80px")
        self.prev_button.on_click(lambda _: on_turn(-1))
        self.next_button = button("Next ▶", "next page", "nbexp-next", width="80px")
        self.next_button.on_click(lambda _: on_turn(+1))
        self.pager = w.HTML("")
        self.pager.add_class("nbexp-pager")
        self.legend = w.HTML("")
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

    @staticmethod
    def _checkbox(tooltip: str, css: str) -> w.Checkbox:
        check = w.Checkbox(
            value=False,
            indent=False,
            description="",
            tooltip=tooltip or None,
            layout=w.Layout(height=f"{ROW_HEIGHT}px", width=f"{CHECK_WIDTH}px", margin="0"),
        )
        check.add_class("nbexp-check")
        check.add_class(css)
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
        self._syncing = True
        try:
            for index, check in enumerate(self.checks):
                shown = index < len(checked)
                check.value = shown and checked[index]
                check.layout.display = None if shown else "none"
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
                head = button(column.label, "", "nbexp-head")
                head.add_class(f"nbexp-head-{column.group}")
                head.on_click(lambda _, key=column.key: self._on_sort(key))
                self.heads[column.key] = head
            arrow = (" ▼" if descending else " ▲") if column.key == sort_key else ""
            head.description = column.label + arrow
            head.tooltip = f"{column.key}: click to sort" if column.sortable else column.key
            head.disabled = not column.sortable
            head.layout.width = f"{width}px"
            head.layout.height = f"{ROW_HEIGHT}px"
            head.layout.margin = "0"
            head.layout.flex = "0 0 auto"
            children.append(head)
        if list(self.header.children) != children:
            self.header.children = children

    def owned(self) -> list[w.Widget]:
        """Every widget the grid made (to close them with it)."""
        return [*self.heads.values(), *self.checks, self.check_page, self.header, self.table]
