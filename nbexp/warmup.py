"""What a kernel's first experiment would otherwise do once, done ahead of it after
`%load_ext nbexp` — but never while a cell runs.

A thread doing this work right after loading shared the GIL with the user's next cells
(~0.3 s of CPU: reading what is installed, importing nbexp's recording modules, psutil and
the table's ipywidgets), which made the cells that follow a fresh load up to 1.5× slower. Now
what is installed is read by a child process (`environment.start_scan`), and the rest runs in
small steps, each only once the kernel has been idle for `QUIET` seconds (`pre_execute` /
`post_execute`: a cell running or not). Cells run back to back ("Run All") leave no such gap;
then the first experiment does what is left itself, as it would without any warm-up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

QUIET = 0.25  # seconds without a cell running before a step may start


class IdleSteps:
    """Runs `steps` one by one in a daemon thread, each while no cell runs."""

    def __init__(self, shell: Any, steps: list[Callable[[], object]]) -> None:
        self._shell = shell
        self._steps = steps
        self._idle = threading.Event()  # clear while a cell runs: the one loading us, now
        self._idle_since = time.monotonic()
        self._done = False
        shell.events.register("pre_execute", self._cell_starts)
        shell.events.register("post_execute", self._cell_ended)
        self.thread = threading.Thread(target=self._run, name="nbexp-warm-up", daemon=True)
        self.thread.start()

    def _cell_starts(self) -> None:
        self._idle.clear()

    def _cell_ended(self) -> None:
        if self._done:  # the last step ran: these hooks go (on the kernel's thread)
            self._shell.events.unregister("pre_execute", self._cell_starts)
            self._shell.events.unregister("post_execute", self._cell_ended)
            return
        self._idle_since = time.monotonic()
        self._idle.set()

    def _wait_until_quiet(self) -> None:
        while True:
            self._idle.wait()
            left = QUIET - (time.monotonic() - self._idle_since)
            if left <= 0 and self._idle.is_set():
                return
            time.sleep(max(left, 0.01))

    def _run(self) -> None:
        for step in self._steps:
            self._wait_until_quiet()
            with contextlib.suppress(Exception):  # only a head start: the record does it anyway
                step()
        self._done = True


def start(shell: Any) -> IdleSteps:
    """At `%load_ext`: the scan of what is installed starts in a child process, the rest
    waits for the kernel to be idle (the table's code too, in a notebook kernel)."""
    import importlib

    from . import environment, widgets

    environment.start_scan()
    steps = environment.warm_up_steps()
    if widgets.has_widget_frontend(shell):  # the first `%experiments` table: ipywidgets
        steps += [
            lambda: importlib.import_module("nbexp.staleness"),
            lambda: importlib.import_module("nbexp.widgets.browser"),
        ]
    return IdleSteps(shell, steps)
