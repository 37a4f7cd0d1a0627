"""`--sweep KEY=V1,V2,...`: run one `%%experiment` body once per point of a param grid.

Each combination is an ordinary run (the values arrive as `-p` overrides), recorded on its own
and linked to the others by a sweep id in `links["sweep"]`, which the index keeps in its
`sweep` column. A combination that fails is recorded as failed and the sweep goes on.

In the kernel the combinations run one after another; with `--workers`/`--cluster` (or a
Dask client at hand) they run on Dask workers and are recorded here as they land
(`executor`). `search` drives an Optuna study through the same two ways of running trials.
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import functools
import itertools
import math
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import NbexpError
from .record import SHORT_ID_LENGTH

if TYPE_CHECKING:
    from .executor import Progress
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


# options of the sweep as a whole, which no single run's recorded line keeps
_SWEEP_OPTIONS = {
    "--sweep",
    "--max-runs",
    "--search",
    "--trials",
    "--maximize",
    "--minimize",
    "--sampler",
    "--workers",
    "--cluster",
}
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
    "--params-file",
    "--allow-secret",
    *_SWEEP_OPTIONS,
}


def combination_line(line: str, name: str, overrides: Sequence[str]) -> str:
    """The `%%experiment` line one combination is recorded with: the sweep's line with its
    name replaced by `name`, its --sweep/--search options replaced by `-p KEY=VALUE` and
    those of running many (--workers, --trials...) dropped, so the recorded cell re-runs
    exactly that combination."""
    kept, at = _line_template(line)
    words = [*kept[:at], name, *kept[at:]]
    for override in overrides:
        words += ["-p", override]
    return shlex.join(words)


@functools.lru_cache(maxsize=8)
def _line_template(line: str) -> tuple[tuple[str, ...], int]:
    """The sweep's line without its name and sweep options, and where the name goes: parsed
    once per sweep (a thousand-value --sweep is a long line to split per run)."""
    words = shlex.split(line)
    kept: list[str] = []
    at = 0
    named = False
    index = 0
    while index < len(words):
        word = words[index]
        if word in _VALUE_OPTIONS:
            if word not in _SWEEP_OPTIONS:
                kept.extend(words[index : index + 2])
            index += 2
            continue
        if word.partition("=")[0] in _SWEEP_OPTIONS:
            pass
        elif word.startswith("-") or named:
            kept.append(word)
        else:
            at, named = len(kept), True
        index += 1
    return tuple(kept), at


def new_sweep_id() -> str:
    return secrets.token_hex(4)


@dataclass
class SweepResult:
    """The runs of one sweep (or search), in grid (or trial) order."""

    sweep_id: str
    points: list[dict[str, Any]]
    results: list[RunResult] = field(default_factory=list)
    best: RunResult | None = None  # a search's best trial
    figure: Any = None  # a search's parallel-coordinates plot

    @property
    def ids(self) -> list[str]:
        return [r.experiment.id for r in self.results if r.experiment is not None]

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.error is not None)


@dataclass
class Where:
    """Where the trials run: in the kernel, or on Dask (`executor.connect`)."""

    workers: int | None = None
    cluster: str | None = None

    def on_dask(self) -> bool:
        from .executor import wanted

        return wanted(self.workers, self.cluster)


def trial_options(
    options: RunOptions, sweep_id: str, name: str, point: dict[str, Any], **links: Any
) -> RunOptions:
    """The options of one run of a sweep: its point as `-p` values, its name, its links."""
    overrides = [f"{key}={value!r}" for key, value in point.items()]
    return replace(
        options,
        name=name,
        params=[*options.params, *overrides],
        links={**options.links, "sweep": sweep_id, **links},
        line=combination_line(options.line, name, overrides),
    )


def check_clashes(
    keys: Sequence[str], options: RunOptions, flag: str = "--sweep", verb: str = "swept"
) -> None:
    """A key both varied and fixed with -p is refused: which value would the run use?"""
    clashes = [
        key for key in keys if any(p.partition("=")[0].strip() == key for p in options.params)
    ]
    if clashes:
        raise SweepError(
            f"{clashes[0]} is both {verb} and set with -p; drop -p {clashes[0]}=... or the {flag}"
        )


def run_sweep(
    recorder: Recorder,
    cell: str,
    options: RunOptions,
    grid: dict[str, list[Any]],
    *,
    report: Callable[[RunResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
    namespace: dict[str, Any] | None = None,
    where: Where | None = None,
) -> SweepResult:
    """Run the body once per grid point; every run is recorded, failures included.

    `report` is called after each run (the magic prints its summary line), `progress` before
    it with one line naming the combination. A user mistake in the options raises before the
    first run (from the recorder's own validation of the first combination).

    Given the `namespace` the body runs in, every combination starts from it as it was before
    the sweep (names rebound, names the sweep created removed), so a combination that fails
    half-way cannot be recorded with the previous combination's results.

    On Dask (`where`), the combinations run on workers and are recorded as they land."""
    check_clashes(list(grid), options)
    say = progress or (lambda text: print(text, flush=True))
    points = combinations(grid, options.max_runs)
    sweep = SweepResult(new_sweep_id(), points)
    base_name = options.name or f"sweep-{sweep.sweep_id}"
    if where is not None and where.on_dask():
        landed = Landing(sweep, recorder, report, say)
        with on_dask(recorder, cell, options, where, landed, say) as trials:
            say(
                f"▶ sweep {sweep.sweep_id}: {len(points)} runs on Dask "
                f"({trials.capacity} worker threads)"
            )
            waiting = iter(enumerate(points, start=1))
            window = max(8, 4 * trials.capacity)  # enough queued to keep every worker busy

            def top_up() -> None:
                while trials.running < window:
                    index, point = next(waiting, (0, {}))
                    if not index:
                        return
                    name = f"{base_name}-{index}"
                    options_ = trial_options(options, sweep.sweep_id, name, point)
                    trials.submit(index, cell, options_)

            top_up()  # records are written as trials land, not after every trial is sent
            while trials.running:
                landed(*trials.next_done())
                top_up()
        landed.finish()
        return sweep
    before = _user_names(namespace) if namespace is not None else {}
    for index, point in enumerate(points, start=1):
        name = f"{base_name}-{index}"
        run_options = trial_options(options, sweep.sweep_id, name, point)
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
            _say_failed(result)
    _say_done(sweep, say)
    return sweep


def _say_failed(result: RunResult) -> None:
    name = result.experiment.name if result.experiment is not None else "a run"
    print(
        f"✗ {name} failed: {type(result.error).__name__}: {result.error}",
        file=sys.stderr,
        flush=True,
    )


def _say_done(sweep: SweepResult, say: Callable[[str], None]) -> None:
    runs = len(sweep.results)
    ok = runs - sweep.failed
    say(f"sweep {sweep.sweep_id}: {runs} runs, {ok} ran to the end, {sweep.failed} failed")


class Landing:
    """What happens as each trial of a sweep run elsewhere lands: its summary line, the
    progress bar, the live table (in a notebook), kept in trial order."""

    def __init__(
        self,
        sweep: SweepResult,
        recorder: Recorder,
        report: Callable[[RunResult], None] | None,
        say: Callable[[str], None],
        total: int | None = None,
    ) -> None:
        self.sweep, self.report, self.say = sweep, report, say
        self._landed: dict[int, RunResult] = {}
        self._order: list[int] = []  # the indexes of sweep.results
        self._total = total or len(sweep.points)
        self._bar: Progress | None = None
        self._table = _LiveTable(getattr(recorder, "shell", None))

    def start(self) -> None:
        """The progress bar, once the trials are on their way (not before a refusal)."""
        from .executor import Progress

        self._bar = Progress(self._total, f"sweep {self.sweep.sweep_id}")

    def __call__(self, index: int, result: RunResult | None) -> None:
        if result is None:  # cancelled
            return
        self._landed[index] = result
        at = bisect.bisect(self._order, index)  # trial order, without re-sorting every landing
        self._order.insert(at, index)
        self.sweep.results.insert(at, result)
        if self._bar is not None:
            self._bar.advance()
        if self.report is not None:
            self.report(result)
        if result.error is not None:
            _say_failed(result)
        if self._table.due():
            self._table.show(self.sweep.ids)

    def result_of(self, index: int) -> RunResult | None:
        return self._landed.get(index)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._table.close()

    def finish(self) -> None:
        self.close()
        _say_done(self.sweep, self.say)


@contextlib.contextmanager
def on_dask(
    recorder: Recorder,
    cell: str,
    options: RunOptions,
    where: Where,
    landed: Landing,
    say: Callable[[str], None],
) -> Iterator[Any]:
    """Trials on Dask for the block, their inputs checked before the cluster starts; Ctrl-C
    cancels the trials still running and keeps (records) every finished one."""
    from . import executor

    first = recorder.prepare(cell, options)  # user mistakes and unpicklable inputs: first
    names = set(first.info.loaded) if first.info is not None else set()
    shipment = executor.pack_inputs(recorder.shell.user_ns, names)
    preload = executor.preloadable(first.source, recorder.shell.user_ns, names)
    with executor.connect(where.workers, where.cluster, preload) as client:
        trials = executor.DaskTrials(client, recorder, shipment)
        kept = executor.kept_cluster() if where.workers else None
        if kept is not None and kept.reused:
            say(f"(the LocalCluster of {kept.workers} workers kept from the last sweep)")
        landed.start()
        try:
            yield trials
        except KeyboardInterrupt:
            for index, result in trials.cancel():
                landed(index, result)
            landed.close()
            say(
                f"sweep {landed.sweep.sweep_id} interrupted: {len(landed.sweep.results)} runs "
                "recorded, the rest cancelled"
            )
            raise
        finally:
            landed.close()
            trials.close()
    kept = executor.kept_cluster() if where.workers else None
    if kept is not None and not kept.reused:
        say(
            f"the LocalCluster of {where.workers} workers stays up for the next sweep in this "
            f"kernel ({executor.KEEP_ENV}=0: close it after each sweep)"
        )


class _LiveTable:
    """In a notebook, the sweep's table refreshed as trials land (at most once a second, so
    a thousand quick trials do not re-query the index a thousand times)."""

    def __init__(self, shell: Any) -> None:
        self._enabled = getattr(shell, "kernel", None) is not None
        self._handle: Any = None
        self._shown = 0.0

    def due(self) -> bool:
        """Whether a refresh would show anything now (so the caller gathers nothing for it)."""
        return self._enabled and time.monotonic() - self._shown >= 1.0

    def show(self, ids: list[str]) -> None:
        if not self.due() or not ids:
            return
        from IPython.display import display

        frame = show_sweep(ids)
        if self._handle is None:
            self._handle = display(frame, display_id=True)
        else:
            self._handle.update(frame)
        self._shown = time.monotonic()

    def close(self) -> None:
        """The live table gives way to the final one the cell shows."""
        if self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)
            self._handle = None


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
