"""The experiment table drawn from index rows: columns, cells, best values, differences.

Pure functions over `Store.rows` dicts, no widgets: the browser puts `page_html` in one HTML
widget, and terminal IPython prints `text_table`. Best values and differing params are
computed by the caller and passed in, so the same page can be redrawn cheaply.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import api
from ..record import SHORT_ID_LENGTH
from ..show import TABLE_DIGITS, format_value
from ..store import SORTABLE, Store

ROW_HEIGHT = 24  # px; the checkbox column beside the table uses the same height
CHAR_WIDTH = 7.4  # px per character at the table's 12px font, a little generous
MIN_WIDTH, MAX_WIDTH = 44, 240
PADDING = 16  # px of cell padding, both sides together, and a little air

# Tokens in a metric's name that mean "smaller is better"; any other metric is "higher".
LOWER_WORDS = frozenset(
    {
        *("loss", "error", "err", "rmse", "mae", "mse", "msle", "rmsle", "mape", "smape"),
        *("logloss", "nll", "perplexity", "ppl", "wer", "cer", "fpr", "fnr", "far", "frr"),
        *("latency", "time", "seconds", "secs", "duration", "runtime", "cost", "regret"),
        *("brier", "deviance", "distance", "bpc", "bpd", "eer"),
    }
)
_SPLIT = re.compile(r"[^a-z0-9]+|(?<=[a-z])(?=[0-9])|(?<=[0-9])(?=[a-z])")
_STATUS = {"ok": ("✓", "nbexp-ok"), "failed": ("✗", "nbexp-failed")}
_BASE = {
    "id": "id",
    "name": "name",
    "created": "time",
    "status": "status",
    "duration": "duration",
    "tags": "tags",
}
HIDDEN_BY_DEFAULT = ("duration",)


@dataclass(frozen=True)
class Column:
    """One table column: `key` is what the store sorts by ("name", "params.depth", ...)."""

    key: str
    label: str
    group: str  # "base", "params" or "metrics"

    @property
    def sortable(self) -> bool:
        return self.group != "base" or self.key in SORTABLE  # the store sorts by these


def columns_for(params: Iterable[str], metrics: Iterable[str]) -> list[Column]:
    """Every column: the fixed ones, then each param, then each metric, in first-seen order."""
    return [
        *(Column(key, label, "base") for key, label in _BASE.items()),
        *(Column(f"params.{name}", name, "params") for name in params),
        *(Column(f"metrics.{name}", name, "metrics") for name in metrics),
    ]


def lower_is_better(
    metric: str,
    lower: Iterable[str] = (),
    higher: Iterable[str] = (),
) -> bool:
    """Whether a smaller value of `metric` is the better one: explicit lists win, then the name.

    `val_loss`, `test_error`, `RMSE`, `mae@5`, `trainLoss` and `fit_time` are lower-is-better;
    `acc`, `f1`, `auc` and anything else higher-is-better.
    """
    bare = metric.removeprefix("metrics.")
    names = {bare, f"metrics.{bare}"}
    if names & set(higher):
        return False
    if names & set(lower):
        return True
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", bare).lower()
    tokens = [token for token in _SPLIT.split(spaced) if token]
    return any(t in LOWER_WORDS or t.endswith(("loss", "error")) for t in tokens)


def is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def value_of(row: Mapping[str, Any], key: str) -> Any:
    if key.startswith("params."):
        return row["params"].get(key[7:])
    if key.startswith("metrics."):
        return row["metrics"].get(key[8:])
    return row.get(key)


def cell_text(key: str, value: Any) -> str:
    """How one value reads in the table (and in the text table)."""
    if value is None:
        return ""
    if key == "id":
        return str(value)[:SHORT_ID_LENGTH]
    if key == "created":
        return str(value)[:19].replace("T", " ")
    if key == "tags":
        return ", ".join(value)
    if key == "duration" and is_number(value):
        return f"{value:.2f} s"
    return format_value(value, TABLE_DIGITS)


def widths(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Pixel width per column: fits the header (with room for a sort arrow) and the page."""
    result = []
    for column in columns:
        chars = len(column.label) + 2
        for row in rows:
            chars = max(chars, len(cell_text(column.key, value_of(row, column.key))))
        if column.key == "status":
            chars += 2
        result.append(min(MAX_WIDTH, max(MIN_WIDTH, round(chars * CHAR_WIDTH) + PADDING)))
    return result


