"""Kernels for the fault suite to kill: a zygote that forks warm IPython shells, and the
test-side handle that drives it.

A process with IPython, numpy, pandas and nbexp loaded takes ~1.5 s to start here, and the
crash tests kill hundreds of kernels. So one zygote process pays that once: it creates an
`InteractiveShell`, loads nbexp, records a warm-up experiment into a scratch store (nbexp's
lazy imports are then done), closes that store and forks a child per request. Each child is
a real IPython shell running the real `%%experiment` magic against the store under test, in
its own process, which the test kills with SIGKILL — exactly what a kernel dying looks like
to the store. No production code is patched or hooked.

Children run one of two modes:

- `loop`: record experiments one after the other until killed, announcing each on the event
  stream (`started`, `body` — the body's last line, before nbexp writes anything —, `done`).
- `serve`: run commands sent by the test (cells, expressions, a file-size limit), answering
  each; used where the test needs a kernel that lives across other processes' crashes.

Protocol: JSON lines. Requests go to the zygote's stdin; the zygote and all its children
write events to its stdout (single `os.write`s under PIPE_BUF, so lines never interleave),
each naming the child's pid.

`python -m tests.faults.workers zygote SCRATCH` runs the zygote.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# -- the cells the kernels run, and the values they must restore to -----------------------

BASE_N = 200_000  # `base`: 1.6 MB defined once per kernel, unchanged by every run
BIG_N = 250_000  # `big`: 2 MB of new content per run (2 chunks)
ROWS = 60_000  # `frame`: ~1 MB DataFrame per run
WIDE_ROWS = 32_768  # snapshot runs: `wide` is WIDE_ROWS x 16 floats = 4 MB
ARRAYS = 6  # snapshot runs: `arrays` holds ARRAYS x 50_000 floats (2.4 MB)
PIECES = 48  # pack runs: `pieces` holds PIECES x PIECE_N floats, one object each: a pack
PIECE_N = 25_000  # 200 kB a piece, 9.6 MB a run

SETUP = f"""\
import numpy as np
import pandas as pd

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)

base = np.arange({BASE_N}, dtype=np.float64)
"""


def content_seed(name: str) -> int:
    """The seed of an experiment's random content: both sides derive it from its name."""
    return zlib.crc32(name.encode())


def record_cell(name: str, step: int) -> str:
    """An ordinary run: a few MB of new state (kills land inside object writes). Its last
    line tells the test that the body is done (`_signal` is the kernel's, never recorded)."""
    seed = content_seed(name)
    return (
        f"%%experiment {name} -t crash\n"
        f"step = {step}\n"
        "lr = 0.1\n"
        f"big = np.random.default_rng({seed}).random({BIG_N})\n"
        f"frame = pd.DataFrame({{'a': big[:{ROWS}] * 2, 'b': np.arange({ROWS}) + step}})\n"
        "score = float(big.sum()) + float(base[step])\n"
        "_signal(step)\n"
    )


def snapshot_cell(name: str, step: int) -> str:
    """A run whose cost is its state snapshot: many variables, shared references, a class
    defined in the notebook; the body's last line tells the test the snapshot starts now."""
    seed = content_seed(name)
    return (
        f"%%experiment {name} -t snap\n"
        f"step = {step}\n"
        f"rng = np.random.default_rng({seed})\n"
        f"wide = pd.DataFrame(rng.random(({WIDE_ROWS}, 16)), "
        "columns=[f'c{k}' for k in range(16)])\n"
        f"arrays = {{f'a{{k}}': rng.random(50_000) for k in range({ARRAYS})}}\n"
        "alias = arrays['a0']\n"
        "points = [Point(k, k * step) for k in range(300)]\n"
        "score = float(wide.to_numpy().sum())\n"
        "_signal(step)\n"
    )


