"""Benchmark: a sweep in the kernel vs on Dask, and what recording costs over plain Dask.

A 16-trial sweep (`--sweep depth=4,6,8,10 --sweep seed=0,1,2,3`) of a CPU-bound body of about
1 s (a scikit-learn RandomForest fit, `n_jobs=1`, calibrated to ~1 s here), in a real IPython
shell with nbexp loaded. Each round runs, one after the other (so a change in the machine's
load hits every variant alike):
  * serial:       `%%experiment --sweep ...` in the kernel, one trial after another
  * plain serial: the same 16 fits in a loop in the kernel, nothing recorded
  * nbexp warm:   the same cell with `--workers 2` on the LocalCluster kept from the round
                  before (cluster start not counted)
  * plain Dask:   `client.map` of the same fit on that same cluster, X and y scattered once,
                  nothing recorded: the floor nbexp's Dask path is measured against
  * nbexp cold:   `--workers 2` after closing the kept cluster (cluster start counted; the
                  fork server workers are forked from is already up, as after any first sweep)
Before the rounds, the first `--workers 2` sweep of the process is timed once: fork server,
its imports (distributed, scikit-learn) and the cluster all started for it.

For each variant: wall time, the CPU seconds of this process and its children (kernel, fork
server, workers; the same work should cost the same CPU wherever it runs), those of this
process alone (the driver: the kernel's recording, the client, a LocalCluster's scheduler and
nannies — on 2 busy cores each of its seconds is taken from a worker), and the cores other
processes used meanwhile (from /proc/stat): on a machine shared with other work, a second
worker process only helps as much as the scheduler gives it a core.

Then 1,000 trivial trials (`score = k * 2`) through nbexp on the warm cluster vs 1,000 plain
`client.map` tasks: the per-trial cost on the driver (prepare + ship + record).

Targets: serial / nbexp ≥ 1.7 on 2 cores; nbexp / plain Dask ≤ 1.15. Prints figures only;
never asserts.

    .venv/bin/python bench/sweep.py [--quick] [--rounds N] [--trivial N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

BODY = """
depth = 6
seed = 0
from sklearn.ensemble import RandomForestClassifier
model = RandomForestClassifier(
    n_estimators=TREES, max_depth=depth, n_jobs=1, random_state=seed
).fit(X, y)
accuracy = float(model.score(X, y))
"""


def fit(X: Any, y: Any, trees: int, depth: int, seed: int) -> float:
    """The body as a plain function, for the plain loop and `client.map`."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=trees, max_depth=depth, n_jobs=1, random_state=seed
    ).fit(X, y)
    return float(model.score(X, y))


def calibrate(X: Any, y: Any) -> tuple[int, float]:
    """Trees for a ~1 s fit at the sweep's middle depth, here, now."""
    trees = 20
    for _ in range(3):  # a busy machine: measure, scale, measure again
        begin = time.perf_counter()
        fit(X, y, trees, 7, 0)
        took = time.perf_counter() - begin
        trees = max(10, round(trees / took))
    begin = time.perf_counter()
    fit(X, y, trees, 7, 0)
    return trees, time.perf_counter() - begin


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _machine_busy() -> float:
    """CPU seconds all processes have used, from /proc/stat (0 where there is none)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _driver() -> float:
    """CPU seconds of this process alone: the kernel's recording, the client, and (for a
    LocalCluster) the scheduler and nannies; on 2 busy cores every one is taken from a worker."""
    times = os.times()
    return times.user + times.system - SESSIONS.cpu


def _workers_rss() -> str:
    """The kept cluster's workers' resident memory, MB (does a kept cluster grow?)."""
    from nbexp import executor

    local = executor.kept_cluster()
    if local is None:
        return "-"
    sizes = local.client.run(_rss)
    return "/".join(f"{size / 1e6:.0f}" for size in sizes.values())


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _ours() -> float:
    """CPU seconds of this process and its live descendants (workers, fork server)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total - SESSIONS.cpu


