"""Which cells of the session raised, kept from `%load_ext nbexp` on.

A notebook goes on after a cell fails: the kernel ran that cell up to the statement that
raised (or, for a syntax error, ran none of it). An export copying such a cell whole would
die where the notebook did not, so the recorder writes down each failed history cell — its
error and the line of the cell's top-level code that raised — and the exporter keeps only
what ran. Cells run before the extension was loaded are not known to have failed.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

MESSAGE_LIMIT = 300

# shell → {execution number: failure}; the failure holds the cell's text, to tell a number
# reused after a history reset from the cell that failed under it.
_failures: weakref.WeakKeyDictionary[Any, dict[int, dict[str, Any]]] = weakref.WeakKeyDictionary()


def watch(shell: Any) -> None:
    """Note each failed cell from now on (`post_run_cell`); once per shell."""
    if shell in _failures:
        return
    noted: dict[int, dict[str, Any]] = {}
    _failures[shell] = noted

    def after(result: Any) -> None:
        with contextlib.suppress(Exception):  # bookkeeping must never disturb a cell
            _note(shell, noted, result)

    shell.events.register("post_run_cell", after)


def describe(error: BaseException) -> tuple[str, str]:
    """(the exception's type as importable text, `Type: message` on one short line)."""
    kind = type(error)
    module = kind.__module__
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    message = " ".join(str(error).split())
    text = f"{kind.__name__}: {message}" if message else kind.__name__
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 1] + "…"
    return name, text


def _note(shell: Any, noted: dict[int, dict[str, Any]], result: Any) -> None:
    info = getattr(result, "info", None)
    count = getattr(result, "execution_count", None)
    if info is None or not getattr(info, "store_history", False) or count is None:
        return
    raw = info.raw_cell.rstrip("\n")  # as IPython keeps it in the history
    if result.error_before_exec is not None:
        kind, text = describe(result.error_before_exec)
        noted[count] = {"cell": raw, "type": kind, "error": text, "line": None, "ran": False}
    elif result.error_in_exec is not None:
        error = result.error_in_exec
        kind, text = describe(error)
        line = _cell_line(shell, error, experiment=_is_experiment(raw))
        if line is not None:  # IPython drops a cell's leading blank lines before compiling
            line += _leading_blank_lines(raw)
        noted[count] = {"cell": raw, "type": kind, "error": text, "line": line, "ran": True}
    else:
        noted.pop(count, None)


def _leading_blank_lines(raw: str) -> int:
    skipped = 0
    for line in raw.split("\n"):
        if line and not line.isspace():
            break
        skipped += 1
    return skipped


def _is_experiment(raw: str) -> bool:
    return raw.lstrip().startswith("%%experiment")


def _cell_line(shell: Any, error: BaseException, *, experiment: bool = False) -> int | None:
    """The line of the cell's own top-level code that was running when `error` was raised:
    the first traceback frame that runs module code in the user's namespace.

    An `%%experiment` cell runs as IPython's one-line `run_cell_magic` call, which runs the
    body as module code of its own: the line is the body's, counted after the magic's line.
    """
    namespace = getattr(shell, "user_ns", None)
    lines = []
    frame = error.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        if code.co_name == "<module>" and frame.tb_frame.f_globals is namespace:
            lines.append(frame.tb_lineno)
        frame = frame.tb_next
    if experiment:
        return lines[1] + 1 if len(lines) > 1 else None
    return lines[0] if lines else None


def failures(shell: Any, history: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """The failed cells of `history` (In [1], In [2], …): {"3": {type, error, line, ran}}."""
    noted = _failures.get(shell) or {}
    found: dict[str, dict[str, Any]] = {}
    for number, text in enumerate(history, start=1):
        failure = noted.get(number)
        if failure is not None and failure["cell"] == text:
            found[str(number)] = {k: v for k, v in failure.items() if k != "cell"}
    return found
