"""Fixtures for the real-browser tests: one JupyterLab server for the session and one headless
Chromium per test module (see lab.py), each on fresh temp folders; skipped when Chromium is
missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import lab as lab_module

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_module.Lab]:
    why = lab_module.missing()
    if why:
        pytest.skip(f"browser tests need Chromium, playwright and JupyterLab: {why}")
    root = tmp_path_factory.mktemp("lab") / "project"
    root.mkdir()
    # The notebooks' store goes here: NBEXP_STORE is unset for the server, and the empty
    # .nbexp makes this folder the store's home whatever holds the temp folders.
    (root / ".nbexp").mkdir()
    with lab_module.jupyter_lab(root) as server:
        yield server


@pytest.fixture(scope="module")
def chromium(lab: lab_module.Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Per module: playwright's sync API keeps an asyncio loop running in this thread while it
    is open, which breaks later async tests (pytest-jupyter's server) if it outlives us."""
    with lab_module.chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots kept after the run (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
