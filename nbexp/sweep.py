"""`--sweep KEY=V1,V2,...`: run one `%%experiment` body once per point of a param grid.

Each combination is an ordinary run (the values arrive as `-p` overrides), recorded on its own
and linked to the others by a sweep id in `links["sweep"]`, which the index keeps in its
`sweep` column. A combination that fails is recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import ast
import itertools
import math
import secrets
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import NbexpError
from .record import SHORT_ID_LENGTH

if TYPE_CHECKING:
    from .recorder import Recorder, RunOptions, RunResult
    from .store import Store

_EXAMPLE = "e.g. --sweep max_depth=2,4,8 --sweep loss=gini,entropy"


class SweepError(NbexpError):
    """A `--sweep` that does not parse, or that clashes with a `-p` of the same key."""


def _values(key: str, text: str) -> list[Any]:
    """`2,4,8` → [2, 4, 8]; `gini,'log loss'` → ["gini", "log loss"]; `[1,2],[3]` → lists.

    Each element is a Python literal; an element that is not (a bare word, `rf-v1`) is taken
    as a string, so strings rarely need quoting in a shell-like magic line."""
    try:
        tree = ast.parse(f"({text},)", mode="eval").body
        elements = tree.elts if isinstance(tree, ast.Tuple) else [tree]
    except SyntaxError:
        pieces = [piece.strip() for piece in text.split(",")]
        if not all(pieces):
            raise SweepError(f"--sweep {key}={text}: an empty value; {_EXAMPLE}") from None
        return [_literal_or_word(piece) for piece in pieces]
    values = []
    source = f"({text},)"
    for element in elements:
        try:
            values.append(ast.literal_eval(element))
        except (ValueError, TypeError, SyntaxError, RecursionError):
            segment = ast.get_source_segment(source, element)
            values.append(segment.strip() if segment else text)
    return values


def _literal_or_word(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return text


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """The grid the `--sweep` options describe: key → its values, in the order given."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, separator, text = spec.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier():
            raise SweepError(f"--sweep {spec}: expected KEY=V1,V2,...; {_EXAMPLE}")
        if not text.strip():
            raise SweepError(f"--sweep {spec}: no values after `=`; {_EXAMPLE}")
        if key in grid:
            raise SweepError(
                f"--sweep {key} is given twice; list all its values in one --sweep {key}=..."
            )
        values = _values(key, text.strip())
        if len({repr(v) for v in values}) < len(values):
            raise SweepError(f"--sweep {spec}: a value is repeated; list each value once")
        grid[key] = values
    return grid


MAX_RUNS = 1000  # a bigger grid is refused unless --max-runs allows it


def combinations(grid: dict[str, list[Any]], max_runs: int | None = None) -> list[dict[str, Any]]:
    """Every point of the grid (the product of the value lists), first key slowest. More than
    `max_runs` (default MAX_RUNS) points is refused before any runs: six flags of ten values
    are a million runs, which a typo should not start."""
    limit = MAX_RUNS if max_runs is None else max_runs
    if limit < 1:
        raise SweepError(f"--max-runs {limit}: give a number of runs of at least 1")
    size = math.prod(len(values) for values in grid.values())
    if size > limit:
        raise SweepError(
            f"this sweep is {size:,} runs, over the limit of {limit:,}; pass --max-runs {size} "
            "if you mean it, or sweep fewer values"
        )
    keys = list(grid)
    return [dict(zip(keys, point, strict=True)) for point in itertools.product(*grid.values())]


def describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in point.items())


_VALUE_OPTIONS = {
    "-p",
    "--param",
    "-d",
    "--data",
    "-m",
    "--metric",
    "-t",
    "--tag",
    "--note",
    "--expect",
    "--sweep",
}


def combination_line(line: str, name: str, overrides: Sequence[str]) -> str:
    """The `%%experiment` line one combination is recorded with: the sweep's line with its
    name replaced by `name` and its --sweep options replaced by `-p KEY=VALUE`, so the
    recorded cell re-runs exactly that combination."""
    words = shlex.split(line)
    kept: list[str] = []
    named = False
    index = 0
    while index < len(words):
        word = words[index]
        if word in _VALUE_OPTIONS:
            if word != "--sweep":
                kept.extend(words[index : index + 2])
            index += 2
            continue
        if word.startswith("--sweep="):
            pass
        elif word.startswith("-") or named:
            kept.append(word)
        else:
            kept.append(name)
            named = True
        index += 1
    if not named:
        kept.insert(0, name)
    for override in overrides:
        kept += ["-p", override]
    return shlex.join(kept)


