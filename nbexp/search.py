"""`--search KEY=DIST --trials N --maximize M`: an Optuna study, one record per trial.

Optuna only proposes values (ask) and hears back the metric (tell); each trial is an ordinary
run of the body with its values as `-p` overrides, recorded and linked like a sweep's runs
(`links["sweep"]`), plus `links["search"]`: the space, objective, sampler, seed and the
Optuna trial number. So the study can be rebuilt from the records (`study`), and re-run with
the same seed. Trials run in the kernel one at a time, or on Dask as many at once as there
are worker threads (`executor`); with TPE the parallel trials are told apart by its
constant liar.
"""

from __future__ import annotations

import ast
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NbexpError
from .sweep import (
    Landing,
    SweepResult,
    Where,
    check_clashes,
    describe,
    new_sweep_id,
    on_dask,
    trial_options,
)

if TYPE_CHECKING:
    from .recorder import Recorder, RunOptions, RunResult
    from .store import Store

_EXAMPLE = 'e.g. --search "lr=loguniform(1e-4,1e-1)" --search "depth=int(2,12)"'
SAMPLERS = ("tpe", "random", "grid")
DEFAULT_TRIALS = 20


class SearchError(NbexpError):
    """A `--search` that does not parse, or a study that cannot be run as asked."""


