"""Benchmark: the cost of recording one `%%experiment` cell, against MLflow's sqlite backend.

In one process:

1. a real IPython ``InteractiveShell`` (``IPython.testing.globalipapp.start_ipython()``) with
   ``%load_ext nbexp`` and a temp store (``NBEXP_STORE``), working in a temp folder that is
   not inside a git repository;
2. N cells ``%%experiment`` of a trivial body (5 literal params, 3 computed metrics), each
   timed as the wall time of ``shell.run_cell(..., store_history=True)``;
3. the same with ``%%experiment --no-state``, and the same body as a plain ``run_cell``
   (no magic: the cost of the cell itself);
4. the default variant again inside a temp git repository (``git init`` + one commit), where
   every record captures the commit, branch and diff;
5. N MLflow runs (``mlflow.set_tracking_uri("sqlite:///<tmp>/mlflow.db")``, ``start_run`` +
   ``log_params`` (5) + ``log_metrics`` (3)).

6. a Dask sweep's driver cost per trial without Dask: ``Recorder.prepare`` + ``Recorder.record``
   of a trivial body's result (what ``executor.DaskTrials`` does as each trial lands) with a
   32-tree RandomForest and its data in the kernel, with and without the sweep's
   ``state.PickleCache``, alternating; median CPU time of this thread and wall time.

Each variant is warmed up first (runs not counted) and starts from a fresh IPython session
(``shell.reset(new_session=True)``), so every record's captured input history has the same
length across variants. MLflow is imported only after the nbexp runs, so nbexp's record of
imported packages does not include MLflow's.

Prints per-run medians and p90s and the ratio nbexp/MLflow (target <= 0.1), and beside them
the median CPU time of this thread per run (fsync waits and other processes' load are not in
it: on a shared machine its ratio moves less than the wall time's); never asserts.

    .venv/bin/python bench/record.py [--quick] [--runs N] [--profile] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 5

# SPEC §12: a body reading a params file and a data file, run outside and inside a DVC
# project (a `.dvc/` folder, `data/train.csv.dvc` and `dvc.lock`, as DVC 3 writes them): the
# difference is the cost of reading DVC's md5s (target <= 5 ms).
DATA_BODY = """\
import yaml
cfg = yaml.safe_load(open("params.yaml"))
max_depth = cfg["train"]["max_depth"]
with open("data/train.csv") as handle:
    rows = sum(1 for _ in handle)
