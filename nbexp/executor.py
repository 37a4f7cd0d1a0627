"""Running a sweep's trials on Dask: the body and its inputs go to workers, records are written here.

The kernel stays the only writer of its store. A worker runs the body like a cell (a fresh
namespace seeded with the inputs it reads; the trial's `-p` values are already in its source),
captures what the recorder would have captured there, and sends it back; the driver turns
each trial into a record (`Recorder.record`) as it lands, so an interrupt keeps every
finished trial. Inputs are checked for picklability before any trial starts, and large ones
are scattered once, not sent with every trial.

`distributed` is imported only here, and only when a sweep asks for it (`nbexp[dask]`).
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import datetime as dt
import io
import linecache
import os
import pickle
import secrets
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NbexpError

if TYPE_CHECKING:
    from .recorder import Recorder, RunOptions, RunResult, _Run

INSTALL = "pip install 'nbexp[dask]'"
SCHEDULER_ENV = "NBEXP_DASK_SCHEDULER"
KEEP_ENV = "NBEXP_DASK_KEEP"  # "0": close the LocalCluster of --workers after each sweep
# inputs at least this big are scattered once, not sent (and decoded) with every trial
SCATTER_BYTES = 64 * 1024
MAX_OUTPUT_CHARS = 256 * 1024  # as the recorder keeps; the rest is not worth shipping
# A worker that dies is retried once; a worker is sent one trial per thread, no more, so
# that a trial killing its worker takes no queued bystander down with it.
CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.scheduler.allowed-failures": 1,
    "distributed.scheduler.worker-saturation": 1.0,
}
# The LocalCluster of `--workers` has no dashboard, and its workers share the kernel's cores:
# the dashboard's feeds cost CPU the trials need (measured idle, 2 workers: ~0.16 of a core
# with Dask's defaults, ~0.02 with these; the workers' stack sampler alone slowed the fits).
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    **CLUSTER_CONFIG,
    "distributed.worker.profile.enabled": False,  # stack samples every 10 ms, for a dashboard
    "distributed.admin.system-monitor.interval": "2s",  # host metrics, for a dashboard
    "distributed.admin.tick.interval": "500ms",  # only times event-loop stalls (3 s warning)
    "distributed.worker.memory.monitor-interval": "500ms",  # pause/spill/terminate checks
}
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "display"}


class ExecutorError(NbexpError):
    """Dask missing, a cluster that cannot be reached, or inputs that cannot be shipped."""


class TrialFailed(Exception):
    """A trial whose body raised on a worker (or whose worker died): the record says `failed`;
    this stands for the remote error in the kernel."""


def require(module: str) -> Any:
    """Import an optional extra's module, or one line naming the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExecutorError(
            f"running trials on Dask needs {module.split('.')[0]}, which is not installed: "
            f"{INSTALL}"
        ) from None


def wanted(workers: int | None, cluster: str | None) -> bool:
    """Whether trials go to Dask: `--workers N` (N ≥ 1) or `--cluster`, else NBEXP_DASK_SCHEDULER,
    else a `distributed.Client` already connected in the kernel. `--workers 0` keeps them here."""
    if workers is not None:
        if workers < 0:
            raise ExecutorError(
                f"--workers {workers}: give a number of worker processes (0: in the kernel)"
            )
        return workers > 0
    if cluster or os.environ.get(SCHEDULER_ENV):
        return True
    return _connected_client() is not None


def _connected_client() -> Any:
    """The kernel's default `distributed.Client`, if the user has one (no import otherwise)."""
    if "distributed" not in sys.modules:
        return None
    try:
        client = sys.modules["distributed"].default_client()
    except ValueError:
        return None
    return client if getattr(client, "status", "") == "running" else None


