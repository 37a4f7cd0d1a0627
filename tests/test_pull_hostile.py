"""Pulling from a remote that someone else can write (SPEC §9): what it serves is data, never
a way to reach outside the store, fill the disk or the memory, or hang the pull. A file://
remote stands for any remote; its files are planted by hand, as an attacker with write access
to the bucket or folder would plant them.

Each `nbexp pull` of a planted file runs as its own process under limits (file size, address
space, time), so a regression fails the test instead of filling this machine."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from nbexp import remote as remote_module
from nbexp.errors import TransferError
from nbexp.record import Code, Experiment, Outcome
from nbexp.remote import add_remote, pull, push
from nbexp.store import Store, open_store, receiving
from tests.test_remote import blobs_for, fake, two  # noqa: F401 (the `two` fixture)

REPO = Path(__file__).resolve().parent.parent
_LIMIT = 64 << 20  # what a pull under `_limited` may write to one file, and then some


def _limited() -> None:
    """In the pulling process: no file past 64 MiB, at most 2 GiB of address space."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (_LIMIT, _LIMIT))
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def nbexp_pull(store: Store) -> tuple[int, str]:
    """`nbexp pull team` in its own process under `_limited`; (exit code, stdout + stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "nbexp.cli", "--store", str(store.root), "pull", "team", "-q"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=_limited,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def _object_file(shared: Path, digest: str) -> Path:
    return shared / "objects" / digest[:2] / digest[2:]


def _pulled_only(store: Store, *names: str) -> None:
    """The store holds exactly these experiments, whole, and nothing half-pulled."""
    assert sorted(row["name"] for row in store.rows()) == sorted(names)
    assert store.fsck() == []
    assert list(store.tmp_dir.glob("*.tmp")) == []


def _one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbexp: "), output
    assert "Traceback" not in output
    return lines[0]


@pytest.fixture
def planted(two):  # noqa: F811
    """Machines A and B and their remote: `good` and `victim` pushed from A."""
    a, b, shared = two
    good = fake(a, "good", blobs_for("good", 2, size=4_000))
    victim = fake(a, "victim", blobs_for("victim", 2, size=4_000), minutes=1)
    assert not push(a, "team", progress=False).failed
    return b, shared, good, victim


def test_an_object_linked_to_an_endless_device_is_refused_without_writing(planted) -> None:
    # found: the pull copied /dev/zero into tmp/ until the disk was full (2.6 GB in 3 s)
    b, shared, _, victim = planted
    target = _object_file(shared, victim.artifacts[0]["hash"])
    target.unlink()
    target.symlink_to("/dev/zero")
    code, output = nbexp_pull(b)
    line = _one_line(output)
    assert code == 1 and "not a regular file" in line and victim.short_id in line
    _pulled_only(b, "good")


def test_an_object_that_is_a_pipe_is_refused_without_waiting(planted) -> None:
    b, shared, _, victim = planted
    target = _object_file(shared, victim.artifacts[1]["hash"])
    target.unlink()
    os.mkfifo(target)  # no writer: a read would wait forever
    code, output = nbexp_pull(b)
    assert code == 1 and "not a regular file" in _one_line(output)
    _pulled_only(b, "good")


def test_a_record_linked_to_an_endless_device_is_refused_without_filling_memory(
    planted,
) -> None:
    # found: the pull read the whole "record" into memory (a MemoryError under a 3 GB limit)
    b, shared, _, victim = planted
    record = shared / "records" / victim.id[:2] / f"{victim.id}.json"
    record.unlink()
    record.symlink_to("/dev/zero")
    code, output = nbexp_pull(b)
    line = _one_line(output)
    assert code == 1 and "not a regular file" in line and victim.short_id in line
    _pulled_only(b, "good")


def test_an_object_larger_than_the_disk_is_refused_before_a_byte_is_written(planted) -> None:
    b, shared, _, victim = planted
    found = os.statvfs(b.root)
    huge = found.f_bavail * found.f_frsize + (1 << 30)  # more than the store's disk has
    target = _object_file(shared, victim.artifacts[0]["hash"])
    os.truncate(target, huge)  # sparse: costs the remote's disk nothing
    code, output = nbexp_pull(b)
    line = _one_line(output)
    assert code == 1 and "pull stopped before filling the disk" in line, line
    assert victim.artifacts[0]["hash"][:12] in line and "free some space" in line
    _pulled_only(b, "good")


def test_a_record_larger_than_any_record_is_refused(
    planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    b, _, good, victim = planted
    monkeypatch.setattr(remote_module, "RECORD_LIMIT", 200)  # both records are larger
    with pytest.raises(TransferError) as refused:
        pull(b, "team", progress=False)
    assert "larger than 200 bytes" in str(refused.value)
    assert set(refused.value.report.failed) == {good.id, victim.id}  # type: ignore[attr-defined]
    _pulled_only(b)


def _crafted(store: Store, name: str, digest: str) -> Experiment:
    """A record whose artifact names `digest`, with a valid id: anyone can make one."""
    created = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc).isoformat(timespec="microseconds")
    draft = Experiment(
        id="",
        name=name,
        created=created,
        code=Code(cell=f"%%experiment {name}\nn = 1\n", source="n = 1\n"),
        outcome=Outcome(status="ok", started=created, duration=1.0),
        env={"python": "3", "platform": "test", "packages": {}},
        artifacts=[{"path": "model.bin", "hash": digest, "size": 5}],
    )
    experiment = replace(draft, id=Store.make_id(draft.to_dict()))
    store.save(experiment)
    return experiment


def test_a_record_naming_an_object_outside_the_store_is_refused(two) -> None:  # noqa: F811
    # found: the pull joined the name onto objects/ here and on the remote, reading
    # files outside both (refused later only because their hash did not match)
    a, b, shared = two
    outside = shared.parent / "outside"
    outside.write_bytes(b"plant")
    fake(a, "good", blobs_for("good", 2, size=4_000))
    climbing = _crafted(a, "climbing", "../../../outside")
    with pytest.raises(TransferError):  # pushing it finds no such object here
        push(a, "team", progress=False)
    path = shared / "records" / climbing.id[:2] / f"{climbing.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(a.record_bytes(climbing.id))  # planted by hand on the remote
    with pytest.raises(TransferError) as refused:
        pull(b, "team", progress=False)
    line = str(refused.value)
    assert "'../../../outside'" in line and "no object's name" in line and "\n" not in line
    assert not b.has_record(climbing.id)
    _pulled_only(b, "good")
    # and a store holding such a record (written by hand) says so in fsck
    problems = a.fsck()
    assert [(p.kind, p.item) for p in problems] == [("object", "../../../out")]
    assert "not an object's name" in problems[0].detail


def test_tags_nbexp_would_refuse_are_left_out_of_a_pull(planted) -> None:
    b, shared, good, _ = planted
    tags = shared / "tags" / f"{good.id}.json"
    tags.parent.mkdir(parents=True, exist_ok=True)
    planted_tags = ["keep", "\x1b[2J\x1b[31mred", "last", "abcdef12", "x" * 500]
    tags.write_text(json.dumps(planted_tags))
    pull(b, "team", progress=False)
    assert b.get("good").tags == ("keep",)


@contextlib.contextmanager
def _small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `folder` (skipped where this process cannot)."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_pull_larger_than_the_disk_stops_before_filling_it(
    two,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, _, shared = two
    for i in range(3):  # 90 MB of objects, each of a size the remote tells truthfully
        fake(a, f"big-{i}", blobs_for(f"big-{i}", 30, size=1_000_000), minutes=i)
    assert not push(a, "team", progress=False).failed
    with _small_disk(tmp_path / "disk", "48m") as disk:
        (disk / ".nbexp").mkdir()
        b = open_store(disk / ".nbexp")
        add_remote(b, "team", str(shared))
        code, output = nbexp_pull(b)
        line = _one_line(output)
        assert code == 1 and "pull stopped before filling the disk" in line, line
        found = os.statvfs(disk)
        assert found.f_bavail * found.f_frsize > (48 << 20) // 40  # most of the 5% kept
        assert b.fsck() == [] and list(b.tmp_dir.glob("*.tmp")) == []
        for row in b.rows():  # what did arrive is whole
            for digest in b.load(row["id"]).object_hashes():
                b.read_object(digest)
        b.close()


def test_bytes_waiting_in_memory_count_against_the_room_a_pull_leaves(tmp_path: Path) -> None:
    """Sixteen downloads at once, each holding its bytes in memory (a finished object waits
    for its turn in the pack): the free space the disk reports does not show them, yet
    together they must stop before they would take the room the pull keeps free."""
    with _small_disk(tmp_path / "disk", "8m") as disk:
        room = receiving.Room(disk)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        taken: list[int] = []
        lock = threading.Lock()

        def download() -> None:
            while True:
                with lock:
                    if sum(taken) > 2 * free:  # far past the disk: the room never stopped it
                        return
                try:
                    room.arrived(256 << 10)
                except receiving.OutOfRoom:
                    return
                with lock:
                    taken.append(256 << 10)

        threads = [threading.Thread(target=download) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(taken) <= free - room.keep
        room.landed(sum(taken))  # on the disk now: the free space it reports shows them


def test_a_pulled_name_cannot_break_the_one_line_a_failed_pull_prints(two) -> None:  # noqa: F811
    a, b, shared = two
    named = fake(a, "evil\x1b[2J\nnbexp: all good", blobs_for("evil", 2, size=4_000))
    assert not push(a, "team", progress=False).failed
    _object_file(shared, named.artifacts[0]["hash"]).write_bytes(b"damaged")
    code, output = nbexp_pull(b)
    line = _one_line(output)
    assert code == 1 and "\x1b" not in output and "evil\\x1b[2J\\nnbexp: all good" in line
