"""Two records side by side: params, metrics, code, data drift, environment, git and state.

Pure: it reads only the two records, never the data. Drift statistics come from the column
profiles recorded at run time (21 quantiles, or the top values' shares), so comparing two runs
on 1 GB inputs costs what comparing two small JSON documents costs. The quantile-based
statistics are approximations: each CDF is taken as piecewise linear between its recorded
quantiles, which is accurate to about a percent of probability mass for continuous data.
"""

from __future__ import annotations

import difflib
import html
import json
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from .record import Experiment
from .subrecords import DataInput

EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
PSI_MODERATE = 0.1  # the usual rule of thumb: < 0.1 stable, 0.1-0.25 moderate, >= 0.25 major
PSI_MAJOR = 0.25
_ENV_KEYS = ("python", "implementation", "platform", "executable", "hostname")


class _Absent:
    """The value of a key one side does not have (distinct from a recorded None)."""

    def __repr__(self) -> str:
        return "—"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


# -- drift statistics -------------------------------------------------------------------


def _usable(quantiles: Any) -> list[float] | None:
    """Quantiles as floats, or None when missing or holding a non-finite value."""
    if not isinstance(quantiles, list) or len(quantiles) < 2:
        return None
    if any(not isinstance(q, (int, float)) or not math.isfinite(q) for q in quantiles):
        return None
    return sorted(float(q) for q in quantiles)


def quantile_cdf(quantiles: Sequence[float], x: float, *, left: bool = False) -> float:
    """The CDF at x of the distribution whose equally spaced quantiles are `quantiles`,
    linear between them. `left=True` gives the limit from the left (differs at ties)."""
    steps = len(quantiles) - 1
    index = bisect_left(quantiles, x) if left else bisect_right(quantiles, x)
    if index == 0:
        return 0.0
    if index > steps:
        return 1.0
    low, high = quantiles[index - 1], quantiles[index]
    return (index - 1 + (x - low) / (high - low)) / steps


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """max |CDF_a − CDF_b|. Both CDFs are piecewise linear, so the maximum is at a quantile
    point of either side (from the left or the right)."""
    best = 0.0
    for x in sorted({*a, *b}):
        for left in (False, True):
            gap = abs(quantile_cdf(a, x, left=left) - quantile_cdf(b, x, left=left))
            best = max(best, gap)
    return best


def _psi(shares_a: Sequence[float], shares_b: Sequence[float]) -> float:
    total = 0.0
    for share_a, share_b in zip(shares_a, shares_b, strict=True):
        share_a, share_b = max(share_a, EPSILON), max(share_b, EPSILON)
        total += (share_b - share_a) * math.log(share_b / share_a)
    return total


def numeric_psi(a: Sequence[float], b: Sequence[float]) -> float:
    """PSI over bins cut at A's inner quantiles (open-ended first and last bins), so each
    bin holds about 5 % of A; B's share of each bin is read off its quantile CDF."""
    edges = sorted(set(a[1:-1]))
    cuts_a = [0.0, *(quantile_cdf(a, edge) for edge in edges), 1.0]
    cuts_b = [0.0, *(quantile_cdf(b, edge) for edge in edges), 1.0]
    shares_a = [high - low for low, high in pairwise(cuts_a)]
    shares_b = [high - low for low, high in pairwise(cuts_b)]
    return _psi(shares_a, shares_b)


def _complete(top: dict[str, float], distinct: int | None) -> bool:
    """Whether `top` lists every value (so a value missing from it has share 0)."""
    if distinct is not None:
        return distinct <= len(top)
    return sum(top.values()) >= 1 - 1e-4


