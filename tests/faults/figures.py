"""Figures the fault suite measures (kills survived, items corrupted, secrets scanned, …),
collected while the tests run and printed at the end of the pytest run by conftest.py."""

from __future__ import annotations

from typing import Any

_FIGURES: dict[str, Any] = {}


def report(name: str, value: Any) -> None:
    """Remember one figure, e.g. report("crash: SIGKILLs while recording", 64)."""
    _FIGURES[name] = value


def collected() -> dict[str, Any]:
    return dict(_FIGURES)