@contextlib.contextmanager
def connect(workers: int | None, cluster: str | None, preload: Sequence[str] = ()) -> Iterator[Any]:
    """A client for the trials: a LocalCluster of `workers` processes (started for the first
    sweep and kept for the next ones in this kernel, unless NBEXP_DASK_KEEP=0), else the
    scheduler at `cluster` / NBEXP_DASK_SCHEDULER, else the kernel's connected client (left
    open). A worker that dies is retried once, then the trial fails. `preload`: modules the
    body imports, imported once in the process new workers are forked from."""
    distributed = require("distributed")
    require("dask")
    if workers:
        # a nanny (re)starting a worker writes the workers' thread limits into this process's
        # environment; the kernel's own values are put back after the sweep
        kernel_environment = {key: os.environ.get(key) for key in _nanny_keys()}
        try:
            local = _local_cluster(workers, preload)
            yield local.client
        except BaseException:
            close_cluster()  # interrupted or broken: a trial may still be running in it
            raise
        finally:
            _put_back(kernel_environment)
        if not keep_cluster():
            close_cluster()
        return
    address = cluster or os.environ.get(SCHEDULER_ENV)
    if not address:
        connected = _connected_client()
        if connected is None:
            raise ExecutorError(
                "no Dask cluster: pass --workers N, or --cluster tcp://HOST:8786, or set "
                f"{SCHEDULER_ENV}"
            )
        yield connected
        return
    try:
        client = distributed.Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        where = "--cluster" if cluster else SCHEDULER_ENV
        raise ExecutorError(
            f"{where} {address}: cannot reach a Dask scheduler there ({error})"
        ) from None
    try:
        yield client
    finally:
        client.close()


# -- the LocalCluster of `--workers N`, kept between sweeps -----------------------------------


@dataclass
class _Local:
    """The kernel's own LocalCluster, and when its workers last (re)started."""

    cluster: Any
    client: Any
    cluster_config: dict[str, Any]
    workers: int
    started: float
    reused: bool = False


_local: _Local | None = None


