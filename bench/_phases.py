"""Where one `%%experiment` spends its time, by phase, without cProfile's inflation.

`install()` wraps, in the running process, the functions each phase of a record goes
through (module attributes, looked up at call time by the recorder) with wall-clock and
thread-CPU accumulators; `take()` returns the seconds spent per phase since the last
`take()` and starts again. Nested phases are not double counted: time spent inside an inner phase is
charged to it alone (e.g. `state.snapshot` calling the store's writes). Bench-only: nbexp
itself never imports this.

Phases: prepare (the cell transformed, analysed, `-p` applied, its inputs described),
body (the user's code), secrets (credential values in the namespace and history),
files (read/written files hashed, artifacts stored), figures (rendered / shown PNGs),
environment (interpreter and package versions), git, state (variables selected and
pickled; chunks and objects handed to the store), save (the record sealed and written,
its index row), record total (`Recorder._save`, which holds everything after the body).
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

_totals: dict[str, list[float]] = {}  # phase → [wall seconds, CPU seconds of the thread]
_stack: list[list[float]] = []  # per active phase: [wall start, CPU start, inner wall, inner CPU]
_installed = False


def _timed(phase: str, function: Any) -> Any:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        frame = [time.perf_counter(), time.thread_time(), 0.0, 0.0]
        _stack.append(frame)
        try:
            return function(*args, **kwargs)
        finally:
            _stack.pop()
            wall = time.perf_counter() - frame[0]
            cpu = time.thread_time() - frame[1]
            total = _totals.setdefault(phase, [0.0, 0.0])
            total[0] += wall - frame[2]
            total[1] += cpu - frame[3]
            if _stack:
                _stack[-1][2] += wall
                _stack[-1][3] += cpu

    wrapper.__nbexp_phase__ = phase  # type: ignore[attr-defined]
    return wrapper


def _wrap(owner: Any, name: str, phase: str) -> None:
    function = getattr(owner, name, None)
    if function is None or hasattr(function, "__nbexp_phase__"):
        return
    wrapped = _timed(phase, function)
    if isinstance(owner, type) and isinstance(inspect.getattr_static(owner, name), staticmethod):
        wrapped = staticmethod(wrapped)
    setattr(owner, name, wrapped)


def install() -> None:
    """Wrap the phases' functions (idempotent)."""
    global _installed
    if _installed:
        return
    from nbexp import environment, profiles, recorder, state
    from nbexp.store import Store

    _wrap(recorder.Recorder, "prepare", "prepare")
    _wrap(recorder.Recorder, "_execute", "body")
    _wrap(recorder, "secret_values", "secrets")
    _wrap(recorder, "derived_secret_values", "secrets")
    _wrap(profiles, "describe_file", "files")
    _wrap(Store, "put_file", "files")
    _wrap(recorder, "_new_figures", "figures")
    _wrap(recorder.shownfigures.ShownFigures, "closed", "figures")
    _wrap(environment, "environment", "environment")
    _wrap(environment, "git_state", "git")
    _wrap(environment, "notebook_path", "environment")
    _wrap(state, "select_variables", "state")
    _wrap(state, "snapshot", "state")
    _wrap(Store, "seal", "save")
    _wrap(Store, "save", "save")
    _wrap(recorder.Recorder, "_save", "record other")
    _installed = True


def take() -> dict[str, list[float]]:
    """[wall, CPU] seconds per phase since the last call (then reset)."""
    taken = dict(_totals)
    _totals.clear()
    return taken


PHASES = (
    "prepare",
    "secrets",
    "files",
    "figures",
    "environment",
    "git",
    "state",
    "save",
    "record other",
)
