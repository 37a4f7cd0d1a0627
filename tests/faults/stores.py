"""Helpers for the corruption, bad-input, secrets and version-skew fault tests: damaging files
in place, reading `nbexp fsck`'s verdict, and scanning every byte of a tree for planted values."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.test_cli import Result, nbexp_cli

__all__ = ["Result", "cli", "nbexp_cli", "one_line_error"]


def flip(path: Path, offset: int, mask: int = 0xFF) -> bytes:
    """XOR one byte of `path` with `mask`; returns the file's bytes from before."""
    before = path.read_bytes()
    damaged = bytearray(before)
    damaged[offset % len(damaged)] ^= mask
    os.chmod(path, 0o644)  # objects may be read-only
    path.write_bytes(bytes(damaged))
    return before


def overwrite(path: Path, offset: int, data: bytes) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def truncate(path: Path, size: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        handle.truncate(size)


def fsck_lines(result: Result) -> dict[tuple[str, str], str]:
    """`nbexp fsck`'s problems as {(kind, item): detail}; asserts each is one clean line."""
    assert "Traceback" not in result.out + result.err
    found: dict[tuple[str, str], str] = {}
    for line in result.out.splitlines():
        head, _, detail = line.partition(": ")
        kind, _, item = head.partition(" ")
        assert kind in ("record", "object", "index", "pack") and item and detail, line
        assert (kind, item) not in found, f"named twice: {line}"
        found[(kind, item)] = detail
    return found


def users_named(detail: str) -> set[str]:
    """The experiment ids in fsck's `... (used by a, b and 2 more)`."""
    inside = detail.rsplit("(used by ", 1)[1].rstrip(")")
    return {word for word in inside.replace(" and ", ", ").split(", ") if "more" not in word}


# -- scanning every byte for planted values ---------------------------------------------


ENCODINGS = ("utf-8", "utf-16-le", "utf-32-le")


@dataclass
class Scan:
    files: int = 0
    bytes: int = 0
    leaks: list[str] | None = None


def needles_of(values: Iterable[str]) -> dict[bytes, str]:
    """Each value in the encodings a file, a pickle or a numpy string array would hold it."""
    return {value.encode(encoding): value for value in values for encoding in ENCODINGS}


def scan_tree(root: Path, values: Iterable[str], scan: Scan | None = None) -> Scan:
    """Look for every value in every byte of every file under `root`."""
    scan = scan or Scan(leaks=[])
    assert scan.leaks is not None
    needles = needles_of(values)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        scan.files += 1
        scan.bytes += len(data)
        for needle, value in needles.items():
            if needle in data:
                scan.leaks.append(f"{path}: {value[:6]}…")
    return scan


# -- a read-only store, also for root -------------------------------------------------------


@contextlib.contextmanager
def read_only(tree: Path) -> Iterator[str]:
    """Make every folder and file of `tree` unwritable for this process; yields how.

    chmod does not restrict root, so root gets the immutable attribute (chattr +i) instead,
    which it must obey too. Raises OSError when neither works here."""
    paths = [tree, *sorted(tree.rglob("*"))]
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in paths}
        for path in reversed(paths):
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield "chmod a-w"
        finally:
            for path in paths:
                path.chmod(modes[path])
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        raise OSError("root, and no chattr to make the store immutable")
    done = subprocess.run([chattr, "-R", "+i", str(tree)], capture_output=True, text=True)
    try:
        if done.returncode != 0:
            raise OSError(f"chattr +i failed here: {done.stderr.strip()}")
        probe = tree / "probe"
        try:
            probe.write_bytes(b"")
        except OSError:
            pass
        else:
            probe.unlink()
            raise OSError("chattr +i does not stop writes on this file system")
        yield "chattr +i (running as root)"
    finally:
        subprocess.run([chattr, "-R", "-i", str(tree)], capture_output=True)


def cli(*argv: str) -> Result:
    """`nbexp ARGV...` in this process (the console script's code path) on freshly opened
    stores, as a new process would see them; an uncaught exception fails the test."""
    import io

    from nbexp import store as store_module
    from nbexp.cli import main

    for store in list(store_module._stores.values()):
        with contextlib.suppress(Exception):
            store.close()
    store_module._stores.clear()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit:  # argparse refusing the command line
            code = exit.code if isinstance(exit.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def one_line_error(result: Result, *fragments: str, code: int = 1) -> str:
    """Exit `code`, exactly one stderr line `nbexp: ...`, no traceback; returns that line."""
    assert result.code == code, result
    assert "Traceback" not in result.out + result.err, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nbexp: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
