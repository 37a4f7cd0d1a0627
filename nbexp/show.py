"""Rendering one record for people: a one-line summary, a text view and an HTML view."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from .record import Experiment

_STATUS_MARK = {"ok": "✓", "failed": "✗", "expectation-failed": "!"}


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(experiment: Experiment, recording_seconds: float | None = None) -> str:
    """`✓ recorded rf-baseline (3f2a1c9e) · 3 params · 2 metrics · …`"""
    parts = [
        f"{_STATUS_MARK.get(experiment.status, '?')} recorded {experiment.name} ({experiment.short_id})",
        experiment.status,
        _plural(len(experiment.params), "param"),
        _plural(len(experiment.metrics), "metric"),
    ]
    files = [item for item in experiment.data if item.is_file]
    frames = [item for item in experiment.data if item.is_variable]
    if files:
        parts.append(_plural(len(files), "data file"))
    if frames:
        parts.append(_plural(len(frames), "input frame"))
    if experiment.artifacts:
        parts.append(_plural(len(experiment.artifacts), "artifact"))
    if experiment.outcome.figures:
        parts.append(_plural(len(experiment.outcome.figures), "figure"))
    state = experiment.state
    if state is not None:
        stored = len(state.variables)
        total, new = human_bytes(state.total_bytes or 0), human_bytes(state.new_bytes or 0)
        piece = f"{_plural(stored, 'variable')} ({total}, {new} new)"
        unstored = state.unstored
        if unstored:
            shown = ", ".join(sorted(unstored)[:3]) + ("…" if len(unstored) > 3 else "")
            piece += f", {len(unstored)} not stored: {shown}"
        parts.append(piece)
    timing = f"{experiment.outcome.duration:.2f} s"
    if recording_seconds is not None:
        timing += f" (+{recording_seconds * 1000:.0f} ms to record)"
    parts.append(timing)
    return " · ".join(parts)


TABLE_DIGITS = 4  # significant digits of a float in a table cell (CLI, widget)


def format_value(value: Any, digits: int = 6) -> str:
    """A param/metric value for people — the one rule for text, HTML, the CLI and the
    widget: floats to `digits` significant digits, strings as they are, nothing as an empty
    string, everything else (true/false, lists, dicts) as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline
_CONTROL_IN_CELL = re.compile("[\x00-\x1f\x7f-\x9f]")


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """Text anyone may have written — a pulled record's name, params, code, output — as it
    may reach a terminal: control characters (a terminal escape, a carriage return, and in
    `one_line` text also tab and newline) shown escaped, `\\x1b`, never sent as they are."""
    pattern = _CONTROL_IN_CELL if one_line else _CONTROL
    return pattern.sub(lambda found: repr(found.group())[1:-1], text)


