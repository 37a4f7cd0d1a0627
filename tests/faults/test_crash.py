"""SIGKILL at random moments (SPEC §2: "a crash at any moment leaves every earlier experiment
intact and never leaves a half-written record visible"; §9 for remotes).

Kernels are real IPython shells running the real `%%experiment` magic (forked warm from a
zygote, tests/faults/workers.py); gc, push and rm are real `nbexp` processes. Each is killed with
SIGKILL after a random delay within the operation's measured duration, or — where the
interesting part is short beside process start-up — after a random number of its own
deletions or uploads (counted by a wrapper around the killed process; nbexp has no hooks).
After every kill:

- `nbexp fsck` exits 0 and reports nothing (leftover temp files in `tmp/` are allowed);
- `nbexp list` shows every experiment that finished, plus at most the one in flight, which
  must then be complete;
- those experiments load and their state restores to the values the kernel had;
- the next record works (the next kernel records, or the same kernel records again);
- a killed `nbexp rm` leaves its experiment fully present or fully gone;
- `nbexp gc --yes` removes the temp files killed processes left in `tmp/` once they are old,
  and never one a live process may still use.

The schedule is seeded: NBEXP_FAULT_SEED=N reproduces it (the seed is printed with the
suite's figures). NBEXP_FAULTS_LONG=1 (scripts/test_faults_long.sh) runs the `faults_long`
cases: hundreds of kills.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nbexp.hashing import hash_file
from nbexp.record import Experiment
from nbexp.remote import add_remote, pull, push
from nbexp.restorer import restore_into
from nbexp.show import human_bytes
from nbexp.store import DELETING_SUFFIX, TEMP_GRACE_SECONDS, UNINDEXED_SUFFIX, Store
from tests.faults import figures
from tests.faults.checks import (
    assert_fsck_clean,
    assert_restores,
    check_layout,
    forget_stores,
    leftover_temps,
    listed,
    nbexp,
    orphan_packs,
    step_of,
)
from tests.faults.workers import (
    REPO,
    Zygote,
    expected_a,
    expected_b,
    pack_cell,
    packed_cell,
    record_cell,
    worker_env,
)

try:  # the moto S3 server fixture, shared with tests/test_remote_s3.py
    from tests.test_remote_s3 import (  # noqa: F401 (fixtures)
        DUMMY_CREDENTIALS,
        bucket,
        moto_endpoint,
    )

    HAVE_S3 = True
except pytest.skip.Exception:
    DUMMY_CREDENTIALS = {}
    HAVE_S3 = False

SEED = int(os.environ.get("NBEXP_FAULT_SEED") or random.SystemRandom().randrange(2**31))
LONG = os.environ.get("NBEXP_FAULTS_LONG") == "1"
KILLS = {
    "default": {"record": 30, "snapshot": 16, "pack": 16, "gc": 12, "push": 12, "s3": 4, "rm": 12},
    "long": {"record": 180, "snapshot": 110, "pack": 80, "gc": 45, "push": 48, "s3": 12, "rm": 60},
}
LANE = 30  # kill rounds per store: then a fresh store, so fsck's cost per round stays flat
PUSH_LANE = 16  # push rounds per store and remote
# gc rounds: arrays in `junk`, one loose object each, for gc to delete: 8 KiB each (buffers
# under 4 KiB stay inside their pickle) and 16 of them (a batch of more goes into a pack,
# which the pack rounds below kill gc inside)
JUNK = 16
JUNK_FLOATS = 1024

SCALES = [
    pytest.param("default", id="default"),
    pytest.param(
        "long",
        id="long",
        marks=[
            pytest.mark.faults_long,
            pytest.mark.timeout(1800),
            pytest.mark.skipif(
                not LONG,
                reason="hundreds of kills: NBEXP_FAULTS_LONG=1 (bash scripts/test_faults_long.sh)",
            ),
        ],
    ),
]

_TALLY: Counter[str] = Counter()


def _tally(figure: str, count: int = 1) -> None:
    _TALLY[figure] += count
    figures.report(figure, _TALLY[figure])


figures.report("crash: seed (NBEXP_FAULT_SEED to repeat)", SEED)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    folder = tmp_path_factory.mktemp("zygote")
    started = Zygote(folder / "scratch" / ".nbexp")
    yield started
    started.close()


@pytest.fixture(autouse=True)
def _no_cached_stores() -> Iterator[None]:
    forget_stores()
    yield
    forget_stores()


def _rng(test: str, scale: str) -> random.Random:
    print(f"NBEXP_FAULT_SEED={SEED}")
    return random.Random(f"{SEED}:{test}:{scale}")


# -- (a), (b): kernels killed while recording ------------------------------------------


@dataclass
class Lane:
    """One store and the experiments known to have finished in it."""

    root: Path
    work: Path
    log: Path
    kind: str
    known: set[str] = field(default_factory=set)
    rounds: int = 0

    @classmethod
    def make(cls, base: Path, kind: str, number: int) -> Lane:
        work = base / f"{kind}-lane{number}"
        work.mkdir(parents=True)
        return cls(root=work / ".nbexp", work=work, log=work / "kernel.log", kind=kind)


def _events_until(zygote: Zygote, child: int, wanted: Any, deadline: float) -> list[dict]:
    """Events of `child` up to the first one `wanted(event)` accepts."""
    seen: list[dict] = []
    while True:
        event = zygote.next_event(child, deadline - time.monotonic())
        if event is None:
            raise AssertionError(f"kernel {child} went quiet; events so far: {seen[-5:]}")
        seen.append(event)
        if event["event"] == "done" and not (event["success"] and event["recorded"]):
            raise AssertionError(f"a run failed or was not recorded: {event}")
        if wanted(event):
            return seen


def _calibrate(zygote: Zygote, lane: Lane, runs: int = 3) -> dict[str, float]:
    """Let a kernel record `runs` experiments undisturbed; how long the parts took."""
    lane.rounds += 1
    child = zygote.fork(
        "loop",
        lane.root,
        lane.work,
        lane.log,
        kind=lane.kind,
        prefix=f"{lane.kind}-r{lane.rounds}-calm",
        runs=runs,
    )
    events = _events_until(
        zygote,
        child,
        lambda e: e["event"] == "done" and e["step"] == runs - 1,
        time.monotonic() + 120,
    )
    end = zygote.reap(child)
    assert end["code"] == 0, lane.log.read_text()[-3000:]
    done = [e for e in events if e["event"] == "done"]
    bodies = {e["step"]: e["t"] for e in events if e["event"] == "body"}
    lane.known |= {e["name"] for e in done}
    timing = {"run": statistics.median(e["seconds"] for e in done)}
    if bodies:
        timing["record"] = statistics.median(e["t"] - bodies[e["step"]] for e in done)
    return timing


def _kill_recording_kernel(
    zygote: Zygote, lane: Lane, rng: random.Random, timing: dict[str, float]
) -> tuple[set[str], set[str], str]:
    """One round: a kernel records until SIGKILL; returns (finished, in flight, phase)."""
    lane.rounds += 1
    child = zygote.fork(
        "loop", lane.root, lane.work, lane.log, kind=lane.kind, prefix=f"{lane.kind}-r{lane.rounds}"
    )
    deadline = time.monotonic() + 120
    if lane.kind == "record":  # any moment of a run: body, snapshot, record, index
        events = _events_until(zygote, child, lambda e: e["event"] == "started", deadline)
        kill_at = events[-1]["t"] + rng.uniform(0, 2.5 * timing["run"])
    else:  # inside the snapshot: after the body's last line, within the recording's length
        target = rng.randint(0, 1)
        events = _events_until(
            zygote, child, lambda e: e["event"] == "body" and e["step"] == target, deadline
        )
        kill_at = events[-1]["t"] + rng.uniform(0, timing["record"])
    time.sleep(max(0.0, kill_at - time.monotonic()))
    end = zygote.kill(child)
    events += zygote.drain(child)
    assert end["signal"] == signal.SIGKILL, (end, lane.log.read_text()[-3000:])
    for event in events:
        assert event["event"] != "done" or (event["success"] and event["recorded"]), event
    finished = {e["name"] for e in events if e["event"] == "done"}
    started = {e["name"] for e in events if e["event"] == "started"}
    in_flight = started - finished
    assert len(in_flight) <= 1
    phase = "between runs"
    if in_flight:  # the body signals its end: after it, nbexp snapshots, writes, indexes
        last = [e["event"] for e in events if e["event"] in ("started", "body", "done")][-1]
        phase = "running the body" if last == "started" else "recording (after the body)"
    return finished, in_flight, phase


def _tally_orphans(root: Path) -> None:
    """Count kills that landed between a record's file and its index row: the record is
    there, its note in tmp/ too; the next process to open the store indexes it."""
    notes = [p for p in (root / "tmp").glob(f"*{UNINDEXED_SUFFIX}")]
    ids = {p.name[: -len(UNINDEXED_SUFFIX)] for p in notes}
    orphans = [i for i in ids if (root / "records" / i[:2] / f"{i}.json").exists()]
    if orphans:
        _tally("crash: kills between a record and its index row (indexed at the next open)")
    if orphan_packs(root):
        _tally("crash: kills between a pack and its index (a pack naming nothing, left for gc)")


def _verify_after_kill(
    lane: Lane, finished: set[str], in_flight: set[str], rng: random.Random, *, full: bool
) -> None:
    _tally_orphans(lane.root)
    assert_fsck_clean(lane.root, fresh_process=full)
    _tally("crash: fsck runs after kills, all clean")
    names = set(listed(lane.root))
    expected = lane.known | finished
    assert expected <= names, f"finished experiments missing: {sorted(expected - names)}"
    visible_in_flight = names - expected
    assert visible_in_flight <= in_flight, f"unexpected records: {sorted(visible_in_flight)}"
    if visible_in_flight:
        _tally("crash: in-flight runs visible after the kill (verified complete)")
    store = Store(lane.root)
    try:
        older = sorted(lane.known)
        check = finished | visible_in_flight | set(rng.sample(older, min(2, len(older))))
        for name in sorted(check):
            assert_restores(store, name, step_of(name), lane.kind)
        _tally(
            "crash: experiments verified intact (loaded, state restored and compared)", len(check)
        )
    finally:
        store.close()
    lane.known = names
    if full:
        check_layout(lane.root)


def _close_lane(zygote: Zygote, lane: Lane) -> None:
    """After the last kill: the next kernel records; everything restores; reindex agrees."""
    _calibrate(zygote, lane, runs=1)
    assert_fsck_clean(lane.root, fresh_process=True)
    store = Store(lane.root)
    try:
        for name in sorted(lane.known):
            assert_restores(store, name, step_of(name), lane.kind)
        _tally(
            "crash: experiments verified intact (loaded, state restored and compared)",
            len(lane.known),
        )
    finally:
        store.close()
    check_layout(lane.root)
    code, out, err = nbexp(lane.root, "reindex")
    assert code == 0 and out.startswith(f"indexed {len(lane.known)} experiment"), out + err
    _tally(
        "crash: leftover temp files in tmp/ (harmless, never records)", leftover_temps(lane.root)
    )


def _kill_kernels(
    zygote: Zygote, tmp_path: Path, kind: str, kills: int, rng: random.Random
) -> Counter[str]:
    phases: Counter[str] = Counter()
    lane = Lane.make(tmp_path, kind, 0)
    timing = _calibrate(zygote, lane)
    for number in range(kills):
        if number and number % LANE == 0:
            _close_lane(zygote, lane)
            shutil.rmtree(lane.work)  # verified: its hundreds of MB are not needed any more
            lane = Lane.make(tmp_path, kind, number // LANE)
            timing = _calibrate(zygote, lane)
        finished, in_flight, phase = _kill_recording_kernel(zygote, lane, rng, timing)
        phases[phase] += 1
        doing = {"record": "recording", "snapshot": "snapshotting", "pack": "writing a pack"}
        _tally(f"crash: SIGKILLs of a kernel while {doing[kind]}")
        _verify_after_kill(lane, finished, in_flight, rng, full=number % 10 == 9)
    _close_lane(zygote, lane)
    return phases


@pytest.mark.parametrize("scale", SCALES)
def test_kills_while_recording(zygote: Zygote, tmp_path: Path, scale: str) -> None:
    """(a) Kernels killed at any moment of a run: executing the body, snapshotting its
    state (a few MB of new arrays and frames per run), writing the record, indexing it."""
    rng = _rng("record", scale)
    phases = _kill_kernels(zygote, tmp_path, "record", KILLS[scale]["record"], rng)
    figures.report("crash: where recording kills landed", dict(phases))


@pytest.mark.parametrize("scale", SCALES)
def test_kills_while_snapshotting(zygote: Zygote, tmp_path: Path, scale: str) -> None:
    """(b) Kernels killed inside the state snapshot: after the body's last line, within the
    measured length of the recording (6 MB of new chunks, shared references, a notebook
    class, an unchanged array)."""
    rng = _rng("snapshot", scale)
    phases = _kill_kernels(zygote, tmp_path, "snapshot", KILLS[scale]["snapshot"], rng)
    figures.report("crash: where snapshotting kills landed", dict(phases))
    assert phases["recording (after the body)"] >= KILLS[scale]["snapshot"] // 3, phases


@pytest.mark.parametrize("scale", SCALES)
def test_kills_while_packing(zygote: Zygote, tmp_path: Path, scale: str) -> None:
    """(b') Kernels killed inside a snapshot written as a pack file (48 new objects of
    200 kB): while the pack fills in tmp/, while it is fsynced, between the pack's rename
    and its index's. No record names an object of a pack that did not become visible, fsck
    stays clean, and `nbexp gc --yes` later removes a pack left without its index."""
    rng = _rng("pack", scale)
    phases = _kill_kernels(zygote, tmp_path, "pack", KILLS[scale]["pack"], rng)
    figures.report("crash: where pack-writing kills landed", dict(phases))
    assert phases["recording (after the body)"] >= KILLS[scale]["pack"] // 3, phases


def test_gc_removes_a_pack_left_without_its_index(zygote: Zygote, tmp_path: Path) -> None:
    """A kernel killed right after renaming a pack into place, before its index: the pack
    names nothing (the run is not recorded), fsck is clean, the same run records again, and
    `nbexp gc --yes` deletes the orphan once it is old — never a pack with an index."""
    lane = Lane.make(tmp_path, "pack", 0)
    _calibrate(zygote, lane, runs=1)
    # the kernel dies at its first os.replace of a `.pack` into packs/: SIGKILL right after
    hook = (
        "import os, signal\n"
        "_real_replace = os.replace\n"
        "def _replace(source, target, *a, **k):\n"
        "    _real_replace(source, target, *a, **k)\n"
        "    if str(target).endswith('.pack'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = _replace\n"
    )
    child = zygote.fork("serve", lane.root, lane.work, lane.log)
    _ran(zygote.command(child, cell=hook))
    zygote._send({"op": "send", "child": child, "command": {"cell": pack_cell("pack-orphan", 1)}})
    end = zygote.reap(child)
    assert end["signal"] == signal.SIGKILL, (end, lane.log.read_text()[-3000:])
    assert orphan_packs(lane.root) == 1
    assert_fsck_clean(lane.root, fresh_process=True)
    assert "pack-orphan" not in listed(lane.root)
    _tally("crash: kills between a pack and its index (a pack naming nothing, left for gc)")
    _calibrate(zygote, lane, runs=1)  # the next kernel records
    code, out, err = nbexp(lane.root, "gc", "--yes")
    assert code == 0 and orphan_packs(lane.root) == 1, out + err  # too young to be collected
    old = time.time() - TEMP_GRACE_SECONDS - 60
    for pack in (lane.root / "packs").glob("*.pack"):
        os.utime(pack, (old, old))
    code, out, err = nbexp(lane.root, "gc", "--yes")
    assert code == 0 and orphan_packs(lane.root) == 0, out + err
    assert_fsck_clean(lane.root, fresh_process=True)
    store = Store(lane.root)
    try:
        for name in sorted(lane.known):
            assert_restores(store, name, step_of(name), "pack")
    finally:
        store.close()
    check_layout(lane.root)


# -- (c): nbexp gc killed while a kernel keeps recording -----------------------------------

# `nbexp gc --yes`, killed by SIGKILL right after its K-th deletion of an object file.
GC_KILLED_AFTER = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    from nbexp.cli import main

    left = int(sys.argv[2])
    real_unlink = pathlib.Path.unlink

    def unlink(self, *args, **kwargs):
        global left
        real_unlink(self, *args, **kwargs)
        if "/objects/" in str(self):
            left -= 1
            if left == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    pathlib.Path.unlink = unlink
    sys.exit(main(["--store", sys.argv[1], "gc", "--yes"]))
    """
)


