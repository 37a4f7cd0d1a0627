"""Four kernels recording 100 experiments each into one store, while another process lists
it, deletes throwaway experiments and runs `nbexp gc --yes` over and over (SPEC §2: "any
number of kernels and CLI processes may use one store at once").

The writers are real IPython shells recording through the `%%experiment` magic. Every tenth
run each writer also records a throwaway experiment whose content repeats, and deletes the
variable; the janitor removes those experiments and gc deletes their objects while the
writers run — so a writer must notice gc's work instead of trusting its memory of which
objects are stored.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

from nbexp.restorer import restore_into
from nbexp.store import Store
from tests.faults import figures
from tests.faults.checks import assert_fsck_clean, check_layout, leftover_temps, listed, nbexp
from tests.faults.workers import REPO, expected_a, worker_env
from tests.test_store import make_experiment

WRITERS = 4
RUNS = 100
PROBLEMS = ("database is locked", "OperationalError", "Traceback", "NOT recorded", "Error")


def test_four_kernels_and_a_janitor(tmp_path: Path) -> None:
    root = tmp_path / "shared" / ".nbexp"  # created by the racing processes themselves
    go, stop = tmp_path / "go", tmp_path / "stop"
    env = worker_env(NBEXP_STORE=str(root))
    work = tmp_path / "work"
    work.mkdir()

    def spawn(*argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.workers", *argv],
            cwd=REPO,
            env={**env, "PYTHONPATH": env["PYTHONPATH"]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    writers = [spawn("writer", str(w), str(RUNS), str(go)) for w in range(1, WRITERS + 1)]
    janitor = spawn("janitor", str(root), str(go), str(stop))
    time.sleep(3)  # the writers import IPython, numpy and nbexp before they wait for `go`
    go.touch()
    began = time.monotonic()
    results = []
    try:
        for process in writers:
            out, err = process.communicate(timeout=600)
            results.append((process.returncode, out, err))
        elapsed = time.monotonic() - began
        stop.touch()
        janitor_out, janitor_err = janitor.communicate(timeout=300)
    finally:
        for process in (*writers, janitor):
            if process.poll() is None:
                process.kill()

    for code, out, err in results:
        assert code == 0, out[-3000:] + err[-3000:]
        for problem in PROBLEMS:  # IPython prints tracebacks on stdout
            found = [line for line in (out + err).splitlines() if problem in line]
            assert not found, (problem, found[:5], err[-3000:])
        assert out.count("✓ recorded w") == RUNS, out[-3000:]
    assert janitor.returncode == 0, janitor_out + janitor_err
    for problem in PROBLEMS:
        assert problem not in janitor_err, janitor_err
    work_done = json.loads(janitor_out.strip().splitlines()[-1])

    expected = {f"w{w}-{i}" for w in range(1, WRITERS + 1) for i in range(RUNS)}
    names = listed(root)
    assert set(names) == expected  # every throwaway removed, none of the 400 lost
    code, out, err = nbexp(root, "fsck", fresh_process=True)
    assert code == 0 and out.startswith("ok:"), out + err
    assert_fsck_clean(root)
    check_layout(root)
    assert leftover_temps(root) == 0  # nobody was killed: nothing may be left in tmp/

    # every experiment's state restores; a sample is compared value by value
    store = Store(root)
    try:
        sample = random.Random(0).sample(sorted(expected), 24)
        for name in sample:
            worker, step = (int(part) for part in name[1:].split("-"))
            experiment = store.get(name)
            assert experiment.params == {"worker": worker, "step": step}
            namespace: dict = {}
            report = restore_into(namespace, store, experiment)
            assert not report.skipped, report.skipped
            assert namespace["shared"].sum() == sum(range(300_000))
            assert namespace["score"] == float(sum(range(300_000))) + step
            last_own = step - step % 3
            assert (namespace["mine"] == worker * 1000.0 + last_own).all()
            assert "junk" not in namespace
        assert store.reindex() == WRITERS * RUNS
    finally:
        store.close()

    figures.report("concurrency: experiments recorded by 4 kernels at once", len(names))
    figures.report(
        "concurrency: throughput (experiments/s, 4 kernels, 2 cores)",
        round(WRITERS * RUNS / elapsed, 1),
    )
    figures.report(
        "concurrency: janitor lists / rm / gc runs (objects gc deleted)",
        f"{work_done['lists']} / {work_done['removed']} / {work_done['gcs']} "
        f"({work_done['deleted']})",
    )
    assert work_done["gcs"] >= 5 and work_done["deleted"] > 0, work_done


PACK_RUNS = 30


def test_gc_repacks_while_a_kernel_writes_packs(tmp_path: Path) -> None:
    """A kernel writes packs (`tmp-p<step>`: 40 new objects) and records `keep-<step>`
    naming half of them, while a janitor removes every `tmp-` run and runs `nbexp gc
    --yes` over and over: gc rewrites each pack's live half into a new pack and deletes the
    old one while the kernel dedups against it. No record may end up naming an object gc
    took away; afterwards every pack holds only live objects."""
    root = tmp_path / "shared" / ".nbexp"
    go, stop = tmp_path / "go", tmp_path / "stop"
    env = worker_env(NBEXP_STORE=str(root))

    def spawn(*argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.workers", *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    packer = spawn("packer", str(PACK_RUNS), str(go))
    janitor = spawn("janitor", str(root), str(go), str(stop))
    time.sleep(3)
    go.touch()
    try:
        out, err = packer.communicate(timeout=600)
        stop.touch()
        janitor_out, janitor_err = janitor.communicate(timeout=300)
    finally:
        for process in (packer, janitor):
            if process.poll() is None:
                process.kill()
    assert packer.returncode == 0, out[-3000:] + err[-3000:]
    for problem in PROBLEMS:
        found = [line for line in (out + err).splitlines() if problem in line]
        assert not found, (problem, found[:5], err[-3000:])
    assert janitor.returncode == 0, janitor_out + janitor_err
    work_done = json.loads(janitor_out.strip().splitlines()[-1])

    assert set(listed(root)) == {f"keep-{step}" for step in range(PACK_RUNS)}
    assert_fsck_clean(root, fresh_process=True)
    check_layout(root)
    store = Store(root)
    try:
        for step in range(PACK_RUNS):
            namespace: dict = {}
            report = restore_into(namespace, store, store.get(f"keep-{step}"))
            assert not report.skipped, report.skipped
            assert "b" not in namespace and namespace["step"] == step
            assert all(
                (x == y).all() for x, y in zip(namespace["a"], expected_a(step), strict=True)
            )
        assert store.gc() == ([], 0)  # the last gc left no garbage in any pack
        packed = sum(len(store._packs.entries(name)) for name in store._packs.names())
    finally:
        store.close()
    assert packed >= 20 * PACK_RUNS  # every `a` is packed, none lost
    figures.report(
        "concurrency: gc repacking beside a kernel writing packs (runs / gc runs / objects)",
        f"{PACK_RUNS} / {work_done['gcs']} / {work_done['deleted']}",
    )
    assert work_done["gcs"] >= 3 and work_done["deleted"] > 0, work_done


# Six `nbexp list` processes released at the same instant onto a store that does not exist.
OPENER = """
import os, sys, time
from nbexp.cli import main
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
sys.exit(main(["--store", sys.argv[1], "list"]))
"""


def test_processes_creating_one_store_at_once(tmp_path: Path) -> None:
    """The first use of a store by several processes at once: each gets a working index.
    (Switching a new index to WAL mode did not wait for other processes: ~1 in 4 such
    races failed with "database is locked", reported as an unreadable index.)"""
    failures = []
    for trial in range(10):
        root, go = tmp_path / f"store{trial}" / ".nbexp", tmp_path / f"go{trial}"
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(root), str(go)],
                cwd=REPO,
                env=worker_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        time.sleep(0.5)  # all imported and waiting
        go.touch()
        for opener in openers:
            out, err = opener.communicate(timeout=120)
            if opener.returncode != 0 or err:
                failures.append(err.strip() or out)
    figures.report("concurrency: processes creating one store at once (10 x 6)", 60 - len(failures))
    assert not failures, failures[:3]


# A process that keeps the index to itself (an exclusive SQLite lock) until it is killed.
LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA locking_mode = EXCLUSIVE")
connection.execute("BEGIN EXCLUSIVE")
connection.execute("SELECT COUNT(*) FROM experiments").fetchall()
print("locked", flush=True)
time.sleep(600)
"""