def _autogroup(pid: str | int) -> str:
    with open(f"/proc/{pid}/autogroup") as handle:
        return handle.read().split()[0]


class Sessions(threading.Thread):
    """How many other sessions had a runnable thread, sampled every second (a scan of /proc
    every 0.2 s took ~0.06 of a core with 137 processes: CPU the workers lost). Linux with
    `sched_autogroup_enabled` shares the CPU between sessions (autogroups) before threads:
    the bench, its kernel and its Dask workers are one session, so while another session
    keeps a core busy, a second worker process gets no more CPU than the first had alone."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.cpu = 0.0  # CPU seconds this sampling thread has used
        self.halt = threading.Event()
        try:
            self.mine: str | None = _autogroup(os.getpid())
        except OSError:
            self.mine = None  # no autogroups here: nothing to sample

    def run(self) -> None:
        while self.mine is not None and not self.halt.wait(1.0):
            self.samples.append(len(self._busy_sessions()))
            self.cpu = time.thread_time()  # scanning /proc is not the driver's work

    def _busy_sessions(self) -> set[str]:
        sessions = set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/stat") as handle:
                        if handle.read().rsplit(")", 1)[1].split()[0] == "R":
                            group = _autogroup(pid)
                            if group != self.mine:
                                sessions.add(group)
                            break
            except (OSError, IndexError):
                continue
        return sessions


SESSIONS = Sessions()


@dataclass
class Timing:
    wall: float
    cpu: float  # CPU seconds of ours
    driver: float  # CPU seconds of this process alone (the kernel, the client, the scheduler)
    others: float  # cores other processes used meanwhile
    load1: float
    sessions: float  # other sessions with a runnable thread, on average


def timed(action: Callable[..., Any], *args: Any) -> Timing:
    busy, ours, driver, begin = _machine_busy(), _ours(), _driver(), time.perf_counter()
    sampled = len(SESSIONS.samples)
    action(*args)
    wall = time.perf_counter() - begin
    cpu = _ours() - ours
    driver = _driver() - driver
    others = max(0.0, (_machine_busy() - busy - cpu) / wall)
    samples = SESSIONS.samples[sampled:]
    sessions = statistics.mean(samples) if samples else float("nan")
    return Timing(wall, cpu, driver, others, os.getloadavg()[0], sessions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials, 1 round, 200 trivial")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    parser.add_argument("--trivial", type=int, default=None, help="trivial trials (1000)")
    args = parser.parse_args()
    trivial = args.trivial or (200 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 3)
    seeds = "0,1" if args.quick else "0,1,2,3"

    from IPython.testing.globalipapp import start_ipython
    from sklearn.datasets import make_classification

    from nbexp import executor
    from nbexp.store import open_store

    folder = tempfile.mkdtemp(prefix="nbexp-bench-sweep-")
    os.chdir(folder)
    os.environ["NBEXP_STORE"] = os.path.join(folder, ".nbexp")
    print(f"bench/sweep.py: {os.cpu_count()} cores, load {load()} at start, store in {folder}")

    X, y = make_classification(n_samples=3000, n_features=20, random_state=0)
    trees, one = calibrate(X, y)
    print(f"body: RandomForest of {trees} trees on {X.shape}, one fit at depth 7 ≈ {one:.2f} s")
    shell = start_ipython()
    shell.run_line_magic("load_ext", "nbexp")
    shell.user_ns.update(X=X, y=y)
    body = BODY.replace("TREES", str(trees))
    grid = f"--sweep depth=4,6,8,10 --sweep seed={seeds}"
    points = [(d, s) for d in (4, 6, 8, 10) for s in map(int, seeds.split(","))]
    n = len(points)
    quiet = open(os.devnull, "w")  # noqa: SIM115 (the summary lines of every trial)

    def cell(line: str, text: str = body) -> None:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = quiet
        try:
            result = shell.run_cell(f"%%experiment {line}\n{text}", store_history=True)
        finally:
            sys.stdout, sys.stderr = saved
        if not result.success:
            raise SystemExit(f"the cell failed: {result.error_in_exec!r}")

    def plain_serial() -> None:
        for depth, seed in points:
            fit(X, y, trees, depth, seed)

    def plain_dask() -> None:
        local = executor.kept_cluster()
        assert local is not None
        client = local.client
        xf, yf = client.scatter([X, y], broadcast=True, hash=False)
        futures = client.map(
            fit,
            [xf] * n,
            [yf] * n,
            [trees] * n,
            [d for d, _ in points],
            [s for _, s in points],
            pure=False,
        )
        client.gather(futures)

    def cold(tag: str) -> None:
        cell(f"{tag} {grid} --workers 2")

    SESSIONS.start()
    first = timed(cold, "first")  # fork server + imports + cluster, once per kernel
    variants: dict[str, list[Timing]] = {
        name: [] for name in ("serial", "plain serial", "nbexp warm", "plain Dask", "nbexp cold")
    }
    order = ("serial", "nbexp warm", "plain serial", "plain Dask", "nbexp cold")
    for round_ in range(rounds):  # serial and parallel alternate, paired within a round
        variants["serial"].append(timed(cell, f"serial{round_} {grid}"))
        variants["nbexp warm"].append(timed(cell, f"warm{round_} {grid} --workers 2"))
        rss = _workers_rss()
        variants["plain serial"].append(timed(plain_serial))
        variants["plain Dask"].append(timed(plain_dask))
        executor.close_cluster()
        variants["nbexp cold"].append(timed(cold, f"cold{round_}"))
        print(
            f"round {round_ + 1}/{rounds}: "
            + ", ".join(f"{k} {variants[k][-1].wall:.2f} s" for k in order)
            + f"; workers' RSS after nbexp warm {rss} MB; load {load()}",
            flush=True,
        )

    # 1,000 trivial trials: the driver's cost per trial. Every record also snapshots the
    # kernel's own variables (as a serial sweep's do), so the kernel holds only X and y here.
    for name in ("model", "accuracy", "depth", "seed", "RandomForestClassifier"):
        shell.user_ns.pop(name, None)
    values = ",".join(str(k) for k in range(trivial))
    tiny = timed(
        lambda: cell(
            f"tiny --sweep k={values} --max-runs {trivial} --workers 2", "k = 0\nscore = k * 2\n"
        )
    )
    local = executor.kept_cluster()
    assert local is not None
    tiny_plain = timed(lambda: local.client.gather(local.client.map(_double, range(trivial))))
    executor.close_cluster()

    def median(name: str) -> Timing:
        runs = variants[name]
        return Timing(
            statistics.median(t.wall for t in runs),
            statistics.median(t.cpu for t in runs),
            statistics.median(t.driver for t in runs),
            statistics.median(t.others for t in runs),
            statistics.median(t.load1 for t in runs),
            statistics.median(t.sessions for t in runs),
        )

    medians = {name: median(name) for name in order}

    def paired(top: str, bottom: str) -> str:
        """The median over rounds of one variant's wall over another's (same round, same load)."""
        ratios = [a.wall / b.wall for a, b in zip(variants[top], variants[bottom], strict=True)]
        return f"{statistics.median(ratios):.2f}× (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"

    print()
    print(f"{n} trials, {rounds} interleaved round(s); medians (every round: wall s)")
    print(
        f"{'variant':<34} {'wall s':>7} {'our CPU s':>9} {'driver s':>8} {'our cores':>9} "
        f"{'others':>7} "
        f"{'load1':>6} {'sessions':>8}  rounds"
    )
    for name, timing in [("first --workers 2 of the process", first), *medians.items()]:
        runs = variants.get(name, [timing])
        print(
            f"{name:<34} {timing.wall:>7.2f} {timing.cpu:>9.2f} {timing.driver:>8.2f} "
            f"{timing.cpu / timing.wall:>9.2f} "
            f"{timing.others:>7.2f} {timing.load1:>6.2f} {timing.sessions:>8.1f}  "
            f"{', '.join(f'{t.wall:.2f}' for t in runs)}"
        )
    print(
        f"(driver: CPU seconds of this process alone — kernel, client, scheduler, nannies; "
        f"our cores: CPU seconds of this process and its workers per wall second; others: cores "
        f"other processes used meanwhile; sessions: other sessions with a runnable thread, on "
        f"average; the machine has {os.cpu_count()} cores)"
    )
    serial, loop = medians["serial"], medians["plain serial"]
    print()
    figures = [
        (
            "speed-up, --workers 2, cluster kept (start not counted)",
            paired("serial", "nbexp warm") + " — target ≥ 1.7",
        ),
        ("speed-up, --workers 2, cluster started for it (counted)", paired("serial", "nbexp cold")),
        (
            "speed-up, first --workers 2 of the process (all start-up)",
            f"{serial.wall / first.wall:.2f}× the median serial",
        ),
        (
            "speed-up, plain Dask over the plain loop (no nbexp)",
            paired("plain serial", "plain Dask"),
        ),
        (
            "nbexp on Dask over plain Dask on the same cluster",
            paired("nbexp warm", "plain Dask") + " — target ≤ 1.15",
        ),
        ("recording in the kernel: serial sweep over plain loop", paired("serial", "plain serial")),
    ]
    for label, value in figures:
        print(f"{label:<58} {value}")
    extra = medians["nbexp warm"].driver - medians["plain Dask"].driver
    print(
        f"driver CPU, nbexp warm over plain Dask: {extra:+.2f} s per sweep ({extra / n * 1000:+.1f} ms "
        "per trial: unpickling, recording and shipping each trial, taken from a worker on 2 "
        "busy cores)"
    )
    print(
        f"CPU seconds, plain Dask over the plain loop: {medians['plain Dask'].cpu / loop.cpu:.2f}× "
        "(the same fits: ≈ 1 means no oversubscription or per-task overhead in the workers)"
    )
    print(
        "with S other busy sessions sharing the machine's 2 cores per session, this session "
        "gets about 2/(S+1) cores: 1 core serial and 2 on Dask only while S = 0, the same share "
        "for both once S ≥ 1 (a speed-up of about 1×)"
    )
    idle = [
        k
        for k in range(rounds)
        if variants["serial"][k].others < 0.2 and variants["nbexp warm"][k].others < 0.2
    ]
    if idle:
        k = idle[0]
        s_, w_ = variants["serial"][k].wall, variants["nbexp warm"][k].wall
        print(
            f"round {k + 1} ran on an (almost) idle machine: serial {s_:.2f} s, "
            f"nbexp warm {w_:.2f} s → {s_ / w_:.2f}×"
        )
    else:
        print("no round ran on an idle machine (other processes used ≥ 0.2 cores in each)")
    print()
    print(
        f"{trivial} trivial trials on the warm cluster: nbexp {tiny.wall:.2f} s "
        f"({tiny.wall / trivial * 1000:.1f} ms per trial), plain client.map {tiny_plain.wall:.2f} s "
        f"({tiny_plain.wall / trivial * 1000:.2f} ms per task); the driver's cost per trial "
        f"(prepare, ship, record) ≈ {(tiny.wall - tiny_plain.wall) / trivial * 1000:.1f} ms; "
        f"driver CPU {tiny.driver / trivial * 1000:.1f} ms per trial, "
        f"{tiny_plain.driver / trivial * 1000:.2f} ms per plain task"
    )
    print(f"load {load()} at end; {len(open_store().rows())} records written")


def _double(k: int) -> int:
    return k * 2


if __name__ == "__main__":
    main()
