"""Recorded paths meeting the file system: a path in a record is data its author wrote.

A record names files (what the run read and wrote, its notebook, its working folder). For a
record pulled from a remote, those names come from someone else, and joined onto the file
system unchecked they could write anywhere (`../../.bashrc`, `…/site-packages/x.pth`) or read
anything (`/dev/zero`). Every place that turns a recorded path into a file here goes through
`within_project`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


def crafted(recorded: str) -> str | None:
    """Why `recorded` is a path nbexp itself never writes into a record (a relative path that
    climbs with `..`, control characters, a NUL), or None. Such a record was made by hand."""
    if any(ord(character) < 32 for character in recorded):
        return "it holds control characters"
    if not os.path.isabs(recorded):
        parts = PurePosixPath(recorded).parts + PureWindowsPath(recorded).parts
        if ".." in parts:
            return "it climbs out of its folder with `..`"
    return None


def within_project(
    recorded: str, project: str | os.PathLike[str], base: str | None = None
) -> Path | None:
    """The file `recorded` names, resolved against `base` (default: the working folder) with
    symlinks followed, if it is relative, not crafted, and lands inside `project`; else None."""
    if not recorded or os.path.isabs(recorded) or crafted(recorded):
        return None
    root = os.path.realpath(project)
    target = os.path.realpath(os.path.join(base or os.getcwd(), recorded))
    if target == root or not target.startswith(root + os.sep):
        return None
    return Path(target)


def is_inside(path: str | os.PathLike[str], project: str | os.PathLike[str]) -> bool:
    """Whether `path` (symlinks followed) is `project` or lies inside it."""
    root = os.path.realpath(project)
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)