@dataclass(frozen=True)
class Dimension:
    """One searched param: `loguniform(a,b)`, `uniform(a,b)`, `int(a,b)` or `choice(x,...)`."""

    name: str
    kind: str
    args: tuple[Any, ...]

    def text(self) -> str:
        return f"{self.kind}({','.join(repr(a) for a in self.args)})"

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.args))
        low, high = self.args
        if self.kind == "int":
            return trial.suggest_int(self.name, low, high)
        return trial.suggest_float(self.name, low, high, log=self.kind == "loguniform")

    def distribution(self) -> Any:
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(list(self.args))
        low, high = self.args
        if self.kind == "int":
            return optuna.distributions.IntDistribution(low, high)
        return optuna.distributions.FloatDistribution(low, high, log=self.kind == "loguniform")

    def grid(self) -> list[Any] | None:
        """Every value, for the grid sampler; None for a continuous range."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "int":
            return list(range(self.args[0], self.args[1] + 1))
        return None


def parse_space(specs: Sequence[str]) -> dict[str, Dimension]:
    """The search space the `--search` options describe, in the order given."""
    space: dict[str, Dimension] = {}
    for spec in specs:
        key, separator, text = spec.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier():
            raise SearchError(f"--search {spec}: expected KEY=DIST; {_EXAMPLE}")
        if key in space:
            raise SearchError(f"--search {key} is given twice; search each param once")
        space[key] = _dimension(key, text.strip(), spec)
    return space


def _dimension(key: str, text: str, spec: str) -> Dimension:
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        call = None
    kinds = "loguniform(a,b), uniform(a,b), int(a,b) or choice(x,y,...)"
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)) or call.keywords:
        raise SearchError(f"--search {spec}: the distribution is one of {kinds}; {_EXAMPLE}")
    kind = call.func.id
    try:
        args = tuple(ast.literal_eval(arg) for arg in call.args)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise SearchError(f"--search {spec}: give literal values, e.g. {kind}(1, 10)") from None
    if kind == "choice":
        if not args or not all(isinstance(a, (str, int, float, bool, type(None))) for a in args):
            raise SearchError(f"--search {spec}: choice() takes numbers, strings, True/False/None")
        if len({repr(a) for a in args}) < len(args):
            raise SearchError(f"--search {spec}: a choice is repeated; list each once")
        return Dimension(key, kind, args)
    if kind not in ("loguniform", "uniform", "int"):
        raise SearchError(f"--search {spec}: unknown distribution {kind}(); use {kinds}")
    numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if len(args) != 2 or not numbers or not all(math.isfinite(a) for a in args):
        raise SearchError(f"--search {spec}: {kind}(low, high) takes two finite numbers")
    low, high = args
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise SearchError(f"--search {spec}: int(low, high) takes two integers")
    if low >= high:
        raise SearchError(f"--search {spec}: the low end must be below the high end")
    if kind == "loguniform" and low <= 0:
        raise SearchError(f"--search {spec}: loguniform needs a positive low end")
    return Dimension(key, kind, (low, high) if kind == "int" else (float(low), float(high)))


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" | "minimize"


def objective(maximize: str | None, minimize: str | None) -> Objective:
    if bool(maximize) == bool(minimize):
        raise SearchError(
            "--search needs the metric to optimise: --maximize NAME or --minimize NAME (one)"
        )
    return Objective(maximize, "maximize") if maximize else Objective(minimize or "", "minimize")


def _sampler(name: str, space: dict[str, Dimension], seed: int) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = {key: dimension.grid() for key, dimension in space.items()}
        continuous = [key for key, values in grid.items() if values is None]
        if continuous:
            raise SearchError(
                f"--sampler grid needs every param discrete; {continuous[0]} is "
                f"{space[continuous[0]].text()}: use int() or choice(), or another sampler"
            )
        # Optuna's GridSampler stops the study from inside `tell` when the grid is done,
        # which ask-and-tell cannot take: the points are enqueued instead (`_grid_points`).
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":  # the constant liar keeps parallel trials from piling on one point
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    raise SearchError(f"--sampler {name}: choose one of {', '.join(SAMPLERS)}")


class _KernelTrials:
    """Trials run here, one at a time, each starting from the namespace as it was before."""

    capacity = 1

    def __init__(self, recorder: Recorder, namespace: dict[str, Any] | None) -> None:
        from .sweep import _user_names

        self.recorder, self.namespace = recorder, namespace
        self._before = _user_names(namespace) if namespace is not None else {}
        self._queue: list[tuple[int, str, RunOptions]] = []
        self._ran = 0

    @property
    def running(self) -> int:
        return len(self._queue)

    def submit(self, index: int, cell: str, options: RunOptions) -> None:
        self._queue.append((index, cell, options))

    def next_done(self) -> tuple[int, RunResult | None]:
        from .sweep import _reset

        index, cell, options = self._queue.pop(0)
        if self.namespace is not None and self._ran:
            _reset(self.namespace, self._before)
        self._ran += 1
        return index, self.recorder.run(cell, options)


def run_search(
    recorder: Recorder,
    cell: str,
    options: RunOptions,
    space: dict[str, Dimension],
    goal: Objective,
    *,
    trials: int | None = None,
    sampler: str = "tpe",
    seed: int | None = None,
    where: Where | None = None,
    report: Callable[[RunResult], None] | None = None,
    progress: Callable[[str], None] | None = None,
    namespace: dict[str, Any] | None = None,
) -> SweepResult:
    """Run the study: ask Optuna for values, run and record a trial with them, tell it the
    metric; as many trials at once as the executor has room for. Every trial is recorded,
    failures included (Optuna hears FAIL); Ctrl-C keeps the finished ones."""
    optuna = _optuna()
    check_clashes(list(space), options, "--search", "searched")
    say = progress or (lambda text: print(text, flush=True))
    seed = secrets.randbelow(2**31) if seed is None else seed
    chosen = _sampler(sampler, space, seed)
    total = trials if trials is not None else DEFAULT_TRIALS
    if sampler == "grid":
        size = math.prod(len(d.grid() or ()) for d in space.values())
        total = size if trials is None else min(total, size)
    if total < 1:
        raise SearchError(f"--trials {total}: give a number of trials of at least 1")
    sweep = SweepResult(new_sweep_id(), [])
    base_name = options.name or f"search-{sweep.sweep_id}"
    study = optuna.create_study(
        direction=goal.direction, sampler=chosen, study_name=f"nbexp-{sweep.sweep_id}"
    )
    if sampler == "grid":
        for grid_point in _grid_points(space, seed)[:total]:
            study.enqueue_trial(grid_point)
    link = {
        "space": {key: d.text() for key, d in space.items()},
        "objective": goal.metric,
        "direction": goal.direction,
        "sampler": sampler,
        "seed": seed,
    }
    asked: dict[int, Any] = {}
    points: dict[int, dict[str, Any]] = {}
    landed = Landing(sweep, recorder, report, say, total)

    def ask(runner: Any) -> None:
        index = len(asked) + 1
        trial = study.ask()
        point = {key: dimension.suggest(trial) for key, dimension in space.items()}
        asked[index], points[index] = trial, point
        name = f"{base_name}-{index}"
        runner.submit(
            index,
            cell,
            trial_options(
                options, sweep.sweep_id, name, point, search={**link, "trial": trial.number}
            ),
        )
        if runner.capacity == 1:
            say(f"▶ search {sweep.sweep_id} [{index}/{total}] {name}: {describe(point)}")

    def drive(runner: Any) -> None:
        while len(asked) < total and runner.running < runner.capacity:
            ask(runner)
        while runner.running:
            index, result = runner.next_done()
            landed(index, result)
            _tell(study, asked[index], result, goal)
            if result is not None and isinstance(result.error, (KeyboardInterrupt, SystemExit)):
                raise result.error  # recorded; the user asked to stop
            while len(asked) < total and runner.running < runner.capacity:
                ask(runner)

    with _quiet(optuna):
        if where is not None and where.on_dask():
            with on_dask(recorder, cell, options, where, landed, say) as runner:
                say(
                    f"▶ search {sweep.sweep_id}: {total} trials of {sampler} (seed {seed}) on "
                    f"Dask, {runner.capacity} at a time"
                )
                drive(runner)
        else:
            say(f"▶ search {sweep.sweep_id}: {total} trials of {sampler} (seed {seed})")
            landed.start()
            try:
                drive(_KernelTrials(recorder, namespace))
            finally:
                landed.close()
    sweep.points = [points[k] for k in sorted(points)]
    landed.finish()
    sweep.best = _best(study, asked, sweep, landed)
    if sweep.best is not None and sweep.best.experiment is not None:
        best = sweep.best.experiment
        values = ", ".join(f"{k}={best.params.get(k)!r}" for k in space)
        say(
            f"best of search {sweep.sweep_id}: {best.name} ({best.short_id}) "
            f"{goal.metric}={best.metrics.get(goal.metric)!r} with {values}"
        )
        sweep.figure = _parallel_plot(goal.metric, list(space), sweep.sweep_id)
    else:
        say(f"search {sweep.sweep_id}: no trial gave {goal.metric}, so there is no best")
    return sweep


def _grid_points(space: dict[str, Dimension], seed: int) -> list[dict[str, Any]]:
    """Every point of a discrete space, in an order shuffled by the study's seed."""
    import itertools
    import random

    keys = list(space)
    points = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(space[key].grid() or [] for key in keys))
    ]
    random.Random(seed).shuffle(points)
    return points