def aligned_shares(
    top_a: dict[str, float],
    top_b: dict[str, float],
    distinct_a: int | None = None,
    distinct_b: int | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Both sides' shares over the values known on both: a value missing from one side's
    top values counts as 0 there only when that side lists all its values; otherwise it
    joins that side's (and so both sides') remainder, one value called "rest". Without this,
    40 equally common values of which each side lists a different top 20 would look drifted."""
    complete_a, complete_b = _complete(top_a, distinct_a), _complete(top_b, distinct_b)
    keys = [
        key
        for key in dict.fromkeys([*top_a, *top_b])
        if (key in top_a or complete_a) and (key in top_b or complete_b)
    ]
    a = {str(key): float(top_a.get(key, 0.0)) for key in keys}
    b = {str(key): float(top_b.get(key, 0.0)) for key in keys}
    rest_a, rest_b = max(0.0, 1.0 - sum(a.values())), max(0.0, 1.0 - sum(b.values()))
    if rest_a > 1e-4 or rest_b > 1e-4:
        a["\0rest"], b["\0rest"] = rest_a, rest_b
    return a, b


def total_variation(
    top_a: dict[str, float],
    top_b: dict[str, float],
    distinct_a: int | None = None,
    distinct_b: int | None = None,
) -> float:
    """½ Σ |p_a − p_b| over the values known on both sides (see `aligned_shares`)."""
    a, b = aligned_shares(top_a, top_b, distinct_a, distinct_b)
    return 0.5 * sum(abs(a[key] - b[key]) for key in a)


def categorical_psi(
    top_a: dict[str, float],
    top_b: dict[str, float],
    distinct_a: int | None = None,
    distinct_b: int | None = None,
) -> float:
    a, b = aligned_shares(top_a, top_b, distinct_a, distinct_b)
    return _psi(list(a.values()), [b[key] for key in a])


def drift_level(psi: float | None) -> str:
    if psi is None:
        return ""
    if psi >= PSI_MAJOR:
        return "major"
    return "moderate" if psi >= PSI_MODERATE else "stable"


@dataclass(frozen=True)
class ColumnDrift:
    """How one column's distribution moved between the two versions of an input."""

    column: str
    kind: str
    psi: float | None = None
    ks: float | None = None
    tvd: float | None = None
    mean: tuple[float | None, float | None] | None = None
    null_rate: tuple[float, float] = (0.0, 0.0)
    top_moves: tuple[tuple[str, float, float], ...] = ()
    note: str | None = None

    @property
    def level(self) -> str:
        return drift_level(self.psi)


def _null_rate(profile: dict[str, Any]) -> float:
    count, nulls = profile.get("count") or 0, profile.get("nulls") or 0
    return nulls / (count + nulls) if count + nulls else 0.0


def column_drift(column: str, a: dict[str, Any], b: dict[str, Any]) -> ColumnDrift:
    """Drift statistics of one column from its two recorded profiles."""
    nulls = (_null_rate(a), _null_rate(b))
    kind_a, kind_b = a.get("kind"), b.get("kind")
    if kind_a != kind_b:
        return ColumnDrift(
            column, f"{kind_a}→{kind_b}", null_rate=nulls, note="kind changed; not comparable"
        )
    if kind_a == "numeric":
        qa, qb = _usable(a.get("quantiles")), _usable(b.get("quantiles"))
        mean = (a.get("mean"), b.get("mean"))
        if qa is None or qb is None:
            return ColumnDrift(column, "numeric", mean=mean, null_rate=nulls, note="no quantiles")
        return ColumnDrift(
            column,
            "numeric",
            psi=numeric_psi(qa, qb),
            ks=ks_statistic(qa, qb),
            mean=mean,
            null_rate=nulls,
        )
    top_a, top_b = dict(a.get("top") or {}), dict(b.get("top") or {})
    distinct = (a.get("distinct"), b.get("distinct"))
    shares_a, shares_b = aligned_shares(top_a, top_b, *distinct)
    moves = sorted(
        ((key, shares_a[key], shares_b[key]) for key in shares_a if key != "\0rest"),
        key=lambda move: -abs(move[2] - move[1]),
    )
    return ColumnDrift(
        column,
        "categorical",
        psi=categorical_psi(top_a, top_b, *distinct),
        tvd=total_variation(top_a, top_b, *distinct),
        null_rate=nulls,
        top_moves=tuple(move for move in moves[:3] if abs(move[2] - move[1]) >= 0.005),
    )