def _gc_killed_at_random(root: Path, env: dict[str, str], after: float) -> int:
    """`nbexp gc --yes` in a new process, SIGKILLed `after` seconds in; its return code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nbexp.cli", "--store", str(root), "gc", "--yes"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(after)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    return process.returncode


def _gc_killing_itself(script: str, root: Path, env: dict[str, str], steps: int) -> int:
    """A gc run by `script`, which SIGKILLs itself after `steps` of its steps; return code."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(root), str(steps)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.communicate(timeout=120)
    return process.returncode


def _junk_cell(name: str, content: int) -> str:
    return (
        f"%%experiment {name} -t junk\n"
        f"junk = [np.full({JUNK_FLOATS}, float(k + 1000 * {content})) for k in range({JUNK})]\n"
        "score = 1.0\n"
    )


def _expected_junk(content: int) -> list[Any]:
    import numpy as np

    return [np.full(JUNK_FLOATS, float(k + 1000 * content)) for k in range(JUNK)]


def _ran(answer: dict[str, Any], recorded: str | None = None) -> dict[str, Any]:
    assert answer["event"] == "ran" and answer["success"], answer
    assert "NOT recorded" not in answer["stderr"] and "Traceback" not in answer["stdout"], answer
    if recorded:
        assert f"✓ recorded {recorded} " in answer["stdout"], answer
    return answer