seed = {seed}
score = rows / (max_depth + seed)
"""

BODY = """\
lr = 0.01
depth = 6
n_estimators = 100
model = "rf"
seed = {seed}
acc = 0.9 + depth * 0.001 + seed * 1e-9
f1 = acc - 0.01
loss = 1.0 - acc
"""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarize(times: list[float], cpu: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(times),
        "p90": percentile(times, 0.9),
        "min": min(times),
        "cpu": statistics.median(cpu),
    }


class FsyncCounter:
    """Counts the durability calls nbexp makes — os.fsync, and the store's filesystem-wide
    sync helper (``nbexp.store._sync_filesystem``, syncfs) when it has one — passing them
    through unchanged."""

    def __init__(self) -> None:
        from nbexp import store as store_module

        self.count = 0
        self._store_module = store_module
        self._real_fsync = os.fsync
        self._real_syncfs = getattr(store_module, "_sync_filesystem", None)

        def counting_fsync(fd: int) -> None:
            self.count += 1
            self._real_fsync(fd)

        os.fsync = counting_fsync  # type: ignore[assignment]
        if self._real_syncfs is not None:
            real_syncfs = self._real_syncfs

            def counting_syncfs(*args, **kwargs):  # type: ignore[no-untyped-def]
                self.count += 1
                return real_syncfs(*args, **kwargs)

            store_module._sync_filesystem = counting_syncfs

    def restore(self) -> None:
        os.fsync = self._real_fsync  # type: ignore[assignment]
        if self._real_syncfs is not None:
            self._store_module._sync_filesystem = self._real_syncfs


def fsync_latency(folder: Path, count: int = 50) -> float:
    """Median seconds to write a new 1 KB file and fsync it (the disk's durability cost)."""
    times = []
    data = os.urandom(1024)
    for i in range(count):
        path = folder / f"fsync-probe-{i}"
        begin = time.perf_counter()
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        times.append(time.perf_counter() - begin)
        path.unlink()
    return statistics.median(times)


class Bench:
    """One IPython shell with nbexp loaded; runs and times cells in a given folder/store."""

    def __init__(self) -> None:
        from IPython.testing.globalipapp import start_ipython

        self.shell = start_ipython()
        self.shell.run_line_magic("load_ext", "nbexp")
        self.failures: list[str] = []
        self.seed = 0
        self.body = BODY

    def enter(self, folder: Path) -> None:
        """Work in `folder` with its own store, from a fresh IPython session."""
        from nbexp import store as store_module

        os.chdir(folder)
        os.environ["NBEXP_STORE"] = str(folder / ".nbexp")
        store_module._stores.clear()
        self.shell.reset(new_session=True)
        if "experiment" not in self.shell.magics_manager.magics["cell"]:
            self.shell.run_line_magic("load_ext", "nbexp")

    def cell(self, magic_line: str | None) -> str:
        self.seed += 1
        body = self.body.format(seed=self.seed)
        return body if magic_line is None else f"{magic_line}\n{body}"

    def run(self, magic_line: str | None, count: int) -> list[float]:
        """Run `count` cells; returns each run_cell's wall time in seconds (and keeps each
        one's CPU time of this thread in `self.cpu`)."""
        times = []
        self.cpu: list[float] = []
        sink_out, sink_err = io.StringIO(), io.StringIO()
        for _ in range(count):
            source = self.cell(magic_line)
            sink_out.seek(0), sink_out.truncate()
            sink_err.seek(0), sink_err.truncate()
            with contextlib.redirect_stdout(sink_out), contextlib.redirect_stderr(sink_err):
                begin, cpu = time.perf_counter(), time.thread_time()
                result = self.shell.run_cell(source, store_history=True)
                times.append(time.perf_counter() - begin)
                self.cpu.append(time.thread_time() - cpu)
            problem = None
            if not result.success:
                problem = f"cell failed: {result.error_in_exec or result.error_before_exec}"
            elif "NOT recorded" in sink_err.getvalue():
                problem = sink_err.getvalue().strip()
            if problem and len(self.failures) < 5:
                self.failures.append(f"{magic_line or 'plain'}: {problem[:300]}")
        return times

    def recorded(self) -> int:
        from nbexp.store import open_store

        return open_store().count()


def count_files(folder: Path) -> int:
    """Record, object and tag files in a store (not the SQLite index)."""
    return sum(
        1
        for part in ("records", "objects", "tags")
        if (folder / part).is_dir()
        for item in (folder / part).rglob("*")
        if item.is_file()
    )


def make_git_repo(folder: Path) -> None:
    folder.mkdir()
    (folder / "train.py").write_text("print('hello')\n")
    (folder / ".gitignore").write_text(".nbexp/\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "train.py", ".gitignore"],
        ["git", "commit", "-q", "-m", "initial"],
    ):
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)