def _optuna() -> Any:
    from .executor import require

    return require("optuna")


class _quiet:
    """Optuna's own per-trial log lines off while nbexp prints its own."""

    def __init__(self, optuna: Any) -> None:
        self._logging = optuna.logging

    def __enter__(self) -> None:
        self._level = self._logging.get_verbosity()
        self._logging.set_verbosity(self._logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logging.set_verbosity(self._level)


def _value(result: RunResult | None, goal: Objective) -> float | None:
    if result is None or result.experiment is None or result.error is not None:
        return None
    value = result.experiment.metrics.get(goal.metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _tell(study: Any, trial: Any, result: RunResult | None, goal: Objective) -> None:
    import optuna

    value = _value(result, goal)
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, value)


def _best(study: Any, asked: dict[int, Any], sweep: SweepResult, landed: Landing) -> Any:
    try:
        number = study.best_trial.number
    except ValueError:  # no trial completed
        return None
    index = next(i for i, trial in asked.items() if trial.number == number)
    return landed.result_of(index)


def _parallel_plot(metric: str, params: list[str], sweep_id: str) -> Any:
    """Params against the metric, one line per trial; None when it cannot be drawn."""
    from . import api

    try:
        return api.plot(metric, kind="parallel", params=params, sweep=sweep_id)
    except NbexpError:
        return None


def study(sweep: str, *, store: Store | str | None = None) -> Any:
    """The Optuna study of a recorded search, rebuilt from its records (`sweep`: its id):
    every trial with its params, distributions and value (failed ones as FAIL), to analyse
    with Optuna's own tools or continue with `study.optimize`."""
    from . import api

    optuna = _optuna()
    target = api._store(store)
    rows = [row for row in target.rows() if row["sweep"] == sweep]
    records = sorted((target.load(row["id"]) for row in rows), key=lambda e: e.created)
    searched = [e for e in records if isinstance(e.links.get("search"), dict)]
    if not searched:
        raise SearchError(f"no search {sweep} in this store; `%exp_plot --sweep` lists sweeps")
    link = searched[0].links["search"]
    space = parse_space([f"{key}={text}" for key, text in link["space"].items()])
    goal = Objective(link["objective"], link["direction"])
    with _quiet(optuna):
        rebuilt = optuna.create_study(direction=goal.direction, study_name=f"nbexp-{sweep}")
    distributions = {key: dimension.distribution() for key, dimension in space.items()}
    for experiment in sorted(searched, key=lambda e: e.links["search"].get("trial", 0)):
        params = {key: experiment.params.get(key) for key in space}
        value = experiment.metrics.get(goal.metric)
        number = (
            float(value)
            if experiment.status != "failed" and isinstance(value, (int, float))
            else None
        )
        done = number is not None
        rebuilt.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                value=number,
                state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL,
                user_attrs={"nbexp_id": experiment.id, "name": experiment.name},
            )
        )
    return rebuilt
