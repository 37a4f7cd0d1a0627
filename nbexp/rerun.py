"""`nbexp rerun`: run an experiment's exported script in a fresh process and compare.

The script is the one `nbexp export` writes, run by this interpreter (`sys.executable`) in
the experiment's recorded working directory, so relative data paths resolve as they did. Its
last `NBEXP_METRICS {...}` line gives the new metrics; each is compared with the recorded one
within a tolerance, and the run is recorded as a new experiment linked to its source
(`links.rerun_of`), so a reproduction leaves evidence like any other run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import numbers
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import environment
from .errors import NbexpError
from .exporter import DATA_CHANGED_EXIT, METRICS_PREFIX, to_script
from .paths import is_inside
from .record import STATUS_FAILED, STATUS_OK, Experiment, Outcome, decode_value
from .store import Store

DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9
MAX_OUTPUT_CHARS = 256 * 1024

# Exit codes of `nbexp rerun` (1 stays the CLI's user-error code).
AGREE = 0
DATA_CHANGED = 2
METRICS_DIFFER = 3
SCRIPT_FAILED = 4


@dataclass
class Comparison:
    """One metric: recorded, new (None when the rerun did not produce it), and the verdict."""

    name: str
    recorded: Any
    new: Any
    agree: bool


@dataclass
class RerunResult:
    source: Experiment
    record: Experiment | None
    comparisons: list[Comparison] = field(default_factory=list)
    returncode: int = 0
    cwd: str = ""
    duration: float = 0.0
    stderr: str = ""

    @property
    def exit_code(self) -> int:
        """0 when every metric agrees; else why not (data changed, metrics differ, failure)."""
        if self.returncode == DATA_CHANGED_EXIT and "nbexp: input data" in self.stderr:
            return DATA_CHANGED
        if self.returncode != 0:
            return SCRIPT_FAILED
        return AGREE if all(c.agree for c in self.comparisons) else METRICS_DIFFER


def agree(recorded: Any, new: Any, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL) -> bool:
    """Numbers within rtol/atol (nan equals nan, infinities equal themselves); others equal."""
    if _is_number(recorded) and _is_number(new):
        a, b = float(recorded), float(new)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    if isinstance(recorded, list) and isinstance(new, list):
        return len(recorded) == len(new) and all(
            agree(x, y, rtol, atol) for x, y in zip(recorded, new, strict=True)
        )
    if isinstance(recorded, dict) and isinstance(new, dict):
        return recorded.keys() == new.keys() and all(
            agree(recorded[k], new[k], rtol, atol) for k in recorded
        )
    return bool(recorded == new)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_metrics(stdout: str) -> dict[str, Any] | None:
    """The metrics of the last `NBEXP_METRICS {...}` line; None when there is none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(METRICS_PREFIX):
            try:
                value = json.loads(line[len(METRICS_PREFIX) :])
            except ValueError:
                return None
            return decode_value(value) if isinstance(value, dict) else None
    return None


