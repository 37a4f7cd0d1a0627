"""How pulled objects reach the disk (store/receiving.py): each byte written once, into the
pack in the records' order whatever order the downloads finish in, a large object into a file
of its own, and a pack that cannot be written letting no record in."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nbexp import transfer
from nbexp.remote import pull, push
from nbexp.store import Store, receiving
from tests.test_remote import blobs_for, fake, two  # noqa: F401 (the `two` fixture)

REPO = Path(__file__).resolve().parent.parent


def _written() -> int:
    """Bytes this process has passed to write calls so far (Linux: /proc/self/io)."""
    with open("/proc/self/io") as counters:
        for line in counters:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def _offsets(store: Store, digests: list[str]) -> list[int]:
    places = [store.object_location(digest) for digest in digests]
    assert all(place is not None for place in places)
    return [place[1] for place in places]  # type: ignore[index]


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="Linux: /proc/self/io")
def test_a_pull_writes_each_byte_once(two) -> None:  # noqa: F811
    a, b, _ = two
    blobs = blobs_for("many", 60, size=200_000)
    fake(a, "many", blobs)
    assert not push(a, "team", progress=False).failed
    before = _written()
    report = pull(b, "team", progress=False)
    written = _written() - before
    assert report.objects == 60 and report.bytes == sum(map(len, blobs)) > 10_000_000
    # the pack (and its index, the record, its origin): not the bytes again from tmp/
    assert written < 1.1 * report.bytes, (written, report.bytes)
    assert b.fsck() == []


def test_the_pack_keeps_the_records_order_when_downloads_finish_out_of_it(
    two,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, _ = two
    blobs = blobs_for("slow", 30, size=20_000)
    slow = fake(a, "slow", blobs)
    assert not push(a, "team", progress=False).failed
    digests = [item["hash"] for item in slow.artifacts]
    real_download = transfer.RemoteFiles.download
    first = f"objects/{digests[0][:2]}/{digests[0][2:]}"
    others_done = threading.Event()
    finished: list[str] = []

    def download(self: transfer.RemoteFiles, key: str, sink: transfer.Sink) -> int:
        if key == first:  # the first object comes late: those after it wait in memory
            others_done.wait(timeout=10)
            time.sleep(0.3)  # time enough for the 25 others, if nothing held them back
        count = real_download(self, key, sink)
        finished.append(key)
        if len(finished) >= 5:
            others_done.set()
        return count

    monkeypatch.setattr(transfer.RemoteFiles, "download", download)
    monkeypatch.setattr(receiving, "HOLD", 50_000)  # past 2.5 objects waiting, wait
    report = pull(b, "team", progress=False, workers=8)
    assert report.experiments == [slow.id]
    # 5 arrived before it; then past HOLD the downloaders stopped fetching more and waited
    # (7 others, 2 of them once more before the third held object passed HOLD)
    assert 5 <= finished.index(first) <= 12, finished.index(first)
    offsets = _offsets(b, digests)
    assert offsets == sorted(offsets)  # laid out as the record names them, all 30
    assert [b.read_object(digest) for digest in digests] == blobs
    assert b.fsck() == [] and list(b.tmp_dir.glob("*.tmp")) == []


def test_a_large_object_streams_into_a_file_of_its_own(
    two,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, _ = two
    monkeypatch.setattr(receiving, "HELD_OBJECT", 100_000)
    small = blobs_for("small", 20, size=10_000)
    large = blobs_for("large", 2, size=300_000)
    mixed = fake(a, "mixed", [small[0], large[0], *small[1:], large[1]])
    assert not push(a, "team", progress=False).failed
    assert pull(b, "team", progress=False).experiments == [mixed.id]
    digests = [item["hash"] for item in mixed.artifacts]
    loose = {digests[1], digests[-1]}
    for digest in loose:  # never held whole in memory, never copied: a loose object
        assert b.object_location(digest) is None and b.object_path(digest).is_file()
    packed = [digest for digest in digests if digest not in loose]
    offsets = _offsets(b, packed)
    assert offsets == sorted(offsets)
    assert b.fsck() == [] and list(b.tmp_dir.glob("*.tmp")) == []


def _file_limit(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_pack_that_cannot_be_written_lets_no_record_in(two) -> None:  # noqa: F811
    a, b, _ = two
    fake(a, "many", blobs_for("many", 40, size=100_000))  # a pack of 4 MB
    assert not push(a, "team", progress=False).failed
    command = [sys.executable, "-m", "nbexp.cli", "--store", str(b.root), "pull", "team", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        preexec_fn=lambda: _file_limit(1 << 20),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, lines
    assert "cannot write to the store" in lines[0] and "size limit" in lines[0], lines[0]
    assert b.rows() == [] and b.fsck() == []
    assert list(b.tmp_dir.glob("*.tmp")) == [] and not list(b.root.glob("packs/*"))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [row["name"] for row in b.rows()] == ["many"] and b.fsck() == []


def test_two_pulls_and_a_gc_at_once_leave_one_whole_store(two) -> None:  # noqa: F811
    a, b, _ = two
    made = {
        fake(a, f"exp-{i}", blobs_for(f"exp-{i}", 20, size=30_000), minutes=i).id for i in range(6)
    }
    assert not push(a, "team", progress=False).failed
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def nbexp(*argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "nbexp.cli", "--store", str(b.root), *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    running = [nbexp("pull", "team", "-q"), nbexp("pull", "team", "-q"), nbexp("gc", "--yes")]
    for process in running:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, out + err
    b = Store(b.root)
    assert {row["id"] for row in b.rows()} == made and b.fsck() == []
    for experiment_id in made:  # each object whole, wherever each pull put it
        for digest in b.load(experiment_id).object_hashes():
            b.read_object(digest)
    b.gc(delete=True)  # duplicates from the two pulls are no garbage: every object stays
    assert b.fsck() == [] and list(b.tmp_dir.glob("*.tmp")) == []