# -- the diff -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueChange:
    """One key's value in A and in B (ABSENT when a side lacks it)."""

    key: str
    a: Any
    b: Any

    @property
    def changed(self) -> bool:
        return _canonical(self.a) != _canonical(self.b)

    @property
    def delta(self) -> float | None:
        """b − a for two numbers, else None."""
        if _is_number(self.a) and _is_number(self.b):
            return float(self.b) - float(self.a)
        return None

    @property
    def relative(self) -> float | None:
        delta = self.delta
        if delta is None or not self.a or not math.isfinite(float(self.a)):
            return None
        return delta / abs(float(self.a))


@dataclass(frozen=True)
class SchemaChange:
    """Columns added, removed or retyped, and the row count on each side."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()
    rows: tuple[int | None, int | None] = (None, None)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.retyped)


@dataclass(frozen=True)
class DataChange:
    """One input whose content differs between the runs (or that only one run read)."""

    kind: str
    label: str
    status: str  # "changed", "added" (only B read it), "removed" (only A read it)
    hash: tuple[str | None, str | None]
    size: tuple[int | None, int | None] = (None, None)
    schema: SchemaChange | None = None
    columns: tuple[ColumnDrift, ...] = ()
    dvc: tuple[str | None, str | None] = (None, None)  # DVC's md5 of a tracked file, A and B

    @property
    def drifted(self) -> tuple[ColumnDrift, ...]:
        return tuple(c for c in self.columns if c.level in ("moderate", "major"))


@dataclass(frozen=True)
class StateChange:
    """Which recorded variables differ (by content hash)."""

    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    recorded: tuple[bool, bool] = (True, True)


@dataclass(frozen=True)
class Diff:
    """What differs between experiments A and B. Shown as HTML in a notebook, text elsewhere."""

    a: Experiment
    b: Experiment
    params: tuple[ValueChange, ...]
    metrics: tuple[ValueChange, ...]
    code: str
    notebook: tuple[str, ...]
    data: tuple[DataChange, ...]
    data_unchanged: tuple[str, ...]
    env: tuple[ValueChange, ...]
    packages: tuple[ValueChange, ...]
    git: tuple[ValueChange, ...]
    state: StateChange
    outcome: tuple[ValueChange, ...] = field(default=())

    @property
    def changed_params(self) -> dict[str, tuple[Any, Any]]:
        return {c.key: (c.a, c.b) for c in self.params if c.changed}

    def __str__(self) -> str:
        return text_view(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Diff({self.a.short_id}, {self.b.short_id})" if cycle else text_view(self))

    def _repr_html_(self) -> str:
        return html_view(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _canonical(value: Any) -> Any:
    if isinstance(value, _Absent):
        return "\0absent"
    if isinstance(value, float) and math.isnan(value):
        return "\0nan"
    if _is_number(value):
        return float(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _pairs(a: dict[str, Any], b: dict[str, Any]) -> tuple[ValueChange, ...]:
    keys = list(dict.fromkeys([*a, *b]))
    return tuple(ValueChange(key, a.get(key, ABSENT), b.get(key, ABSENT)) for key in keys)


def _data_key(item: DataInput) -> tuple[str, str]:
    if item.is_file:
        return "file", str(item.abspath or item.path)
    return "variable", str(item.name)


def _label(item: DataInput) -> str:
    return f"file {item.path}" if item.is_file else f"variable {item.name}"


def _columns(item: DataInput) -> dict[str, str]:
    dtypes = item.dtypes
    columns = item.columns or list(dtypes)
    return {column: dtypes.get(column, "") for column in columns}


def _rows(item: DataInput) -> int | None:
    if item.rows is not None:
        return item.rows
    shape = item.shape
    return shape[0] if shape else None


def _schema(a: DataInput, b: DataInput) -> SchemaChange:
    ca, cb = _columns(a), _columns(b)
    return SchemaChange(
        added=tuple(c for c in cb if c not in ca),
        removed=tuple(c for c in ca if c not in cb),
        retyped=tuple((c, ca[c], cb[c]) for c in ca if c in cb and ca[c] != cb[c]),
        rows=(_rows(a), _rows(b)),
    )


def _changed_input(a: DataInput, b: DataInput) -> DataChange:
    label_a, label_b = _label(a), _label(b)
    label = label_a if label_a == label_b else f"{label_a} → {b.path or b.name}"
    profile_a, profile_b = a.profile, b.profile
    drifts = tuple(
        column_drift(column, profile_a[column], profile_b[column])
        for column in profile_a
        if column in profile_b
    )
    return DataChange(
        kind=a.kind,
        label=label,
        status="changed",
        hash=(a.hash, b.hash),
        size=(a.size, b.size),
        schema=_schema(a, b),
        columns=drifts,
        dvc=((a.dvc or {}).get("md5"), (b.dvc or {}).get("md5")),
    )


def _data(a: Experiment, b: Experiment) -> tuple[tuple[DataChange, ...], tuple[str, ...]]:
    """Inputs matched by path (files) or name (variables). When exactly one input of a kind
    is left unmatched on each side (data/2024-01.csv vs data/2024-02.csv), they are compared
    as two versions of the same input."""
    inputs_a = {_data_key(item): item for item in a.data}
    inputs_b = {_data_key(item): item for item in b.data}
    changes: list[DataChange] = []
    unchanged: list[str] = []
    for key, item in inputs_a.items():
        other = inputs_b.get(key)
        if other is None:
            continue
        if item.hash == other.hash:
            unchanged.append(_label(item))
        else:
            changes.append(_changed_input(item, other))
    only_a = [item for key, item in inputs_a.items() if key not in inputs_b]
    only_b = [item for key, item in inputs_b.items() if key not in inputs_a]
    for kind in ("file", "variable"):
        left = [item for item in only_a if _data_key(item)[0] == kind]
        right = [item for item in only_b if _data_key(item)[0] == kind]
        if len(left) == 1 and len(right) == 1 and left[0].profile and right[0].profile:
            changes.append(_changed_input(left[0], right[0]))
            only_a.remove(left[0])
            only_b.remove(right[0])
    for item, status in [*((i, "removed") for i in only_a), *((i, "added") for i in only_b)]:
        digest, size = item.hash, item.size
        changes.append(
            DataChange(
                kind=item.kind,
                label=_label(item),
                status=status,
                hash=(digest, None) if status == "removed" else (None, digest),
                size=(size, None) if status == "removed" else (None, size),
            )
        )
    return tuple(changes), tuple(unchanged)


def _state(a: Experiment, b: Experiment) -> StateChange:
    def hashes(experiment: Experiment) -> dict[str, Any]:
        return {
            name: info.hash or f"alias:{info.alias_of}"
            for name, info in experiment.variables.items()
        }

    va, vb = hashes(a), hashes(b)
    return StateChange(
        changed=tuple(name for name in va if name in vb and va[name] != vb[name]),
        added=tuple(name for name in vb if name not in va),
        removed=tuple(name for name in va if name not in vb),
        unchanged=sum(1 for name in va if name in vb and va[name] == vb[name]),
        recorded=(a.state is not None, b.state is not None),
    )


def _git(a: Experiment, b: Experiment) -> tuple[ValueChange, ...]:
    def facts(experiment: Experiment) -> dict[str, Any]:
        git = experiment.git
        if git is None:
            return {"repository": None}
        if "error" in git:
            return {"error": git["error"]}
        diff = git.get("diff") or ""
        return {
            "commit": (git.get("commit") or "")[:12] or None,
            "branch": git.get("branch"),
            "uncommitted": f"{len(diff.splitlines())} lines of diff" if diff else "none",
            "_diff": diff,
        }

    fa, fb = facts(a), facts(b)
    changes = [c for c in _pairs(fa, fb) if c.changed and not c.key.startswith("_")]
    if fa.get("_diff") != fb.get("_diff") and not any(c.key == "uncommitted" for c in changes):
        changes.append(ValueChange("uncommitted", "diff differs", "diff differs"))
    return tuple(changes)


def _code(a: Experiment, b: Experiment) -> str:
    lines = difflib.unified_diff(
        a.code.source.splitlines(keepends=True),
        b.code.source.splitlines(keepends=True),
        fromfile=f"{a.name} ({a.short_id})",
        tofile=f"{b.name} ({b.short_id})",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _notebook(a: Experiment, b: Experiment) -> tuple[str, ...]:
    notes = []
    if a.code.notebook != b.code.notebook:
        notes.append(f"notebook {a.code.notebook or '—'} → {b.code.notebook or '—'}")
    elif a.code.notebook and a.code.notebook_hash != b.code.notebook_hash:
        notes.append(f"notebook {a.code.notebook} was saved with other content in between")
    return tuple(notes)


def diff(a: Experiment, b: Experiment) -> Diff:
    """Everything that differs between two records, from the records alone."""
    packages_a, packages_b = a.env.get("packages") or {}, b.env.get("packages") or {}
    data, unchanged = _data(a, b)
    return Diff(
        a=a,
        b=b,
        params=_pairs(a.params, b.params),
        metrics=_pairs(a.metrics, b.metrics),
        code=_code(a, b),
        notebook=_notebook(a, b),
        data=data,
        data_unchanged=unchanged,
        env=tuple(
            c
            for c in _pairs(
                {k: a.env.get(k) for k in _ENV_KEYS} | {"seeds": a.env.get("seeds") or {}},
                {k: b.env.get(k) for k in _ENV_KEYS} | {"seeds": b.env.get("seeds") or {}},
            )
            if c.changed
        ),
        packages=tuple(
            c
            for c in _pairs(dict(sorted(packages_a.items())), dict(sorted(packages_b.items())))
            if c.changed
        ),
        git=_git(a, b),
        state=_state(a, b),
        outcome=_pairs(
            {"status": a.status, "duration": a.outcome.duration},
            {"status": b.status, "duration": b.outcome.duration},
        ),
    )


# -- rendering ------------------------------------------------------------------------------


def _show(value: Any) -> str:
    from .show import format_value

    return "—" if isinstance(value, _Absent) else format_value(value)


def _delta_text(change: ValueChange) -> str:
    delta = change.delta
    if delta is None or not change.changed:
        return ""
    text = f"{delta:+.4g}"
    relative = change.relative
    if relative is not None:
        text += f" ({relative:+.1%})"
    return text


def _stat(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _drift_cells(drift: ColumnDrift) -> tuple[str, str, str, str]:
    """(PSI, KS or TVD, what moved, level) for one column, as display text."""
    distance = f"KS {_stat(drift.ks)}" if drift.kind == "numeric" else f"TVD {_stat(drift.tvd)}"
    if drift.ks is None and drift.tvd is None:
        distance = "—"
    moved = []
    if drift.mean is not None and None not in drift.mean:
        moved.append(f"mean {drift.mean[0]:.4g} → {drift.mean[1]:.4g}")
    moved.extend(f"{key}: {sa:.0%} → {sb:.0%}" for key, sa, sb in drift.top_moves)
    if abs(drift.null_rate[1] - drift.null_rate[0]) >= 0.005:
        moved.append(f"nulls {drift.null_rate[0]:.1%} → {drift.null_rate[1]:.1%}")
    if drift.note:
        moved.append(drift.note)
    return _stat(drift.psi), distance, "; ".join(moved), drift.level


def _schema_text(schema: SchemaChange) -> str:
    parts = []
    rows_a, rows_b = schema.rows
    if rows_a != rows_b:
        parts.append(f"rows {rows_a} → {rows_b}")
    elif rows_a is not None:
        parts.append(f"{rows_a} rows")
    if schema.added:
        parts.append("added " + ", ".join(schema.added))
    if schema.removed:
        parts.append("removed " + ", ".join(schema.removed))
    parts.extend(f"{column} {old} → {new}" for column, old, new in schema.retyped)
    if not schema.changed:
        parts.append("same columns")
    return "; ".join(parts)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _state_text(state: StateChange) -> str:
    if not all(state.recorded):
        return "not recorded on one side (--no-state)"
    parts = [
        f"{word}: {', '.join(names)}"
        for word, names in (
            ("changed", state.changed),
            ("added", state.added),
            ("removed", state.removed),
        )
        if names
    ]
    parts.append(f"{state.unchanged} unchanged")
    return "; ".join(parts)


def text_view(d: Diff) -> str:
    """The terminal rendering (what `nbexp diff A B` prints)."""
    a, b = d.a, d.b
    lines = [f"A {a.name} ({a.short_id})  {a.created}", f"B {b.name} ({b.short_id})  {b.created}"]
    lines.extend(
        f"  {c.key}  {_show(c.a)} → {_show(c.b)}"
        for c in d.outcome
        if c.changed and c.key == "status"
    )
    for title, changes in (("params", d.params), ("metrics", d.metrics)):
        if not changes:
            continue
        lines.append(f"{title}:")
        rows = [["", "", "A", "B", "Δ"]]
        rows.extend(
            ["*" if c.changed else " ", c.key, _show(c.a), _show(c.b), _delta_text(c)]
            for c in changes
        )
        lines.extend(_table(rows))
    lines.append("code:" + ("" if d.code or d.notebook else " identical"))
    lines.extend("  " + note for note in d.notebook)
    lines.extend("  " + line for line in d.code.rstrip("\n").splitlines())
    lines.append("data:" + ("" if d.data else " inputs identical"))
    for change in d.data:
        digests = " → ".join((h or "—")[:12] for h in change.hash)
        lines.append(f"  {change.label}  {change.status}  {digests}")
        if any(change.dvc):
            lines.append("    dvc md5: " + " → ".join((h or "—")[:12] for h in change.dvc))
        if change.schema is not None:
            lines.append(f"    schema: {_schema_text(change.schema)}")
        if change.columns:
            rows = [["column", "kind", "PSI", "KS/TVD", "drift", "what moved"]]
            for drift in change.columns:
                psi, distance, moved, level = _drift_cells(drift)
                rows.append([drift.column, drift.kind, psi, distance, level, moved])
            lines.extend(_table(rows, "    "))
    if d.data_unchanged:
        lines.append(f"  unchanged: {', '.join(d.data_unchanged)}")
    lines.append("environment:" + ("" if d.env or d.packages else " same"))
    lines.extend(f"  {c.key}  {_show(c.a)} → {_show(c.b)}" for c in d.env)
    if d.packages:
        lines.append(
            "  packages: " + ", ".join(f"{c.key} {_show(c.a)} → {_show(c.b)}" for c in d.packages)
        )
    lines.append("git:" + ("" if d.git else " same"))
    lines.extend(f"  {c.key}  {_show(c.a)} → {_show(c.b)}" for c in d.git)
    lines.append(f"state: {_state_text(d.state)}")
    from .show import terminal_safe

    return terminal_safe("\n".join(lines))


_CSS = (
    "<style>.nbexp-diff table{border-collapse:collapse;margin:2px 0 8px}"
    ".nbexp-diff td,.nbexp-diff th{padding:1px 8px;text-align:left}"
    ".nbexp-diff tr.changed td{background:rgba(255,200,0,.18)}"
    ".nbexp-diff .major{color:#cf222e;font-weight:bold}.nbexp-diff .moderate{color:#9a6700}"
    ".nbexp-diff pre{margin:2px 0}.nbexp-diff .add{color:#1a7f37}.nbexp-diff .del{color:#cf222e}"
    "</style>"
)


def _html_rows(
    header: list[str], rows: list[tuple[bool, list[str]]], css: list[str] | None = None
) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = []
    for index, (changed, cells) in enumerate(rows):
        klass = f" class='{css[index]}'" if css and css[index] else ""
        body.append(
            f"<tr{' class=changed' if changed else ''}>"
            + "".join(
                f"<td{klass if i == 4 else ''}>{html.escape(cell)}</td>"
                for i, cell in enumerate(cells)
            )
            + "</tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _code_html(code: str) -> str:
    out = []
    for line in code.rstrip("\n").splitlines():
        klass = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        text = html.escape(line)
        out.append(f"<span class='{klass}'>{text}</span>" if klass else text)
    return "<pre>" + "\n".join(out) + "</pre>"


def html_view(d: Diff) -> str:
    """The notebook rendering: tables with changed rows highlighted, a coloured code diff."""
    a, b = d.a, d.b
    parts = [
        _CSS,
        "<div class='nbexp-diff'>",
        f"<div><b>A</b> {html.escape(a.name)} <code>{a.short_id}</code> {html.escape(a.status)} · "
        f"<b>B</b> {html.escape(b.name)} <code>{b.short_id}</code> {html.escape(b.status)}</div>",
    ]
    for title, changes in (("params", d.params), ("metrics", d.metrics)):
        if changes:
            rows = [(c.changed, [c.key, _show(c.a), _show(c.b), _delta_text(c)]) for c in changes]
            parts.append(f"<b>{title}</b>" + _html_rows(["", "A", "B", "Δ"], rows))
    parts.append("<b>code</b>")
    parts.extend(f"<div>{html.escape(note)}</div>" for note in d.notebook)
    parts.append(_code_html(d.code) if d.code else "<div>identical</div>")
    parts.append("<b>data</b>")
    if not d.data:
        parts.append("<div>inputs identical</div>")
    for change in d.data:
        digests = " → ".join((h or "—")[:12] for h in change.hash)
        parts.append(
            f"<div><code>{html.escape(change.label)}</code> {change.status} <code>{digests}</code></div>"
        )
        if change.schema is not None:
            parts.append(f"<div>schema: {html.escape(_schema_text(change.schema))}</div>")
        if change.columns:
            rows, levels = [], []
            for drift in change.columns:
                psi, distance, moved, level = _drift_cells(drift)
                rows.append(
                    (
                        level in ("moderate", "major"),
                        [drift.column, drift.kind, psi, distance, level, moved],
                    )
                )
                levels.append(level)
            parts.append(
                _html_rows(
                    ["column", "kind", "PSI", "KS / TVD", "drift", "what moved"], rows, levels
                )
            )
    if d.data_unchanged:
        parts.append(f"<div>unchanged: {html.escape(', '.join(d.data_unchanged))}</div>")
    env_rows = [(True, [c.key, _show(c.a), _show(c.b), ""]) for c in (*d.env, *d.packages, *d.git)]
    parts.append("<b>environment and git</b>")
    parts.append(_html_rows(["", "A", "B", ""], env_rows) if env_rows else "<div>same</div>")
    parts.append(f"<b>state</b><div>{html.escape(_state_text(d.state))}</div>")
    parts.append("</div>")
    return "".join(parts)


def as_data(d: Diff) -> dict[str, Any]:
    """The diff as plain data (`nbexp diff --format json`): what changed, nothing rendered."""

    def value(v: Any) -> Any:
        return None if isinstance(v, _Absent) else v

    def pairs(changes: tuple[ValueChange, ...]) -> list[dict[str, Any]]:
        return [
            {"key": c.key, "a": value(c.a), "b": value(c.b), "changed": c.changed, "delta": c.delta}
            for c in changes
        ]

    def column(c: ColumnDrift) -> dict[str, Any]:
        return {
            "column": c.column, "kind": c.kind, "psi": c.psi, "ks": c.ks, "tvd": c.tvd,
            "level": c.level or None, "null_rate": list(c.null_rate), "note": c.note,
        }  # fmt: skip

    return {
        "a": {"id": d.a.id, "name": d.a.name},
        "b": {"id": d.b.id, "name": d.b.name},
        "params": pairs(d.params),
        "metrics": pairs(d.metrics),
        "code": d.code,
        "notebook": list(d.notebook),
        "data": [
            {
                "kind": c.kind,
                "label": c.label,
                "status": c.status,
                "hash": list(c.hash),
                "size": list(c.size),
                "schema": None
                if c.schema is None
                else {
                    "added": list(c.schema.added),
                    "removed": list(c.schema.removed),
                    "retyped": [list(t) for t in c.schema.retyped],
                    "rows": list(c.schema.rows),
                },
                "columns": [column(col) for col in c.columns],
                "dvc_md5": list(c.dvc),
                "drifted": [col.column for col in c.drifted],
            }
            for c in d.data
        ],
        "data_unchanged": list(d.data_unchanged),
        "env": pairs(d.env),
        "packages": pairs(d.packages),
        "git": pairs(d.git),
        "state": {
            "changed": list(d.state.changed),
            "added": list(d.state.added),
            "removed": list(d.state.removed),
            "unchanged": d.state.unchanged,
        },
        "outcome": pairs(d.outcome),
    }