def keep_cluster() -> bool:
    """Whether `--workers N` leaves its LocalCluster up for the next sweep (the default: a
    cold start costs seconds, and the workers' imports are paid again): NBEXP_DASK_KEEP=0 no."""
    return os.environ.get(KEEP_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def kept_cluster() -> _Local | None:
    """The LocalCluster kept from an earlier sweep in this kernel, if it is still up."""
    return _local


def close_cluster() -> None:
    """Close the kept LocalCluster (its worker processes end); the next `--workers` starts one."""
    global _local
    local, _local = _local, None
    if local is None:
        return
    with contextlib.suppress(Exception):
        local.client.close()
    with contextlib.suppress(Exception):
        local.cluster.close()


def _local_cluster(workers: int, preload: Sequence[str]) -> _Local:
    """The kept cluster when it has `workers` workers and is running (its workers restarted
    if a module of the project they imported has changed since), else a new one."""
    global _local, _exit_hook_registered
    local = _local
    if local is not None and local.workers == workers and _running(local):
        local.reused = True
        changed = local.client.run(_changed_modules, os.getcwd(), local.started)
        if any(changed.values()):  # a worker would run the old code of an edited module
            with require("dask").config.set(local.cluster_config):
                local.client.restart()
            local.started = time.time()
        return local
    close_cluster()
    local = _Local(*_start_local(workers, preload), workers=workers, started=time.time())
    _local = local
    if not _exit_hook_registered:
        atexit.register(close_cluster)
        _exit_hook_registered = True
    return local


_exit_hook_registered = False


def _running(local: _Local) -> bool:
    try:
        return bool(
            local.client.status == "running" and len(local.client.nthreads()) == local.workers
        )
    except Exception:
        return False


def _start_local(workers: int, preload: Sequence[str]) -> tuple[Any, Any, dict[str, Any]]:
    """A LocalCluster of single-threaded worker processes. Where the platform can, they are
    forked from a fork server that imported distributed and the body's libraries once (a
    worker then starts in a fraction of a second, warm) and whose environment limits BLAS and
    OpenMP to one thread per worker (two workers on two cores, not two times N threads).
    The nanny writes those limits into this process's environment before it starts a worker;
    the kernel's own environment is put back afterwards."""
    distributed, dask = require("distributed"), require("dask")
    config: dict[str, Any] = dict(LOCAL_CLUSTER_CONFIG)
    limits = {  # as the nanny reads them: the kernel's own setting, if any, wins
        key: os.environ.get(key, str(value))
        for key, value in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
        if value is not None
    }
    before = dict(os.environ)
    try:
        if _fork_server(limits, preload):
            config["distributed.worker.multiprocessing-method"] = "forkserver"
        with dask.config.set(config), warnings.catch_warnings():
            # its scheduler's HTTP routes move to a free port when 8787 is taken; not a concern
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
        try:
            client = distributed.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
    finally:
        _put_back({key: before.get(key) for key in set(os.environ) | set(before)})
    return cluster, client, config


_fork_server_ours = False  # this kernel started the fork server, with our limits and preloads


def _fork_server(limits: dict[str, str], preload: Sequence[str]) -> bool:
    """Start the fork server workers are forked from (once per kernel), its environment
    carrying the thread limits and its preloads the body's libraries; False where there is no
    fork server, or one this kernel started for someone else (its environment is not ours)."""
    import multiprocessing
    from multiprocessing import forkserver

    global _fork_server_ours
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    if _fork_server_ours:
        return True
    if getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", 0) is not None:
        return False  # already running (or a Python whose internals differ): not ours
    os.environ.update(limits)
    modules = ["distributed", "cloudpickle", "nbexp.executor", "nbexp.series", "nbexp.watcher"]
    forkserver.set_forkserver_preload(modules + [m for m in preload if m not in modules])
    forkserver.ensure_running()
    _fork_server_ours = True
    return True


def _nanny_keys() -> list[str]:
    """The environment variables a nanny sets in its own process before starting a worker."""
    limits = require("dask").config.get("distributed.nanny.pre-spawn-environ", {}) or {}
    return [*limits, "PYTHONHASHSEED"]


def _put_back(values: dict[str, str | None]) -> None:
    """Set each variable back to its value, None meaning it was not set."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        elif os.environ.get(key) != value:
            os.environ[key] = value


def preloadable(source: str, namespace: dict[str, Any], names: set[str]) -> list[str]:
    """The modules worth importing once for every worker: those the body imports and the
    packages of the inputs it reads, when their package is already imported here (so they
    are there) and installed rather than the project's own (whose edits a fork server would
    never see)."""
    import ast

    wanted: list[str] = []
    with contextlib.suppress(SyntaxError, ValueError):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                wanted.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                wanted.append(node.module)
    for name in sorted(names):
        if name in namespace:
            wanted.append(type(namespace[name]).__module__.split(".")[0])
    project = os.path.realpath(os.getcwd()) + os.sep
    chosen: list[str] = []
    for module_name in wanted:
        package = sys.modules.get(module_name.split(".")[0])
        path = getattr(package, "__file__", None)
        if package is None or not path or module_name in chosen:
            continue
        if os.path.realpath(path).startswith(project):
            continue
        chosen.append(module_name)
    return chosen


def _changed_modules(cwd: str, since: float) -> list[str]:
    """(In a worker) the project's modules it imported whose file changed after `since`."""
    project = os.path.realpath(cwd) + os.sep
    changed = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or not os.path.realpath(path).startswith(project):
            continue
        with contextlib.suppress(OSError):
            if os.stat(path).st_mtime > since:
                changed.append(name)
    return changed


# -- the driver's side ------------------------------------------------------------------------


@dataclass
class _Shipment:
    """The body's inputs as the workers get them: small ones pickled, large ones scattered."""

    small: dict[str, bytes] = field(default_factory=dict)
    large: dict[str, Any] = field(default_factory=dict)  # name → Future


def pack_inputs(namespace: dict[str, Any], names: set[str]) -> _Shipment:
    """Pickle each input the body reads (the large ones are only sized, and scattered once
    connected), or one line naming the one that cannot travel, before any trial starts."""
    import cloudpickle

    shipment = _Shipment()
    for name in sorted(names):
        if name not in namespace or name in _KERNEL_NAMES or name.startswith("__"):
            continue
        value = namespace[name]
        buffers: list[pickle.PickleBuffer] = []
        try:  # out-of-band buffers are not copied: a big frame is sized without a copy
            inband = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        except Exception as error:
            raise ExecutorError(
                f"the body reads {name} ({type(value).__name__}), which cannot be sent to Dask "
                f"workers ({type(error).__name__}: {str(error)[:200]}); create it inside the "
                "cell, or run without --workers/--cluster"
            ) from None
        size = len(inband) + sum(buffer.raw().nbytes for buffer in buffers)
        if size >= SCATTER_BYTES:
            shipment.large[name] = value
        else:
            shipment.small[name] = cloudpickle.dumps(value, protocol=5) if buffers else inband
    return shipment