def make_data_project(folder: Path, dvc: bool) -> None:
    """A folder with params.yaml and data/train.csv; with `dvc`, DVC's files for them."""
    (folder / "data").mkdir(parents=True)
    (folder / "params.yaml").write_text("train:\n  max_depth: 4\nseed: 0\n")
    (folder / "data" / "train.csv").write_text(
        "a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(200))
    )
    if not dvc:
        return
    (folder / ".dvc").mkdir()
    (folder / ".dvc" / "config").write_text("")
    (folder / "data" / "train.csv.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 2000\n  hash: md5\n"
        "  path: train.csv\n"
    )
    stages = "".join(
        f"  stage{i}:\n    cmd: python s{i}.py\n    deps:\n    - path: data/train.csv\n"
        f"      hash: md5\n      md5: 0123456789abcdef0123456789abcdef\n      size: 2000\n"
        f"    outs:\n    - path: out/o{i}.csv\n      hash: md5\n"
        f"      md5: fedcba9876543210fedcba98765432{i:02d}\n      size: 10\n"
        for i in range(20)
    )
    (folder / "dvc.lock").write_text("schema: '2.0'\nstages:\n" + stages)


def mlflow_runs(folder: Path, count: int) -> tuple[list[float], list[float], float, str]:
    """(per-run seconds, per-run CPU seconds of this thread, import+setup seconds, version)."""
    begin = time.perf_counter()
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.set_experiment("bench")
    setup = time.perf_counter() - begin

    def one(seed: int) -> None:
        with mlflow.start_run():
            mlflow.log_params(
                {"lr": 0.01, "depth": 6, "n_estimators": 100, "model": "rf", "seed": seed}
            )
            acc = 0.9 + 6 * 0.001 + seed * 1e-9
            mlflow.log_metrics({"acc": acc, "f1": acc - 0.01, "loss": 1.0 - acc})

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for seed in range(WARMUP):
            one(-seed - 1)
        times, cpu = [], []
        for seed in range(count):
            start, cpu_start = time.perf_counter(), time.thread_time()
            one(seed)
            times.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - cpu_start)
    return times, cpu, setup, mlflow.__version__


FOREST = """\
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
X, y = make_classification(n_samples=3000, n_features=20, random_state=0)
forest = RandomForestClassifier(n_estimators=32, max_depth=7, random_state=0).fit(X, y)
"""


def driver_costs(bench: Bench, folder: Path, count: int) -> dict[str, tuple[float, float]]:
    """What the driver of a Dask sweep does per trial, without Dask: `Recorder.prepare` and
    `Recorder.record` of a trivial body's result (as `executor.DaskTrials` does when a trial
    lands), with a 32-tree forest and its data in the kernel, every trial snapshotting them
    too; with and without the sweep's `state.PickleCache`, alternating. Median CPU (this
    thread) and wall per trial."""
    from nbexp import state
    from nbexp.recorder import BodyResult, Recorder, RunOptions, _utc_now

    folder.mkdir(exist_ok=True)
    bench.enter(folder)
    bench.shell.run_cell(FOREST, store_history=True)
    recorder = Recorder(bench.shell)
    cache = state.PickleCache()
    times: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    for k in range(WARMUP + count):
        for label, reuse in (("without", None), ("with", cache)):
            options = RunOptions(name=f"trial-{label}", params=[f"k={k}"], links={"sweep": "b"})
            cpu, wall = time.thread_time(), time.perf_counter()
            run = recorder.prepare("k = 0\nscore = k * 2\n", options)
            body = BodyResult(_utc_now(), 0.001, {"k": k, "score": 2 * k})
            result = recorder.record(run, body, reuse=reuse)
            if k >= WARMUP:
                times[label].append((time.thread_time() - cpu, time.perf_counter() - wall))
            if result.experiment is None and len(bench.failures) < 5:
                bench.failures.append(f"driver trial: {result.not_recorded}")
    return {
        label: (
            statistics.median(cpu for cpu, _ in pairs),
            statistics.median(wall for _, wall in pairs),
        )
        for label, pairs in times.items()
    }


def print_profile(title: str, function, top: int = 15) -> None:
    profiler = cProfile.Profile()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        profiler.enable()
        function()
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    # The IPython call chain above the magic is the same for every cell: show nbexp's own
    # functions by cumulative time, then everything by own time (fsync, pickling, git...).
    stats.sort_stats("cumulative").print_stats(r"/nbexp/", top)
    print(f"\n--- cProfile: {title} (top {top} nbexp functions by cumulative time) ---")
    print(_strip_header(out.getvalue()))
    out.seek(0), out.truncate()
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile: {title} (top {top} by own time) ---")
    print(_strip_header(out.getvalue()))