def new_sweep_id() -> str:
    return secrets.token_hex(4)


@dataclass
class SweepResult:
    """The runs of one sweep, in grid order."""

    sweep_id: str
    points: list[dict[str, Any]]
    results: list[RunResult] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.experiment.id for r in self.results if r.experiment is not None]

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.error is not None)


def run_sweep(
    recorder: Recorder,
    cell: str,
    options: RunOptions,
    grid: dict[str, list[Any]],
    *,
    report: Callable[[RunResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
    namespace: dict[str, Any] | None = None,
) -> SweepResult:
    """Run the body once per grid point; every run is recorded, failures included.

    `report` is called after each run (the magic prints its summary line), `progress` before
    it with one line naming the combination. A user mistake in the options raises before the
    first run (from the recorder's own validation of the first combination).

    Given the `namespace` the body runs in, every combination starts from it as it was before
    the sweep (names rebound, names the sweep created removed), so a combination that fails
    half-way cannot be recorded with the previous combination's results."""
    clashes = [
        key for key in grid if any(p.partition("=")[0].strip() == key for p in options.params)
    ]
    if clashes:
        raise SweepError(
            f"{clashes[0]} is both swept and set with -p; drop -p {clashes[0]}=... or the --sweep"
        )
    say = progress or (lambda text: print(text, flush=True))
    points = combinations(grid, options.max_runs)
    sweep = SweepResult(new_sweep_id(), points)
    base_name = options.name or f"sweep-{sweep.sweep_id}"
    before = _user_names(namespace) if namespace is not None else {}
    for index, point in enumerate(points, start=1):
        overrides = [f"{key}={value!r}" for key, value in point.items()]
        name = f"{base_name}-{index}"
        run_options = replace(
            options,
            name=name,
            params=[*options.params, *overrides],
            links={**options.links, "sweep": sweep.sweep_id},
            line=combination_line(options.line, name, overrides),
        )
        if namespace is not None and index > 1:
            _reset(namespace, before)
        say(f"▶ sweep {sweep.sweep_id} [{index}/{len(points)}] {name}: {describe(point)}")
        result = recorder.run(cell, run_options)
        sweep.results.append(result)
        if report is not None:
            report(result)
        for stream in (sys.stdout, sys.stderr):  # keep a run's lines together in a notebook
            stream.flush()
        if isinstance(result.error, (KeyboardInterrupt, SystemExit)):
            raise result.error  # recorded; the user asked to stop, not to skip one
        if result.error is not None:
            print(
                f"✗ {name} failed: {type(result.error).__name__}: {result.error}",
                file=sys.stderr,
                flush=True,
            )
    ok = len(points) - sweep.failed
    say(f"sweep {sweep.sweep_id}: {len(points)} runs, {ok} ran to the end, {sweep.failed} failed")
    return sweep


def _user_names(namespace: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in namespace.items() if not k.startswith("_") and k not in ("In", "Out")}


def _reset(namespace: dict[str, Any], before: dict[str, Any]) -> None:
    """Put back the bindings of `before` (the same objects; mutations stay) and drop the rest."""
    for name in list(_user_names(namespace)):
        if name not in before:
            del namespace[name]
    for name, value in before.items():
        if namespace.get(name, _reset) is not value:
            namespace[name] = value


def show_sweep(ids: Sequence[str], *, store: Store | str | None = None) -> Any:
    """The comparison table of a sweep's experiments, in the order they ran.

    The one place that decides how a finished sweep is shown: a DataFrame for now (the
    interactive table can take over here), with the columns no run of the sweep has dropped."""
    from . import api

    order = {experiment_id[:SHORT_ID_LENGTH]: index for index, experiment_id in enumerate(ids)}
    frame = api.experiments(store=store)
    frame = frame[frame["id"].isin(list(order))]
    frame = frame.sort_values("id", key=lambda column: column.map(order))
    return frame.dropna(axis="columns", how="all").reset_index(drop=True)
