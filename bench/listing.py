"""Benchmark: listing a store of 100,000 experiments, in process and through the CLI.

Setup writes N records (5 params, 3 metrics each) into a temp store. By default it uses the
store's own pieces in a loop (``Experiment.to_dict``, ``Store.make_id``, ``canonical_json``,
``Store.record_path``, ``Store._index_row``) but skips the per-record fsync and batches the
index inserts, because ``Store.save`` costs ~1.4 ms a record here (fsync of the record and
its folder) — 100k saves would take minutes. ``--via-save`` uses ``Store.save`` instead.
The temp store goes to /dev/shm when that is a tmpfs with room (``--dir`` to choose): on the
shared disk, creating and deleting 100k record files took minutes under load, while the
timed listings read only the SQLite index, which is in the page cache either way.

Then it times (best of 3; target <= 0.5 s each):

* ``nbexp.experiments()``                      in process, a pandas DataFrame
* the widget's first page                      in process: ``widgets.model.TableModel`` over a
                                               fresh store handle (columns, total, the page of
                                               50, best values, stale marks) and its HTML
* ``nbexp list --format csv > /dev/null``      a subprocess (interpreter start included)
* ``nbexp list > /dev/null``                   the table
* ``nbexp list "metrics.acc > 0.9"``           a filter (about 10% of rows match)

The three CLI listings above run on an unchanged store, each once before it is timed (not
counted), so they print the text they kept (``cache/text-*``, see
``store/listing_cache.py``). Then the first listing after a change, which is the one a user
meets (target <= 0.5 s too): the table, the CSV and the filter right after a tag was toggled
by this process, the table right after a record was removed and right after one was
recorded (the change not counted). Each prints its kept text patched with the rows that
changed (``listing_text.patch``).

and for reference ``nbexp --version`` (the CLI's start-up cost) and ``nbexp list --limit 1``.
The subprocesses run without PYTHONDONTWRITEBYTECODE (so with compiled bytecode cached, as an
installed package has it): with it set, every start compiled nbexp's modules again (+0.3 s).
Prints figures only; never asserts. The temp store is deleted at the end.

    .venv/bin/python bench/listing.py [--quick] [--records N] [--via-save] [--profile] [--dir D]
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

FILTER = "metrics.acc > 0.9"
SLOW_CUTOFF = 3.0  # seconds
TARGET = 0.5  # seconds, each listing (issue 14)
PAGE_SIZE = 50  # the widget's default page


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_experiment(i: int):
    """A small but complete record: 5 params, 3 metrics, a short cell, some tags."""
    import random

    from nbexp.record import Code, Experiment, Outcome
    from nbexp.store import Store

    rng = random.Random(i)
    lr = rng.choice([0.001, 0.003, 0.01, 0.03, 0.1])
    depth = rng.randint(2, 12)
    n_estimators = rng.choice([50, 100, 200, 400])
    model = rng.choice(["rf", "gbm", "logreg"])
    acc = rng.random()
    # created: one run a second, oldest first, so "newest first" is the reverse of i.
    seconds = 1_767_225_600 + i
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000000+00:00"
    cell = (
        f"lr = {lr}\ndepth = {depth}\nn_estimators = {n_estimators}\nmodel = {model!r}\n"
        f"seed = {i}\nacc = train(lr, depth, n_estimators, model, seed)\n"
        "f1 = acc - 0.01\nloss = 1 - acc\n"
    )
    draft = Experiment(
        id="",
        name=f"sweep-{i + 1}",
        created=created,
        code=Code(cell="%%experiment\n" + cell, source=cell, notebook="/work/train.ipynb"),
        outcome=Outcome(status="ok" if i % 97 else "failed", started=created, duration=0.25),
        params={"lr": lr, "depth": depth, "n_estimators": n_estimators, "model": model, "seed": i},
        metrics={"acc": acc, "f1": acc - 0.01, "loss": 1 - acc},
        env={"python": "3.11.7", "packages": {"numpy": "2.4.0", "pandas": "3.1.0"}},
        tags=("best",) if i % 50 == 0 else (),
    )
    body = draft.to_dict()
    experiment_id = Store.make_id(body)
    body["id"] = experiment_id
    from dataclasses import replace

    return replace(draft, id=experiment_id), body


def populate(store, count: int, via_save: bool) -> float:
    """Write `count` records; returns seconds."""
    from nbexp.hashing import canonical_json

    begin = time.perf_counter()
    if via_save:
        for i in range(count):
            experiment, _ = make_experiment(i)
            store.save(experiment)
            if (i + 1) % 10_000 == 0:
                print(f"  {i + 1:,} saved ({time.perf_counter() - begin:.0f} s)", flush=True)
        return time.perf_counter() - begin

    for a in "0123456789abcdef":
        for b in "0123456789abcdef":
            (store.records_dir / (a + b)).mkdir(parents=True, exist_ok=True)
    batch: list[tuple] = []
    sql = ""
    for i in range(count):
        experiment, body = make_experiment(i)
        with open(store.record_path(experiment.id), "wb") as handle:
            handle.write(canonical_json(body) + b"\n")
        batch.append(store._index_row(experiment))
        if not sql:  # as many placeholders as the index row has columns
            sql = getattr(sys.modules[type(store).__module__], "_INSERT_ROW", None) or (
                f"INSERT OR REPLACE INTO experiments VALUES ({','.join('?' * len(batch[0]))})"
            )
        if len(batch) >= 10_000 or i == count - 1:
            with store._lock, store._db:
                store._db.executemany(sql, batch)
            batch.clear()
            print(f"  {i + 1:,} written ({time.perf_counter() - begin:.0f} s)", flush=True)
    if hasattr(store, "rebuild_columns"):  # the index's list of param/metric names
        store.rebuild_columns()
    return time.perf_counter() - begin


def default_dir() -> str | None:
    """/dev/shm when usable: creating and deleting 100k small record files on the shared disk
    takes minutes under load, and the listing itself reads only the (page-cached) index."""
    shm = "/dev/shm"
    try:
        if os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2e9:
            return shm
    except OSError:
        pass
    return None


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system


def best_of(function, repeat: int = 3) -> tuple[float, list[float], float]:
    """Best of `repeat` runs, and the CPU seconds of that best run (this process and the
    subprocesses it waited for): on a shared machine whose load average is above its core
    count, wall time is mostly waiting for a core, and CPU time is the steadier figure.
    Stops after a run slower than SLOW_CUTOFF (the target is long missed by then, and
    repeating it would push the bench past its time budget)."""
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(repeat):
        begin, begin_cpu = time.perf_counter(), cpu_seconds()
        function()
        times.append(time.perf_counter() - begin)
        cpu.append(cpu_seconds() - begin_cpu)
        if times[-1] > SLOW_CUTOFF:
            break
    best = min(range(len(times)), key=times.__getitem__)
    return times[best], times, cpu[best]


def store_size(root: Path) -> int:
    """Bytes of the files in the store (records, index, ...)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("nbexp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nbexp.cli"]


