"""Shared fixtures: a real IPython shell with nbexp loaded, and a fresh store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def run_in_fresh_kernel(code: str, store: Path, cwd: Path, *, timeout: float = 120) -> str:
    """Run `code` in a new real kernel (jupyter_client) using `store`; its printed output.
    The cell must succeed: its traceback is the assertion message otherwise."""
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "NBEXP_STORE": str(store), "MPLBACKEND": "Agg"}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(cwd))
    chunks: list[str] = []
    errors: list[str] = []
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)

        def collect(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                chunks.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))

        reply = client.execute_interactive(code, timeout=timeout, output_hook=collect)
        assert reply["content"]["status"] == "ok", errors
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
    return "".join(chunks)
