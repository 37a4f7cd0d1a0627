"""The listing as text — `nbexp list`'s padded table and its CSV — built column by column.

At 100,000 experiments the cells are the whole cost, so each column is turned into text in
one pass chosen by the types it holds (a float column's repeated values formatted once),
and each line is made by one %-format of the row's cells, never cell by cell. Values read
as everywhere else (`show.format_value`); the CSV is byte for byte what `csv.writer` writes
(quoted only where a comma, quote or line break needs it; CRLF line ends).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from .show import TABLE_DIGITS, format_value, terminal_safe

FORMAT = 2  # raise it when the text for a listing changes: kept texts of older ones are not used
_NONE = type(None)
_FIRST_19 = operator.itemgetter(slice(0, 19))  # "2026-12-01T10:00:00" of an ISO timestamp
_CSV_SPECIAL = (",", '"', "\r", "\n")
_CSV_NEEDS_QUOTES = re.compile('[,"\r\n]')
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f]")


def table(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell (the last one not), one row a line, without
    trailing blanks."""
    text = [
        _printable([name, *_cells(name, values, exact=False)])
        for name, values in zip(header, columns, strict=True)
    ]
    widths = [max(map(len, column)) for column in text[:-1]]
    line = " ".join([*(f"%-{width}s" for width in widths), "%s"])
    return "\n".join(map(str.rstrip, map(line.__mod__, zip(*text, strict=True)))) + "\n"


def _printable(cells: list[str]) -> list[str]:
    """A column's cells as they may reach a terminal: a pulled name holding a newline or a
    terminal escape shown escaped (one search per column; the usual column has none)."""
    if not _UNPRINTABLE.search("".join(cells)):
        return cells
    return [terminal_safe(cell, one_line=True) for cell in cells]


def csv(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> str:
    """RFC 4180 CSV as `csv.writer` writes it: numbers at full precision (`str`), nothing
    as an empty field, lists and dicts as compact JSON, created and tags as in the table."""
    text = [
        _quoted([name, *_cells(name, values, exact=True)])
        for name, values in zip(header, columns, strict=True)
    ]
    line = ",".join(["%s"] * len(text)) + "\r\n"
    return "".join(map(line.__mod__, zip(*text, strict=True)))


def _quoted(cells: list[str]) -> list[str]:
    """Cells as `csv.writer` (QUOTE_MINIMAL) writes them; a column without a comma, quote or
    line break anywhere (the usual case) is left as it is, found with one search."""
    joined = "\0".join(cells)
    if not any(special in joined for special in _CSV_SPECIAL):
        return cells
    special = _CSV_NEEDS_QUOTES.search
    return ['"' + cell.replace('"', '""') + '"' if special(cell) else cell for cell in cells]


def _cells(name: str, values: Sequence[Any], *, exact: bool) -> list[str]:
    """One column's cells as text, by the column's types. `exact` (CSV): numbers as `str`
    gives them, at full precision; else floats to TABLE_DIGITS significant digits."""
    if not values:
        return []
    if name == "created":  # "2026-12-01 10:00:00": the date and time, in one pass each
        return "\n".join(map(_FIRST_19, values)).replace("T", " ").split("\n")
    if name == "tags":
        return list(map(",".join, values))
    kinds = set(map(type, values))
    if kinds <= {str}:
        return list(values)
    if exact and kinds <= {int, float, str, _NONE}:
        return _by_value(values, str, distinct_types=not {int, float} <= kinds)
    if not exact and kinds <= {int, str, _NONE}:
        return _by_value(values, str)
    if not exact and kinds <= {float, int, _NONE}:  # as format(value, ".4g")
        return _by_value(values, f"%.{TABLE_DIGITS}g".__mod__)
    if exact:  # what csv.writer writes for any other value; lists and dicts as JSON
        return [_exact(value) for value in values]
    return [format_value(value, TABLE_DIGITS) for value in values]


def _exact(value: Any) -> str:
    if value is None:
        return ""
    return format_value(value) if isinstance(value, (list, dict)) else str(value)


def _by_value(
    values: Sequence[Any], text: Callable[[Any], str], *, distinct_types: bool = True
) -> list[str]:
    """`text(value)` of each value, nothing as an empty cell; a value repeated often (a
    param's few settings) is formatted once — unless equal values may read differently
    (0.0 and -0.0; 1 and 1.0 when `text` is `str`: not `distinct_types`)."""
    sample = values[:1000]  # a column's start tells whether its values repeat
    if distinct_types and len(set(sample)) * 4 <= len(sample):
        distinct: dict[Any, str] = dict.fromkeys(values, "")
        if len(distinct) * 4 <= len(values) and 0 not in distinct:
            for value in distinct:
                distinct[value] = "" if value is None else text(value)
            return list(map(distinct.__getitem__, values))
    if None not in values:
        return list(map(text, values))
    return ["" if value is None else text(value) for value in values]
