"""`nbexp status [REF]` (SPEC §8): stale experiments, through the real CLI on a real store."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from nbexp.staleness import check, stale_ids
from nbexp.store import open_store
from tests.conftest import run
from tests.test_cli import nbexp_cli

BODY = 'import pandas as pd\n\nthreshold = 0.5\nrows = len(pd.read_csv("data.csv"))\n'


def _record(ip, name: str, body: str = BODY) -> None:
    result = run(ip, f"%%experiment {name}\n{body}")
    assert result.success, result.error_in_exec


def _rewrite(path: Path, text: str) -> None:
    """New content with a new mtime, as an editor's save would leave it."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_fresh_then_stale_when_an_input_file_changes(ip, project: Path) -> None:
    (project / "data.csv").write_text("a,b\n1,2\n3,4\n")
    _record(ip, "reader")
    fresh = nbexp_cli("status", cwd=project)
    assert fresh.code == 0, fresh
    assert "none stale" in fresh.out

    _rewrite(project / "data.csv", "a,b\n1,2\n3,4\n5,6\n")
    stale = nbexp_cli("status", cwd=project)
    assert stale.code == 1, stale
    assert "reader" in stale.out
    assert "file data.csv modified" in stale.out
    assert "1 of 1 experiment stale" in stale.out
    assert stale.err == ""

    (project / "data.csv").unlink()
    gone = nbexp_cli("status", "reader", cwd=project)
    assert gone.code == 1
    assert "file data.csv missing" in gone.out


def test_status_of_one_experiment_and_the_python_check(ip, project: Path) -> None:
    (project / "data.csv").write_text("a\n1\n")
    (project / "other.csv").write_text("a\n1\n")
    _record(ip, "old-reader")
    _record(ip, "other-reader", BODY.replace("data.csv", "other.csv"))
    _rewrite(project / "data.csv", "a\n2\n")

    one = nbexp_cli("status", "other-reader", cwd=project)
    assert one.code == 0, one
    assert "fresh  other-reader" in one.out
    assert nbexp_cli("status", "old-reader", cwd=project).code == 1

    store = open_store()
    ids = {row["name"]: row["id"] for row in store.rows()}
    assert stale_ids(store) == {ids["old-reader"]}
    assert [str(c) for c in check(store, store.get("old-reader"))] == ["file data.csv modified"]
    assert check(store, store.get("other-reader")) == []
    missing = nbexp_cli("status", "no-such-run", cwd=project)
    assert missing.code == 1 and missing.err.startswith("nbexp: ")


def _notebook(path: Path, source: str, *, outputs: bool = False) -> None:
    code = new_code_cell(source)
    if outputs:
        code.outputs = [new_output("stream", name="stdout", text="saved with outputs\n")]
        code.execution_count = 7
    notebook = new_notebook(cells=[new_code_cell("import nbexp"), code])
    nbformat.write(notebook, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


@pytest.mark.parametrize("edit", ["cell", "removed"])
def test_the_notebook_changing_the_experiments_cell_makes_it_stale(
    ip, project: Path, monkeypatch: pytest.MonkeyPatch, edit: str
) -> None:
    notebook = project / "analysis.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    (project / "data.csv").write_text("a\n1\n")
    cell = f"%%experiment nb-run\n{BODY}"
    _notebook(notebook, cell)
    _record(ip, "nb-run")
    assert open_store().get("nb-run").code.notebook == str(notebook)
    assert nbexp_cli("status", cwd=project).code == 0

    # Saving outputs rewrites the file but leaves the experiment's code as it ran: not stale.
    _notebook(notebook, cell, outputs=True)
    saved = nbexp_cli("status", cwd=project)
    assert saved.code == 0, saved

    _notebook(
        notebook, cell.replace("threshold = 0.5", "threshold = 0.9") if edit == "cell" else "x = 1"
    )
    changed = nbexp_cli("status", cwd=project)
    assert changed.code == 1, changed
    assert f"notebook {notebook} modified" in changed.out

    notebook.unlink()
    assert f"notebook {notebook} missing" in nbexp_cli("status", cwd=project).out


def test_a_pulled_experiment_is_not_stale_for_inputs_that_are_not_on_this_machine(
    ip, project: Path, tmp_path: Path
) -> None:
    (project / "data.csv").write_text("a,b\n1,2\n")
    _record(ip, "made-elsewhere")
    remote = tmp_path / "team-remote"
    assert nbexp_cli("remote", "add", "team", str(remote), cwd=project).code == 0
    assert nbexp_cli("push", "-q", cwd=project).code == 0, "push failed"

    laptop = tmp_path / "laptop"
    (laptop / ".nbexp").mkdir(parents=True)
    assert nbexp_cli("remote", "add", "team", str(remote), cwd=laptop).code == 0
    assert nbexp_cli("pull", "-q", cwd=laptop).code == 0
    # the input is not on "this machine" (both stores share a disk here, so remove it)
    (project / "data.csv").unlink()
    here = nbexp_cli("status", cwd=laptop)
    assert here.code == 0, here
    assert "none stale" in here.out
    one = nbexp_cli("status", "made-elsewhere", cwd=laptop)
    assert one.code == 0 and "pulled from team" in one.out, one
    # on the machine that recorded it, a missing input still counts
    assert "file data.csv missing" in nbexp_cli("status", cwd=project).out

    # an input that is in this project and differs still makes the pulled one stale (its
    # recorded path is read relative to this project, never at the author's absolute path)
    _rewrite(project / "data.csv", "a,b\n9,9\n")
    assert "none stale" in nbexp_cli("status", cwd=laptop).out
    _rewrite(laptop / "data.csv", "a,b\n9,9\n")
    changed = nbexp_cli("status", cwd=laptop)
    assert changed.code == 1 and "file data.csv modified" in changed.out, changed