@pytest.mark.parametrize("scale", SCALES)
def test_kills_during_gc(zygote: Zygote, tmp_path: Path, scale: str) -> None:
    """(c) `nbexp gc --yes` killed while it deletes what removed experiments left behind,
    beside a kernel that stays alive: the kernel then records the same content again, which
    it believes is still stored — it must notice gc's work, or its record would name
    objects gc deleted."""
    rng = _rng("gc", scale)
    work = tmp_path / "gc"
    work.mkdir()
    root = work / ".nbexp"
    kernel = zygote.fork("serve", root, work, work / "kernel.log")
    keepers = [f"keep-{k}" for k in range(3)]
    for step, name in enumerate(keepers):
        _ran(zygote.command(kernel, cell=record_cell(name, step)), recorded=name)
    env = worker_env()

    def make_garbage(name: str, content: int) -> None:
        _ran(zygote.command(kernel, cell=_junk_cell(name, content)), recorded=name)
        _ran(zygote.command(kernel, cell="del junk"))
        for old in [n for n in listed(root) if n.startswith("junk-")]:
            code, _, err = nbexp(root, "rm", old)
            assert code == 0, err

    make_garbage("junk-calibrate", 9)
    timings = []
    for _ in range(3):  # a dry run does all a gc does but delete
        began = time.monotonic()
        code, out, err = nbexp(root, "gc", fresh_process=True)
        timings.append(time.monotonic() - began)
        assert code == 0 and "would be deleted" in out, out + err
    duration = statistics.median(timings)
    code, out, err = nbexp(root, "gc", "--yes")
    assert code == 0 and out.startswith("deleted "), out + err

    outcomes: Counter[str] = Counter()
    kills = KILLS[scale]["gc"]
    for number in range(kills):
        content = number % 2
        make_garbage(f"junk-{number}", content)
        if number % 2 == 0:  # any moment of the gc process
            returncode = _gc_killed_at_random(root, env, rng.uniform(0, duration))
            how = "random moment"
        else:  # inside its deletions
            returncode = _gc_killing_itself(GC_KILLED_AFTER, root, env, rng.randint(1, JUNK))
            how = "after its k-th deletion"
        if returncode == -signal.SIGKILL:
            outcomes[f"killed at a {how}" if how == "random moment" else f"killed {how}"] += 1
            _tally("crash: SIGKILLs of `nbexp gc --yes`")
        else:
            assert returncode == 0, returncode
            outcomes["finished before the kill"] += 1

        assert_fsck_clean(root, fresh_process=number % 5 == 4)
        _tally("crash: fsck runs after kills, all clean")
        assert set(listed(root)) == set(keepers)
        again = f"junk-{number}-again"  # the next record: content gc may just have deleted
        _ran(zygote.command(kernel, cell=_junk_cell(again, content)), recorded=again)
        assert_fsck_clean(root)
        _tally("crash: fsck runs after kills, all clean")
        store = Store(root)
        try:
            for step, name in enumerate(keepers):
                assert_restores(store, name, step, "record")
            namespace: dict[str, Any] = {}
            restore_into(namespace, store, store.get(again), ["junk"])
            expected = _expected_junk(content)
            assert all((a == b).all() for a, b in zip(namespace["junk"], expected, strict=True))
            _tally(
                "crash: experiments verified intact (loaded, state restored and compared)",
                len(keepers) + 1,
            )
        finally:
            store.close()
        _ran(zygote.command(kernel, cell="del junk"))
    zygote.kill(kernel)
    check_layout(root)
    figures.report("crash: gc kill outcomes", dict(outcomes))
    assert outcomes["finished before the kill"] <= kills // 2, outcomes


