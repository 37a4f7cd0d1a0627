"""Benchmark: `nbexp.diff` of two experiments whose inputs are 1M-row frames (target ≤ 2 s).

In one process:

1. a real IPython ``InteractiveShell`` (``start_ipython()``, ``%load_ext nbexp``, a temp
   ``NBEXP_STORE``) in a temp folder outside git;
2. two ``%%experiment`` cells, each reading a 1M-row, 6-column DataFrame from the namespace
   (4 numeric columns, 2 categorical) and a 1M-row Parquet file; the second run's data has
   drifted (shifted means, changed category shares, one column retyped, one added), so every
   input's hash differs and the diff computes drift for every column;
3. ``nbexp.diff(a, b)`` timed: the first call in the process (imports ``nbexp.comparison``), then
   the median of repeated calls, and ``str()`` of the result; and ``nbexp diff A B`` as a
   subprocess (interpreter start-up included).

The diff reads the two records only (their column profiles), never the data: its cost does not
grow with the data's size. Prints the figures; never asserts.

    .venv/bin/python bench/diff.py [--quick] [--rows N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = """\
threshold = 0.5
frame = pd.read_parquet("events.parquet")
positives = float((features["x0"] > threshold).mean()) + len(frame) * 0.0
"""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_frame(rows: int, seed: int, drifted: bool) -> object:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    shift = 0.5 if drifted else 0.0
    frame = pd.DataFrame(
        {
            "x0": rng.normal(shift, 1.0, rows),
            "x1": rng.exponential(1.0 + shift, rows),
            "x2": rng.integers(0, 100, rows),
            "x3": rng.uniform(0, 1, rows),
            "channel": rng.choice(
                ["web", "store", "phone"], rows, p=[0.7, 0.2, 0.1] if drifted else [0.5, 0.3, 0.2]
            ),
            "country": rng.choice([f"c{i}" for i in range(40)], rows),
        }
    )
    if drifted:
        frame["x2"] = frame["x2"].astype("float64")
        frame["extra"] = rng.normal(0, 1, rows)
    return frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows")
    parser.add_argument("--rows", type=int, default=None, help="rows per frame (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed in-process diffs")
    args = parser.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    load_before = os.getloadavg()[0]

    workdir = Path(tempfile.mkdtemp(prefix="nbexp-bench-diff-"))
    os.chdir(workdir)
    os.environ["NBEXP_STORE"] = str(workdir / ".nbexp")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        from IPython.testing.globalipapp import start_ipython

        shell = start_ipython()
        shell.run_line_magic("load_ext", "nbexp")
        shell.run_cell("import pandas as pd", store_history=True)
        setup = {}
        for name, drifted in (("before", False), ("after", True)):
            begin = time.perf_counter()
            frame = make_frame(rows, seed=1 if not drifted else 2, drifted=drifted)
            frame.to_parquet("events.parquet")  # type: ignore[attr-defined]
            shell.user_ns["features"] = frame
            result = shell.run_cell(f"%%experiment {name}\n{BODY}", store_history=True)
            if not result.success:
                print(f"recording {name} failed: {result.error_in_exec}", file=sys.stderr)
                return 1
            setup[name] = time.perf_counter() - begin

        import nbexp

        begin = time.perf_counter()
        first = nbexp.diff("before", "after")
        first_call = time.perf_counter() - begin
        times = []
        for _ in range(args.repeat):
            begin = time.perf_counter()
            nbexp.diff("before", "after")
            times.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        text = str(first)
        html = first._repr_html_()
        render = time.perf_counter() - begin

        record_sizes = [
            (workdir / ".nbexp" / "records").rglob(f"{e.id}*") for e in (first.a, first.b)
        ]
        sizes = [sum(p.stat().st_size for p in found) for found in record_sizes]
        command = [sys.executable, "-m", "nbexp.cli", "diff", "before", "after"]
        cli_times = []
        for _ in range(3):
            begin = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            cli_times.append(time.perf_counter() - begin)
        columns = sum(len(change.columns) for change in first.data)

        print(text.split("environment:")[0].rstrip())
        print()
        print(
            f"nbexp diff, two experiments on {rows:,}-row inputs "
            f"({cores()} cores, load {load_before:.2f} → {os.getloadavg()[0]:.2f})"
        )
        median, worst = statistics.median(times) * 1000, max(times) * 1000
        recording = ", ".join(f"{s:.1f} s" for s in setup.values())
        table = [
            ("inputs changed / columns compared", f"{len(first.data)} / {columns}", ""),
            ("record sizes", ", ".join(f"{s / 1024:.0f} KB" for s in sizes), ""),
            ("recording each run (setup, not timed)", recording, ""),
            ("nbexp.diff first call (imports comparison)", f"{first_call * 1000:.1f} ms", "≤ 2 s"),
            ("nbexp.diff median / max", f"{median:.1f} / {worst:.1f} ms", "≤ 2 s"),
            ("str() + _repr_html_()", f"{render * 1000:.1f} ms ({len(html) // 1024} KB html)", ""),
            ("`nbexp diff A B` subprocess, best of 3", f"{min(cli_times):.2f} s", ""),
        ]
        width = max(len(row[0]) for row in table)
        for label, value, target in table:
            print(f"  {label:<{width}}  {value:<28} {target}")
        return 0
    finally:
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