def rerun(
    store: Store,
    ref: str,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    check_data: bool = True,
    timeout: float | None = None,
) -> RerunResult:
    """Export `ref`, run the script in a fresh process, compare and record the rerun."""
    from .remote import require_trusted

    source = store.get(ref)
    require_trusted(store, source, "rerun")
    script = to_script(source)
    cwd = _working_folder(store, source.env.get("cwd"))
    started = _utc_now()
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nbexp-rerun-") as folder:
        path = Path(folder) / f"rerun_{source.short_id}.py"
        path.write_text(script, encoding="utf-8")
        command = [sys.executable, str(path)] + ([] if check_data else ["--no-check-data"])
        try:
            completed = subprocess.run(
                command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise NbexpError(
                f"the rerun of {source.name} ({source.short_id}) took longer than {timeout} s "
                "and was stopped; pass a larger --timeout"
            ) from error
    duration = time.perf_counter() - begin
    new = parse_metrics(completed.stdout) or {}
    result = RerunResult(
        source=source,
        record=None,
        returncode=completed.returncode,
        cwd=cwd,
        duration=duration,
        stderr=completed.stderr,
    )
    result.comparisons = [
        Comparison(name, value, new.get(name), name in new and agree(value, new[name], rtol, atol))
        for name, value in source.metrics.items()
    ]
    result.record = _record(store, source, new, completed, started, duration, cwd)
    return result


def _working_folder(store: Store, recorded: str | None) -> str:
    """Where the script runs: the folder the experiment ran in (its relative data paths hold
    there) when that folder is inside this project, else here. A recorded path is data its
    author wrote, so it never takes a rerun outside the project."""
    here = os.getcwd()
    if not recorded or not os.path.isdir(recorded) or not is_inside(recorded, store.root.parent):
        return here
    return os.path.realpath(recorded)


def _record(
    store: Store,
    source: Experiment,
    metrics: dict[str, Any],
    completed: subprocess.CompletedProcess[str],
    started: str,
    duration: float,
    cwd: str,
) -> Experiment:
    """The rerun as a record: the source's code, params and data; the new metrics."""
    ok = completed.returncode == 0
    error = None
    if not ok:
        error = {
            "type": "ExportedScriptFailed",
            "message": f"exit code {completed.returncode}",
            "traceback": completed.stderr[-20000:],
        }
    outcome = Outcome(
        status=STATUS_OK if ok else STATUS_FAILED,
        started=started,
        duration=round(duration, 6),
        stdout=completed.stdout[:MAX_OUTPUT_CHARS],
        stderr=completed.stderr[:MAX_OUTPUT_CHARS],
        error=error,
        output_truncated=max(len(completed.stdout), len(completed.stderr)) > MAX_OUTPUT_CHARS,
    )
    env = _environment(cwd, source.env.get("packages") or {})
    name = source.name if source.links.get("rerun_of") else f"{source.name}-rerun"
    draft = Experiment(
        id="",
        name=name,
        created=_utc_now(),
        code=source.code,
        outcome=outcome,
        params=dict(source.params),
        metrics=metrics,
        data=list(source.data),
        env=env,
        git=environment.git_state(cwd),
        links={"rerun_of": source.id},
    )
    body = draft.to_dict()
    body["id"] = Store.make_id(body)
    experiment = Experiment.from_dict(body)
    with store.writing():
        store.save(experiment)
    return experiment


def _environment(cwd: str, recorded_packages: dict[str, str]) -> dict[str, Any]:
    """Where the rerun ran: this interpreter, and today's versions of the recorded packages
    (the script's own imports are not visible from here)."""
    from importlib.metadata import PackageNotFoundError, version

    from .environment import environment

    packages = {}
    for name in recorded_packages:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    described = environment(cwd=cwd, packages=packages)
    del described["pid"]  # this process only launched the script
    return described


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def report(result: RerunResult, rtol: float, atol: float) -> str:
    """The comparison as the CLI prints it: one row per metric, then the verdict."""
    source = result.source
    lines = [
        f"rerun of {source.name} ({source.short_id}) in {result.cwd}: "
        f"exit code {result.returncode}, {result.duration:.1f} s"
    ]
    if result.comparisons:
        width = max(len("metric"), *(len(c.name) for c in result.comparisons))
        lines.append(f"  {'metric'.ljust(width)}  {'recorded':>16}  {'new':>16}")
        for c in result.comparisons:
            mark = "✓" if c.agree else "✗"
            shown = "(missing)" if c.new is None and not c.agree else _shown(c.new)
            lines.append(f"  {c.name.ljust(width)}  {_shown(c.recorded):>16}  {shown:>16}  {mark}")
    code = result.exit_code
    recorded = (
        f"; recorded as {result.record.name} ({result.record.short_id})" if result.record else ""
    )
    if code == DATA_CHANGED:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        lines.append(f"✗ input data changed: {last}{recorded}")
        from .dvc import checkout_hint

        for item in source.data:  # DVC can bring back the recorded version
            hint = checkout_hint(item, source.git.get("commit") if source.git else None)
            if hint:
                lines.append(f"  {item.path} is DVC-tracked; the recorded version: {hint}")
    elif code == SCRIPT_FAILED:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        lines.append(f"✗ the script failed (exit code {result.returncode}){recorded}\n{tail}")
    elif code == METRICS_DIFFER:
        bad = sum(not c.agree for c in result.comparisons)
        lines.append(
            f"✗ {bad} of {len(result.comparisons)} metrics differ (rtol {rtol:g}, atol {atol:g})"
            + recorded
        )
    elif result.comparisons:
        lines.append(
            f"✓ all {len(result.comparisons)} metrics agree (rtol {rtol:g}, atol {atol:g})"
            + recorded
        )
    else:
        lines.append("✓ the script ran; the experiment recorded no metrics to compare" + recorded)
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 30 else text[:29] + "…"