def _strip_header(text: str) -> str:
    lines = text.rstrip().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    total = next((line.strip() for line in lines if "function calls" in line), "")
    return "\n".join([total, *lines[start:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 runs per variant instead of 200")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per variant")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow comparison")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile 50 default %%experiment cells"
    )
    args = parser.parse_args()
    count = args.runs or (50 if args.quick else 200)
    load_before = os.getloadavg()[0]

    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.pop("JPY_SESSION_NAME", None)
    workdir = Path(tempfile.mkdtemp(prefix="nbexp-bench-record-"))
    home = os.getcwd()
    notes: list[str] = []
    results: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    per_cell: dict[str, tuple[float, float]] = {}
    fsync_median = float("nan")
    mlflow_setup = 0.0
    mlflow_version = "-"
    try:
        from nbexp.environment import find_git_root

        plain_dir = workdir / "plain"
        plain_dir.mkdir()
        if find_git_root(plain_dir) is not None:
            notes.append(f"{plain_dir} is inside a git repository: the no-git figures include git")
        git_dir = workdir / "repo"
        make_git_repo(git_dir)

        probe_dir = workdir / "probe"
        probe_dir.mkdir()
        fsync_median = fsync_latency(probe_dir)
        bench = Bench()
        fsyncs = FsyncCounter()
        variants = [
            ("nbexp %%experiment", plain_dir / "default", "%%experiment"),
            ("nbexp %%experiment --no-state", plain_dir / "nostate", "%%experiment --no-state"),
            ("plain run_cell (no magic)", plain_dir / "baseline", None),
            ("nbexp %%experiment in a git repo", git_dir, "%%experiment"),
            ("nbexp params+data file, no DVC", plain_dir / "nodvc", "%%experiment"),
            ("nbexp params+data file, DVC project", plain_dir / "dvc", "%%experiment"),
        ]
        make_data_project(plain_dir / "nodvc", dvc=False)
        make_data_project(plain_dir / "dvc", dvc=True)
        for label, folder, line in variants:
            folder.mkdir(exist_ok=True)
            bench.body = DATA_BODY if "params+data" in label else BODY
            bench.enter(folder)
            bench.run(line, WARMUP)
            before = bench.recorded() if line else 0
            fsyncs_before = fsyncs.count
            files_before = count_files(folder / ".nbexp")
            times = bench.run(line, count)
            results[label] = summarize(times, bench.cpu)
            per_cell[label] = (
                (fsyncs.count - fsyncs_before) / count,
                (count_files(folder / ".nbexp") - files_before) / count,
            )
            if line:
                counts[label] = bench.recorded() - before
            print(f"  {label}: median {results[label]['median'] * 1e3:.2f} ms", flush=True)

        if args.profile:
            folder = plain_dir / "profile"
            folder.mkdir()
            bench.body = BODY  # the last variant left the params+data body
            bench.enter(folder)
            bench.run("%%experiment", WARMUP)
            print_profile(
                "50 x run_cell('%%experiment ...') outside git",
                lambda: bench.run("%%experiment", 50),
            )
            bench.enter(git_dir)
            bench.run("%%experiment", WARMUP)
            print_profile(
                "50 x run_cell('%%experiment ...') in a git repo",
                lambda: bench.run("%%experiment", 50),
            )

        driver: dict[str, tuple[float, float]] = {}
        try:  # last: its scikit-learn imports would change what the other variants record
            driver = driver_costs(bench, plain_dir / "driver", max(20, count // 2))
        except ImportError:
            notes.append("scikit-learn is not installed: no driver figures")

        fsyncs.restore()
        notes.extend(bench.failures)
        os.chdir(home)
        if not args.no_mlflow:
            try:
                times, cpu, mlflow_setup, mlflow_version = mlflow_runs(workdir, count)
                results["MLflow sqlite: start_run+5 params+3 metrics"] = summarize(times, cpu)
            except ImportError:
                notes.append("mlflow is not installed: .venv/bin/pip install mlflow")
    finally:
        os.chdir(home)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"record bench — {count} timed runs per variant after {WARMUP} warm-up runs, "
        f"{cores()} cores, Python {sys.version.split()[0]}, MLflow {mlflow_version}; "
        f"load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    width = max(len(label) for label in results)
    print(
        f"{'per run (wall time; CPU of this thread)':<{width}}  {'median':>9}  {'p90':>9}  "
        f"{'min':>9}  {'CPU med':>9}    records   syncs/cell  files/cell"
    )
    for label, figures in results.items():
        shown = "  ".join(
            f"{figures[key] * 1e3:>6.2f} ms" for key in ("median", "p90", "min", "cpu")
        )
        fsync_text, file_text = (
            (f"{per_cell[label][0]:.1f}", f"{per_cell[label][1]:.1f}")
            if label in per_cell
            else ("", "")
        )
        print(
            f"{label:<{width}}  {shown}  {counts.get(label, ''):>7}  {fsync_text:>11}  {file_text:>10}"
        )
    print(
        "syncs/cell = os.fsync + store syncfs calls per cell (a record's file and folder are "
        "fsynced side by side: one wait, during which its index row is written); reference: "
        "write + fsync of a new 1 KB file here: "
        f"median {fsync_median * 1e3:.2f} ms"
    )
    mlflow_key = "MLflow sqlite: start_run+5 params+3 metrics"
    if mlflow_key in results:
        reference = results[mlflow_key]["median"]
        print()
        for label in (
            "nbexp %%experiment",
            "nbexp %%experiment --no-state",
            "nbexp %%experiment in a git repo",
        ):
            ratio = results[label]["median"] / reference
            best = results[label]["min"] / results[mlflow_key]["min"]
            cpu = results[label]["cpu"] / results[mlflow_key]["cpu"]
            verdict = "met" if ratio <= 0.1 else "MISSED"
            print(
                f"ratio {label} / MLflow: medians {ratio:.3f} (target <= 0.1: {verdict}), "
                f"minimums {best:.3f}, CPU medians {cpu:.3f}"
            )
        print(
            f"(MLflow import + set_tracking_uri + set_experiment, not counted: {mlflow_setup:.2f} s)"
        )
    baseline = results["plain run_cell (no magic)"]["median"]
    print(
        "recording overhead over a plain cell (medians): "
        + ", ".join(
            f"{label.replace('nbexp %%experiment', '%%experiment').strip()}"
            f" +{(results[label]['median'] - baseline) * 1e3:.2f} ms"
            for label in (
                "nbexp %%experiment",
                "nbexp %%experiment --no-state",
                "nbexp %%experiment in a git repo",
            )
        )
    )
    extra = (
        results["nbexp params+data file, DVC project"]["median"]
        - results["nbexp params+data file, no DVC"]["median"]
    )
    print(
        f"a run in a DVC project (.dvc file + 20-stage dvc.lock read for md5s) vs outside one: "
        f"{extra * 1e3:+.2f} ms per run (target <= 5 ms: {'met' if extra <= 0.005 else 'MISSED'})"
    )
    if driver:
        (cpu_off, wall_off), (cpu_on, wall_on) = driver["without"], driver["with"]
        print(
            "a Dask sweep's driver per trial (prepare + record, 32-tree forest in the kernel; "
            f"median CPU / wall): without the sweep's pickle cache {cpu_off * 1e3:.2f} / "
            f"{wall_off * 1e3:.2f} ms, with it {cpu_on * 1e3:.2f} / {wall_on * 1e3:.2f} ms"
        )
    for note in notes:
        print(f"NOTE: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
