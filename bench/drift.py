"""Benchmark: `nbexp drift` on a 1,000,000-row, 20-column CSV against the fastest plain read.

In one process: writes the CSV (18 numeric columns, 2 categorical) to a temp folder, records
an experiment that read it (so a recorded profile exists), reads it once to warm the page
cache, then times, alternating, (a) the fastest plain read — pandas `read_csv` with the
pyarrow engine — and (b) `nbexp drift REF file.csv` in process (`cli.main`, output to a
sink): reading with the same engine plus profiling and comparing every column. Reports the
best and median of each and the ratio of the medians (target <= 1.3: reading dominates, the
comparison must not). Never asserts.

    .venv/bin/python bench/drift.py [--quick] [--repeat N] [--rows N] [--dir D]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_csv(path: Path, rows: int, shift: float = 0.0) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0 if not shift else 1)
    columns = {f"x{i}": rng.normal(shift if i < 3 else 0.0, 1.0, rows) for i in range(18)}
    columns["city"] = rng.choice(["paris", "lyon", "nice", "lille"], rows)
    columns["segment"] = rng.choice(["a", "b", "c"], rows)
    pd.DataFrame(columns).to_csv(path, index=False, float_format="%.6g")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows, 3 repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where to write the CSV (default: a temp dir)")
    args = parser.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeat = args.repeat or (3 if args.quick else 5)

    import pandas as pd

    from nbexp import cli
    from nbexp.record import Code, Experiment, Outcome
    from nbexp.store import open_store

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        root = Path(folder)
        os.chdir(root)
        os.environ["NBEXP_STORE"] = str(root / ".nbexp")
        old, new = root / "train.csv", root / "week.csv"
        begin = time.perf_counter()
        make_csv(old, rows)
        make_csv(new, rows, shift=0.3)
        print(
            f"wrote 2 CSVs of {rows:,} rows x 20 columns ({new.stat().st_size / 1e6:.0f} MB each) "
            f"in {time.perf_counter() - begin:.1f} s",
            flush=True,
        )
        # the experiment that read train.csv, recorded as a run records its file input
        from nbexp.profiles import describe_file

        store = open_store()
        entry = describe_file(store, str(old), base=str(root))
        draft = Experiment(
            id="", name="rf-prod", created="2024-01-01T00:00:00+00:00",
            code=Code(cell="", source="", notebook=None, notebook_hash=None, history=(),
                      execution_count=None),
            outcome=Outcome(status="ok", started="2024-01-01T00:00:00+00:00", duration=1.0),
            params={}, metrics={}, data=[entry],
        )  # fmt: skip
        body = draft.to_dict()
        body["id"] = store.make_id(body)
        store.save(Experiment.from_dict(body))

        pd.read_csv(new, engine="pyarrow")  # warm the page cache and pyarrow's import
        plain: list[float] = []
        drift: list[float] = []
        sink = io.StringIO()
        for _ in range(repeat):
            begin = time.perf_counter()
            pd.read_csv(new, engine="pyarrow")
            plain.append(time.perf_counter() - begin)
            sink.seek(0), sink.truncate()
            with contextlib.redirect_stdout(sink):
                begin = time.perf_counter()
                code = cli.main(["drift", "rf-prod", str(new)])
                drift.append(time.perf_counter() - begin)
            if code:
                print(f"nbexp drift exited {code}", file=sys.stderr)
                return 1
        print(sink.getvalue().splitlines()[1])
    ratio = statistics.median(drift) / statistics.median(plain)
    print(
        f"\ndrift bench — {rows:,} rows x 20 columns, {repeat} alternating runs, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"  pandas read_csv(engine='pyarrow'): best {min(plain):.3f} s, median {statistics.median(plain):.3f} s"
    )
    print(
        f"  nbexp drift REF file.csv:          best {min(drift):.3f} s, median {statistics.median(drift):.3f} s"
    )
    verdict = "met" if ratio <= 1.3 else "MISSED"
    print(
        f"ratio nbexp drift / plain read: medians {ratio:.2f} (target <= 1.3: {verdict}), "
        f"best {min(drift) / min(plain):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
