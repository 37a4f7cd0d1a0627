"""A real Jupyter kernel for benchmarks: start it, run cells, time them, read its memory.

Used by bench/state.py. The kernel is the venv's `python3` kernelspec started by
jupyter_client's KernelManager (kernel.json's `python` argv is replaced by this
interpreter, so the kernel runs the same venv as the bench).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager

# IPython colours tracebacks; strip the escapes so error text is readable in a report.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CellError(RuntimeError):
    """A setup or measurement cell failed in the kernel (not a tool's overhead)."""


@dataclass
class CellResult:
    wall: float  # seconds from sending execute_request to its reply (after the kernel is idle)
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    values: dict[str, str] = field(default_factory=dict)  # `@@key=value` lines printed by a cell

    def number(self, key: str) -> float:
        return float(self.values[key])


class Kernel:
    """One fresh kernel; a context manager that shuts it down."""

    def __init__(self, cwd: str, env: dict[str, str] | None = None, timeout: float = 600) -> None:
        """`cwd` is the kernel's working folder; its stderr goes to `cwd`/../kernel-logs/."""
        self.cwd = cwd
        self.extra_env = env or {}
        self.timeout = timeout
        self.km: KernelManager | None = None
        self.kc: Any = None

    def __enter__(self) -> Kernel:
        environment = {**os.environ, **self.extra_env}
        environment.pop("PYTHONSTARTUP", None)
        self.km = KernelManager(kernel_name="python3")
        logs = os.path.join(os.path.dirname(os.path.abspath(self.cwd)), "kernel-logs")
        os.makedirs(logs, exist_ok=True)
        self._log = open(
            os.path.join(logs, f"{os.path.basename(self.cwd)}-{time.time_ns()}.log"), "wb"
        )
        self.km.start_kernel(cwd=self.cwd, env=environment, stdout=self._log, stderr=self._log)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        finally:
            if self.km is not None:
                self.km.shutdown_kernel(now=True)
            if getattr(self, "_log", None) is not None:
                self._log.close()

    @property
    def pid(self) -> int:
        assert self.km is not None
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def run(self, code: str, *, check: bool = True) -> CellResult:
        """Execute one cell and wait until the kernel is idle again."""
        out: list[str] = []
        err: list[str] = []
        error: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            kind = message["header"]["msg_type"]
            content = message["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif kind == "error":
                error.append(
                    _ANSI.sub("", "\n".join(content.get("traceback", [])))
                    or f"{content['ename']}: {content['evalue']}"
                )
            elif kind == "execute_result":
                out.append(content["data"].get("text/plain", "") + "\n")

        begin = time.perf_counter()
        reply = self.kc.execute_interactive(
            code, output_hook=hook, timeout=self.timeout, allow_stdin=False
        )
        wall = time.perf_counter() - begin
        text = "".join(out)
        values = dict(re.findall(r"^@@(\w+)=(.*)$", text, flags=re.MULTILINE))
        failure = "\n".join(error) or None
        if failure is None and reply["content"]["status"] != "ok":
            failure = f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
        result = CellResult(
            wall=wall, stdout=text, stderr="".join(err), error=failure, values=values
        )
        if check and failure:
            raise CellError(f"cell failed:\n{code}\n--- error ---\n{failure[-3000:]}")
        return result

    def baseline(self, repeat: int = 7) -> float:
        """Median wall time of an empty cell: the messaging cost every cell pays."""
        return statistics.median(self.run("pass").wall for _ in range(repeat))

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the kernel process, in bytes."""
        values: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024
        return values


def tree_bytes(path: str) -> int:
    """Apparent size of every file under `path` (0 when it does not exist)."""
    total = 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a temp file renamed away meanwhile
                total += os.path.getsize(os.path.join(folder, name))
    return total
