"""The listing as text — `nbexp list`'s padded table and its CSV — built column by column,
and patched row by row after a change.

At 100,000 experiments the cells are the whole cost, so each column is turned into text in
one pass chosen by the types it holds (a float column's repeated values formatted once),
and each line is made by one %-format of the row's cells, never cell by cell. A cell's text
depends on its column's name and its own value only (`cell`: values read as everywhere
else, `show.format_value`), so the text kept from the last listing can be patched: the rows
that changed since are taken out and put back in their places (`patch`), the columns padded
again only when their width changed — byte for byte the text a full render makes. The CSV
is byte for byte what `csv.writer` writes (quoted only where a comma, quote or line break
needs it; CRLF line ends).
"""

from __future__ import annotations

import operator
import re
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .record import SHORT_ID_LENGTH
from .show import TABLE_DIGITS, format_value, terminal_safe
from .store import listing_cache

FORMAT = 3  # raise it when the text for a listing changes: kept texts of older ones are not used
_NONE = type(None)
_FIRST_19 = operator.itemgetter(slice(0, 19))  # "2026-12-01T10:00:00" of an ISO timestamp
_SHORT = operator.itemgetter(slice(0, SHORT_ID_LENGTH))
_CSV_SPECIAL = (",", '"', "\r", "\n")
_CSV_NEEDS_QUOTES = re.compile('[,"\r\n]')
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f]")
_FLOAT = f"%.{TABLE_DIGITS}g".__mod__  # a float as format_value(value, TABLE_DIGITS) writes it
ALWAYS_SHOWN = 6  # id, name, created, status, duration, tags; origin and keys only with a value
_LINE_END = {"table": "\n", "csv": "\r\n"}