@dataclass(frozen=True)
class Marks:
    """What to emphasise on a page: best metric values, a reference row, stale experiments."""

    best: Mapping[str, Any]  # "metrics.f1" -> the best value in the filtered set
    reference: Mapping[str, Any] | None = None  # the first selected row (its params are compared)
    selected: frozenset[str] = frozenset()
    stale: Mapping[str, str] | None = None  # id -> why it is stale


def _cell_class(column: Column, value: Any, row: Mapping[str, Any], marks: Marks) -> str:
    classes = []
    if is_number(value) and column.key not in ("id",):
        classes.append("nbexp-num")
    best = marks.best.get(column.key) if column.group == "metrics" else None
    if best is not None and is_number(value) and value == best:
        classes.append("nbexp-best")
    if column.group == "params" and marks.reference is not None:
        ref = marks.reference
        if row["id"] != ref["id"] and value_of(ref, column.key) != value:
            classes.append("nbexp-diff")
    return " ".join(classes)


def _status_cell(row: Mapping[str, Any], marks: Marks) -> str:
    mark, css = _STATUS.get(row["status"], ("!", "nbexp-warn"))
    text = f"<span class='{css}'>{mark} {html.escape(row['status'])}</span>"
    why = (marks.stale or {}).get(row["id"])
    if why is not None:
        text += f" <span class='nbexp-stale' title='{html.escape(why, quote=True)}'>stale</span>"
    return text


