"""What the table shows, apart from any widget: filter, sort, page, selection and columns.

Everything heavy happens in the store's SQL, reached through the verbs of `api` over a
read-only store: a page is `api.rows(limit=, offset=)`, the total is `api.count`, the best
value of each metric comes from one aggregate query (`api.metric_bounds`, cached until the
filter or the store changes), and the names of every param and metric (the columns) from
`api.column_names`, then from the new experiments only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import api
from ..errors import NbexpError
from ..store import Store
from ..subrecords import IndexRow
from . import actions, render
from .render import Column

INCREMENTAL_LIMIT = 500  # new experiments read one by one; beyond that, re-read every row

Row = IndexRow


class TableModel:
    """The table's state over one store. Methods raise NbexpError (e.g. a bad filter)."""

    def __init__(
        self,
        store: Store,
        *,
        page_size: int,
        lower_is_better: Iterable[str] = (),
        higher_is_better: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.page_size = page_size
        self.lower_is_better = tuple(lower_is_better)
        self.higher_is_better = tuple(higher_is_better)
        self.query: str | None = None
        self.pinned: list[str] | None = None  # only these ids (nbexp.compare(refs))
        self.sort: str | None = None  # None: newest first
        self.descending = False
        self.page = 0
        self.total = 0
        self.rows: list[Row] = []
        self.selected: dict[str, Row] = {}  # id -> row, in the order selected
        self.hidden: set[str] = set(render.HIDDEN_BY_DEFAULT)
        self.stale: dict[str, str] = {}
        self._params: dict[str, None] = {}
        self._metrics: dict[str, None] = {}
        self._known: tuple[int, str | None] = (-1, None)
        self._best: dict[str, Any] = {}
        self._best_key: tuple[Any, ...] | None = None

    # -- columns --------------------------------------------------------------------------

    @property
    def params(self) -> list[str]:
        return list(self._params)

    @property
    def metrics(self) -> list[str]:
        return list(self._metrics)

    def discover(self, *, full: bool = False) -> None:
        """Learn every param and metric name: all rows once, later only the new ones."""
        known = api.newest(store=self.store)
        count = known[0]
        if known == self._known and not full:
            return
        added = count - self._known[0]
        if not full and self._known[0] >= 0 and added <= 0:
            # deletions: keep the names (an emptied column goes at the next ↻), skip the scan
            self._known = known
            self._best_key = None
        elif not full and self._known[0] >= 0 and added <= INCREMENTAL_LIMIT:
            # the newest rows; experiments pulled from a remote may be older (↻ reads all)
            self._learn(api.rows(limit=added, store=self.store))
            self._known = known
            self._best_key = None
        else:
            self.adopt(self.scan())

    def scan(self) -> tuple[dict[str, None], dict[str, None], tuple[int, str | None]]:
        """Every param and metric name in the store, in first-seen order (SQL: the index's
        column list, which reads no rows out)."""
        names = api.column_names(store=self.store)
        params = {n[len("params.") :]: None for n in names if n.startswith("params.")}
        metrics = {n[len("metrics.") :]: None for n in names if n.startswith("metrics.")}
        return params, metrics, api.newest(store=self.store)

    def adopt(
        self, scanned: tuple[dict[str, None], dict[str, None], tuple[int, str | None]]
    ) -> bool:
        """Take a scan's names; True when the columns changed."""
        params, metrics, known = scanned
        changed = list(params) != list(self._params) or list(metrics) != list(self._metrics)
        self._params, self._metrics, self._known = params, metrics, known
        self._best_key = None
        return changed

    def _learn(self, rows: Iterable[Row]) -> None:
        params, metrics = dict(self._params), dict(self._metrics)  # new dicts: readers iterate
        for row in rows:
            params.update(dict.fromkeys(row["params"]))
            metrics.update(dict.fromkeys(row["metrics"]))
        self._params, self._metrics = params, metrics
        self._best_key = None

    def columns(self) -> list[Column]:
        return render.columns_for(self._params, self._metrics)

    def visible(self) -> list[Column]:
        return [c for c in self.columns() if c.key not in self.hidden]

    def best(self) -> dict[str, Any]:
        """The best value of each metric among the filtered experiments: the store's
        `metric_bounds` (one SQL aggregate), or the pinned rows themselves."""
        key = (self.query, tuple(self.pinned or ()), self._known, tuple(self._metrics))
        if key == self._best_key:
            return self._best
        bounds: dict[str, tuple[Any, Any]] = {}
        if self.pinned is not None:
            columns: dict[str, list[Any]] = {}
            for row in api.rows(self.query, ids=self.pinned, store=self.store):
                for name, value in row["metrics"].items():
                    columns.setdefault(f"metrics.{name}", []).append(value)
            for name, values in columns.items():
                numbers = [value for value in values if render.is_number(value)]
                if numbers:
                    bounds[name] = (min(numbers), max(numbers))
        else:
            bounds = api.metric_bounds(self.query, store=self.store)
        best: dict[str, Any] = {}
        for name, (low, high) in bounds.items():
            lower = render.lower_is_better(name, self.lower_is_better, self.higher_is_better)
            best[name] = low if lower else high
        self._best, self._best_key = best, key
        return best

    # -- the page -------------------------------------------------------------------------

    def load(self) -> None:
        """Query the page and the total; selected rows on it are refreshed too."""
        if self.pinned is not None:
            self.total = len(api.rows(self.query, ids=self.pinned, store=self.store))
        else:
            self.total = api.count(self.query, store=self.store)
        self.page = max(0, min(self.page, (self.total - 1) // self.page_size))
        self.rows = api.rows(
            self.query,
            sort=self.sort,
            descending=self.descending,
            limit=self.page_size,
            offset=self.page * self.page_size,
            ids=self.pinned,
            store=self.store,
        )
        for row in self.rows:
            if row["id"] in self.selected:
                self.selected[row["id"]] = row
        self.stale = actions.stale(self.store, [row["id"] for row in self.rows])

    def set_query(self, query: str | None) -> None:
        """Filter; a bad query raises and leaves the previous filter in place."""
        previous, page = self.query, self.page
        self.query, self.page = query, 0
        try:
            self.load()
        except NbexpError:
            self.query, self.page = previous, page
            raise

    @property
    def sort_key(self) -> str:
        return (self.sort or "created").lstrip("-")

    @property
    def sort_descending(self) -> bool:
        return self.descending if self.sort else True

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        """Sort by a column; without `descending`, the sorted column again reverses."""
        if descending is None:
            descending = not self.sort_descending if key == self.sort_key else key == "created"
        self.sort, self.descending, self.page = key, descending, 0
        self.load()

    def turn(self, step: int) -> None:
        self.page = max(0, self.page + step)
        self.load()

    def pin(self, refs: Iterable[str]) -> None:
        """Show only these experiments, all selected."""
        ids = list(dict.fromkeys(api.resolve(ref, store=self.store) for ref in refs))
        found = {row["id"]: row for row in api.rows(ids=ids, store=self.store)}
        self.pinned = ids
        self.selected = {key: found[key] for key in ids if key in found}
        self.page = 0

    def unpin(self) -> None:
        self.pinned, self.page = None, 0
        self.load()

    # -- selection ------------------------------------------------------------------------

    def select(self, refs: Iterable[str]) -> None:
        for ref in refs:
            experiment_id = api.resolve(ref, store=self.store)
            found = api.rows(ids=[experiment_id], store=self.store)
            if found:
                self.selected[experiment_id] = found[0]

    def toggle(self, rows: Iterable[Row], on: bool) -> None:
        for row in rows:
            if on:
                self.selected[row["id"]] = row
            else:
                self.selected.pop(row["id"], None)

    def prune_selection(self) -> None:
        """Forget selected experiments that were deleted meanwhile."""
        if self.selected:
            alive = {row["id"] for row in api.rows(ids=list(self.selected), store=self.store)}
            self.selected = {k: v for k, v in self.selected.items() if k in alive}

    def marks(self) -> render.Marks:
        return render.Marks(
            best=self.best(),
            reference=next(iter(self.selected.values()), None),
            selected=frozenset(self.selected),
            stale=self.stale,
        )

    def page_text(self) -> str:
        if not self.rows:
            filtered = self.query or self.pinned is not None
            return "no experiments" + (" match this filter" if filtered else " yet")
        first = self.page * self.page_size
        return f"rows {first + 1:,}–{first + len(self.rows):,} of {self.total:,}"

    @property
    def has_previous(self) -> bool:
        return self.page > 0

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size + len(self.rows) < self.total
