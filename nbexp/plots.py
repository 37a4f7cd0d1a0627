"""Matplotlib figures of experiments: a metric over time, against a param, logged series, and
params against a metric in parallel coordinates.

Each function takes records (`Experiment`) or index rows (dicts from `Store.rows`), so the
widget's Plot button, `%exp_plot` and `nbexp.plot` draw the same figures. A value drawn as
text (a tick, a legend entry, an axis mark) reads as the CLI and the widget show it
(`show.format_value`); a missing one as "—". Figures are created
through pyplot (so the notebook's inline backend knows how to show them) and closed before
they are returned: the returned Figure is shown once, as the cell's value, not twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NbexpError
from .record import SHORT_ID_LENGTH, Experiment
from .show import TABLE_DIGITS, format_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MISSING = "—"  # a value an experiment does not have, where a plot writes values
MAX_LABELLED = 30  # more runs than this: tick labels thin out, points are not annotated
KINDS = ("runs", "param", "series", "parallel")


class PlotError(NbexpError):
    """A plot that cannot be drawn from these experiments (unknown metric, param, series)."""


@dataclass(frozen=True)
class Point:
    """What a plot needs of one experiment, from a record or an index row."""

    id: str
    name: str
    created: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    series: dict[str, list[list[Any]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id[:SHORT_ID_LENGTH]})"


def as_point(item: Experiment | dict[str, Any] | Point) -> Point:
    if isinstance(item, Point):
        return item
    if isinstance(item, Experiment):
        return Point(
            item.id, item.name, item.created, item.status, item.params, item.metrics, item.series
        )
    return Point(
        str(item["id"]),
        str(item["name"]),
        str(item["created"]),
        str(item["status"]),
        dict(item.get("params") or {}),
        dict(item.get("metrics") or {}),
        dict(item.get("series") or {}),
    )


def _key(name: str, prefix: str) -> str:
    """`metrics.f1` and `f1` name the same metric."""
    return name[len(prefix) + 1 :] if name.startswith(prefix + ".") else name


def _text(value: Any) -> str:
    """A value as the plots write it: as everywhere else, a missing one as a dash."""
    return MISSING if value is None else format_value(value, TABLE_DIGITS)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _with_metric(points: Sequence[Point], metric: str) -> list[Point]:
    chosen = [p for p in points if _number(p.metrics.get(metric)) is not None]
    if not chosen:
        known = sorted({k for p in points for k, v in p.metrics.items() if _number(v) is not None})
        hint = f"pick one of: {', '.join(known)}" if known else "no experiment has numeric metrics"
        raise PlotError(f"no experiment has a numeric metric {metric!r}; {hint}")
    return chosen


def _pyplot() -> Any:
    import matplotlib.pyplot as plt

    return plt


def _finish(figure: Figure) -> Figure:
    figure.tight_layout()
    _pyplot().close(figure)
    return figure


def _status_colour(status: str) -> str:
    return {"ok": "C0", "failed": "#cf222e"}.get(status, "#bf8700")


def metric_over_runs(items: Iterable[Any], metric: str) -> Figure:
    """The metric of each experiment in the order they ran, named on the x axis."""
    metric = _key(metric, "metrics")
    points = sorted(_with_metric([as_point(i) for i in items], metric), key=lambda p: p.created)
    values = [float(p.metrics[metric]) for p in points]
    width = min(14.0, max(6.0, 0.45 * len(points)))
    figure, axes = _pyplot().subplots(figsize=(width, 4.2))
    positions = list(range(len(points)))
    axes.plot(positions, values, color="0.7", linewidth=1, zorder=1)
    for status in dict.fromkeys(p.status for p in points):
        chosen = [i for i, p in enumerate(points) if p.status == status]
        axes.scatter(
            [positions[i] for i in chosen],
            [values[i] for i in chosen],
            color=_status_colour(status),
            marker="o" if status == "ok" else "X",
            s=40,
            zorder=2,
            label=status,
        )
    step = max(1, math.ceil(len(points) / MAX_LABELLED))
    axes.set_xticks(positions[::step])
    axes.set_xticklabels([p.name for p in points][::step], rotation=40, ha="right")
    axes.set_xlabel("experiment (oldest → newest)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} across {len(points)} experiments")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(title="status", loc="best")
    return _finish(figure)


def _categorical_axis(values: list[Any]) -> tuple[list[float], list[str] | None]:
    """Numbers stay numbers; anything else gets evenly spaced positions with its text."""
    if all(_number(v) is not None for v in values):
        return [float(v) for v in values], None
    texts = [_text(v) for v in values]
    labels = sorted(set(texts))
    return [float(labels.index(text)) for text in texts], labels


def _order(point: Point, param: str | None) -> tuple[int, float, str]:
    value = point.params.get(param) if param else None
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, _text(value))


def metric_vs_param(
    items: Iterable[Any], metric: str, param: str, *, color: str | None = None
) -> Figure:
    """The metric against one param, one line per value of a second param (`color`)."""
    metric, param = _key(metric, "metrics"), _key(param, "params")
    points = _with_metric([as_point(i) for i in items], metric)
    points = [p for p in points if param in p.params]
    if not points:
        raise PlotError(f"no experiment with the metric {metric!r} has the param {param!r}")
    color = _key(color, "params") if color else None
    xs, labels = _categorical_axis([p.params[param] for p in points])
    grouped: dict[str, list[int]] = {}
    for index, point in enumerate(points):
        grouped.setdefault(repr(point.params.get(color)) if color else "", []).append(index)
    groups = {  # legend in value order: numbers numerically, anything else as text
        _text(points[members[0]].params.get(color)) if color else "": members
        for _, members in sorted(
            grouped.items(), key=lambda item: _order(points[item[1][0]], color)
        )
    }
    figure, axes = _pyplot().subplots(figsize=(7.5, 4.5))
    for group, members in groups.items():
        members.sort(key=lambda i: xs[i])
        axes.plot(
            [xs[i] for i in members],
            [float(points[i].metrics[metric]) for i in members],
            marker="o",
            label=group if color else f"{len(members)} experiments",
        )
    if not color and len(points) <= MAX_LABELLED // 2:  # with colours, lines tell them apart
        for x, point in zip(xs, points, strict=True):
            axes.annotate(
                point.name,
                (x, float(point.metrics[metric])),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color="0.35",
            )
    if labels is not None:
        axes.set_xticks(range(len(labels)))
        axes.set_xticklabels(labels)
    elif min(xs) > 0 and max(xs) / min(xs) >= 100:
        axes.set_xscale("log")
    axes.set_xlabel(param)
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} by {param}" + (f", one line per {color}" if color else ""))
    axes.grid(alpha=0.3)
    axes.legend(title=color, loc="best")
    return _finish(figure)


def series_overlay(items: Iterable[Any], name: str) -> Figure:
    """Each experiment's logged series `name` (nbexp.log) on one axis, step against value."""
    points = [as_point(i) for i in items]
    chosen = [p for p in points if p.series.get(name)]
    if not chosen:
        known = sorted({key for p in points for key in p.series})
        hint = (
            f"logged series: {', '.join(known)}" if known else "log one with nbexp.log(name, value)"
        )
        raise PlotError(f"no experiment logged a series {name!r}; {hint}")
    chosen.sort(key=lambda p: p.created)
    figure, axes = _pyplot().subplots(figsize=(7.5, 4.5))
    for point in chosen:
        steps = [
            float(step) if step is not None else float(i)
            for i, (step, _) in enumerate(point.series[name])
        ]
        axes.plot(steps, [value for _, value in point.series[name]], label=point.label)
    axes.set_xlabel("step")
    axes.set_ylabel(name)
    axes.set_title(f"{name} per step, {len(chosen)} experiments")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small" if len(chosen) > 6 else None, loc="best")
    return _finish(figure)


