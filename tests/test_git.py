"""Git capture (SPEC §3 git row, §2 store location) in a real repository made with the git CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp.store import open_store
from tests.conftest import run
from tests.test_store import schema_errors

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"},
    )
    return completed.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real repository on branch `main` with one commit, as the working directory."""
    folder = tmp_path / "repo"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))  # no user-level git config leaks in
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "tester@example.com")
    git(folder, "config", "user.name", "Tester")
    git(folder, "config", "commit.gpgsign", "false")
    (folder / "train.py").write_text("depth = 3\nlr = 0.1\n")
    (folder / "notebooks").mkdir()
    (folder / "notebooks" / "README.md").write_text("notebooks live here\n")
    git(folder, "add", "train.py", "notebooks/README.md")
    git(folder, "commit", "-q", "-m", "first")
    monkeypatch.chdir(folder)
    return folder


def record(ip: Any, name: str) -> Any:
    result = run(ip, f"%%experiment {name} --no-state\nalpha = 0.5\nscore = alpha * 2\n")
    assert result.success
    experiment = nbexp.get(name)
    assert schema_errors(experiment.to_dict()) == []
    return experiment


def test_clean_repository(ip: Any, repo: Path) -> None:
    experiment = record(ip, "clean")
    assert experiment.git is not None
    assert experiment.git["commit"] == git(repo, "rev-parse", "HEAD")
    assert experiment.git["branch"] == "main"
    assert experiment.git["dirty"] is False
    assert experiment.git["diff"] == ""
    assert Path(experiment.git["root"]) == repo
    assert open_store().root == repo / ".nbexp"
    assert (repo / ".nbexp" / "records").is_dir()


def test_modified_tracked_file_is_dirty_and_in_the_diff(ip: Any, repo: Path) -> None:
    (repo / "train.py").write_text("depth = 12\nlr = 0.1\n")
    (repo / "scratch.txt").write_text("UNTRACKED-CONTENT-MARKER\n")
    experiment = record(ip, "dirty")
    state = experiment.git
    assert state["dirty"] is True
    assert state["commit"] == git(repo, "rev-parse", "HEAD")
    assert "train.py" in state["diff"]
    assert "-depth = 3" in state["diff"] and "+depth = 12" in state["diff"]
    assert "scratch.txt" not in state["diff"]
    assert "UNTRACKED-CONTENT-MARKER" not in state["diff"]
    assert state["diff"] == git(repo, "diff", "HEAD", "--no-color")


def test_untracked_files_alone_do_not_make_it_dirty(ip: Any, repo: Path) -> None:
    (repo / "new_data.csv").write_text("a,b\n1,2\n")
    experiment = record(ip, "untracked-only")
    assert experiment.git["dirty"] is False
    assert experiment.git["diff"] == ""


def test_staged_changes_are_in_the_diff(ip: Any, repo: Path) -> None:
    (repo / "train.py").write_text("depth = 3\nlr = 0.01\n")
    git(repo, "add", "train.py")
    experiment = record(ip, "staged")
    assert experiment.git["dirty"] is True
    assert "+lr = 0.01" in experiment.git["diff"]


def test_store_is_at_the_repository_root_from_a_subfolder(ip: Any, repo: Path) -> None:
    os.chdir(repo / "notebooks")
    experiment = record(ip, "from-subfolder")
    assert open_store().root == repo / ".nbexp"
    assert (repo / ".nbexp" / "records" / experiment.id[:2] / f"{experiment.id}.json").is_file()
    assert not (repo / "notebooks" / ".nbexp").exists()
    assert experiment.git["commit"] == git(repo, "rev-parse", "HEAD")
    assert experiment.env["cwd"] == str(repo / "notebooks")


def test_detached_head_has_no_branch(ip: Any, repo: Path) -> None:
    (repo / "train.py").write_text("depth = 4\nlr = 0.1\n")
    git(repo, "commit", "-q", "-am", "second")
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "checkout", "-q", "--detach", first)
    experiment = record(ip, "detached")
    assert experiment.git["branch"] is None
    assert experiment.git["commit"] == first
    assert experiment.git["dirty"] is False


def test_a_repository_without_commits(
    ip: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-repo"
    empty.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    git(empty, "init", "-q", "-b", "trunk")
    monkeypatch.chdir(empty)
    experiment = record(ip, "no-commit")
    assert experiment.git["commit"] is None
    assert experiment.git["branch"] == "trunk"


def test_outside_any_repository_git_is_none(ip: Any, project: Path) -> None:
    if any((folder / ".git").exists() for folder in (project, *project.parents)):
        pytest.skip("the temp folder is inside a git repository")
    experiment = record(ip, "no-git")
    assert experiment.git is None
    assert open_store().root == project / ".nbexp"
