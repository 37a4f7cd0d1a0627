"""Benchmark: a sweep in the kernel vs on Dask, and what recording costs over plain Dask.

A 16-trial sweep (`--sweep depth=4,6,8,10 --sweep seed=0,1,2,3`) of a CPU-bound body of about
1 s (a scikit-learn RandomForest fit, `n_jobs=1`, calibrated to ~1 s here), in a real IPython
shell with nbexp loaded:
  * serial:     `%%experiment --sweep ...` in the kernel, one trial after another
  * nbexp/Dask: the same cell on a warm LocalCluster of 2 worker processes (1 thread each;
                sklearn already imported on them), through the kernel's connected Client
  * plain Dask: `client.map` of the same fit on the same cluster, X and y scattered once,
                nothing recorded — the floor nbexp's Dask path is measured against
  * --no-state: nbexp on Dask without the state snapshot (what the snapshots cost)
  * --workers 2: the nbexp cell starting its own LocalCluster (cluster start included)
Then 1,000 trivial trials (`score = k * 2`) through nbexp on the warm cluster vs 1,000 plain
`client.map` tasks: the per-trial cost on the driver (prepare + ship + record).

Targets: serial / nbexp-on-Dask ≥ 1.7 on 2 cores; nbexp-on-Dask / plain Dask ≤ 1.15.
Prints figures only; never asserts.

    .venv/bin/python bench/sweep.py [--quick] [--trivial N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
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
    """The body as a plain function, for `client.map`."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials, 200 trivial ones")
    parser.add_argument("--trivial", type=int, default=None, help="trivial trials (1000)")
    args = parser.parse_args()
    trivial = args.trivial or (200 if args.quick else 1000)
    seeds = "0,1" if args.quick else "0,1,2,3"

    import dask
    import distributed
    from IPython.testing.globalipapp import start_ipython
    from sklearn.datasets import make_classification

    from nbexp.executor import CLUSTER_CONFIG
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

    def cell(line: str, text: str = body) -> float:
        begin = time.perf_counter()
        result = shell.run_cell(f"%%experiment {line}\n{text}", store_history=True)
        elapsed = time.perf_counter() - begin
        if not result.success:
            raise SystemExit(f"the cell failed: {result.error_in_exec!r}")
        return elapsed

    quiet = open(os.devnull, "w")  # noqa: SIM115 (the summary lines of every trial)

    def silently(function: Any, *a: Any) -> Any:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = quiet
        try:
            return function(*a)
        finally:
            sys.stdout, sys.stderr = saved

    rows: list[tuple[str, float, str]] = []
    serial = silently(cell, f"serial {grid}")
    rows.append((f"serial in the kernel ({n} trials)", serial, ""))

    with dask.config.set(CLUSTER_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    # the kernel's connected client: nbexp's cells below find it (no --cluster needed), so
    # both sides use one connection to the same cluster
    client = distributed.Client(cluster)
    try:
        client.run(lambda: __import__("sklearn.ensemble"))  # warm: imports paid once, by both

        def plain() -> float:
            begin = time.perf_counter()
            xf, yf = client.scatter([X, y], broadcast=False, hash=False)
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
            return time.perf_counter() - begin

        dask_plain = [plain() for _ in range(2)]
        on_dask = [silently(cell, f"dask{k} {grid}") for k in range(2)]
        plain_best, nbexp_best = min(dask_plain), min(on_dask)
        rows.append(
            (
                f"plain Dask client.map, 2 workers (best of 2: {_fmt(dask_plain)})",
                plain_best,
                f"{serial / plain_best:.2f}× serial",
            )
        )
        rows.append(
            (
                f"nbexp, connected client, 2 workers (best of 2: {_fmt(on_dask)})",
                nbexp_best,
                f"{serial / nbexp_best:.2f}× serial; {nbexp_best / plain_best:.3f}× plain",
            )
        )
        # what the state snapshot of each trial's model costs the driver (and so the cores)
        stateless = silently(cell, f"nostate {grid} --no-state")
        rows.append(
            (
                "nbexp, connected client, 2 workers, --no-state",
                stateless,
                f"{serial / stateless:.2f}× serial; {stateless / plain_best:.3f}× plain",
            )
        )

        # 1,000 trivial trials: the driver's cost per trial. Every record also snapshots the
        # kernel's own variables (as a serial sweep's do), so the kernel holds only X and y
        # here; a tenth as many trials again with the last fitted forest back in the kernel.
        leftovers = {
            name: shell.user_ns.pop(name)
            for name in ("model", "accuracy", "depth", "seed", "RandomForestClassifier")
            if name in shell.user_ns
        }
        trivial_body = "k = 0\nscore = k * 2\n"

        def trivial_line(prefix: str, count: int) -> str:
            values = ",".join(str(k) for k in range(count))
            return f"{prefix} --sweep k={values} --max-runs {count}"

        tiny = silently(cell, trivial_line("tiny", trivial), trivial_body)
        shell.user_ns.update(leftovers)
        heavy_n = max(10, trivial // 10)
        heavy = silently(cell, trivial_line("heavy", heavy_n), trivial_body)
        begin = time.perf_counter()
        client.gather(client.map(_double, range(trivial), pure=False))
        tiny_plain = time.perf_counter() - begin
    finally:
        client.close()
        cluster.close()

    own = silently(cell, f"own {grid} --workers 2")
    rows.append(
        (
            "nbexp --workers 2 (starts and closes its LocalCluster)",
            own,
            f"{serial / own:.2f}× serial",
        )
    )

    print()
    print(f"{'variant':<62} {'wall s':>8}  notes")
    for name, seconds, note in rows:
        print(f"{name:<62} {seconds:>8.2f}  {note}")
    print()
    print(
        f"{trivial} trivial trials on the warm cluster: nbexp {tiny:.2f} s "
        f"({tiny / trivial * 1000:.1f} ms per trial), plain client.map {tiny_plain:.2f} s "
        f"({tiny_plain / trivial * 1000:.2f} ms per task); the driver's cost per trial "
        f"(prepare, ship, record) ≈ {(tiny - tiny_plain) / trivial * 1000:.1f} ms"
    )
    print(
        f"{heavy_n} trivial trials with a {trees}-tree forest also in the kernel (snapshotted "
        f"into every record, unchanged): {heavy / heavy_n * 1000:.1f} ms per trial"
    )
    print()
    print(
        f"speed-up on 2 workers: {serial / nbexp_best:.2f}× (target ≥ 1.7); "
        f"nbexp over plain Dask: {nbexp_best / plain_best:.3f}× (target ≤ 1.15)"
    )
    print(f"load {load()} at end; {len(open_store().rows())} records written")


def _double(k: int) -> int:
    return k * 2


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values) + f"; median {statistics.median(values):.2f}"


if __name__ == "__main__":
    main()