def _varying_params(points: Sequence[Point]) -> list[str]:
    names = list(dict.fromkeys(k for p in points for k in p.params))
    scalar = (int, float, str, bool, type(None))
    return [
        name
        for name in names
        if all(isinstance(p.params.get(name), scalar) for p in points)
        and len({repr(p.params.get(name)) for p in points}) > 1
    ]


def _axis_positions(values: list[Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """Values scaled into [0, 1] and the tick labels to draw on their axis."""
    xs, labels = _categorical_axis(values)
    if labels is not None:
        top = max(len(labels) - 1, 1)
        return [x / top for x in xs], [(i / top, text) for i, text in enumerate(labels)]
    shown = {x: _text(value) for x, value in zip(xs, values, strict=True)}  # 8 as "8", not 8.0
    low, high = min(xs), max(xs)
    if high == low:
        return [0.5] * len(xs), [(0.5, shown[low])]
    marks = sorted(shown) if len(shown) <= 8 else [low, high]
    return [(x - low) / (high - low) for x in xs], [
        ((x - low) / (high - low), shown[x]) for x in marks
    ]


def parallel_coordinates(
    items: Iterable[Any], metric: str, params: Sequence[str] | None = None
) -> Figure:
    """One vertical axis per param plus the metric; one line per experiment, coloured by the
    metric, so the params of the best runs show as a band of bright lines."""
    metric = _key(metric, "metrics")
    points = _with_metric([as_point(i) for i in items], metric)
    names = [_key(p, "params") for p in params] if params else _varying_params(points)
    if not names:
        raise PlotError("the experiments' params do not vary; name some with params=[...]")
    values = [float(p.metrics[metric]) for p in points]
    columns: list[list[Any]] = [[p.params.get(name) for p in points] for name in names]
    columns.append(list(values))
    scaled, ticks = zip(*(_axis_positions(c) for c in columns), strict=True)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(6.0, 1.8 * len(columns)), 4.8))
    low, high = min(values), max(values)
    norm = plt.Normalize(low, high if high > low else low + 1)
    colormap = plt.get_cmap("viridis")
    order = sorted(range(len(points)), key=lambda i: values[i])  # best drawn last, on top
    for i in order:
        axes.plot(
            range(len(columns)),
            [column[i] for column in scaled],
            color=colormap(norm(values[i])),
            alpha=0.8,
            linewidth=1.5,
        )
    for x, axis_ticks in enumerate(ticks):
        axes.axvline(x, color="0.3", linewidth=1)
        for y, text in axis_ticks:
            axes.annotate(
                text,
                (x, y),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=8,
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                zorder=3,
            )
    axes.set_xticks(range(len(columns)))
    axes.set_xticklabels([*names, metric], fontweight="normal")
    axes.get_xticklabels()[-1].set_fontweight("bold")
    axes.set_yticks([])
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlim(-0.2, len(columns) - 0.6)
    axes.set_xlabel("params, then the metric")
    axes.set_ylabel("each axis scaled to its own range")
    axes.set_title(f"params against {metric}, {len(points)} experiments")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=colormap)
    figure.colorbar(mappable, ax=axes, label=metric)
    return _finish(figure)


def plot(
    items: Iterable[Any],
    metric: str,
    *,
    by: str | None = None,
    color: str | None = None,
    step: bool = False,
    kind: str | None = None,
    params: Sequence[str] | None = None,
) -> Figure:
    """The figure the arguments ask for: `step` → logged series, `by` → metric vs param,
    kind="parallel" → parallel coordinates, else the metric across experiments."""
    if kind is None:
        kind = "series" if step else "param" if by else "runs"
    if kind not in KINDS:
        raise PlotError(f"unknown plot kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "series":
        return series_overlay(items, metric)
    if kind == "param":
        if not by:
            raise PlotError("a metric-against-param plot needs a param: by='max_depth'")
        return metric_vs_param(items, metric, by, color=color)
    if kind == "parallel":
        return parallel_coordinates(items, metric, params)
    return metric_over_runs(items, metric)
