"""A process killed between writing an experiment's tags file and its index row: the next
process to open the store lists the experiment with the tags `show` gives (SPEC §2)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from nbexp.store import Store
from tests.test_store import make_experiment

# `nbexp tag REF TAG` whose index write kills the process: the tags file is already written
TAG_KILLED_BEFORE_INDEX = textwrap.dedent(
    """
    import os, signal, sys
    from nbexp import store
    from nbexp.cli import main

    def killed(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    store.Store._index_upsert = killed
    sys.exit(main(["--store", sys.argv[1], "tag", sys.argv[2], sys.argv[3]]))
    """
)


def _listed_tags(root: Path, name: str) -> list[str]:
    """The tags `nbexp list` shows for `name`, from a fresh process (as the user would)."""
    listing = subprocess.run(
        [sys.executable, "-m", "nbexp.cli", "--store", str(root), "list", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return next(row["tags"] for row in json.loads(listing.stdout) if row["name"] == name)


def test_a_tag_killed_before_its_index_row_is_listed_after_the_next_open(tmp_path: Path) -> None:
    root = tmp_path / ".nbexp"
    store = Store(root)
    make_experiment(store, "victim", tags=("first",))
    store.close()

    killed = subprocess.run(
        [sys.executable, "-c", TAG_KILLED_BEFORE_INDEX, str(root), "victim", "second"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    tags_file = next((root / "tags").glob("*.json"))
    assert json.loads(tags_file.read_text()) == ["first", "second"]  # written, not indexed

    # what `show` says (the files) and what `list` says (the index) agree again
    assert _listed_tags(root, "victim") == ["first", "second"]
    fsck = subprocess.run(
        [sys.executable, "-m", "nbexp.cli", "--store", str(root), "fsck"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert not list((root / "tmp").glob("*.unindexed"))
