"""DVC's own record of a data file: the md5 in a `.dvc` file beside it, or in `dvc.lock`.

Read directly (they are small YAML files), so nbexp never needs DVC installed. Each file is
parsed once per change (cached by mtime and size): a run in a DVC project costs a few `stat`
calls per input file, not a YAML parse. A file DVC tracks inside a tracked folder gets the
folder's md5 (`….dir`), which is what `dvc checkout` restores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import NbexpError
from .subrecords import DataInput


class DvcFileError(NbexpError):
    """A `.dvc` file or `dvc.lock` that cannot be read as DVC writes it."""


@dataclass(frozen=True)
class Tracked:
    """DVC's version of one input: the md5 and the DVC file it came from (root-relative)."""

    md5: str
    source: str  # e.g. "data/train.csv.dvc" or "dvc.lock"
    path: str  # the path DVC tracks (the file, or the folder holding it), root-relative
    stage: str | None = None  # the dvc.lock stage whose output it is

    def to_record(self) -> dict[str, Any]:
        entry = {"md5": self.md5, "source": self.source, "path": self.path}
        if self.stage:
            entry["stage"] = self.stage
        return entry


_parsed: dict[str, tuple[tuple[int, int], Any]] = {}


def load_yaml(path: str) -> Any:
    """A YAML file's content, parsed once per change; DvcFileError when it does not parse."""
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _parsed.get(path)
    if cached is not None and cached[0] == key:
        if isinstance(cached[1], DvcFileError):
            raise cached[1]
        return cached[1]
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as handle:
            content: Any = yaml.load(handle, Loader=loader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = DvcFileError(
            f"{path} is not valid YAML ({str(error).splitlines()[0]}); "
            "`dvc status` shows how DVC reads it"
        )
        _parsed[path] = (key, problem)
        raise problem from error
    _parsed[path] = (key, content)
    return content


def find_root(start: str) -> str | None:
    """The DVC project holding `start` (the nearest ancestor with a `.dvc/` folder)."""
    folder = os.path.abspath(start)
    while True:
        if os.path.isdir(os.path.join(folder, ".dvc")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _md5(entry: dict[str, Any]) -> str | None:
    value = entry.get("md5") or (entry.get("hash") if entry.get("hash") != "md5" else None)
    return str(value) if value else None


def _from_dvc_file(dvc_file: str, target: str, root: str) -> Tracked | None:
    """The md5 a `.dvc` file holds for `target` (or a folder containing it)."""
    content = load_yaml(dvc_file)
    shown = os.path.relpath(dvc_file, root)
    outs = content.get("outs") if isinstance(content, dict) else None
    if not isinstance(outs, list) or not outs:
        raise DvcFileError(f"{shown} has no `outs` entry as DVC writes them; `dvc add` remakes it")
    folder = os.path.dirname(dvc_file)
    named = []
    for entry in outs:
        if not isinstance(entry, dict) or "path" not in entry:
            raise DvcFileError(f"{shown}: an `outs` entry without a path; `dvc add` remakes it")
        tracked = os.path.normpath(os.path.join(folder, str(entry["path"])))
        named.append(os.path.relpath(tracked, root))
        if target == tracked or target.startswith(tracked + os.sep):
            md5 = _md5(entry)
            if not md5:
                raise DvcFileError(f"{shown} holds no md5 for {entry['path']}; run `dvc commit`")
            return Tracked(md5, shown, os.path.relpath(tracked, root))
    raise DvcFileError(
        f"{shown} tracks {', '.join(named)}, not {os.path.relpath(target, root)}; "
        "DVC's md5 was not recorded"
    )


def _from_lock(lock: str, target: str, root: str) -> Tracked | None:
    """The md5 `dvc.lock` holds for a stage output that is `target` (or contains it)."""
    content = load_yaml(lock)
    stages = content.get("stages") if isinstance(content, dict) else None
    if not isinstance(stages, dict):
        return None
    folder = os.path.dirname(lock)
    for stage, body in stages.items():
        for entry in (body or {}).get("outs") or () if isinstance(body, dict) else ():
            if not isinstance(entry, dict) or "path" not in entry:
                continue
            tracked = os.path.normpath(os.path.join(folder, str(entry["path"])))
            if target == tracked or target.startswith(tracked + os.sep):
                md5 = _md5(entry)
                if md5:
                    return Tracked(
                        md5, os.path.relpath(lock, root), os.path.relpath(tracked, root), stage
                    )
    return None


def tracked(path: str) -> Tracked | None:
    """DVC's version of the file at `path`, or None when DVC does not track it;
    DvcFileError when the DVC file that should say is damaged or names another file."""
    target = os.path.abspath(path)
    root = find_root(os.path.dirname(target))
    if root is None:
        return None
    folder = target
    while folder.startswith(root + os.sep):
        candidate = folder + ".dvc"
        if os.path.isfile(candidate):
            return _from_dvc_file(candidate, target, root)
        folder = os.path.dirname(folder)
    folder = os.path.dirname(target)
    while True:
        lock = os.path.join(folder, "dvc.lock")
        if os.path.isfile(lock):
            found = _from_lock(lock, target, root)
            if found is not None:
                return found
        if folder == root or not folder.startswith(root):
            return None
        folder = os.path.dirname(folder)


def annotate(data: list[dict[str, Any]]) -> dict[str, str]:
    """Add DVC's md5 (`"dvc": {...}`) to each file entry DVC tracks; return the problems
    (path → one line) of DVC files that could not be read, leaving those entries as they were."""
    problems: dict[str, str] = {}
    for entry in data:
        if entry.get("kind") != "file":
            continue
        try:
            found = tracked(str(entry.get("abspath") or entry.get("path")))
        except DvcFileError as error:
            problems[str(entry.get("path"))] = str(error)
            continue
        except (OSError, AttributeError, TypeError, ValueError):
            continue
        if found is not None:
            entry["dvc"] = found.to_record()
    return problems


def short(entry: DataInput) -> str:
    """`dvc md5 1a2b3c4d5e6f (data/train.csv.dvc)` for a data entry DVC tracks; else ''."""
    info = entry.dvc
    if info is None or not info.get("md5"):
        return ""
    return f"dvc md5 {str(info['md5'])[:12]} ({info.get('source')})"


def checkout_hint(entry: DataInput, commit: str | None) -> str | None:
    """The commands that bring back the version of an input a record names, DVC's way."""
    info = entry.dvc
    if info is None or not info.get("source"):
        return None
    source = str(info["source"])
    at = commit[:12] if commit else "<the recorded commit>"
    target = source if source.endswith(".dvc") else str(info.get("path"))
    return f"git checkout {at} -- {source} && dvc checkout {target}"
