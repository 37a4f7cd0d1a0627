"""The fault suite (tests/faults): proves SPEC §2/§3/§9/§11's guarantees and prints its figures."""

from __future__ import annotations

from typing import Any

from tests.faults import figures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    found = figures.collected()
    if not found:
        return
    terminalreporter.section("nbexp fault-suite figures")
    width = max(len(name) for name in found)
    for name, value in found.items():
        terminalreporter.write_line(f"{name:<{width}}  {value}")