# `nbexp ARGV...` waiting 0.3 s, not 60, for another process's lock on the index.
IMPATIENT = """
import sys
from nbexp.store import index
index.BUSY_TIMEOUT = 0.3
from nbexp.cli import main
sys.exit(main(["--store", *sys.argv[1:]]))
"""


def test_an_index_locked_by_another_process_is_not_called_damaged(tmp_path: Path) -> None:
    """A lock held past the busy timeout is said to be one — retry once the other process
    is done — as one line with exit 1; not "unreadable; run `nbexp reindex`", and reindex
    does not throw the index away under the process holding it. (Opening the index used to
    report any database error, a lock timeout too, as damage.)"""
    root = tmp_path / ".nbexp"
    code, _, err = nbexp(root, "list")
    assert code == 0, err
    store = Store(root)
    make_experiment(store, "kept")
    store.close()
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(root / "index.sqlite")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        for argv in (["list"], ["reindex"], ["rm", "kept"]):
            done = subprocess.run(
                [sys.executable, "-c", IMPATIENT, str(root), *argv],
                capture_output=True,
                text=True,
                cwd=REPO,
                env=worker_env(),
                timeout=60,
            )
            lines = done.stderr.splitlines()
            assert done.returncode == 1 and len(lines) == 1, done
            assert lines[0].startswith("nbexp: ") and "is locked" in lines[0], lines
            assert "try again" in lines[0] and "(database is locked)" in lines[0], lines
            assert "reindex" not in lines[0] and "unreadable" not in lines[0], lines
        assert (root / "index.sqlite").exists()
    finally:
        locker.kill()  # SIGKILL: its lock goes with it
        locker.wait()
    assert set(listed(root)) == {"kept"}
    assert_fsck_clean(root)
    figures.report("concurrency: commands told the index is locked (not damaged)", 3)
