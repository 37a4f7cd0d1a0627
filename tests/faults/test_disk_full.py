"""A full disk and write errors while recording (SPEC §2 "disk full", §11 "if recording fails
for any reason, the user's cell still ran, its results are still in the kernel, and the user
is told that this run was not recorded and why").

Simulated with RLIMIT_FSIZE in the kernel (SIGXFSZ ignored, so a write past the limit fails
with EFBIG), with a small tmpfs that really fills up (when this process may mount one), and
with an index file made immutable (`chattr +i`, which binds root too). In every case: the
cell completes and its variables stay, stderr says "this run was NOT recorded", what is wrong
and what to do (SPEC §11: never a bare "OSError: [Errno 28]" or "OperationalError"), the
store stays valid (fsck clean, earlier experiments intact, no partial record, the index
answers), and once the cause is gone the next run records normally. `nbexp` commands that
hit the same cause say the same as one `nbexp: ...` line and exit 1.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nbexp.restorer import restore_into
from nbexp.store import Store
from tests.faults import figures
from tests.faults.checks import (
    assert_fsck_clean,
    assert_restores,
    check_layout,
    forget_stores,
    leftover_temps,
    listed,
    nbexp,
)
from tests.faults.workers import REPO, Zygote, content_seed, record_cell, worker_env

NOT_RECORDED = "nbexp: this run was NOT recorded: "
_TOLD: list[str] = []


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    started = Zygote(tmp_path_factory.mktemp("zygote") / "scratch" / ".nbexp")
    yield started
    started.close()


@pytest.fixture(autouse=True)
def _no_cached_stores() -> Iterator[None]:
    forget_stores()
    yield
    forget_stores()


class Kernel:
    """A `serve` kernel from the zygote, recording into `root`."""

    def __init__(self, zygote: Zygote, root: Path, work: Path) -> None:
        self.zygote, self.root = zygote, root
        work.mkdir(parents=True, exist_ok=True)
        self.pid = zygote.fork("serve", root, work, work.parent / f"{work.name}.log")

    def run(self, cell: str) -> dict:
        answer = self.zygote.command(self.pid, cell=cell)
        assert answer["event"] == "ran", answer
        return answer

    def value(self, expression: str) -> str:
        return str(self.zygote.command(self.pid, eval=expression)["value"])

    def file_size_limit(self, size: int | None) -> None:
        self.zygote.command(self.pid, fsize=size)

    def recorded(self, name: str, step: int) -> None:
        answer = self.run(record_cell(name, step))
        assert answer["success"] and f"✓ recorded {name} " in answer["stdout"], answer
        assert NOT_RECORDED not in answer["stderr"], answer

    def refused(self, cell: str, reasons: tuple[str, ...], fixes: tuple[str, ...]) -> str:
        """Run a cell whose recording must fail: the cell itself succeeds, the user is told
        on stderr that it was not recorded, what is wrong and what to do. Returns why."""
        answer = self.run(cell)
        assert answer["success"], answer  # the user's cell completed
        assert "✓ recorded" not in answer["stdout"], answer
        lines = [line for line in answer["stderr"].splitlines() if line.startswith(NOT_RECORDED)]
        assert len(lines) == 1, answer
        why = lines[0][len(NOT_RECORDED) :]
        _names_the_fix(why, reasons, fixes)
        assert "Traceback" not in answer["stdout"] + answer["stderr"], answer
        _TOLD.append(why)
        figures.report("disk full: runs refused, user told NOT recorded", len(_TOLD))
        figures.report("disk full: reasons the user was given", sorted({_gist(w) for w in _TOLD}))
        return why

    def close(self) -> None:
        self.zygote.kill(self.pid)


def _gist(why: str) -> str:
    """A reason without its paths, for the figures."""
    return re.sub(r"(?<!\w)/[^\s:]+", "PATH", why)


def _names_the_fix(message: str, reasons: tuple[str, ...], fixes: tuple[str, ...]) -> None:
    """A message the user can act on: no bare exception name from Python or SQLite, the
    underlying reason kept in parentheses, and what to do."""
    assert not re.match(r"^\w*(Error|Exception)\b", message), message
    assert "OperationalError" not in message and "Errno" not in message, message
    assert any(re.search(r"\([^)]*" + re.escape(r), message) for r in reasons), message
    assert any(fix in message for fix in fixes), message


def _cli_refused(
    root: Path,
    argv: tuple[str, ...],
    reasons: tuple[str, ...],
    fixes: tuple[str, ...],
    fsize: int | None = None,
) -> str:
    """`nbexp ARGV` as a real process (under RLIMIT_FSIZE `fsize`, SIGXFSZ ignored, when
    given) fails as SPEC §11 says: exit 1, one `nbexp: ...` line naming the fix."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, hard))

    done = subprocess.run(
        [sys.executable, "-m", "nbexp.cli", "--store", str(root), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=worker_env(),
        preexec_fn=limit,
        timeout=120,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("nbexp: "), done
    _names_the_fix(lines[0][len("nbexp: ") :], reasons, fixes)
    _CLI_TOLD.append(lines[0])
    figures.report("disk full: nbexp commands refused with one line, exit 1", len(_CLI_TOLD))
    figures.report("disk full: what those commands said", sorted({_gist(t) for t in _CLI_TOLD}))
    return lines[0]


_CLI_TOLD: list[str] = []


def _big_is_there(kernel: Kernel, name: str) -> None:
    """The body's variables stayed in the kernel although recording failed."""
    expected = np.random.default_rng(content_seed(name)).random(250_000)
    assert kernel.value("float(big.sum())") == repr(float(expected.sum()))
    assert kernel.value("type(frame).__name__") == "'DataFrame'"


def _store_is_valid(root: Path, expected: dict[str, int]) -> None:
    """fsck clean, exactly the expected experiments listed, each restorable, no partial
    record or object, nothing left in tmp/, and the index answers queries."""
    assert_fsck_clean(root)
    assert set(listed(root)) == set(expected)
    check_layout(root)
    assert leftover_temps(root) == 0
    store = Store(root)
    try:
        assert sorted(store.iter_record_ids()) == sorted(store.resolve(n) for n in expected)
        for name, step in expected.items():
            assert_restores(store, name, step, "record")
        assert store.count("metrics.score > 0") == len(expected)
    finally:
        store.close()
    code, out, err = nbexp(root, "show", "last")
    assert code == 0 and out, err


def test_file_size_limit_while_writing_objects(zygote: Zygote, tmp_path: Path) -> None:
    """The store's object writes fail (EFBIG) in the middle of the snapshot."""
    root = tmp_path / "project" / ".nbexp"
    kernel = Kernel(zygote, root, tmp_path / "project")
    try:
        kernel.recorded("before", 1)
        kernel.file_size_limit(256 * 1024)  # below one 1 MiB chunk
        why = kernel.refused(
            record_cell("too-big", 2), ("File too large",), ("ulimit -f", "free some space")
        )
        assert str(root) in why  # names the store it could not write
        _big_is_there(kernel, "too-big")
        _store_is_valid(root, {"before": 1})

        kernel.file_size_limit(None)  # space returns
        # the variables that failed to be stored are stored now, whole
        answer = kernel.run("%%experiment retry\nscore = float(big.sum())\n")
        assert "✓ recorded retry " in answer["stdout"], answer
        store = Store(root)
        try:
            namespace: dict = {}
            restore_into(namespace, store, store.get("retry"), ["big", "frame"])
            expected = np.random.default_rng(content_seed("too-big")).random(250_000)
            assert np.array_equal(namespace["big"], expected)
            assert namespace["frame"]["a"].to_numpy().tolist() == (expected[:60_000] * 2).tolist()
        finally:
            store.close()
        kernel.recorded("after", 3)
        assert_fsck_clean(root, fresh_process=True)
    finally:
        kernel.close()
    figures.report(
        "disk full: RLIMIT_FSIZE during object writes", "not recorded, told, store valid"
    )


def test_file_size_limit_while_writing_the_index(zygote: Zygote, tmp_path: Path) -> None:
    """The record's file is written but the index insert fails (its WAL cannot grow): the
    record is taken back, so the run is not recorded, and the user is told so."""
    root = tmp_path / "project" / ".nbexp"
    kernel = Kernel(zygote, root, tmp_path / "project")
    try:
        kernel.recorded("before", 1)
        wal = root / "index.sqlite-wal"
        # the kernel's next index write appends to the WAL: a limit at its size refuses it,
        # while the record file (a few KB) still fits
        kernel.file_size_limit(wal.stat().st_size)
        why = kernel.refused(
            "%%experiment unindexed --no-state\nstep = 2\nscore = 4.0\n",
            ("disk I/O error", "database or disk is full"),
            ("free some space",),
        )
        assert str(root) in why
        assert kernel.value("score") == "4.0"
        _store_is_valid(root, {"before": 1})
        # `nbexp rm` under the same limit: its index write fails, and nothing is deleted
        _cli_refused(
            root,
            ("rm", "before"),
            ("disk I/O error", "database or disk is full"),
            ("free some space",),
            fsize=wal.stat().st_size,
        )
        _store_is_valid(root, {"before": 1})
        code, out, _ = nbexp(root, "reindex")  # the index and the records agree
        assert code == 0 and out.startswith("indexed 1 experiment"), out

        kernel.file_size_limit(None)
        kernel.recorded("after", 3)
        _store_is_valid(root, {"before": 1, "after": 3})
    finally:
        kernel.close()
    figures.report("disk full: index insert fails (WAL at RLIMIT_FSIZE)", "record taken back, told")


def test_read_only_index(zygote: Zygote, tmp_path: Path) -> None:
    """An index file nobody may write (`chattr +i`): not recorded, and said so."""
    if not shutil.which("chattr"):
        pytest.skip("chattr is not installed")
    root = tmp_path / "project" / ".nbexp"
    first = Kernel(zygote, root, tmp_path / "project")
    try:
        first.recorded("before", 1)
    finally:
        first.close()
    forget_stores()
    index = root / "index.sqlite"
    made = subprocess.run(["chattr", "+i", str(index)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {made.stderr.strip()}")
    try:
        kernel = Kernel(zygote, root, tmp_path / "project")
        try:
            why = kernel.refused(
                record_cell("on-read-only", 2), ("readonly database",), ("chattr -i", "chmod")
            )
            assert str(index) in why and "read-only" in why
            _big_is_there(kernel, "on-read-only")
            _cli_refused(root, ("rm", "before"), ("readonly database",), ("chattr -i",))
            assert set(listed(root)) == {"before"}
            assert sorted(p.name for p in (root / "records").rglob("*.json")) == [
                f"{Store(root).resolve('before')}.json"
            ]
        finally:
            kernel.close()
    finally:
        subprocess.run(["chattr", "-i", str(index)], check=True)
    forget_stores()
    _store_is_valid(root, {"before": 1})
    kernel = Kernel(zygote, root, tmp_path / "project")
    try:
        kernel.recorded("after", 3)
    finally:
        kernel.close()
    _store_is_valid(root, {"before": 1, "after": 3})
    figures.report("disk full: read-only index (chattr +i)", "not recorded, told, store valid")


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
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
        forget_stores()
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path, leave: int) -> Path:
    """A file taking all free space of `folder`'s file system but `leave` bytes."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    size = max(0, stat.f_bavail * stat.f_frsize - leave)
    with open(filler, "wb") as handle:
        handle.truncate(0)
        block = b"\0" * (1 << 20)
        while size > 0:
            written = handle.write(block[: min(size, len(block))])
            size -= written
    return filler


def test_small_disk_fills_up(zygote: Zygote, tmp_path: Path) -> None:
    """A real 24 MB tmpfs holding the store fills up in the middle of a record."""
    with _tmpfs(tmp_path / "disk", "24m") as disk:
        root = disk / ".nbexp"
        kernel = Kernel(zygote, root, tmp_path / "project")
        try:
            kernel.recorded("before", 1)
            filler = _fill(disk, leave=1 << 20)  # 1 MB left; a run stores ~3 MB new
            kernel.refused(
                record_cell("no-room", 2), ("No space left on device",), ("free some space",)
            )
            _big_is_there(kernel, "no-room")
            _store_is_valid(root, {"before": 1})

            filler.unlink()
            filler = _fill(disk, leave=0)  # not a byte left: not even the record fits
            why = kernel.refused(
                "%%experiment no-room-at-all --no-state\nstep = 3\nscore = 1.0\n",
                ("No space left on device", "database or disk is full", "disk I/O error"),
                ("free some space",),
            )
            assert "full" in why
            for argv in (("tag", "before", "best"), ("rm", "before")):
                _cli_refused(
                    root,
                    argv,
                    ("No space left on device", "database or disk is full", "disk I/O error"),
                    ("free some space",),
                )
            _store_is_valid(root, {"before": 1})

            filler.unlink()  # space returns
            kernel.recorded("after", 4)
            _store_is_valid(root, {"before": 1, "after": 4})
            assert_fsck_clean(root, fresh_process=True)
        finally:
            kernel.close()
    figures.report("disk full: real tmpfs filled mid-record", "not recorded, told, store valid")
