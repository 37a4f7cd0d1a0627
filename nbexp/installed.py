"""What is installed: every distribution on a `sys.path`, read in one pass — which
distributions provide each top-level module (as `importlib.metadata.packages_distributions`
says), each one's version and folder (as `version()` and `distribution()` say: the first one
on the path of that name).

Reading `Name` and `Version` with the email parser (what `Distribution.metadata` does) cost
~1 ms per distribution: most of a 300-distribution venv's 0.4–0.6 s scan. Here the header
block is read as text, and only a METADATA whose header this reading does not find falls back
to the parser. Still ~0.15 s of CPU, which in a kernel's thread holds the GIL the user's
cells need: a kernel runs it in a child process (`Scan`, this file run as a script: the path
as JSON on stdin, the answer as JSON on stdout), whose answer it reads when a record first
needs it. Only the standard library here, so the child starts in ~20 ms.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any


def scan(path: list[str] | None = None) -> dict[str, Any]:
    """{"tops": {module: [distribution, …]}, "found": {normalized name: [version, folder]}}
    for the distributions on `path` (default `sys.path`), JSON-ready."""
    from importlib.metadata import distributions

    tops: dict[str, list[str]] = {}
    found: dict[str, list[str | None]] = {}
    for dist in distributions() if path is None else distributions(path=path):
        name, version = _name_and_version(dist)
        if not name:
            continue
        for top in _top_levels(dist):
            tops.setdefault(top, []).append(name)
        key = _normalized(name)
        if key not in found:
            found[key] = [version, _folder(dist)]
    return {"tops": tops, "found": found}


def _folder(dist: Any) -> str | None:
    try:
        return str(dist.locate_file(""))
    except (OSError, ValueError, NotImplementedError):
        return None


class Installed:
    """One scan's answers: distributions per top-level module, version and folder per name."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        answer = scan() if answer is None else answer
        self.tops: dict[str, list[str]] = answer["tops"]  # top-level module → distributions
        self.found: dict[str, list[str | None]] = answer["found"]  # name → [version, folder]

    def version(self, distribution: str) -> str | None:
        return self.found.get(_normalized(distribution), (None, None))[0]

    def base(self, distribution: str) -> Path | None:
        """The folder a distribution is installed into (site-packages), or None."""
        folder = self.found.get(_normalized(distribution), (None, None))[1]
        if folder is None:
            return None
        try:
            return Path(os.path.realpath(folder))
        except (OSError, ValueError):
            return None


class Scan:
    """The scan of `path` running in a child process of this interpreter, started now;
    `result()` waits for its answer (the GIL let go meanwhile), or None if it failed."""

    def __init__(self, path: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None
        with self.process.stdin:  # a few KB: fits the pipe, never blocks
            self.process.stdin.write(json.dumps(path).encode())
        self.process.stdin = None  # closed: `communicate` only reads

    def result(self) -> Installed | None:
        try:
            out, _ = self.process.communicate(timeout=120)
            if self.process.returncode != 0:
                return None
            return Installed(json.loads(out))
        except Exception:  # a child that died or hung: the caller scans in process
            self.discard()
            return None

    def discard(self) -> None:
        """Stop the child (if still running) and reap it."""
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.communicate(timeout=5)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _name_and_version(dist: Any) -> tuple[str | None, str | None]:
    """`Name` and `Version` of a distribution's metadata, as its email-parsed `metadata`
    gives them: the first header of each name (case-insensitive), folded lines joined."""
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("")
    except (OSError, UnicodeDecodeError, ValueError):
        text = None
    if text:
        headers: dict[str, str] = {}
        key: str | None = None
        for line in text.splitlines():
            if not line.strip():
                break
            if line[0] in " \t" and key is not None:  # a folded continuation
                if key in ("name", "version") and headers.get(key) is not None:
                    return _parsed_name_and_version(dist)
                continue
            field, colon, value = line.partition(":")
            if not colon:
                return _parsed_name_and_version(dist)
            key = field.strip().lower()
            if key in ("name", "version") and key not in headers:
                headers[key] = value.strip()
        if headers.get("name"):
            return headers["name"], headers.get("version") or None
    return _parsed_name_and_version(dist)


def _parsed_name_and_version(dist: Any) -> tuple[str | None, str | None]:
    try:
        metadata = dist.metadata
        return metadata["Name"], metadata["Version"]
    except Exception:  # a broken distribution is skipped, as if not installed
        return None, None


def _top_levels(dist: Any) -> Iterable[str]:
    """The top-level modules a distribution provides, as `packages_distributions` infers
    them: `top_level.txt`, else the `.py` files its RECORD (or SOURCES.txt) lists."""
    try:
        declared = (dist.read_text("top_level.txt") or "").split()
        if declared:
            return declared
        lines = dist.read_text("RECORD")
        if lines:
            rows: Iterable[list[str]] = csv.reader(lines.splitlines())
        else:
            sources = dist.read_text("SOURCES.txt")
            if not sources:
                return ()
            rows = csv.reader(f'"{line}"' for line in sources.splitlines())
        inferred = set()
        for row in rows:
            if not row or not row[0].endswith(".py"):
                continue
            name = row[0]
            if name.startswith("/"):  # pathlib's roots: rare enough to ask it
                path = PurePosixPath(name)
                parts: Any = path.parts if path.suffix == ".py" else ()
            else:  # PurePosixPath's parts, without building one per file (10,000s)
                parts = [part for part in name.split("/") if part and part != "."]
                if not parts or len(parts[-1]) <= 3 or not parts[-1].endswith(".py"):
                    continue
            if parts:
                inferred.add(parts[0] if len(parts) > 1 else parts[0][:-3])
        return inferred
    except (OSError, UnicodeDecodeError, ValueError, csv.Error):
        return ()


if __name__ == "__main__":
    import importlib.metadata  # noqa: F401 (from this interpreter's own path, before it goes)

    # `-I -S`: the distributions are looked for on the path the parent sent
    sys.path[:] = json.load(sys.stdin)
    json.dump(scan(), sys.stdout, separators=(",", ":"))
