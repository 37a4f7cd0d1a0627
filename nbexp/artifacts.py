"""`nbexp artifact`: a file an experiment wrote, written back out byte for byte from the store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import NbexpError
from .hashing import hash_file
from .paths import crafted, within_project
from .record import Experiment
from .store import Store
from .subrecords import Artifact


def find_artifact(experiment: Experiment, wanted: str) -> Artifact:
    """The artifact `wanted` names: its recorded path, its absolute path, or a unique basename."""
    artifacts = experiment.artifacts
    if not artifacts:
        raise NbexpError(f"{experiment.name} ({experiment.short_id}) wrote no files")
    normal = os.path.normpath(wanted)
    for item in artifacts:
        if normal in (os.path.normpath(item.path), os.path.normpath(item.abspath or "")):
            return item
    by_name = [item for item in artifacts if os.path.basename(item.path) == wanted]
    if len(by_name) == 1:
        return by_name[0]
    known = ", ".join(item.path for item in artifacts)
    if by_name:
        raise NbexpError(f"{wanted} names several artifacts ({known}); give its recorded path")
    raise NbexpError(
        f"{experiment.name} ({experiment.short_id}) wrote no file {wanted}; its artifacts: {known}"
    )


def write_artifact(
    store: Store, experiment: Experiment, wanted: str, destination: str | None, *, force: bool
) -> str:
    """Write the artifact to `destination` (default: its recorded path, relative to here and
    only inside this project; `-`: stdout) and return where it went. An existing different
    file is kept unless `force`."""
    item = find_artifact(experiment, wanted)
    if destination == "-":
        sys.stdout.buffer.write(store.read_object(item.hash))
        sys.stdout.buffer.flush()
        return "-"
    recorded = item.path
    if destination:
        target = Path(destination)
        if target.is_dir():
            target = target / os.path.basename(recorded)
    else:  # the recorded path is data its author wrote: only ever a file in this project
        inside = within_project(recorded, store.root.parent)
        if inside is None:
            why = crafted(recorded) or (
                "it is absolute" if os.path.isabs(recorded) else "it lies outside this project"
            )
            raise NbexpError(
                f"{experiment.name} ({experiment.short_id}) recorded this file as {recorded!r}, "
                f"which is not written back there: {why}; give -o DEST to choose where it goes"
            )
        target = inside
    if target.exists() and not force:
        if hash_file(target)[0] == item.hash:
            return str(target)  # already byte-identical: nothing to write
        raise NbexpError(
            f"{target} exists and differs from the recorded artifact; "
            "pass --force to overwrite it or -o to write elsewhere"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.nbexp-tmp")
    try:
        store.copy_object_to(item.hash, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return str(target)
