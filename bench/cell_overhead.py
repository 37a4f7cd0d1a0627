"""Benchmark: what a loaded nbexp adds to every cell that is not an experiment.

Each round starts a fresh Python process with a real IPython ``InteractiveShell``
(``start_ipython()``), imports numpy, pandas, matplotlib and scikit-learn (as a notebook's
first cells do), then, by variant: nothing (plain); ``import nbexp``; ``%load_ext nbexp``
in a cell and 2 s idle (its warm-up done); the same and one ``%%experiment`` recorded (the
file watcher's audit hook installed, the recording modules imported). Then it times, on the
main thread's CPU clock (``time.thread_time``: other load on the machine inflates it less
than wall time), three kinds of cells:

- ``a = 1``: the fixed cost of a cell (IPython's own, plus every hook nbexp registered);
- a cell making and dropping 300,000 small lists: gc collections, which walk every tracked
  object of the process (nbexp's own modules and caches among them);
- a cell of small pandas and scikit-learn calls (``DataFrame.groupby``, ``StandardScaler``):
  library code, its audited events (``open``, ``sys._getframe``, ``compile``…) passing
  through the audit hook once one is installed.

It also prints how many objects the collector tracks in each variant. Variants run in a
rotated order, rounds repeated; medians per variant; never asserts. It measures the nbexp of
the tree it is in.

    .venv/bin/python bench/cell_overhead.py [--rounds N] [--cells N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROUND = r"""
import gc, json, os, sys, tempfile, time
variant, cells = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MPLBACKEND", "Agg")
folder = tempfile.mkdtemp(prefix="nbexp-bench-cells-")
os.chdir(folder)
os.environ["NBEXP_STORE"] = os.path.join(folder, ".nbexp")
from IPython.testing.globalipapp import start_ipython
shell = start_ipython()
shell.run_cell('''
import numpy as np, pandas as pd, matplotlib.pyplot as plt
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression
frame = pd.DataFrame({"k": np.arange(2000) % 7, "v": np.random.default_rng(0).random(2000)})
X = np.random.default_rng(1).random((500, 8)); y = (X[:, 0] > 0.5).astype(int)
''', store_history=True)
if variant == "import":
    shell.run_cell("import nbexp", store_history=True)
if variant in ("load_ext", "experiment"):
    shell.run_cell("%load_ext nbexp", store_history=True)
    time.sleep(2)  # idle: the warm-up's steps run
if variant == "experiment":
    assert shell.run_cell("%%experiment\nclf = LogisticRegression().fit(X, y)\nacc = clf.score(X, y)\n",
                          store_history=True).success
    time.sleep(1)
kinds = {
    "a = 1": ("a = 1", cells),
    "gc: 300k lists": ("_t = [[i] for i in range(300_000)]\ndel _t", max(cells // 100, 5)),
    "pandas + sklearn": (
        "_g = frame.groupby('k')['v'].mean()\n_s = StandardScaler().fit_transform(X)\n"
        "_p = pd.Series(_s[:, 0]).describe()",
        max(cells // 20, 10),
    ),
}
out = {"objects": len(gc.get_objects())}
for kind, (code, count) in kinds.items():
    shell.run_cell(code, store_history=True)  # once untimed
    times = []
    for _ in range(count):
        begin = time.thread_time()
        shell.run_cell(code, store_history=True)
        times.append(time.thread_time() - begin)
    out[kind] = sorted(times)[len(times) // 2]
print("@@" + json.dumps(out))
"""

VARIANTS = ("plain", "import", "load_ext", "experiment")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=2000, help="`a = 1` cells per round")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": ROOT}
    load = os.getloadavg()
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        shift = round_ % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            with tempfile.TemporaryDirectory() as home:
                ran = subprocess.run(
                    [sys.executable, "-c", ROUND, variant, str(args.cells)],
                    capture_output=True,
                    text=True,
                    env={**env, "IPYTHONDIR": home},
                    check=False,
                )
            lines = [ln for ln in ran.stdout.splitlines() if ln.startswith("@@")]
            if ran.returncode != 0 or not lines:
                print(f"{variant}: failed\n{ran.stderr[-2000:]}")
                return 1
            results[variant].append(json.loads(lines[-1][2:]))
    end = os.getloadavg()
    print(
        f"per-cell CPU of the kernel's thread, median of {args.rounds} rounds "
        f"(load average {load[0]:.2f} at start, {end[0]:.2f} at end; {os.cpu_count()} cores)"
    )
    kinds = [k for k in results["plain"][0] if k != "objects"]
    print(f"  {'variant':12} {'gc objects':>10} " + " ".join(f"{k:>24}" for k in kinds))
    plain = {k: statistics.median(r[k] for r in results["plain"]) for k in kinds}
    for variant in VARIANTS:
        rows = results[variant]
        objects = statistics.median(r["objects"] for r in rows)
        cells = []
        for kind in kinds:
            value = statistics.median(r[kind] for r in rows)
            cells.append(f"{value * 1e6:11.1f} µs {value / plain[kind]:6.3f}x  ")
        print(f"  {variant:12} {objects:10.0f} " + " ".join(f"{c:>24}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