@dataclass
class _Pending:
    index: int
    run: _Run
    future: Any
    submitted: float


class DaskTrials:
    """Trials submitted to a Dask client and recorded on the driver as they finish."""

    def __init__(self, client: Any, recorder: Recorder, shipment: _Shipment) -> None:
        self.client = client
        self.recorder = recorder
        # The small inputs travel in each trial's task, so Dask can rerun a trial anywhere
        # from its task alone; the large ones are scattered once, a copy on every worker, so
        # that a worker that dies does not take the only copy with it.
        self._small = shipment.small
        self._large = (
            client.scatter(shipment.large, broadcast=True, hash=False) if shipment.large else {}
        )
        self._cancelled = False
        self._store_root = _store_root()
        self._pending: dict[Any, _Pending] = {}  # future key → trial
        self._completed = require("distributed").as_completed(
            [], loop=client.loop, with_results=True, raise_errors=False
        )
        self._unreported: list[tuple[int, RunResult | None]] = []
        self._cwd = os.getcwd()
        self.capacity = max(1, sum(client.nthreads().values()))
        from .state import PickleCache

        self._pickles = PickleCache()  # the kernel's values, pickled once per sweep

    def submit(self, index: int, cell: str, options: RunOptions) -> None:
        """Prepare one trial here (a user mistake raises before it is sent) and send it."""
        run = self.recorder.prepare(cell, options)
        spec = {
            "source": run.source,
            "filename": f"<experiment {options.name}>",
            "cwd": self._cwd,
            "ignore": (self._store_root,) if self._store_root else (),
        }
        future = self.client.submit(  # a key no other kernel on the cluster can share
            run_trial,
            spec,
            self._small,
            self._large,
            pure=False,
            key=f"nbexp-trial-{index}-{secrets.token_hex(8)}",
        )
        self._pending[future.key] = _Pending(index, run, future, time.time())
        self._completed.add(future)

    @property
    def running(self) -> int:
        return len(self._pending)

    def next_done(self) -> tuple[int, RunResult | None]:
        """Wait for the next trial to finish and record it: (its index, its run's result;
        None when it was cancelled). Results are fetched by the client in the background
        while the driver records the ones before."""
        future, outcome = next(self._completed)
        pending = self._pending.pop(future.key)
        with _interrupt_held() as held:  # a record being written is finished first
            done = self._finish(pending, outcome)
        if held:
            self._unreported.append(done)
            raise KeyboardInterrupt
        return done

    def cancel(self) -> list[tuple[int, RunResult | None]]:
        """Cancel the trials not finished yet; record those that have (an interrupt keeps
        every finished trial)."""
        self._cancelled = True
        undone = [p.future for p in self._pending.values() if not p.future.done()]
        if undone:
            self.client.cancel(undone)
        finished, self._unreported = self._unreported, []
        for key, pending in list(self._pending.items()):
            if pending.future.status in ("finished", "error"):
                del self._pending[key]
                finished.append(self._finish(pending, None))
        self._pending.clear()
        return finished

    def close(self) -> None:
        """Let go of the scattered inputs (the cluster may outlive the sweep)."""
        if self._large:
            with contextlib.suppress(Exception):
                self.client.cancel(list(self._large.values()))
        self._large = {}

    def _finish(self, pending: _Pending, outcome: Any) -> tuple[int, RunResult | None]:
        """Record one finished trial from what `as_completed` fetched (`outcome`: the
        worker's answer, or for an error (type, exception, traceback)); None: fetch it."""
        from .recorder import BodyResult

        future = pending.future
        if future.status == "cancelled" and self._cancelled:
            return pending.index, None
        if future.status == "cancelled":  # not by us: the cluster lost what it needed
            fields = _lost(
                RuntimeError("cancelled by the cluster (its inputs were lost with a worker)"),
                pending.submitted,
            )
        elif future.status == "error":  # the worker died twice, or our side of it failed
            error = outcome[1] if outcome is not None else future.exception()
            fields = _lost(error, pending.submitted)
        else:
            try:
                fields = future.result() if outcome is None else outcome
            except Exception as error:
                fields = _lost(error, pending.submitted)
        body = BodyResult(**_unpacked(fields))
        result = self.recorder.record(pending.run, body, reuse=self._pickles)
        future.release()
        if body.error is not None:
            result.error = TrialFailed(f"{body.error['type']}: {body.error['message']}")
        return pending.index, result


