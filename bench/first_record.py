"""Benchmark: the first `%%experiment` in a fresh kernel, where nbexp's one-time costs land.

Each round starts a fresh Python process with a real IPython ``InteractiveShell``
(``start_ipython()``) in a temp folder with its own store, imports numpy, pandas,
matplotlib and scikit-learn and makes a 2000×20 dataset (as a notebook's first cells do),
runs ``%load_ext nbexp`` in a cell, waits 3 s (a user reading; nbexp's load-time warm-up —
what is installed read by a child process, the rest in steps while the kernel is idle —
runs meanwhile), then times the first ``%%experiment`` of a LogisticRegression fit, a
second one, and the same body as a plain cell. CPU time is the main thread's
(``time.thread_time``), so other load on the machine inflates it less than wall time.

Prints per-round figures, the medians and the time per phase of the two records
(`_phases.py`); never asserts. It measures the nbexp of the tree it is in (compare two
checkouts by running each one's copy); that tree's bytecode is compiled first, as an
installed package has it (`--source`: not).

    .venv/bin/python bench/first_record.py [--rounds N] [--source]
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _phases import PHASES  # noqa: E402

ROUND = r"""
import json, os, sys, tempfile, time
BENCH = sys.argv[1]
os.environ.setdefault("MPLBACKEND", "Agg")
folder = tempfile.mkdtemp(prefix="nbexp-bench-first-")
os.chdir(folder)
os.environ["NBEXP_STORE"] = os.path.join(folder, ".nbexp")
from IPython.testing.globalipapp import start_ipython
shell = start_ipython()
shell.run_cell('''
import numpy as np, pandas as pd, matplotlib.pyplot as plt
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
''', store_history=True)
load_begin = time.perf_counter()
shell.run_cell("%load_ext nbexp", store_history=True)  # a cell: its end lets the warm-up start
load_ext = time.perf_counter() - load_begin
sys.path.insert(0, BENCH)
import _phases
_phases.install()
time.sleep(3)
body = "clf = LogisticRegression().fit(X, y)\nacc = clf.score(X, y)\n"
figures, phases = {}, {}
for label, source in (("first", "%%experiment\n" + body), ("second", "%%experiment\n" + body),
                      ("plain", body)):
    cpu, wall = time.thread_time(), time.perf_counter()
    result = shell.run_cell(source, store_history=True)
    figures[label] = [time.thread_time() - cpu, time.perf_counter() - wall, result.success]
    phases[label] = _phases.take()
import nbexp
print("@@" + json.dumps({"cells": figures, "phases": phases, "load_ext": load_ext,
                         "nbexp": os.path.dirname(nbexp.__file__)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes (default 3)")
    parser.add_argument(
        "--source",
        action="store_true",
        help="leave nbexp's bytecode uncompiled (each process compiles it, as a checkout "
        "under PYTHONDONTWRITEBYTECODE does)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    if not args.source:  # as installed: bytecode compiled once (not in each fresh process)
        import compileall

        compileall.compile_dir(os.path.join(ROOT, "nbexp"), quiet=1)
    # this tree's nbexp first, then the caller's PYTHONPATH made absolute: each round runs in
    # a temp folder, where a relative entry (`PYTHONPATH=.`) would name nothing and the venv's
    # installed nbexp would be measured instead
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    python_path = os.pathsep.join([ROOT, *(os.path.abspath(p) for p in given)])
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="nbexp-bench-first-") as home:
            completed = subprocess.run(
                [sys.executable, "-c", ROUND, os.path.dirname(os.path.abspath(__file__))],
                capture_output=True,
                text=True,
                cwd=home,
                env={**os.environ, "JPY_SESSION_NAME": "", "PYTHONPATH": python_path},
                check=False,
            )
        line = next((x for x in completed.stdout.splitlines() if x.startswith("@@")), None)
        if line is None:
            print(f"a round failed: {completed.stderr.strip()[-500:]}")
            continue
        answer = json.loads(line[2:])
        figures = answer["cells"]
        rounds.append(answer)
        print(
            "  "
            + ", ".join(
                f"{label} {cpu * 1e3:.0f} ms CPU / {wall * 1e3:.0f} ms wall{'' if ok else ' FAILED'}"
                for label, (cpu, wall, ok) in figures.items()
            ),
            flush=True,
        )
    if not rounds:
        return 1
    print(f"\nnbexp measured: {rounds[0]['nbexp']}")
    print(
        f"first record bench — {len(rounds)} fresh processes, Python "
        f"{sys.version.split()[0]}; load average {load_before:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )
    for label in ("first", "second", "plain"):
        cpu = statistics.median(r["cells"][label][0] for r in rounds)
        wall = statistics.median(r["cells"][label][1] for r in rounds)
        print(f"{label + ' cell':<14} median {cpu * 1e3:7.1f} ms CPU  {wall * 1e3:7.1f} ms wall")
    load_ext = statistics.median(r["load_ext"] for r in rounds)
    print(f"%load_ext nbexp median {load_ext * 1e3:.1f} ms wall")
    print("\nper phase, median ms (bench/_phases.py; nested phases charged once):")
    print(f"  {'phase':<14} {'first CPU':>10} {'wall':>8} {'second CPU':>11} {'wall':>8}")
    for phase in ("body", *PHASES):
        row = [
            statistics.median(r["phases"][label].get(phase, [0.0, 0.0])[kind] for r in rounds)
            for label in ("first", "second")
            for kind in (1, 0)
        ]
        print(
            f"  {phase:<14} {row[0] * 1e3:10.1f} {row[1] * 1e3:8.1f}"
            f" {row[2] * 1e3:11.1f} {row[3] * 1e3:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