# -- (c'): nbexp gc killed while it rewrites a pack ----------------------------------------

# `nbexp gc --yes`, killed by SIGKILL right after its K-th step of rewriting packs: an object
# copied into the new pack, a file deleted, the new pack renamed into place.
GC_REPACK_KILLED_AFTER = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    from nbexp.cli import main
    from nbexp.store import packs

    left = int(sys.argv[2])

    def step():
        global left
        left -= 1
        if left == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def counted(method):
        def wrapper(*args, **kwargs):
            result = method(*args, **kwargs)
            step()
            return result
        return wrapper

    packs.PackWriter.add_from = counted(packs.PackWriter.add_from)
    real_unlink = pathlib.Path.unlink

    def unlink(self, *args, **kwargs):
        real_unlink(self, *args, **kwargs)
        if "/packs/" in str(self) or "/objects/" in str(self):
            step()

    pathlib.Path.unlink = unlink
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        real_replace(source, target, *args, **kwargs)
        if "/packs/" in str(target):
            step()

    os.replace = replace
    sys.exit(main(["--store", sys.argv[1], "gc", "--yes"]))
    """
)


def test_kills_while_gc_rewrites_packs(zygote: Zygote, tmp_path: Path) -> None:
    """(c') `nbexp gc --yes` killed while it rewrites packs: each round a kernel writes a pack
    of 40 objects (`a`, kept by the next run, and `b`, whose run is removed), so gc must copy
    the live half into a new pack before deleting the old one. Killed at any moment, or
    right after its k-th copy, rename or deletion: fsck stays clean, every kept run restores,
    and the kernel — which believes `b` is still stored — records `b` again correctly."""
    rng = _rng("gc-repack", "default")
    work = tmp_path / "repack"
    work.mkdir()
    root = work / ".nbexp"
    kernel = zygote.fork("serve", root, work, work / "kernel.log")
    env = worker_env()
    keepers: list[str] = []

    def make_round(step: int) -> None:
        _ran(zygote.command(kernel, cell=packed_cell(f"junk-{step}", step)), f"junk-{step}")
        _ran(zygote.command(kernel, cell="del b"))
        name = f"keeper-{step}"
        _ran(zygote.command(kernel, cell=f"%%experiment {name}\nstep = {step}\n"), name)
        keepers.append(name)
        for old in [n for n in listed(root) if n.startswith("junk-")]:
            code, _, err = nbexp(root, "rm", old)
            assert code == 0, err

    def verify(step: int) -> None:
        assert_fsck_clean(root, fresh_process=True)
        _tally("crash: fsck runs after kills, all clean")
        assert set(listed(root)) == set(keepers)
        again = f"junk-again-{step}"  # `b` again: content gc may just have deleted
        _ran(zygote.command(kernel, cell=packed_cell(again, step)), recorded=again)
        _ran(zygote.command(kernel, cell="del b"))
        assert_fsck_clean(root)
        store = Store(root)
        try:
            for name in keepers:
                namespace: dict[str, Any] = {}
                report = restore_into(namespace, store, store.get(name), ["a", "step"])
                assert not report.skipped, report.skipped
                expected = expected_a(namespace["step"])
                assert all((x == y).all() for x, y in zip(namespace["a"], expected, strict=True))
            namespace = {}
            restore_into(namespace, store, store.get(again), ["b"])
            expected = expected_b(step)
            assert all((x == y).all() for x, y in zip(namespace["b"], expected, strict=True))
            _tally(
                "crash: experiments verified intact (loaded, state restored and compared)",
                len(keepers) + 1,
            )
        finally:
            store.close()

    make_round(0)
    timings = []
    for _ in range(3):  # a dry run does all a gc does but write and delete
        began = time.monotonic()
        code, out, err = nbexp(root, "gc", fresh_process=True)
        timings.append(time.monotonic() - began)
        assert code == 0 and "would be deleted" in out, out + err
    duration = statistics.median(timings) * 1.5
    # one gc to the end: the pack of junk-0 is replaced by a pack of keeper-0's objects
    store = Store(root)
    before = set(store._packs.names())
    located = store.object_location(store.get("keeper-0").variables["a"]["buffers"][0][0])
    store.close()
    assert located is not None and located[0].stem in before
    code, out, err = nbexp(root, "gc", "--yes")
    assert code == 0 and out.startswith("deleted "), out + err
    store = Store(root)
    after = set(store._packs.names())
    moved = store.object_location(store.get("keeper-0").variables["a"]["buffers"][0][0])
    store.close()
    assert moved is not None and moved[0].stem not in before and moved[0].stem in after
    verify(0)

    outcomes: Counter[str] = Counter()
    kills = KILLS["default"]["gc"]
    for number in range(1, kills + 1):
        make_round(number)
        if number % 2:
            returncode = _gc_killed_at_random(root, env, rng.uniform(0, duration))
            how = "killed at a random moment"
        else:
            returncode = _gc_killing_itself(GC_REPACK_KILLED_AFTER, root, env, rng.randint(1, 24))
            how = "killed after its k-th copy, rename or deletion"
        if returncode == -signal.SIGKILL:
            outcomes[how] += 1
            _tally("crash: SIGKILLs of `nbexp gc --yes` while it rewrites packs")
        else:
            assert returncode == 0, returncode
            outcomes["finished before the kill"] += 1
        verify(number)
    zygote.kill(kernel)
    code, out, err = nbexp(root, "gc", "--yes")
    assert code == 0, out + err
    assert_fsck_clean(root, fresh_process=True)
    check_layout(root)
    figures.report("crash: gc-rewriting-packs kill outcomes", dict(outcomes))
    assert outcomes["finished before the kill"] <= kills // 2, outcomes


# -- (d): nbexp push killed mid-transfer -----------------------------------------------

# `nbexp push`, killed by SIGKILL right after the remote acknowledged its K-th key.
PUSH_KILLED_AFTER = textwrap.dedent(
    """
    import os, signal, sys, threading
    from nbexp import transfer
    from nbexp.cli import main

    left = int(sys.argv[2])
    lock = threading.Lock()

    def counting(method):
        def wrapper(self, *args, **kwargs):
            global left
            method(self, *args, **kwargs)
            with lock:
                left -= 1
                if left == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
        return wrapper

    transfer.RemoteFiles.write = counting(transfer.RemoteFiles.write)
    transfer.RemoteFiles.upload = counting(transfer.RemoteFiles.upload)
    sys.exit(main(["--store", sys.argv[1], "push", "origin"]))
    """
)


def _remote_records(fresh: Store) -> set[str]:
    return set(fresh.iter_record_ids())


def _check_file_remote(folder: Path) -> int:
    """Every record on a file:// remote is whole and names only whole objects there."""
    count = 0
    for path in (folder / "records").rglob("*.json"):
        data = path.read_bytes()
        experiment = Experiment.from_dict(json.loads(data))
        assert Store.make_id(experiment.to_dict()) == path.stem, f"record {path.stem} is damaged"
        for digest in experiment.object_hashes():
            target = folder / "objects" / digest[:2] / digest[2:]
            assert target.is_file(), f"{path.stem} names {digest[:12]}, missing on the remote"
            assert hash_file(target)[0] == digest, f"object {digest[:12]} is damaged"
        count += 1
    return count


def _push_rounds(
    zygote: Zygote,
    tmp_path: Path,
    rng: random.Random,
    kills: int,
    url_of_lane: Callable[[int], str],
    options: dict[str, str],
    env: dict[str, str],
    label: str,
) -> Counter[str]:
    """`kills` pushes killed mid-way, in lanes of PUSH_LANE: each lane a new store and a
    new remote, so what a fresh pull copies stays bounded."""
    outcomes: Counter[str] = Counter()
    for lane in range(-(-kills // PUSH_LANE)):
        count = min(PUSH_LANE, kills - lane * PUSH_LANE)
        work = tmp_path / f"push-lane{lane}"
        _push_lane(zygote, work, rng, count, url_of_lane(lane), options, env, label, outcomes)
        shutil.rmtree(work)
    return outcomes


def _push_lane(
    zygote: Zygote,
    work: Path,
    rng: random.Random,
    kills: int,
    url: str,
    options: dict[str, str],
    env: dict[str, str],
    label: str,
    outcomes: Counter[str],
) -> None:
    work.mkdir()
    root = work / ".nbexp"
    option_words = [w for key, value in options.items() for w in ("--option", f"{key}={value}")]
    code, _, err = nbexp(root, "remote", "add", "origin", url, *option_words)
    assert code == 0, err
    kernel = zygote.fork("serve", root, work, work / "kernel.log")
    recorded: dict[str, int] = {}
    step = 0

    def record(count: int) -> None:
        nonlocal step
        for _ in range(count):
            name = f"exp-{step}"
            _ran(zygote.command(kernel, cell=record_cell(name, step)), recorded=name)
            recorded[name] = step
            step += 1

    def cli_push(*argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    record(2)
    began = time.monotonic()
    first = cli_push(sys.executable, "-m", "nbexp.cli", "--store", str(root), "push", "origin")
    _, err_bytes = first.communicate(timeout=120)
    assert first.returncode == 0, err_bytes.decode()
    duration = time.monotonic() - began

    # Under load a push may finish before its kill lands: rounds go on until `kills` kills
    # have landed (at most three times as many rounds), so every run proves as much.
    landed = rounds = 0
    while landed < kills and rounds < 3 * kills:
        number, rounds = rounds, rounds + 1
        record(2)
        if number % 2 == 0:  # any moment of the push process
            process = cli_push(
                sys.executable, "-m", "nbexp.cli", "--store", str(root), "push", "origin"
            )
            time.sleep(rng.uniform(0, duration))
            process.send_signal(signal.SIGKILL)
            how = "killed at a random moment"
        else:  # inside its uploads (about 8 keys per new experiment)
            process = cli_push(
                sys.executable, "-c", PUSH_KILLED_AFTER, str(root), str(rng.randint(1, 14))
            )
            how = "killed after its k-th upload"
        _, err_bytes = process.communicate(timeout=120)
        if process.returncode == -signal.SIGKILL:
            outcomes[how] += 1
            landed += 1
            _tally(f"crash: SIGKILLs of `nbexp push` ({label})")
        else:
            assert process.returncode == 0, err_bytes.decode()
            outcomes["finished before the kill"] += 1

        # the local store is untouched by a push; the remote is consistent
        assert_fsck_clean(root)
        _tally("crash: fsck runs after kills, all clean")
        if url.startswith("file://"):
            _check_file_remote(Path(url[len("file://") :]))
        fresh_root = work / "fresh" / ".nbexp"
        fresh_root.mkdir(parents=True)
        fresh = Store(fresh_root)
        try:
            add_remote(fresh, "origin", url, options, trusted=True)
            report = pull(fresh, "origin", progress=False)
            assert not report.failed, report.failed
            arrived = _remote_records(fresh)
            local = Store(root)
            try:
                assert arrived <= set(local.iter_record_ids())
            finally:
                local.close()
            assert fresh.fsck() == []
            new_names = {fresh.load(i).name for i in arrived} & set(recorded)
            for name in sorted(new_names, key=step_of)[-4:]:
                assert_restores(fresh, name, recorded[name], "record")
            outcomes["pulls into a fresh store verified"] += 1
            _tally(
                "crash: experiments verified intact (loaded, state restored and compared)",
                min(4, len(new_names)),
            )
            # a re-push completes, and then the remote holds everything
            local = Store(root)
            try:
                again = push(local, "origin", progress=False)
                assert not again.failed, again.failed
                everything = set(local.iter_record_ids())
            finally:
                local.close()
            assert not pull(fresh, "origin", progress=False).failed
            assert _remote_records(fresh) == everything
            assert fresh.fsck() == []
        finally:
            fresh.close()
        shutil.rmtree(fresh_root.parent)
    zygote.kill(kernel)


@pytest.mark.parametrize("scale", SCALES)
def test_kills_during_push(zygote: Zygote, tmp_path: Path, scale: str) -> None:
    """(d) `nbexp push` to a file:// remote killed mid-transfer: the remote stays
    consistent (a pull into a fresh store gets intact experiments) and a re-push completes."""
    rng = _rng("push", scale)
    outcomes = _push_rounds(
        zygote,
        tmp_path,
        rng,
        KILLS[scale]["push"],
        lambda lane: f"file://{tmp_path}/remote-{lane}",
        {},
        worker_env(),
        "file://",
    )
    figures.report("crash: push kill outcomes (file://)", dict(outcomes))
    killed = outcomes["killed at a random moment"] + outcomes["killed after its k-th upload"]
    assert killed == KILLS[scale]["push"], outcomes


@pytest.mark.skipif(not HAVE_S3, reason="s3fs and moto are needed for the S3 remote")
@pytest.mark.parametrize("scale", SCALES)
def test_kills_during_push_to_an_s3_remote(
    zygote: Zygote, tmp_path: Path, scale: str, bucket: str, moto_endpoint: str
) -> None:
    """(d) The same against moto's S3 server: keys are single PUTs there, so a killed push
    leaves whole objects and no partial record."""
    rng = _rng("s3", scale)
    env = worker_env(**DUMMY_CREDENTIALS)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    outcomes = _push_rounds(
        zygote,
        tmp_path,
        rng,
        KILLS[scale]["s3"],
        lambda lane: f"s3://{bucket}/team-{lane}",
        {"endpoint_url": moto_endpoint},
        env,
        "S3/moto",
    )
    figures.report("crash: push kill outcomes (S3/moto)", dict(outcomes))


# -- (e): nbexp rm killed mid-deletion --------------------------------------------------

# `nbexp rm REF`, killed by SIGKILL right before its K-th step on the experiment's files:
# 1 the note appears in tmp/ (then the index row goes), 2 the record goes, 3 the tags, 4 the
# origin, 5 the note. K > 5: it finishes.
RM_KILLED_BEFORE = textwrap.dedent(
    """
    import os, signal, sys
    from nbexp.cli import main

    left = int(sys.argv[3])
    real_replace, real_unlink = os.replace, os.unlink

    def step(path):
        global left
        name = os.fspath(path)
        if any(part in name for part in ("/records/", "/tags/", "/origins/", ".deleting")):
            left -= 1
            if left == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    def replace(source, target, *args, **kwargs):
        step(target)
        return real_replace(source, target, *args, **kwargs)

    def unlink(path, *args, **kwargs):
        step(path)
        return real_unlink(path, *args, **kwargs)

    os.replace, os.unlink = replace, unlink
    sys.exit(main(["--store", sys.argv[1], "rm", sys.argv[2]]))
    """
)
RM_STEPS = 5


@pytest.mark.parametrize("scale", SCALES)
def test_kills_during_rm(zygote: Zygote, tmp_path: Path, scale: str) -> None:
    """(e) `nbexp rm` killed at a random moment or right before any of its steps, beside a
    kernel that stays alive: the experiment is then fully present (listed, loads, restores,
    keeps its tags) or fully gone (not listed, no record, no tags), and fsck is clean."""
    rng = _rng("rm", scale)
    kills = KILLS[scale]["rm"]
    work = tmp_path / "rm"
    work.mkdir()
    root = work / ".nbexp"
    kernel = zygote.fork("serve", root, work, work / "kernel.log")
    steps: dict[str, int] = {}
    env = worker_env()

    def record(count: int) -> None:
        for _ in range(count):
            name = f"rm-{len(steps)}"
            _ran(zygote.command(kernel, cell=record_cell(name, len(steps))), recorded=name)
            steps[name] = len(steps)
            if len(steps) % 2:  # a tags file too, for rm to delete
                code, _, err = nbexp(root, "tag", name, "tagged")
                assert code == 0, err

    record(min(kills, 12) + 2)
    known = set(listed(root))
    ids = dict(listed(root))
    began = time.monotonic()
    code, _, err = nbexp(root, "rm", "rm-0", fresh_process=True)  # undisturbed, to time it
    duration = time.monotonic() - began
    assert code == 0, err
    known.discard("rm-0")

    outcomes: Counter[str] = Counter()
    order = rng.sample(range(1, RM_STEPS + 2), RM_STEPS + 1)  # every step, in a random order
    landed = rounds = 0  # rounds go on until `kills` kills have landed (at most 3x rounds)
    while landed < kills and rounds < 3 * kills:
        number, rounds = rounds, rounds + 1
        if len(known) < 3:
            record(4)
            known = set(listed(root))
            ids = dict(listed(root))
        victim = rng.choice(sorted(known))
        victim_id = ids[victim]
        if number % 2 == 0:  # any moment of the rm process
            argv = [sys.executable, "-m", "nbexp.cli", "--store", str(root), "rm", victim]
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE)
            time.sleep(rng.uniform(0.5, 1.0) * duration)
            process.send_signal(signal.SIGKILL)
            how = "at a random moment"
        else:  # right before one of its steps (K > RM_STEPS: it finishes)
            before = order[(number // 2) % len(order)]
            argv = [sys.executable, "-c", RM_KILLED_BEFORE, str(root), victim, str(before)]
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE)
            how = f"before step {before}"
        process.communicate(timeout=120)
        if process.returncode == -signal.SIGKILL:
            landed += 1
            _tally("crash: SIGKILLs of `nbexp rm`")
        else:
            assert process.returncode == 0, process.returncode
            how = "finished before the kill"
        interrupted = (root / "tmp" / f"{victim_id}{DELETING_SUFFIX}").exists()

        assert_fsck_clean(root, fresh_process=number % 5 == 4)  # opens: finishes a deletion
        _tally("crash: fsck runs after kills, all clean")
        names = set(listed(root))
        record_file = root / "records" / victim_id[:2] / f"{victim_id}.json"
        tags_file = root / "tags" / f"{victim_id}.json"
        assert not list((root / "tmp").glob(f"*{DELETING_SUFFIX}"))
        if victim in names:
            assert names == known, sorted(names ^ known)
            assert record_file.exists() and tags_file.exists() == (steps[victim] % 2 == 0)
            store = Store(root)
            try:
                assert_restores(store, victim, steps[victim], "record")
                assert ("tagged" in store.get(victim).tags) == tags_file.exists()
            finally:
                store.close()
            outcomes[f"{how}: still present (verified complete)"] += 1
        else:
            assert names == known - {victim}, sorted(names ^ known)
            assert not record_file.exists() and not tags_file.exists()
            code, _, err = nbexp(root, "show", victim_id)
            assert code == 1 and len(err.splitlines()) == 1, err
            gone = "gone (finished by the next open)" if interrupted else "gone"
            outcomes[f"{how}: {gone}"] += 1
        known = names
    _ran(zygote.command(kernel, cell=record_cell("rm-after", 99)), recorded="rm-after")
    zygote.kill(kernel)
    assert_fsck_clean(root, fresh_process=True)
    code, out, err = nbexp(root, "reindex")
    assert code == 0 and out.startswith(f"indexed {len(known) + 1} experiment"), out + err
    check_layout(root)
    figures.report("crash: rm kill outcomes", dict(sorted(outcomes.items())))
    assert landed == kills, outcomes


# -- (f): what killed processes leave in tmp/, and gc ---------------------------------------


def test_gc_removes_what_killed_kernels_left_in_tmp(zygote: Zygote, tmp_path: Path) -> None:
    """(f) Kernels killed inside their snapshot leave staged chunks in tmp/. `nbexp gc`
    reports, and with --yes deletes, those older than the grace period whose writer is gone,
    while a live kernel keeps recording beside it; younger ones, and an old one named for a
    process that still runs, stay. Every experiment stays intact and fsck clean."""
    rng = _rng("tmp", "default")
    lane = Lane.make(tmp_path, "snapshot", 0)
    timing = _calibrate(zygote, lane, runs=2)
    tmp = lane.root / "tmp"

    def leftovers() -> list[Path]:
        notes = (UNINDEXED_SUFFIX, DELETING_SUFFIX)
        return sorted(p for p in tmp.iterdir() if not p.name.endswith(notes))

    rounds = 0
    while len(leftovers()) < 4 and rounds < 12:
        finished, in_flight, _ = _kill_recording_kernel(zygote, lane, rng, timing)
        rounds += 1
        _tally("crash: SIGKILLs of a kernel while snapshotting")
        _verify_after_kill(lane, finished, in_flight, rng, full=False)
    found = leftovers()
    assert len(found) >= 2, f"{rounds} kills left {len(found)} temp files"
    old, young = found[::2], found[1::2]
    past = time.time() - TEMP_GRACE_SECONDS - 60
    for path in old:
        os.utime(path, (past, past))
    old_size = sum(path.stat().st_size for path in old)

    live = zygote.fork(
        "loop", lane.root, lane.work, lane.log, kind="snapshot", prefix="snapshot-live", runs=3
    )
    deadline = time.monotonic() + 120
    _events_until(zygote, live, lambda e: e["event"] == "body", deadline)  # staging now
    held = tmp / f"{live}-{'0' * 16}.tmp"  # as old, but its writer runs: kept
    held.write_bytes(b"x" * 1000)
    os.utime(held, (past, past))

    code, out, err = nbexp(lane.root, "gc", fresh_process=True)
    assert code == 0 and f"and {len(old)} leftover temporary files" in out, out + err
    assert "would be deleted" in out and all(path.exists() for path in old), out
    code, out, err = nbexp(lane.root, "gc", "--yes", fresh_process=True)
    summary = f"and {len(old)} leftover temporary files ({human_bytes(old_size)}) in tmp/"
    assert code == 0 and out.startswith("deleted ") and summary in out, out + err
    assert not any(path.exists() for path in old)
    assert all(path.exists() for path in young) and held.exists()

    events = _events_until(
        zygote, live, lambda e: e["event"] == "done" and e["step"] == 2, deadline
    )  # every run of the live kernel recorded, through both gcs
    assert zygote.reap(live)["code"] == 0, lane.log.read_text()[-3000:]
    finished = {e["name"] for e in events if e["event"] == "done"}
    _verify_after_kill(lane, finished, set(), rng, full=True)
    figures.report(
        "crash: tmp/ files killed kernels left (removed by gc once old / kept: young, live)",
        f"{len(old)} ({human_bytes(old_size)}) / {len(young)}, 1",
    )


# -- (d'): nbexp pull killed mid-transfer ----------------------------------------------

# `nbexp pull`, killed by SIGKILL right after its K-th download (`download`) or its K-th
# rename of any kind (`rename`: a pack, its index, an object, a record, a tag file).
PULL_KILLED_AFTER = textwrap.dedent(
    """
    import os, signal, sys, threading
    from nbexp import transfer
    from nbexp.cli import main

    mode, left = sys.argv[2], int(sys.argv[3])
    lock = threading.Lock()

    def counting(method):
        def wrapper(*args, **kwargs):
            global left
            result = method(*args, **kwargs)
            with lock:
                left -= 1
                if left == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    if mode == "download":
        transfer.RemoteFiles.download = counting(transfer.RemoteFiles.download)
    else:
        os.replace = counting(os.replace)
    sys.exit(main(["--store", sys.argv[1], "pull", "origin", "-j", "4"]))
    """
)
PULL_EXPERIMENTS = 6  # each with PULL_OBJECTS objects: a pull of them all is one pack
PULL_OBJECTS = 20


def test_kills_during_pull(tmp_path: Path) -> None:
    """`nbexp pull` killed mid-transfer (a pull of more than 16 objects writes one pack):
    the pulling store passes fsck after every kill — no record visible without its objects,
    no pack visible without its index —, and the next pull completes."""
    from tests.test_remote import blobs_for, fake

    rng = _rng("pull", "default")
    source = Store(tmp_path / "source" / ".nbexp")
    remote = tmp_path / "remote"
    add_remote(source, "origin", str(remote))
    made = {
        fake(source, f"exp-{i}", blobs_for(f"exp-{i}", PULL_OBJECTS, size=4_000), minutes=i).id
        for i in range(PULL_EXPERIMENTS)
    }
    assert not push(source, "origin", progress=False).failed
    source.close()
    keys = PULL_EXPERIMENTS * (1 + PULL_OBJECTS)
    outcomes: Counter[str] = Counter()
    for round_number in range(KILLS["default"]["push"]):
        root = tmp_path / f"pull-{round_number}" / ".nbexp"
        root.mkdir(parents=True)
        code, _, err = nbexp(root, "remote", "add", "origin", str(remote), "--trusted")
        assert code == 0, err
        mode = "download" if round_number % 2 == 0 else "rename"
        k = rng.randint(1, keys) if mode == "download" else rng.randint(1, 2 + PULL_EXPERIMENTS)
        process = subprocess.run(
            [sys.executable, "-c", PULL_KILLED_AFTER, str(root), mode, str(k)],
            cwd=REPO,
            env=worker_env(),
            capture_output=True,
            timeout=120,
        )
        if process.returncode == -signal.SIGKILL:
            outcomes[f"killed after its k-th {mode}"] += 1
            _tally("crash: SIGKILLs of `nbexp pull`")
        else:
            assert process.returncode == 0, process.stderr.decode()
            outcomes["finished before the kill"] += 1
        forget_stores()
        assert_fsck_clean(root)  # every visible record's objects are there and whole
        check_layout(root)
        seen = set(listed(root).values())
        assert seen <= made
        code, out, err = nbexp(root, "pull", "origin", "-q")
        assert code == 0, out + err
        assert set(listed(root).values()) == made
        assert_fsck_clean(root)
        forget_stores()
        pulled = Store(root)
        try:
            for experiment_id in made:
                for digest in pulled.load(experiment_id).object_hashes():
                    pulled.read_object(digest)  # verified against its hash
        finally:
            pulled.close()
        shutil.rmtree(root.parent)
    figures.report("crash: pull kill outcomes", dict(outcomes))
    assert outcomes["finished before the kill"] <= KILLS["default"]["push"] // 2, outcomes
