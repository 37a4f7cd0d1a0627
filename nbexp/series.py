"""`nbexp.log(name, value, step=None)`: metric series (loss per epoch) for the running experiment."""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import NbexpError

_local = threading.local()


class SeriesLog:
    """The series logged during one run: name → [[step, value], ...]."""

    def __init__(self) -> None:
        self.series: dict[str, list[list[Any]]] = {}

    def add(self, name: str, value: Any, step: int | None) -> None:
        if not isinstance(name, str) or not name:
            raise NbexpError("nbexp.log(name, value): name must be a non-empty string")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise NbexpError(
                f"nbexp.log({name!r}, …): the value must be a number, not {type(value).__name__}"
            )
        points = self.series.setdefault(name, [])
        if step is None:
            step = points[-1][0] + 1 if points else 0
        elif isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise NbexpError(f"nbexp.log({name!r}, …, step=…): step must be an integer")
        number = float(value) if not isinstance(value, numbers.Integral) else int(value)
        points.append([int(step), number])

    def last_values(self) -> dict[str, Any]:
        return {name: points[-1][1] for name, points in self.series.items() if points}


def _stack() -> list[SeriesLog]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    stack: list[SeriesLog] = _local.stack
    return stack


@contextmanager
def collecting() -> Iterator[SeriesLog]:
    """Make `log()` write into a fresh SeriesLog while the block runs."""
    log_ = SeriesLog()
    _stack().append(log_)
    try:
        yield log_
    finally:
        _stack().remove(log_)


def log(name: str, value: float, step: int | None = None) -> None:
    """Append `value` to the series `name` of the experiment running now (inside %%experiment)."""
    stack = _stack()
    if not stack:
        raise NbexpError(
            "nbexp.log() records into the running experiment; call it inside a %%experiment cell"
        )
    if isinstance(value, float) and math.isnan(value):
        value = float("nan")
    stack[-1].add(name, value, step)