def _store_root() -> str | None:
    from .store import open_store

    try:
        return str(open_store().root)
    except NbexpError:
        return None


def _lost(error: BaseException, submitted: float) -> dict[str, Any]:
    """What to record of a trial that produced nothing (its worker died, say)."""
    kind = type(error).__name__
    message = str(error)[:2000]
    if kind == "KilledWorker":
        message = f"the worker running it died, and again on retry ({message})"[:2000]
    return {
        "started": _utc(submitted),
        "duration": time.time() - submitted,
        "variables": {},
        "error": {"type": kind, "message": message, "traceback": ""},
    }


def _unpacked(fields: dict[str, Any]) -> dict[str, Any]:
    """A worker's answer with its variables unpickled; one that cannot be is kept out of the
    state with the reason (a placeholder refusing to be stored), never as a stale value."""
    import cloudpickle

    fields = dict(fields)
    variables: dict[str, Any] = {}
    for name, data in fields.pop("variables", {}).items():
        try:
            variables[name] = cloudpickle.loads(data)
        except Exception as error:
            variables[name] = _Unshipped(f"cannot be unpickled here: {type(error).__name__}")
    for name, reason in fields.pop("unshipped", {}).items():
        variables[name] = _Unshipped(f"could not leave the worker: {reason}")
    fields["variables"] = variables
    return fields


class _Unshipped:
    """Stands in the record's namespace for a variable that stayed on the worker."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __reduce__(self) -> Any:
        from .state import UnstorableError

        raise UnstorableError(self.reason[:300])

    def __repr__(self) -> str:
        return f"<not shipped: {self.reason}>"


@contextlib.contextmanager
def _interrupt_held() -> Iterator[list[int]]:
    """Hold Ctrl-C (SIGINT) while the block runs; the list it gives says whether one came.
    A record half-written by an interrupt would lose a finished trial."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def _utc(timestamp: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(timestamp or time.time(), dt.timezone.utc)
    return moment.isoformat(timespec="microseconds")


# -- the worker's side ------------------------------------------------------------------------


