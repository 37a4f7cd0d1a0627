"""`nbexp drift REF PATH...` and `nbexp.drift()`: how far new data has moved from what an experiment read.

Nothing is recorded: the new data is profiled as a run would profile it (`profiles`), only the
columns the recorded input had, and compared column by column with `comparison.column_drift`
(PSI, KS, TVD). Reading the file is the cost; profiling touches each needed column once and
takes quantiles from a fixed-size sample, so it stays a fraction of the read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .comparison import ColumnDrift, column_drift
from .errors import NbexpError
from .profiles import SAMPLE_SIZE, TABULAR_SUFFIXES, _positions, profile_series
from .record import Experiment
from .subrecords import DataInput

LEVELS = ("stable", "moderate", "major")
DRIFT_EXIT = 3


class DriftError(NbexpError):
    """New data that cannot be compared with the experiment's input."""


@dataclass
class InputDrift:
    """One new data set against the recorded input it stands for."""

    label: str  # the new data: a path, or "DataFrame"
    input: str  # the recorded input: "file data/train.csv" or "variable df"
    columns: list[ColumnDrift]
    missing: list[str] = field(default_factory=list)  # recorded columns the new data lacks
    extra: list[str] = field(default_factory=list)  # new columns the input did not have
    rows: tuple[int | None, int | None] = (None, None)

    @property
    def worst(self) -> str:
        levels = [c.level for c in self.columns if c.level]
        return max(levels, key=LEVELS.index) if levels else "stable"


def _tabular_inputs(experiment: Experiment) -> list[DataInput]:
    return [item for item in experiment.data if item.profile]


def _label(item: DataInput) -> str:
    return f"file {item.path}" if item.is_file else f"variable {item.name}"


def match_input(experiment: Experiment, path: str | None, input_name: str | None) -> DataInput:
    """The recorded input new data stands for: `--input`, else the same path, else the
    experiment's only tabular input."""
    inputs = _tabular_inputs(experiment)
    who = f"{experiment.name} ({experiment.short_id})"
    if not inputs:
        raise DriftError(f"{who} recorded no tabular input with a profile to compare with")
    names = ", ".join(str(i.path or i.name) for i in inputs)
    if input_name is not None:
        for item in inputs:
            if input_name in (item.path, item.name, item.abspath):
                return item
        raise DriftError(f"--input {input_name}: {who} read no such input; it read {names}")
    if path is not None:
        absolute = os.path.abspath(path)
        for item in inputs:
            if item.abspath == absolute or item.path == path:
                return item
    if len(inputs) == 1:
        return inputs[0]
    raise DriftError(f"{who} read several inputs ({names}); say which with --input NAME")


