"""Shared fixtures: a real IPython shell with nbexp loaded, and a fresh store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory, with its own store."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("NBEXP_STORE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return folder


@pytest.fixture(scope="session")
def _shell():
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "nbexp")
    return shell


@pytest.fixture
def ip(_shell, project: Path) -> Iterator:
    """The real InteractiveShell, its namespace reset, working in `project`."""
    _shell.reset(new_session=False)
    _shell.run_line_magic("load_ext", "nbexp")
    from nbexp import store as store_module

    store_module._stores.clear()
    yield _shell
    store_module._stores.clear()


def run(shell, source: str):
    """Run a cell as the notebook would (stored in history), returning IPython's result."""
    return shell.run_cell(source, store_history=True)