def pack_cell(name: str, step: int) -> str:
    """A run whose new state is many objects (more than the store keeps loose in one batch),
    so its snapshot is written as one pack file; the body's last line tells the test the
    snapshot starts now."""
    seed = content_seed(name)
    return (
        f"%%experiment {name} -t pack\n"
        f"step = {step}\n"
        f"rng = np.random.default_rng({seed})\n"
        f"pieces = [rng.random({PIECE_N}) for k in range({PIECES})]\n"
        "alias = pieces[0]\n"
        "score = float(sum(p.sum() for p in pieces))\n"
        "_signal(step)\n"
    )


CELLS = {"record": record_cell, "snapshot": snapshot_cell, "pack": pack_cell}


def expected_state(name: str, step: int, kind: str) -> dict[str, Any]:
    """The variables a finished run of `record_cell`/`snapshot_cell`/`pack_cell` left in the
    kernel."""
    import numpy as np
    import pandas as pd

    seed = content_seed(name)
    base = np.arange(BASE_N, dtype=np.float64)
    if kind == "record":
        big = np.random.default_rng(seed).random(BIG_N)
        frame = pd.DataFrame({"a": big[:ROWS] * 2, "b": np.arange(ROWS) + step})
        return {
            "step": step,
            "lr": 0.1,
            "big": big,
            "frame": frame,
            "score": float(big.sum()) + float(base[step]),
            "base": base,
        }
    rng = np.random.default_rng(seed)
    if kind == "pack":
        pieces = [rng.random(PIECE_N) for k in range(PIECES)]
        return {
            "step": step,
            "pieces": pieces,
            "alias": pieces[0],
            "score": float(sum(p.sum() for p in pieces)),
            "base": base,
        }
    wide = pd.DataFrame(rng.random((WIDE_ROWS, 16)), columns=[f"c{k}" for k in range(16)])
    arrays = {f"a{k}": rng.random(50_000) for k in range(ARRAYS)}
    return {
        "step": step,
        "wide": wide,
        "arrays": arrays,
        "alias": arrays["a0"],
        "points": [(k, k * step) for k in range(300)],
        "score": float(wide.to_numpy().sum()),
        "base": base,
    }