def _read(path: str, columns: list[str]) -> tuple[Any, list[str], int]:
    """(frame of the wanted columns, every column of the file, rows) — only what is compared
    is parsed."""
    import pandas as pd

    fmt = TABULAR_SUFFIXES.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise DriftError(f"{path}: not a tabular file nbexp profiles (.csv, .tsv, .parquet)")
    if not os.path.isfile(path):
        raise DriftError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            everything = [str(c) for c in pq.read_schema(path).names]
            wanted = [c for c in everything if c in columns]
            frame = pd.read_parquet(path, columns=wanted)
        else:
            sep = "\t" if fmt == "tsv" else ","
            everything = [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
            wanted = [c for c in everything if c in columns]
            if not wanted:
                return None, everything, 0
            frame = pd.read_csv(path, sep=sep, usecols=wanted, **_engine())
    except (ValueError, OSError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DriftError(f"{path} cannot be read as {fmt}: {first}") from error
    except Exception as error:  # pyarrow's and pandas' parser errors
        raise DriftError(f"{path} cannot be read as {fmt}: {type(error).__name__}") from error
    return frame, everything, len(frame)


def _engine() -> dict[str, Any]:
    try:
        import pyarrow  # noqa: F401

        return {"engine": "pyarrow"}
    except ImportError:
        return {}


def compare(experiment: Experiment, data: Any, *, input_name: str | None = None) -> InputDrift:
    """Drift of `data` (a path or a DataFrame) from the matching recorded input."""
    path = None if hasattr(data, "columns") else os.fspath(data)
    item = match_input(experiment, path, input_name)
    recorded = item.profile
    if path is None:
        frame, everything, rows = data, [str(c) for c in data.columns], len(data)
        frame = frame[[c for c in frame.columns if str(c) in recorded]]
        label = "DataFrame"
    else:
        frame, everything, rows = _read(path, list(recorded))
        label = path
    common = [c for c in everything if c in recorded]
    if not common:
        raise DriftError(
            f"{label} has none of the columns {experiment.name}'s {_label(item)} had "
            f"({', '.join(list(recorded)[:8])}); is it the right data? (--input NAME picks "
            "another input)"
        )
    profile = _profiles(frame)
    columns = [column_drift(c, recorded[c], profile[c]) for c in recorded if c in profile]
    recorded_rows = item.rows or (item.shape or (None,))[0]
    return InputDrift(
        label=label,
        input=_label(item),
        columns=columns,
        missing=[c for c in recorded if c not in everything],
        extra=[c for c in everything if c not in recorded],
        rows=(recorded_rows, rows),
    )


def _profiles(frame: Any) -> dict[str, dict[str, Any]]:
    """Column profiles for drift, from one fixed-seed sample of rows (the positions a run's
    profile samples, so null-free columns get the very same quantiles), with the null counts
    taken over every row: the statistics need nothing more, and the cost stays flat however
    many rows were read."""
    rows = len(frame)
    sample = frame.take(_positions(rows)) if rows > SAMPLE_SIZE else frame
    found = {}
    for column in frame.columns:
        profile = profile_series(sample[column])
        nulls = int(frame[column].isna().sum())
        profile.update(count=rows - nulls, nulls=nulls)
        if rows > SAMPLE_SIZE:
            profile["sampled"] = SAMPLE_SIZE
        found[str(column)] = profile
    return found


def check_level(level: str | None) -> None:
    if level is not None and level not in LEVELS[1:]:
        raise DriftError(f"--fail-on {level}: use moderate or major")


def reaches(found: list[InputDrift], level: str | None) -> bool:
    """True when some column's drift is at `level` or worse."""
    if level is None:
        return False
    return any(LEVELS.index(result.worst) >= LEVELS.index(level) for result in found)


def rows(found: list[InputDrift]) -> list[dict[str, Any]]:
    """One plain dict per column: the table as data (JSON, DataFrame)."""
    table = []
    for result in found:
        for c in result.columns:
            table.append(
                {
                    "data": result.label,
                    "input": result.input,
                    "column": c.column,
                    "kind": c.kind,
                    "psi": c.psi,
                    "ks": c.ks,
                    "tvd": c.tvd,
                    "level": c.level or None,
                    "mean_recorded": c.mean[0] if c.mean else None,
                    "mean_new": c.mean[1] if c.mean else None,
                    "null_rate_recorded": c.null_rate[0],
                    "null_rate_new": c.null_rate[1],
                    "note": c.note,
                }
            )
    return table


def as_json(experiment: Experiment, found: list[InputDrift]) -> dict[str, Any]:
    return {
        "experiment": {"id": experiment.id, "name": experiment.name},
        "inputs": [
            {
                "data": r.label,
                "input": r.input,
                "worst": r.worst,
                "rows": {"recorded": r.rows[0], "new": r.rows[1]},
                "missing_columns": r.missing,
                "extra_columns": r.extra,
            }
            for r in found
        ],
        "columns": rows(found),
    }


def _stat(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def text(experiment: Experiment, found: list[InputDrift]) -> str:
    """The table `nbexp drift` prints."""
    lines = [f"drift from {experiment.name} ({experiment.short_id})"]
    for result in found:
        recorded, new = result.rows
        lines.append(
            f"{result.label} vs {result.input}: {recorded if recorded is not None else '?'} → "
            f"{new} rows, worst {result.worst}"
        )
        if result.missing:
            lines.append(f"  missing columns: {', '.join(result.missing)}")
        if result.extra:
            lines.append(f"  new columns (not compared): {', '.join(result.extra)}")
        table = [["column", "kind", "PSI", "KS", "TVD", "drift"]]
        table.extend(
            [c.column, c.kind, _stat(c.psi), _stat(c.ks), _stat(c.tvd), c.level or (c.note or "")]
            for c in result.columns
        )
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines.extend(
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in table
        )
    return "\n".join(line.rstrip() for line in lines)


def frame(found: list[InputDrift]) -> Any:
    """The table as a pandas DataFrame (the notebook shows it as a table)."""
    import pandas as pd

    return pd.DataFrame.from_records(rows(found))
