"""JupyterLab in headless Chromium, for the browser tests and `bench/widget_browser.py`.

Follows /work/shared/LABEXT.md: Debian's /usr/bin/chromium through Python playwright
(`launch_persistent_context` on a fresh folder, never `playwright install`), `jupyter lab
--allow-root` on 127.0.0.1 with a token, /api/status before the page, `?reset` URLs, locators
scoped to the notebook's tab panel, and cells run only once the kernel says Idle.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not os.path.exists(CHROMIUM):
        return (
            f"{CHROMIUM} is not installed (as root: apt-get install -y chromium "
            "chromium-driver fonts-liberation; scripts/setup.sh does it)"
        )
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            return f"{package} is not installed (pip install -e '.[test]')"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    """A running `jupyter lab` serving `root`."""

    root: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def put_notebook(self, name: str, cells: list[str]) -> None:
        """Create (or replace) a notebook of code cells through the contents API."""
        notebook = {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
                for source in cells
            ],
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        self.api(
            "PUT", f"contents/{name}", {"type": "notebook", "format": "json", "content": notebook}
        )

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        with contextlib.suppress(OSError, urllib.error.URLError):
            for kernel in self.api("GET", "kernels"):
                self.api("DELETE", f"kernels/{kernel['id']}")


@contextlib.contextmanager
def jupyter_lab(root: Path, *, start_timeout: float = 90) -> Iterator[Lab]:
    """Start `jupyter lab` on `root` (settings and workspaces kept inside it) and stop it."""
    root.mkdir(parents=True, exist_ok=True)
    state = root.parent / f"{root.name}-jupyter"
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "NBEXP_STORE"}
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        PYTHONUNBUFFERED="1",
    )
    state.mkdir(parents=True, exist_ok=True)
    log = state / "jupyter-lab.log"
    jupyter = Path(sys.executable).with_name("jupyter")
    command = [
        str(jupyter) if jupyter.exists() else "jupyter",
        "lab",
        "--allow-root",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=",
        "--LabServerApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    lab = Lab(root, port, token, process, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {log.read_text()[-2000:]}")
            try:
                lab.api("GET", "status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"jupyter lab did not answer /api/status: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.25)
        yield lab
    finally:
        lab.shutdown_kernels()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(state / "runtime", ignore_errors=True)


@contextlib.contextmanager
def chromium(profile: Path, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A playwright browser context on Debian's Chromium (a fresh profile folder)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()


def open_notebook(context: Any, lab: Lab, name: str, *, timeout: float = 60_000) -> tuple[Any, Any]:
    """Open a notebook (`name`: its path under the root); returns (page, its tab panel) once
    its kernel says Idle."""
    page = context.new_page()
    page.set_default_timeout(timeout)
    page.goto(lab.notebook_url(name))
    panel = page.get_by_role("tabpanel", name=name.rsplit("/", 1)[-1])
    panel.locator(".jp-Notebook").wait_for()
    wait_idle(page)
    return page, panel


def wait_idle(page: Any, timeout: float = 60_000) -> None:
    """Until the status bar names the kernel and says Idle (a cell run earlier is dropped)."""
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=timeout)


def run_all(page: Any, panel: Any, *, attempts: int = 5) -> None:
    """Run every cell (Run > Run All Cells), retrying until a prompt shows [*] or a number."""
    prompts = panel.locator(".jp-InputArea-prompt")
    for _ in range(attempts):
        panel.locator(".jp-Notebook").click(position={"x": 5, "y": 5})
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            texts = prompts.all_inner_texts()
            if any("*" in text or any(ch.isdigit() for ch in text) for text in texts):
                return
            time.sleep(0.1)
    raise AssertionError("Run All Cells never started the cells")


def wait_cells_done(page: Any, panel: Any, count: int, timeout: float = 120) -> None:
    """Until the first `count` cells show an execution number (no [*] or blank left)."""
    prompts = panel.locator(".jp-InputArea-prompt")
    deadline = time.monotonic() + timeout
    while True:
        texts = prompts.all_inner_texts()[:count]
        if len(texts) == count and all(any(ch.isdigit() for ch in t) for t in texts):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cells did not finish: prompts {texts}")
        time.sleep(0.2)


def run_cell(page: Any, cell: Any, *, attempts: int = 5, timeout: float = 120) -> str:
    """Run one cell (its locator) with Ctrl+Enter and wait until it has finished; returns its
    output's text. Retries the key press until the prompt changes (an early run is dropped)."""
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.inner_text()
    for _ in range(attempts):
        prompt.click()
        page.keyboard.press("Control+Enter")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and prompt.inner_text() == before:
            time.sleep(0.05)
        if prompt.inner_text() != before:
            break
    else:
        raise AssertionError(f"the cell never started (prompt {before!r})")
    deadline = time.monotonic() + timeout
    while "*" in (text := prompt.inner_text()) or not any(ch.isdigit() for ch in text):
        if time.monotonic() > deadline:
            raise AssertionError(f"the cell did not finish: prompt {text!r}")
        time.sleep(0.1)
    return str(cell.locator(".jp-OutputArea").inner_text())