class _Capture:
    """A bounded copy of what one trial printed."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, text: str) -> None:
        if self.size < MAX_OUTPUT_CHARS:
            self.parts.append(text)
            self.size += len(text)
        else:
            self.truncated = True

    def value(self) -> str:
        text = "".join(self.parts)
        if len(text) > MAX_OUTPUT_CHARS:
            self.truncated = True
        return text[:MAX_OUTPUT_CHARS]


class _PerThread(io.TextIOBase):
    """sys.stdout/sys.stderr in a worker: a thread running a trial writes into its capture,
    every other thread (Dask's own) to the stream this one replaced."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.captures: dict[int, _Capture] = {}

    def write(self, text: str) -> int:
        capture = self.captures.get(threading.get_ident())
        if capture is not None:
            capture.write(text)
            return len(text)
        return int(self.target.write(text) or 0)

    def flush(self) -> None:
        if threading.get_ident() not in self.captures:
            self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


_install_lock = threading.Lock()


def _streams() -> tuple[_PerThread, _PerThread]:
    with _install_lock:
        if not isinstance(sys.stdout, _PerThread):
            sys.stdout = _PerThread(sys.stdout)
        if not isinstance(sys.stderr, _PerThread):
            sys.stderr = _PerThread(sys.stderr)
        return sys.stdout, sys.stderr


@contextlib.contextmanager
def _captured() -> Iterator[tuple[_Capture, _Capture]]:
    out, err = _streams()
    me = threading.get_ident()
    captures = out.captures[me], err.captures[me] = _Capture(), _Capture()
    try:
        yield captures
    finally:
        out.captures.pop(me, None)
        err.captures.pop(me, None)


def _display(*objects: Any, **_: Any) -> None:
    """`display()` in a worker: no front end to show it, so its text goes to the output."""
    for value in objects:
        print(repr(value))


def _enter(cwd: str) -> None:
    """Run where the kernel runs, when that folder is here too (a LocalCluster, a shared
    file system): relative paths and local modules then mean what they mean in the notebook."""
    if os.path.isdir(cwd) and os.getcwd() != cwd:
        with _install_lock, contextlib.suppress(OSError):
            os.chdir(cwd)
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _figures_closed() -> None:
    """Start a trial with no figures open (each trial records the ones it drew)."""
    if "matplotlib.pyplot" not in sys.modules:
        os.environ["MPLBACKEND"] = "agg"  # a worker has no display; the kernel's may be inline
        return
    sys.modules["matplotlib.pyplot"].close("all")


def _figures_drawn() -> list[bytes]:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    images = []
    for number in pyplot.get_fignums():
        buffer = io.BytesIO()
        pyplot.figure(number).savefig(buffer, format="png", dpi=72)
        images.append(buffer.getvalue())
    pyplot.close("all")
    return images


def _traceback(error: BaseException) -> str:
    """The traceback as the user reads it: this module's frames left out."""
    report = traceback.TracebackException.from_exception(error)
    frames = [frame for frame in report.stack if frame.filename != __file__]
    report.stack = traceback.StackSummary.from_list(frames)
    return "".join(report.format())


def run_trial(
    spec: dict[str, Any], small: dict[str, bytes], large: dict[str, Any]
) -> dict[str, Any]:
    """Run one trial's body in this worker like a cell and return what recording needs, all
    picklable: the names it bound (each pickled here, so one that cannot travel is named
    rather than failing the trial), output, error, series, figures, files read and written."""
    import cloudpickle

    from . import series, watcher

    _enter(spec["cwd"])
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "display": _display,
    }
    for name, data in small.items():
        namespace[name] = cloudpickle.loads(data)
    namespace.update(large)
    seeded = dict(namespace)
    source, filename = spec["source"], spec["filename"]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    _figures_closed()
    error: dict[str, Any] | None = None
    started = _utc()
    begin = time.perf_counter()
    with (
        _captured() as (out, err),
        series.collecting() as logged,
        watcher.watch_files(tuple(spec["ignore"])) as watch,
    ):
        try:
            exec(compile(source, filename, "exec"), namespace)
        except BaseException as raised:  # SystemExit too: the trial failed, the worker lives
            error = {
                "type": type(raised).__name__,
                "message": str(raised)[:2000],
                "traceback": _traceback(raised)[-20000:],
            }
    duration = time.perf_counter() - begin
    figures = _figures_drawn()
    read, written_paths = watch.files()
    written: dict[str, bytes] = {}
    for path in written_paths:
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            written[path] = handle.read()
    variables: dict[str, bytes] = {}
    unshipped: dict[str, str] = {}
    for name, value in namespace.items():
        if name.startswith("__") or (name in seeded and seeded[name] is value):
            continue
        try:
            variables[name] = cloudpickle.dumps(value, protocol=5)
        except Exception as problem:
            unshipped[name] = f"{type(problem).__name__}: {str(problem)[:200]}"
    return {
        "started": started,
        "duration": duration,
        "variables": variables,
        "unshipped": unshipped,
        "stdout": out.value(),
        "stderr": err.value(),
        "output_truncated": out.truncated or err.truncated,
        "error": error,
        "series": logged.series,
        "figures": figures,
        "read": read,
        "written": written,
    }


class Progress:
    """A tqdm bar of trials landed (a widget in a notebook, text in a terminal); nothing
    without tqdm."""

    def __init__(self, total: int, description: str) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._bar: Any = None
            return
        self._bar = tqdm(total=total, desc=description, unit="trial", file=sys.stderr)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
