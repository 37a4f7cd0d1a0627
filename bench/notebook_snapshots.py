"""Benchmark: `state.snapshot` alone on the real-notebook corpus, in one process.

Runs a corpus item of `notebooks.py` (fetched the same way) cell by cell in a real IPython
``InteractiveShell`` (matplotlib's Agg backend) and, after each cell the corpus runner would
wrap in `%%experiment`, snapshots the user's variables into a temp store as a record would
(`select_variables` + `snapshot` inside `writing()` and `object_batch()`). Prints, per cell,
the main thread's CPU time of the snapshot (``time.thread_time``: other load on the machine
inflates it less than wall time), the new and total bytes, and the groups; then the total.
No kernel, no recording of anything else: the part of an experiment's cost that grows with
the notebook's state. Compare two checkouts by running it with each on ``PYTHONPATH``, back
to back. Never asserts.

    PYTHONPATH=. .venv/bin/python bench/notebook_snapshots.py NAME [NAME ...] [--profile [--later]]

`--later` profiles only each item's snapshots after its first (the steady cost, without the
first record's one-time library scan).

NAME is a substring of a corpus item's name (as for `notebooks.py --only`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import notebooks  # noqa: E402


def run_item(
    requirement: str, path: str, profile: cProfile.Profile | None, later_only: bool = False
) -> float:
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    from nbexp import state
    from nbexp.store import open_store

    source = notebooks.source_file(requirement, path)
    cells = notebooks.load_cells(source)
    folder = tempfile.mkdtemp(prefix="nbexp-bench-snapshots-")
    os.chdir(source.parent)  # data files the example reads beside itself
    shell = start_ipython() or get_ipython()  # the second item: the shell started already
    shell.reset(new_session=True)
    store = open_store(os.path.join(folder, ".nbexp"))
    total = 0.0
    first = True
    print(f"{notebooks.item_name(path)} (load average {os.getloadavg()[0]:.2f})")
    for index, cell in enumerate(cells):
        shell.run_cell(cell, store_history=True)
        if not notebooks.wrapped(cell):
            continue
        values, imports, secrets = state.select_variables(shell.user_ns, shell.user_ns_hidden)
        cpu = time.thread_time()
        profiled = profile is not None and not (later_only and first)
        first = False
        if profiled:
            profile.enable()
        with store.writing(), store.object_batch():
            snap = state.snapshot(store, values, imports=imports, secret_names=secrets)
        if profiled:
            profile.disable()
        cpu = time.thread_time() - cpu
        total += cpu
        groups = [entry["members"] for entry in snap.variables.values() if "members" in entry]
        print(
            f"  c{index}: {len(values)} variables, {cpu * 1000:6.0f} ms CPU, "
            f"{snap.new_bytes / 1e6:.2f} MB new of {snap.total_bytes / 1e6:.2f} MB; "
            f"groups {groups}"
        )
    print(f"  total {total * 1000:.0f} ms CPU")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="substrings of corpus item names")
    parser.add_argument("--profile", action="store_true", help="cProfile the snapshots")
    parser.add_argument(
        "--later", action="store_true", help="profile only each item's later snapshots"
    )
    args = parser.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    chosen = [
        (requirement, path)
        for requirement, path in notebooks.CORPUS
        if any(name in notebooks.item_name(path) for name in args.names)
    ]
    profile = cProfile.Profile() if args.profile else None
    grand = sum(run_item(requirement, path, profile, args.later) for requirement, path in chosen)
    print(f"all: {grand * 1000:.0f} ms CPU; load average {os.getloadavg()[0]:.2f} at end")
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