def page_html(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    column_widths: Sequence[int],
    marks: Marks,
) -> str:
    """The page as one fixed-layout HTML table (no header: the header row is buttons)."""
    total = sum(column_widths)
    out = [
        f"<table class='nbexp-table' style='width:{total}px'><colgroup>",
        *(f"<col style='width:{w}px'>" for w in column_widths),
        "</colgroup><tbody>",
    ]
    for row in rows:
        classes = ["nbexp-row"]
        if row["id"] in marks.selected:
            classes.append("nbexp-selected")
        if marks.reference is not None and row["id"] == marks.reference["id"]:
            classes.append("nbexp-reference")
        out.append(f"<tr class='{' '.join(classes)}' data-id='{row['id'][:SHORT_ID_LENGTH]}'>")
        for column in columns:
            value = value_of(row, column.key)
            text = cell_text(column.key, value)
            body = _status_cell(row, marks) if column.key == "status" else html.escape(text)
            attributes = f"data-col='{html.escape(column.key, quote=True)}'"
            css = _cell_class(column, value, row, marks)
            if css:
                attributes += f" class='{css}'"
            if len(text) > 12:  # may be cut off: the whole value on hover
                attributes += f" title='{html.escape(text, quote=True)}'"
            out.append(f"<td {attributes}>{body}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def text_table(
    rows: Sequence[Mapping[str, Any]], total: int, *, query: str | None = None, shown: int = 50
) -> str:
    """A plain-text table for terminal IPython: the newest `shown` rows of `total`."""
    if not rows:
        return "no experiments" + (f" match `{query}`" if query else " yet")
    params = list(dict.fromkeys(k for row in rows for k in row["params"]))
    metrics = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    columns = [c for c in columns_for(params, metrics) if c.key not in HIDDEN_BY_DEFAULT]
    cells = [[cell_text(c.key, value_of(row, c.key)) for c in columns] for row in rows[:shown]]
    sizes = [max(len(c.label), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [" ".join(c.label.ljust(w) for c, w in zip(columns, sizes, strict=True)).rstrip()]
    lines.extend(
        " ".join(v.ljust(w) for v, w in zip(line, sizes, strict=True)).rstrip() for line in cells
    )
    if total > len(cells):
        lines.append(
            f"… {total - len(cells):,} more (nbexp.experiments() returns them all as a DataFrame)"
        )
    return "\n".join(lines)


def text_listing(query: str | None = None, store: Store | None = None, shown: int = 50) -> str:
    """`%experiments` in terminal IPython: the newest `shown` matching rows as text."""
    store = api.reading(store)
    return text_table(
        api.rows(query, limit=shown, store=store),
        api.count(query, store=store),
        query=query,
        shown=shown,
    )


STYLE = f"""<style>
.nbexp-browser {{ font-size: 12px; }}
.nbexp-browser .nbexp-table {{ border-collapse: collapse; table-layout: fixed;
  font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 12px;
  color: var(--jp-ui-font-color1, inherit); }}
.nbexp-browser .nbexp-table td {{ height: {ROW_HEIGHT}px; line-height: {ROW_HEIGHT}px;
  padding: 0 6px; box-sizing: border-box; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; border: none; text-align: left; }}
.nbexp-browser .nbexp-table tr:nth-child(even) td {{ background: rgba(127,127,127,0.09); }}
.nbexp-browser .nbexp-table tr.nbexp-selected td {{ background: rgba(33,150,243,0.16); }}
.nbexp-browser .nbexp-table td.nbexp-num {{ text-align: right;
  font-variant-numeric: tabular-nums; }}
.nbexp-browser .nbexp-table td.nbexp-best {{ background: rgba(46,160,67,0.30) !important;
  font-weight: 600; }}
.nbexp-browser .nbexp-table td.nbexp-diff {{ background: rgba(230,160,20,0.32) !important;
  font-weight: 600; }}
.nbexp-browser .nbexp-table tr.nbexp-reference td:first-child {{
  box-shadow: inset 3px 0 0 rgba(33,150,243,0.9); }}
.nbexp-browser .nbexp-ok {{ color: #1a7f37; }}
.nbexp-browser .nbexp-failed {{ color: #cf222e; font-weight: 600; }}
.nbexp-browser .nbexp-warn {{ color: #9a6700; font-weight: 600; }}
.nbexp-browser .nbexp-stale {{ color: #9a6700; border: 1px solid #d4a72c; border-radius: 3px;
  padding: 0 3px; font-size: 11px; line-height: 14px; }}
.nbexp-browser .nbexp-head.jupyter-button {{ margin: 0 !important; height: {ROW_HEIGHT}px;
  padding: 0 6px; font-size: 12px; font-weight: 600; text-align: left; border-radius: 0;
  border-bottom: 2px solid rgba(127,127,127,0.35); overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; box-shadow: none; }}
.nbexp-browser .nbexp-head-params.jupyter-button {{ background: rgba(230,160,20,0.14); }}
.nbexp-browser .nbexp-head-metrics.jupyter-button {{ background: rgba(46,160,67,0.14); }}
.nbexp-browser .nbexp-head-base.jupyter-button {{ background: rgba(127,127,127,0.12); }}
.nbexp-browser .nbexp-check {{ margin: 0 !important; height: {ROW_HEIGHT}px !important;
  width: 28px !important; justify-content: center; }}
.nbexp-browser .nbexp-check input {{ margin: 0 auto; }}
.nbexp-browser .nbexp-message-error {{ color: #cf222e; }}
.nbexp-browser .nbexp-legend span {{ padding: 0 4px; margin-right: 8px; }}
</style>"""

LEGEND = (
    "<span class='nbexp-legend'><span style='background:rgba(46,160,67,0.30)'>best</span>"
    "<span style='background:rgba(230,160,20,0.32)'>differs from the first selected</span>"
    "</span>"
)