def cli_environment() -> dict[str, str]:
    """This environment, but with bytecode caching on, as a user's installed nbexp has it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_cli(args: list[str]) -> None:
    completed = subprocess.run(
        [*cli_command(), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_environment(),
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"nbexp {' '.join(args)} failed: {completed.stderr.decode()[-500:]}")


def widget_first_page(root: Path) -> str:
    """What the table widget computes before its first draw (`%experiments`, over the
    kernel's store handle): its columns, the total, the first page, best values, stale
    marks, and the page's HTML. Returns the page text ("rows 1–50 of N")."""
    from nbexp.store import open_store
    from nbexp.widgets import render
    from nbexp.widgets.model import TableModel

    model = TableModel(open_store(root), page_size=PAGE_SIZE)
    model.discover(full=True)
    model.load()
    columns = model.visible()
    render.page_html(columns, model.rows, render.widths(columns, model.rows), model.marks())
    return model.page_text()


def print_profile(title: str, function, top: int = 15) -> None:
    profiler = cProfile.Profile()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        profiler.enable()
        function()
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    print(f"\n--- cProfile: {title} (top {top} by cumulative time) ---")
    print(out.getvalue().rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 records instead of 100,000")
    parser.add_argument("--records", type=int, default=None, help="how many records to write")
    parser.add_argument(
        "--via-save", action="store_true", help="write every record with Store.save (slow)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the listings (in process)")
    parser.add_argument(
        "--dir",
        default=None,
        help="where to put the temp store (default: /dev/shm when it is a tmpfs with room)",
    )
    args = parser.parse_args()
    count = args.records or (20_000 if args.quick else 100_000)
    load_before = os.getloadavg()[0]

    workdir = Path(tempfile.mkdtemp(prefix="nbexp-bench-list-", dir=args.dir or default_dir()))
    root = workdir / ".nbexp"
    os.environ["NBEXP_STORE"] = str(root)
    rows: list[tuple[str, str, str, str, str]] = []
    try:
        import nbexp
        from nbexp.store import open_store

        started = time.perf_counter()
        store = open_store()
        print(f"writing {count:,} records to {root} ...", flush=True)
        setup = populate(store, count, args.via_save)
        indexed = store.count()
        matching = store.count(FILTER)
        size = store_size(root)

        import pandas  # noqa: F401  (imported here so the first in-process call is not charged)

        print(
            f"setup done in {setup:.0f} s (+{time.perf_counter() - started - setup:.0f} s to "
            "count and size the store); timing listings ...",
            flush=True,
        )
        begin, begin_cpu = time.perf_counter(), cpu_seconds()
        frame = nbexp.experiments()
        first_call, first_cpu = time.perf_counter() - begin, cpu_seconds() - begin_cpu
        if len(frame) != indexed:
            print(f"NOTE: experiments() returned {len(frame)} rows, index holds {indexed}")
        rows.append(
            (
                f"setup: write {count:,} records" + (" (Store.save)" if args.via_save else ""),
                f"{setup:.3f}",
                "",
                "",
                f"{setup / count * 1e6:.0f} us/record; store {size / 1e6:.0f} MB on disk",
            )
        )
        rows.append(
            (
                "nbexp.experiments() first call",
                f"{first_call:.3f}",
                f"{first_cpu:.3f}",
                "1",
                f"{len(frame):,} rows x {frame.shape[1]} cols",
            )
        )

        untimed: list[tuple[float, float]] = []

        def measure(label: str, function, note: str = "", target: bool = True) -> None:
            best, times, cpu = best_of(function)
            if untimed:  # `after_a_change`: take its untimed tag change back out
                cpu -= min(c for c, _ in untimed)
                times = [t - w for t, (_, w) in zip(times, untimed, strict=True)]
                best = min(times)
                untimed.clear()
            verdict = ("met" if best <= TARGET else "MISSED") if target else "reference"
            shown = f"median {statistics.median(times):.3f} s; " if len(times) > 1 else ""
            rows.append(
                (
                    label,
                    f"{best:.3f}",
                    f"{cpu:.3f}",
                    str(len(times)),
                    f"{note}{shown}target <= {TARGET:g} s: {verdict}"
                    if target
                    else f"{note}reference",
                )
            )
            print(f"  {label}: {best:.3f} s (cpu {cpu:.3f} s)", flush=True)

        store_arg = ["--store", str(root)]
        measure("nbexp.experiments()", lambda: nbexp.experiments())
        newest = store.rows(limit=1)[0]["id"]
        toggles = iter(range(1_000_000))

        def toggle_a_tag() -> None:
            """A tag added or taken off (not timed): the index changed, so the cached
            listing is patched and every kept text of `nbexp list` made again."""
            paused = cpu_seconds(), time.perf_counter()
            if next(toggles) % 2:
                store.remove_tag(newest, "bench-toggle")
            else:
                store.add_tag(newest, "bench-toggle")
            untimed.append((cpu_seconds() - paused[0], time.perf_counter() - paused[1]))

        def after_a_change() -> None:
            toggle_a_tag()
            nbexp.experiments()

        measure(
            "nbexp.experiments() after a change",
            after_a_change,
            note="cache patched with the changed row, written again; tag change not counted; ",
        )
        measure(
            f"nbexp.experiments({FILTER!r})",
            lambda: nbexp.experiments(FILTER),
            note=f"{matching:,} rows; ",
        )
        measure(
            "widget: first page (in process, new model)",
            lambda: widget_first_page(root),
            note=f"{widget_first_page(root)}; ",
        )
        measure(
            "CLI: nbexp --version (start-up only)", lambda: run_cli(["--version"]), target=False
        )
        measure(
            "CLI: nbexp list --limit 1",
            lambda: run_cli([*store_arg, "list", "--limit", "1"]),
            target=False,
        )
        for listed in (["--format", "csv"], [], [FILTER]):  # each makes and keeps its text
            run_cli([*store_arg, "list", *listed])
        measure(
            "CLI: nbexp list --format csv",
            lambda: run_cli([*store_arg, "list", "--format", "csv"]),
        )
        measure("CLI: nbexp list (table)", lambda: run_cli([*store_arg, "list"]))
        measure(
            f"CLI: nbexp list {FILTER!r}",
            lambda: run_cli([*store_arg, "list", FILTER]),
            note=f"{matching:,} rows; ",
        )

        def change_untimed(change) -> None:
            """A change between two listings (not timed), as `toggle_a_tag` notes it."""
            paused = cpu_seconds(), time.perf_counter()
            change()
            untimed.append((cpu_seconds() - paused[0], time.perf_counter() - paused[1]))

        serials = iter(range(count, count + 1_000_000))
        victims = iter(store.rows(offset=1000, limit=1000))

        def remove_one() -> None:
            store.delete(next(victims)["id"])

        def record_one() -> None:
            store.save(make_experiment(next(serials))[0])

        after = "kept text patched with the rows changed; change not counted; "
        for label, listed in (("(table)", []), ("--format csv", ["--format", "csv"])):
            measure(
                f"CLI: nbexp list {label} right after a tag change",
                lambda listed=listed: (toggle_a_tag(), run_cli([*store_arg, "list", *listed])),
                note=after,
            )
        measure(
            f"CLI: nbexp list {FILTER!r} right after a tag change",
            lambda: (toggle_a_tag(), run_cli([*store_arg, "list", FILTER])),
            note=after,
        )
        measure(
            "CLI: nbexp list (table) right after a removal",
            lambda: (change_untimed(remove_one), run_cli([*store_arg, "list"])),
            note=after,
        )
        measure(
            "CLI: nbexp list (table) right after a new record",
            lambda: (change_untimed(record_one), run_cli([*store_arg, "list"])),
            note=after,
        )

        if args.profile:
            from nbexp import cli

            print_profile("nbexp.experiments()", lambda: nbexp.experiments())
            print_profile(
                "nbexp list --format csv (cli.main in process)",
                lambda: cli.main([*store_arg, "list", "--format", "csv"]),
            )
            print_profile(
                "nbexp list (table, cli.main in process)",
                lambda: cli.main([*store_arg, "list"]),
            )
            print_profile("the widget's first page", lambda: widget_first_page(root))
        store.close()
    finally:
        cleanup = time.perf_counter()
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"temp store removed in {time.perf_counter() - cleanup:.0f} s", flush=True)

    print(f"whole bench: {time.perf_counter() - started:.0f} s")
    print()
    print(
        f"listing bench — {count:,} records ({indexed:,} indexed), best of 3 "
        f"(1 run when over {SLOW_CUTOFF:.0f} s), "
        f"{cores()} cores, Python {sys.version.split()[0]}; "
        f"load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'best s':>8}  {'cpu s':>7}  {'runs':>4}  note")
    for name, seconds, cpu, runs, note in rows:
        print(f"{name:<{width}}  {seconds:>8}  {cpu:>7}  {runs:>4}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
