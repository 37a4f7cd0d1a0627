"""Instructions per `%%experiment` cell, counted by valgrind (cachegrind, no cache model): a
figure the machine's load does not move, for comparing two trees of nbexp on a shared machine
where wall and CPU times of `record.py` swing by 2x between runs.

For each tree (a folder holding `nbexp/`, default: this checkout), two child processes run
under `valgrind --tool=cachegrind --cache-sim=no`: one runs 10 warm-up cells only, the other
the warm-ups then N cells (`record.py`'s trivial body, in sessions of 50 after 5 warm-ups
each, as `record.py` runs them); the difference, divided by the cells run, is printed. The
session resets' `gc.collect` is left out (the same for every tree, and not the cells' cost).
User-space instructions only: the system calls (opens, renames, fsyncs) are not in them, and
background threads count as they run, so compare trees, never against wall times.

    .venv/bin/python bench/record_instructions.py [--cells N] [--line LINE] [TREE ...]

Needs `valgrind` on PATH; takes about a minute per tree (both of a tree's children run at once).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(cells: int, line: str | None) -> None:
    """Run the cells in this process (under valgrind)."""
    sys.path.insert(0, str(HERE))
    import gc

    import record as bench  # bench/record.py: its shell, body and store set-up

    work = Path(tempfile.mkdtemp(prefix="nbexp-bench-instructions-"))
    try:
        (work / "d").mkdir()
        shell = bench.Bench()
        shell.enter(work / "d")
        shell.run(line, 10)
        gc.collect = lambda *args: 0  # the session resets' collections
        done = 0
        while done < cells:
            batch = min(50, cells - done)
            shell.enter(work / "d")
            shell.run(line, 5)
            shell.run(line, batch)
            done += batch
        if shell.failures:
            print("FAILED:", shell.failures[0], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def count(tree: Path, cells: int, line: str) -> int:
    """User-space instructions of a child process running `cells` cells from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    env.pop("JPY_SESSION_NAME", None)
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(cells),
        "--line",
        line,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if "FAILED" in result.stderr or found is None:
        raise SystemExit(f"{tree}: the child failed:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, help="folders holding nbexp/")
    parser.add_argument("--cells", type=int, default=200, help="cells counted (default 200)")
    parser.add_argument("--line", default="%%experiment", help="the magic line, or 'plain'")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    line = None if args.line == "plain" else args.line
    if args.child is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            child(args.child, line)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)")
        return 1
    from concurrent.futures import ThreadPoolExecutor

    trees = args.trees or [HERE.parent]
    # per cell: the N cells and their sessions' 5 warm-ups each
    run = args.cells + 5 * -(-args.cells // 50)
    print(
        f"user-space instructions per cell ({args.cells} cells counted, {args.line!r}, "
        f"valgrind cachegrind; load average {os.getloadavg()[0]:.2f}: it does not matter here)"
    )
    with ThreadPoolExecutor(2) as pool:
        for tree in trees:
            base, full = pool.map(lambda n, t=tree: count(t, n, args.line), (0, args.cells))
            print(f"  {tree}: {(full - base) / run / 1e6:.2f} M instructions per cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