def same_value(actual: Any, expected: Any) -> bool:
    """Deep equality for the values above (arrays, frames, dicts, lists, Points)."""
    import numpy as np
    import pandas as pd

    if isinstance(expected, pd.DataFrame):
        return isinstance(actual, pd.DataFrame) and actual.equals(expected)
    if isinstance(expected, np.ndarray):
        return (
            isinstance(actual, np.ndarray)
            and actual.dtype == expected.dtype
            and np.array_equal(actual, expected)
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same_value(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, list):
        if len(actual) != len(expected):
            return False
        if expected and isinstance(expected[0], tuple):  # Points, compared by coordinates
            return [(p.x, p.y) for p in actual] == expected
        return all(same_value(a, e) for a, e in zip(actual, expected, strict=True))
    return bool(actual == expected) and type(actual) is type(expected)


# -- the zygote and its children (run in the worker processes) ----------------------------


class _Events:
    """Event lines on a raw descriptor: one `os.write` each, never buffered across a fork."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, **event: Any) -> None:
        event.setdefault("pid", os.getpid())
        event.setdefault("t", time.monotonic())
        os.write(self.fd, (json.dumps(event) + "\n").encode())


def _close_stores() -> None:
    """Drop every open store (and its SQLite connection): none may cross a fork."""
    from nbexp import store as store_module

    for store in list(store_module._stores.values()):
        with contextlib.suppress(Exception):
            store.close()
    store_module._stores.clear()


def zygote(scratch: str) -> None:
    events = _Events(os.dup(1))
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # IPython's own printing must not reach the event stream
    os.environ["MPLBACKEND"] = "Agg"
    os.environ.pop("JPY_SESSION_NAME", None)
    import numpy  # noqa: F401  (imported once here, inherited by every child)
    import pandas  # noqa: F401
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # no history thread to lose across fork
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "nbexp")
    os.environ["NBEXP_STORE"] = scratch
    os.makedirs(scratch, exist_ok=True)
    os.chdir(os.path.dirname(scratch))
    shell.user_ns["_signal"] = lambda step: None
    assert shell.run_cell(SETUP, store_history=True).success
    for index, make in enumerate((record_cell, snapshot_cell)):
        assert shell.run_cell(make(f"warmup-{index}", index), store_history=True).success
    _close_stores()
    sys.stdout.flush()
    sys.stderr.flush()
    commands: dict[int, int] = {}  # child pid -> write end of its command pipe
    events(event="ready")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request["op"]
        if op == "fork":
            reader, writer = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(writer)
                for fd in commands.values():
                    os.close(fd)
                _child(shell, events, request, reader)  # never returns
            os.close(reader)
            commands[pid] = writer
            events(event="forked", request=request["request"], child=pid)
        elif op == "send":
            os.write(commands[request["child"]], (json.dumps(request["command"]) + "\n").encode())
        elif op == "reap":
            child = request["child"]
            with contextlib.suppress(KeyError):
                os.close(commands.pop(child))
            _, status = os.waitpid(child, 0)
            events(
                event="reaped",
                child=child,
                signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            )
        elif op == "exit":
            break


def _child(shell: Any, events: _Events, request: dict[str, Any], commands: int) -> None:
    code = 0
    try:
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ["NBEXP_STORE"] = request["store"]
        os.chdir(request["cwd"])
        shell.reset(new_session=False)
        shell.run_line_magic("load_ext", "nbexp")
        loop = request["mode"] == "loop"
        shell.user_ns["_signal"] = lambda step: events(event="body", step=step) if loop else None
        if not shell.run_cell(SETUP, store_history=True).success:
            raise RuntimeError("the setup cell failed")
        if loop:
            _loop(shell, events, request)
        else:
            _serve(shell, events, os.fdopen(commands))
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _loop(shell: Any, events: _Events, request: dict[str, Any]) -> None:
    from nbexp.errors import RefError
    from nbexp.store import open_store

    make = CELLS[request["kind"]]
    step = 0
    while request.get("runs") is None or step < request["runs"]:
        name = f"{request['prefix']}-{step}"
        events(event="started", step=step, name=name)
        began = time.monotonic()
        result = shell.run_cell(make(name, step), store_history=True)
        elapsed = time.monotonic() - began
        try:
            open_store().resolve(name)
            recorded = True
        except RefError:
            recorded = False
        events(
            event="done",
            step=step,
            name=name,
            success=bool(result.success),
            recorded=recorded,
            seconds=elapsed,
        )
        if not (result.success and recorded):
            raise RuntimeError(f"run {name} failed or was not recorded")
        step += 1


def _serve(shell: Any, events: _Events, commands: Any) -> None:
    for line in commands:
        command = json.loads(line)
        if "cell" in command:
            out, err = io.StringIO(), io.StringIO()
            saved = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = _Both(saved[0], out), _Both(saved[1], err)
            try:
                result = shell.run_cell(command["cell"], store_history=True)
            finally:
                sys.stdout, sys.stderr = saved
            events(
                event="ran",
                success=bool(result.success),
                stdout=out.getvalue()[-4000:],
                stderr=err.getvalue()[-4000:],
            )
        elif "eval" in command:
            try:
                value = repr(eval(command["eval"], shell.user_ns))
            except Exception as error:
                value = f"!{type(error).__name__}: {error}"
            events(event="value", value=value[:3000])
        elif "fsize" in command:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past it fail with EFBIG
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            limit = command["fsize"]
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard if limit is None else int(limit), hard))
            events(event="value", value=str(limit))
        elif "close_stores" in command:
            _close_stores()
            events(event="value", value="closed")
        elif "exit" in command:
            return


class _Both(io.TextIOBase):
    """A stream writing to the real one and keeping a copy."""

    def __init__(self, target: Any, copy: io.StringIO) -> None:
        self._target, self._copy = target, copy

    def write(self, text: str) -> int:
        self._copy.write(text)
        return int(self._target.write(text) or 0)

    def flush(self) -> None:
        self._target.flush()


# -- many writers and a janitor on one store (test_concurrent_writers.py) ------------------

JUNK_EVERY = 10  # a writer records a throwaway `tmp-...` experiment every JUNK_EVERY runs


def writer_cell(worker: int, step: int) -> str:
    own = f"mine = np.full(2_000, {worker} * 1000.0 + {step})\n" if step % 3 == 0 else ""
    return (
        f"%%experiment w{worker}-{step} -t worker{worker}\n"
        f"worker = {worker}\nstep = {step}\n{own}"
        "score = float(shared.sum()) + step\n"
    )


def junk_cell(worker: int, step: int) -> str:
    """A throwaway run the janitor deletes; its content repeats every other time, so after
    gc deleted it the writer must store it again rather than trust its memory."""
    content = 1000 * worker + (step // JUNK_EVERY) % 2
    return f"%%experiment tmp-w{worker}-{step}\njunk = np.full(150_000, {content}.0)\n"


PACK_PIECE = 20_000  # floats in each array of `packed_cell`: 160 kB, one object


def packed_cell(name: str, step: int) -> str:
    """A run whose snapshot is one pack holding objects that stay live (`a`: fresh content,
    kept by the run after it) and objects that die when the run is removed (`b`: content
    that repeats every other step, so after gc dropped it a writer must store it again)."""
    return (
        f"%%experiment {name}\n"
        f"a = [np.full({PACK_PIECE}, {step} * 1000.0 + k) for k in range(20)]\n"
        f"b = [np.full({PACK_PIECE}, -1.0 - k - 100 * ({step} % 2)) for k in range(20)]\n"
    )


def expected_a(step: int) -> list[Any]:
    import numpy as np

    return [np.full(PACK_PIECE, step * 1000.0 + k) for k in range(20)]


def expected_b(step: int) -> list[Any]:
    import numpy as np

    return [np.full(PACK_PIECE, -1.0 - k - 100 * (step % 2)) for k in range(20)]


def packer(runs: int, go: str) -> None:
    """A kernel whose runs write packs half of which a janitor's rm + gc turns to garbage:
    `tmp-p<step>` (a pack of `a` and `b`), then, without `b`, `keep-<step>` (only `a`,
    already packed: nothing new is written, the record names objects gc may be repacking)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbexp")
    if not shell.run_cell("import numpy as np\n", store_history=True).success:
        sys.exit(2)
    while not os.path.exists(go):
        time.sleep(0.005)
    for step in range(runs):
        cells = [
            packed_cell(f"tmp-p{step}", step),
            "del b",
            f"%%experiment keep-{step}\nstep = {step}\n",
        ]
        for cell in cells:
            if not shell.run_cell(cell, store_history=True).success:
                print(f"packer: step {step} failed", file=sys.stderr)
                sys.exit(3)
    print("packer done", file=sys.stderr)


def writer(worker: int, runs: int, go: str) -> None:
    """A kernel recording `runs` experiments through the magic, plus throwaways."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbexp")
    setup = "import numpy as np\nshared = np.arange(300_000.0)\n"
    if not shell.run_cell(setup, store_history=True).success:
        sys.exit(2)
    while not os.path.exists(go):
        time.sleep(0.005)
    for step in range(runs):
        cells = [writer_cell(worker, step)]
        if step % JUNK_EVERY == JUNK_EVERY // 2:
            cells += [junk_cell(worker, step), "del junk"]
        for cell in cells:
            if not shell.run_cell(cell, store_history=True).success:
                print(f"worker {worker}: step {step} failed", file=sys.stderr)
                sys.exit(3)
    print(f"worker {worker} done", file=sys.stderr)


def janitor(store: str, go: str, stop: str) -> None:
    """A CLI user listing the store again and again, deleting the throwaway experiments and
    running `nbexp gc --yes`, each call on a freshly opened store like a new process."""
    from nbexp.cli import main

    def cli(*argv: str) -> str:
        _close_stores()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--store", store, *argv])
        if code != 0:
            print(f"janitor: {argv} exited {code}", file=sys.stderr)
            sys.exit(4)
        return out.getvalue()

    while not os.path.exists(go):
        time.sleep(0.005)
    lists = gcs = deleted = removed = seen = 0
    finishing = 0
    while finishing < 2:  # two full rounds after the writers are done
        if os.path.exists(stop):
            finishing += 1
        rows = json.loads(cli("list", "--format", "json"))
        lists += 1
        kept = sum(1 for row in rows if not row["name"].startswith("tmp-"))
        if kept < seen:
            print(f"janitor: the store shrank from {seen} to {kept}", file=sys.stderr)
            sys.exit(5)
        seen = kept
        cli("list", "metrics.score > 0", "--sort", "-metrics.score", "--limit", "20")
        lists += 1
        for row in rows:
            if row["name"].startswith("tmp-"):
                cli("rm", row["id"])
                removed += 1
        out = cli("gc", "--yes")
        gcs += 1
        if out.startswith("deleted "):
            deleted += int(out.split()[1])
    print(json.dumps({"lists": lists, "gcs": gcs, "deleted": deleted, "removed": removed}))


# -- the test's side ----------------------------------------------------------------------


def worker_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("JPY_SESSION_NAME", None)
    env.pop("NBEXP_STORE", None)
    env.update(extra)
    return env


class Zygote:
    """Drives a zygote process: fork kernels, send them commands, read their events."""

    def __init__(self, scratch: Path) -> None:
        scratch.parent.mkdir(parents=True, exist_ok=True)
        self.log = scratch.parent / "zygote.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.workers", "zygote", str(scratch)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO,
                env=worker_env(),
            )
        self._queues: dict[int | str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._requests = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("zygote", "ready", timeout=120)

    def _queue(self, key: int | str) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._queues.setdefault(key, queue.Queue())

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if event["event"] in ("ready", "forked", "reaped"):
                key: int | str = "zygote"
            else:
                key = event["pid"]
            self._queue(key).put(event)
        self._queue("zygote").put({"event": "eof"})

    def _send(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()

    def expect(self, key: int | str, *kinds: str, timeout: float = 60) -> dict[str, Any]:
        """The next event of `key` (a child pid, or "zygote"), which must be one of `kinds`."""
        try:
            event = self._queue(key).get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no {'/'.join(kinds)} event from {key} within {timeout} s; "
                f"zygote log: {self.log.read_text()[-3000:]}"
            ) from None
        if event["event"] not in kinds:
            raise AssertionError(f"expected {'/'.join(kinds)} from {key}, got {event}")
        return event

    def next_event(self, child: int, timeout: float) -> dict[str, Any] | None:
        try:
            return self._queue(child).get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def drain(self, child: int) -> list[dict[str, Any]]:
        found = []
        while True:
            try:
                found.append(self._queue(child).get_nowait())
            except queue.Empty:
                return found

    def fork(self, mode: str, store: Path, cwd: Path, log: Path, **options: Any) -> int:
        self._requests += 1
        request = {
            "op": "fork",
            "request": self._requests,
            "mode": mode,
            "store": str(store),
            "cwd": str(cwd),
            "log": str(log),
            **options,
        }
        self._send(request)
        event = self.expect("zygote", "forked")
        assert event["request"] == self._requests
        child: int = event["child"]
        return child

    def command(self, child: int, timeout: float = 120, **command: Any) -> dict[str, Any]:
        """Send a command to a `serve` child and wait for its answer."""
        self._send({"op": "send", "child": child, "command": command})
        return self.expect(child, "ran", "value", timeout=timeout)

    def kill(self, child: int) -> dict[str, Any]:
        """SIGKILL a child and wait until it is gone; returns how it ended. Every event it
        wrote is then already queued (it wrote them before dying; the zygote reaped after)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        return self.reap(child)

    def reap(self, child: int) -> dict[str, Any]:
        self._send({"op": "reap", "child": child})
        event = self.expect("zygote", "reaped", timeout=120)
        assert event["child"] == child
        return event

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._send({"op": "exit"})
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["zygote"]:
        zygote(sys.argv[2])
    elif sys.argv[1:2] == ["writer"]:
        writer(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1:2] == ["packer"]:
        packer(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["janitor"]:
        janitor(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: python -m tests.faults.workers zygote|writer|packer|janitor ARGS...")