def text_view(experiment: Experiment) -> str:
    """A terminal rendering of everything a record holds, in reading order."""
    lines = [f"{experiment.name}  {experiment.id}", f"  status   {experiment.status}"]
    lines.append(f"  created  {experiment.created}   duration {experiment.outcome.duration:.3f} s")
    if experiment.tags:
        lines.append(f"  tags     {', '.join(experiment.tags)}")
    if experiment.note:
        lines.append(f"  note     {experiment.note}")
    for title, mapping in (("params", experiment.params), ("metrics", experiment.metrics)):
        if mapping:
            lines.append(f"{title}:")
            width = max(len(key) for key in mapping)
            lines.extend(
                f"  {key:<{width}}  {format_value(value)}" for key, value in mapping.items()
            )
    if experiment.series:
        lines.append("series:")
        lines.extend(
            f"  {name}: {len(points)} points, last {format_value(points[-1][1])}"
            for name, points in experiment.series.items()
            if points
        )
    if experiment.expectations:
        lines.append("expectations:")
        lines.extend(
            f"  {'✓' if e['passed'] else '✗'} {e['expr']}"
            + (f"  ({e['error']})" if e.get("error") else "")
            for e in experiment.expectations
        )
    if experiment.data:
        lines.append("data:")
        for item in experiment.data:
            if item.is_file:
                shape = (
                    f", {item.rows} rows × {len(item.columns)} columns"
                    if item.rows is not None
                    else ""
                )
                from .dvc import short

                dvc = f"  {short(item)}" if item.dvc else ""  # SPEC §12
                lines.append(
                    f"  file {item.path}  {item.hash[:12]}  {human_bytes(item.size or 0)}{shape}"
                    + dvc
                )
            else:
                lines.append(
                    f"  variable {item.name}  {item.type} {item.shape or ()}  {item.hash[:12]}"
                )
    if experiment.artifacts:
        lines.append("artifacts:")
        lines.extend(
            f"  {a.path}  {a.hash[:12]}  {human_bytes(a.size or 0)}" for a in experiment.artifacts
        )
    lines.append("code:")
    if experiment.code.notebook:
        lines.append(f"  notebook {experiment.code.notebook}")
    lines.append(f"  {len(experiment.code.history)} earlier cells in the kernel's history")
    lines.extend("  | " + line for line in experiment.code.source.rstrip().splitlines())
    env = experiment.env
    if env:
        lines.append(f"environment: Python {env.get('python')} on {env.get('platform')}")
        packages = env.get("packages", {})
        if packages:
            lines.append("  " + ", ".join(f"{k}=={v}" for k, v in packages.items()))
        if env.get("seeds"):
            lines.append(f"  seeds: {json.dumps(env['seeds'])}")
    if experiment.git:
        git = experiment.git
        if "error" in git:
            lines.append(f"git: {git['error']}")
        else:
            dirty = " (uncommitted changes)" if git.get("dirty") else ""
            lines.append(
                f"git: {git.get('branch') or 'detached'} @ {(git.get('commit') or 'no commit')[:12]}{dirty}"
            )
    state = experiment.state
    if state is not None:
        variables = state.variables
        lines.append(f"state: {len(variables)} variables, {human_bytes(state.total_bytes or 0)}")
        for name, info in variables.items():
            extra = f"= {info.alias_of}" if info.alias_of else human_bytes(info.size or 0)
            lines.append(f"  {name}  {info.type}  {extra}")
        for name, reason in state.unstored.items():
            lines.append(f"  {name}  NOT STORED: {reason}")
        if state.imports:
            lines.append("  imports: " + "; ".join(state.imports.values()))
    outcome = experiment.outcome
    if outcome.error:
        lines.append(f"error: {outcome.error['type']}: {outcome.error['message']}")
    if outcome.stdout:
        lines.append("output:")
        lines.extend("  " + line for line in outcome.stdout.rstrip().splitlines()[-20:])
    return terminal_safe("\n".join(lines))


def _table(mapping: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td style='text-align:left'><code>{html.escape(str(k))}</code></td>"
        f"<td style='text-align:left'>{html.escape(format_value(v))}</td></tr>"
        for k, v in mapping.items()
    )
    return f"<table>{rows}</table>"


def html_view(experiment: Experiment) -> str:
    """The notebook rendering: a compact header, params/metrics tables, the rest as text."""
    colour = {"ok": "#1a7f37", "failed": "#cf222e"}.get(experiment.status, "#9a6700")
    head = (
        f"<div><b>{html.escape(experiment.name)}</b> <code>{experiment.short_id}</code> "
        f"<span style='color:{colour};font-weight:bold'>{html.escape(experiment.status)}</span> "
        f"· {html.escape(experiment.created)} · {experiment.outcome.duration:.2f} s</div>"
    )
    sections = []
    if experiment.params:
        sections.append(f"<div><b>params</b>{_table(experiment.params)}</div>")
    if experiment.metrics:
        sections.append(f"<div><b>metrics</b>{_table(experiment.metrics)}</div>")
    grid = f"<div style='display:flex;gap:2em;align-items:flex-start'>{''.join(sections)}</div>"
    rest = html.escape(
        text_view(experiment).split("\n", 1)[1] if "\n" in text_view(experiment) else ""
    )
    details = f"<details><summary>everything recorded</summary><pre>{rest}</pre></details>"
    return f"<div class='nbexp-experiment'>{head}{grid}{details}</div>"