def table(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell (the last one not), one row a line, without
    trailing blanks."""
    text = _table_cells(header, columns)
    return _padded(text, [max(map(len, column)) for column in text[:-1]])


def csv(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> str:
    """RFC 4180 CSV as `csv.writer` writes it: numbers at full precision (`str`), nothing
    as an empty field, lists and dicts as compact JSON, created and tags as in the table."""
    return _joined(_csv_cells(header, columns))


def _table_cells(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> list[list[str]]:
    return [
        _printable([name, *_cells(name, values, exact=False)])
        for name, values in zip(header, columns, strict=True)
    ]


def _csv_cells(header: Sequence[str], columns: Sequence[Sequence[Any]]) -> list[list[str]]:
    return [
        _quoted([name, *_cells(name, values, exact=True)])
        for name, values in zip(header, columns, strict=True)
    ]


def _padded(text: list[list[str]], widths: list[int]) -> str:
    line = _line_format(widths)
    return "\n".join(map(str.rstrip, map(line.__mod__, zip(*text, strict=True)))) + "\n"


def _line_format(widths: list[int]) -> str:
    return " ".join([*(f"%-{width}s" for width in widths), "%s"])


def _joined(text: list[list[str]]) -> str:
    line = ",".join(["%s"] * len(text)) + "\r\n"
    return "".join(map(line.__mod__, zip(*text, strict=True)))


def _printable(cells: list[str]) -> list[str]:
    """A column's cells as they may reach a terminal: a pulled name holding a newline or a
    terminal escape shown escaped (one search per column; the usual column has none)."""
    if not _UNPRINTABLE.search("".join(cells)):
        return cells
    return [terminal_safe(cell, one_line=True) for cell in cells]


def _quoted(cells: list[str]) -> list[str]:
    """Cells as `csv.writer` (QUOTE_MINIMAL) writes them; a column without a comma, quote or
    line break anywhere (the usual case) is left as it is, found with one search."""
    joined = "\0".join(cells)
    if not any(special in joined for special in _CSV_SPECIAL):
        return cells
    special = _CSV_NEEDS_QUOTES.search
    return ['"' + cell.replace('"', '""') + '"' if special(cell) else cell for cell in cells]


def cell(name: str, value: Any, *, exact: bool) -> str:
    """One cell's text as `_cells` makes it within its column (the rule; `_cells` is the
    fast way to apply it to a whole column), before `_printable` or `_quoted`."""
    if name == "id":
        return str(value)[:SHORT_ID_LENGTH]
    if name == "created":
        return str(value)[:19].replace("T", " ")
    if name == "tags":
        return ",".join(value)
    if exact:
        return _exact(value)
    return format_value(value, TABLE_DIGITS)


def _cells(name: str, values: Sequence[Any], *, exact: bool) -> list[str]:
    """One column's cells as text, by the column's types, each as `cell` makes it alone.
    `exact` (CSV): numbers as `str` gives them, at full precision; else floats to
    TABLE_DIGITS significant digits."""
    if not values:
        return []
    if name == "id":  # short ids, whether or not they came cut
        return list(map(_SHORT, values))
    if name == "created":  # "2026-12-01 10:00:00": the date and time, in one pass each
        cut = "\n".join(map(_FIRST_19, values))
        if cut.count("\n") == len(values) - 1:  # no line break inside one: as `cell` makes it
            return cut.replace("T", " ").split("\n")
        return [cell(name, value, exact=exact) for value in values]
    if name == "tags":
        return list(map(",".join, values))
    kinds = set(map(type, values))
    if kinds <= {str}:
        return list(values)
    if exact and kinds <= {int, float, str, _NONE}:
        return _by_value(values, str, distinct_types=not {int, float} <= kinds)
    if not exact and kinds <= {int, str, _NONE}:
        return _by_value(values, str)
    if not exact and kinds <= {float, _NONE}:
        return _by_value(values, _FLOAT)
    if not exact and kinds <= {float, int, _NONE}:  # 1 and 1.0, 10**6 and 1e6: not alike
        return _by_value(values, _number, distinct_types=False)
    if exact:  # what csv.writer writes for any other value; lists and dicts as JSON
        return [_exact(value) for value in values]
    return [format_value(value, TABLE_DIGITS) for value in values]


def _number(value: float | int) -> str:
    return _FLOAT(value) if type(value) is float else str(value)


def _exact(value: Any) -> str:
    if value is None:
        return ""
    return format_value(value) if isinstance(value, (list, dict)) else str(value)


def _by_value(
    values: Sequence[Any], text: Callable[[Any], str], *, distinct_types: bool = True
) -> list[str]:
    """`text(value)` of each value, nothing as an empty cell; a value repeated often (a
    param's few settings) is formatted once — unless equal values may read differently
    (0.0 and -0.0; 1 and 1.0: not `distinct_types`)."""
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


# -- a kept text patched --------------------------------------------------------------------


@dataclass
class Packed:
    """Strings of one length back to back in one string — a listing's 100,000 ids or
    created times —: kept and read again as one object instead of 100,000."""

    width: int
    blob: str

    @classmethod
    def of(cls, values: Sequence[str]) -> Packed | None:
        """`values` packed; None when they are not all strings of one length."""
        width = len(values[0]) if values else 0
        if not width or set(map(len, values)) != {width}:
            return None
        return cls(width, "".join(values))

    def __len__(self) -> int:
        return len(self.blob) // self.width

    def __getitem__(self, index: int) -> str:
        return self.blob[index * self.width : (index + 1) * self.width]

    def find(self, value: str) -> int:
        """The index of `value`, -1 when it is not there."""
        start = 0
        while len(value) == self.width and (at := self.blob.find(value, start)) >= 0:
            if at % self.width == 0:
                return at // self.width
            start = at + 1
        return -1

    def find_all(self, values: Iterable[str]) -> list[int]:
        """The indexes of those of `values` that are here, in order: each found alone when
        they are few, else through one map of every value (a search each would cost more)."""
        wanted = set(values)
        if len(wanted) <= 32:
            return sorted(place for place in map(self.find, wanted) if place >= 0)
        width = self.width
        every = map(
            self.blob.__getitem__,
            map(
                slice, range(0, len(self.blob), width), range(width, len(self.blob) + width, width)
            ),
        )
        return [place for place, value in enumerate(every) if value in wanted]

    def insert(self, index: int, value: str) -> None:
        if len(value) != self.width:
            raise ValueError("a value of another length")
        at = index * self.width
        self.blob = self.blob[:at] + value + self.blob[at:]

    def __delitem__(self, index: int) -> None:
        at = index * self.width
        self.blob = self.blob[:at] + self.blob[at + self.width :]


@dataclass
class Rows:
    """What a listing's text needs beside it to be patched: its rows' full ids and created
    times (where a row is, where a new one goes), every key column the listing had (shown
    or not), per shown column each cell's length (how wide the column must be, whether any
    cell is left) and the width it was padded to, and each row's line length in bytes
    (where its line is in the text)."""

    fmt: str  # "table" or "csv"
    names: list[str]  # every column of the listing, in order
    shown: list[int]  # the columns printed (indexes into names)
    ids: Packed
    created: Packed
    lengths: list[array]  # per shown column: each row's cell length
    widths: list[int]  # the table's padding per shown column but the last (none for CSV)
    spans: array  # each row's line, in bytes, without its line end

    def dump(self) -> tuple[Any, ...]:
        """Core values only (the store keeps them with marshal)."""
        return (
            self.fmt,
            self.names,
            self.shown,
            (self.ids.width, self.ids.blob),
            (self.created.width, self.created.blob),
            [lengths.tobytes() for lengths in self.lengths],
            self.widths,
            self.spans.tobytes(),
        )

    @classmethod
    def load(cls, data: Any) -> Rows | None:
        """The rows `dump` gave, or None for anything else."""
        try:
            fmt, names, shown, (id_width, ids), (created_width, created), raw, widths, spans = data
            if not (isinstance(ids, str) and isinstance(created, str)):
                return None
            if min(id_width, created_width) <= 0 or len(ids) % id_width:
                return None
            if len(created) % created_width:
                return None
            lengths = [_array("H", column) for column in raw]
            rows = cls(
                fmt,
                names,
                shown,
                Packed(id_width, ids),
                Packed(created_width, created),
                lengths,
                widths,
                _array("I", spans),
            )
        except (TypeError, ValueError):
            return None
        return rows if rows._consistent() else None

    def _consistent(self) -> bool:
        count = len(self.ids)
        return (
            self.fmt in _LINE_END
            and len(self.created) == count
            and len(self.spans) == count
            and len(self.lengths) == len(self.shown)
            and all(len(column) == count for column in self.lengths)
            and len(self.widths) == (len(self.shown) - 1 if self.fmt == "table" else 0)
        )


def _array(kind: str, raw: bytes) -> array:
    values = array(kind)
    values.frombytes(raw)
    return values


def shown_columns(names: Sequence[str], columns: Sequence[Sequence[Any]]) -> list[int]:
    """The columns a listing prints: the first six always, origin and every key column only
    when some row has a value there."""
    return [
        i
        for i, column in enumerate(columns)
        if i < ALWAYS_SHOWN or column.count(None) < len(column)
    ]


def render(
    fmt: str, names: Sequence[str], columns: Sequence[Sequence[Any]], empty: str
) -> tuple[bytes, Rows | None]:
    """The listing's text as UTF-8 from every column of it (full ids; `empty`: the table of
    no row), and the rows to patch it with later (None when it cannot be: no rows, a cell
    with a line break, 65,536 characters long, or a character UTF-8 cannot hold — then
    shown escaped)."""
    shown = shown_columns(names, columns)
    header = [names[i] for i in shown]
    picked = [columns[i] for i in shown]
    if fmt == "csv":
        text = _csv_cells(header, picked)
        made, widths = _joined(text), []
    elif not columns[0]:
        return empty.encode("utf-8", "backslashreplace"), None
    else:
        text = _table_cells(header, picked)
        widths = [max(map(len, column)) for column in text[:-1]]
        made = _padded(text, widths)
    try:
        data = made.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: its escape is wider than the cell counted
        return made.encode("utf-8", "backslashreplace"), None
    if not columns[0]:
        return data, None
    try:
        lengths = [array("H", map(len, column[1:])) for column in text]
    except OverflowError:
        return data, None
    ids, created = Packed.of(columns[0]), Packed.of(columns[2])
    if ids is None or created is None:  # never the case for records nbexp wrote
        return data, None
    lines = data.split(_LINE_END[fmt].encode("ascii"))
    if len(lines) != len(ids) + 2:  # a cell with a line break in it
        return data, None
    if any(not any(lengths[j]) for j, i in enumerate(shown) if i >= ALWAYS_SHOWN):
        return data, None  # a column shown for values that print as nothing: never patched
    spans = array("I", map(len, lines[1:-1]))
    return data, Rows(fmt, list(names), shown, ids, created, lengths, widths, spans)


def patch(
    kept: bytes,
    rows: Rows,
    names: Sequence[str],
    fresh: Sequence[Sequence[Any]],
    changed: Iterable[str],
) -> bytes | None:
    """`kept` (made with `rows`) with the rows of `changed` ids taken out and those of them
    in `fresh` (every column of the listing, full ids) put in their places; `rows` updated
    to match. None when only a full render can make it: a column appears or may disappear,
    or the listing's columns changed otherwise than by new ones at the end. The lines that
    changed are cut out of the bytes and put in by their offsets; only a column whose width
    changed has every line made again."""
    end = _LINE_END[rows.fmt]
    if list(names[: len(rows.names)]) != rows.names:
        return None
    shown = rows.shown
    if any(
        any(value is not None for value in fresh[i])
        for i in set(range(len(names))).difference(shown)
    ):
        return None  # a column no row had a value for has one now
    ids, lengths = rows.ids, rows.lengths
    places = ids.find_all(changed)
    taken = [[column[place] for place in places] for column in lengths]
    for place in reversed(places):
        del ids[place], rows.created[place]
        for column in lengths:
            del column[place]
    added = _placed(rows, names, fresh)
    if added is None or not ids:
        return None
    for j, i in enumerate(shown):  # a column whose last cell with text went may be gone
        if i < ALWAYS_SHOWN or not any(taken[j]) or any(cells[j] for _, cells in added):
            continue
        if not any(lengths[j]):  # stops at the first cell with text: the usual one
            return None
    widths = _widths(rows, taken, added) if rows.fmt == "table" else []
    if rows.fmt == "table":
        line = _line_format(widths)
        new_lines = [(place, (line % tuple(cells)).rstrip()) for place, cells in added]
    else:
        new_lines = [(place, ",".join(cells)) for place, cells in added]
        if any(end in text for _, text in new_lines):
            return None  # a cell with a line break: its lines could not be told apart later
    try:
        encoded = [(place, text.encode("utf-8")) for place, text in new_lines]
    except UnicodeEncodeError:
        return None
    if widths != rows.widths or len(places) + len(encoded) > 16:
        made = _every_line(kept, rows, places, encoded, widths)
    else:
        made = _lines_changed(kept, rows, places, encoded)
    rows.names, rows.widths = list(names), widths
    return made


def _lines_changed(
    kept: bytes, rows: Rows, places: list[int], added: list[tuple[int, bytes]]
) -> bytes | None:
    """`kept` with the lines at `places` (before the change) cut out and `added` put in
    (each place counting the lines put in before it), found by the lines' byte lengths: the
    new text joined once from views of the old one and the new lines (at 10 MB, every new
    buffer costs its page faults), no pass over the lines."""
    end = _LINE_END[rows.fmt].encode("ascii")
    spans = rows.spans
    start = kept.find(end) + len(end)  # the header's line
    if start < len(end) or start + sum(spans) + len(spans) * len(end) != len(kept):
        return None
    old = array("I", spans)  # where the old lines are, while `spans` follows the changes
    runs: list[tuple[int, int] | bytes] = [(0, len(spans))]  # old lines first..last, or new
    for place in reversed(places):
        at = _boundary(runs, place)
        _boundary(runs, place + 1)
        del runs[at], spans[place]
    for place, line in added:
        runs.insert(_boundary(runs, place), line + end)
        spans.insert(place, len(line))
    view = memoryview(kept)
    pieces: list[bytes | memoryview] = [view[:start]]
    for run in runs:
        if isinstance(run, bytes):
            pieces.append(run)
        else:
            first, last = (start + sum(old[:i]) + i * len(end) for i in run)
            pieces.append(view[first:last])
    return b"".join(pieces)


def _boundary(runs: list[tuple[int, int] | bytes], position: int) -> int:
    """Split `runs` (of old lines, or one new line each) so that one starts at line
    `position` of the text they make; its index."""
    seen = 0
    for index, run in enumerate(runs):
        count = 1 if isinstance(run, bytes) else run[1] - run[0]
        if position == seen:
            return index
        if position < seen + count and not isinstance(run, bytes):
            middle = run[0] + position - seen
            runs[index : index + 1] = [(run[0], middle), (middle, run[1])]
            return index + 1
        seen += count
    return len(runs)


def _every_line(
    kept: bytes, rows: Rows, places: list[int], added: list[tuple[int, bytes]], widths: list[int]
) -> bytes | None:
    """`kept` as `_lines_changed` makes it, every line split out: the columns whose width
    changed padded again (`_repadded`; on bytes when the text is ASCII — the usual case —,
    else on its characters, where the padding is counted)."""
    end = _LINE_END[rows.fmt]
    ascii_only = kept.isascii()
    lines: list[Any] = (
        kept.split(end.encode("ascii")) if ascii_only else kept.decode("utf-8").split(end)
    )
    if len(lines) != len(rows.spans) + 2 or lines[-1]:
        return None
    lines = _repadded(lines, rows.widths, widths, b" " if ascii_only else " ")
    for place in reversed(places):
        del lines[place + 1]
    for place, line in added:
        lines.insert(place + 1, line if ascii_only else line.decode("utf-8"))
    body = lines[1:-1]
    if ascii_only:
        rows.spans = array("I", map(len, body))
        return end.encode("ascii").join(lines)
    encoded = list(map(str.encode, lines))
    rows.spans = array("I", map(len, encoded[1:-1]))
    return end.encode("ascii").join(encoded)


def _widths(rows: Rows, taken: list[list[int]], added: list[tuple[int, list[str]]]) -> list[int]:
    """The table's new padding per column but the last: a column's widest cell found again
    only when a cell as wide as its old padding went."""
    widths = []
    for j, old in enumerate(rows.widths):
        width = max([old, *(len(cells[j]) for _, cells in added)])
        if old in taken[j]:
            header = len(_printable([rows.names[rows.shown[j]]])[0])
            width = max(max(rows.lengths[j]), header)
        widths.append(width)
    return widths


def _placed(
    rows: Rows, names: Sequence[str], fresh: Sequence[Sequence[Any]]
) -> list[tuple[int, list[str]]] | None:
    """The fresh rows put into `rows` where the listing's order (created, newest first, then
    id) puts them, one after the other: each one's place among the rows then, and its shown
    cells (lines inserted in the same order land in the same places); None when a cell is
    too long to note, or a created time of another length than the others."""
    new_ids, new_created = fresh[0], fresh[2]
    exact = rows.fmt == "csv"
    added = []
    for r in range(len(new_ids)):
        place = listing_cache.place(rows.created, rows.ids, new_created[r], new_ids[r])
        cells = [cell(names[i], fresh[i][r], exact=exact) for i in rows.shown]
        cells = _quoted(cells) if exact else _printable_each(cells)
        try:
            rows.ids.insert(place, new_ids[r])
            rows.created.insert(place, new_created[r])
            for column, text in zip(rows.lengths, cells, strict=True):
                column.insert(place, len(text))
        except (ValueError, OverflowError):  # a time of another length, a cell too long
            return None
        added.append((place, cells))
    return added


def _printable_each(cells: list[str]) -> list[str]:
    return [_printable([text])[0] for text in cells]


def _repadded(lines: list[Any], old: list[int], new: list[int], space: Any) -> list[Any]:
    """The table's lines (str, or bytes of ASCII text) with each column whose width changed
    padded to its new width: the spaces after its cells added or taken at the same place in
    every line (a line that ends before that place, its later cells all empty, stays as it
    is: `rstrip` takes the added spaces off it again). Right to left, so the columns before
    keep their places; each line cut and joined by C functions mapped over them."""
    for j in reversed(range(len(new))):
        change = new[j] - old[j]
        if not change:
            continue
        end = sum(old[: j + 1]) + j  # where column j's padding ends: the separator
        tails = map(operator.itemgetter(slice(end, None)), lines)
        if change > 0:
            heads = map(operator.itemgetter(slice(0, end)), lines)
            strip = bytes.rstrip if isinstance(space, bytes) else str.rstrip
            lines = list(map(strip, map((space * change).join, zip(heads, tails, strict=True))))
        else:  # the spaces taken are padding in every line long enough to have them
            heads = map(operator.itemgetter(slice(0, end + change)), lines)
            lines = list(map(space[:0].join, zip(heads, tails, strict=True)))
    return lines
