"""`nbexp rerun` and `nbexp branch` (SPEC §7, §8), through the real CLI on real stores and a
real git repository, checked with git itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp.rerun import agree, parse_metrics
from nbexp.store import open_store
from tests.conftest import run
from tests.test_cli import assert_user_error, nbexp_cli
from tests.test_export import SESSIONS, record_session
from tests.test_store import schema_errors


@pytest.fixture
def fresh(ip: Any) -> Any:
    ip.history_manager.reset(new_session=True)
    ip.execution_count = 1
    return ip


# -- rerun --------------------------------------------------------------------------------


def test_rerun_agrees_and_records_a_linked_experiment(fresh: Any, project: Path) -> None:
    source = record_session(fresh, SESSIONS["unused"])
    result = nbexp_cli("rerun", "unused-dropped", cwd=project)
    assert result.code == 0, result
    assert "✓ all 1 metrics agree" in result.out
    assert "score" in result.out and f"{source.metrics['score']:.10g}" in result.out
    rerun = open_store(project).get("last")
    assert rerun.links == {"rerun_of": source.id}
    assert rerun.name == "unused-dropped-rerun" and rerun.status == "ok"
    assert rerun.metrics == source.metrics and rerun.params == source.params
    assert rerun.code == source.code  # the rerun ran the same code: it can itself be exported
    assert schema_errors(rerun.to_dict()) == []
    again = nbexp_cli("rerun", "last", cwd=project)
    assert again.code == 0
    assert open_store(project).get("last").name == "unused-dropped-rerun"


def test_rerun_exit_codes(fresh: Any, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record_session(fresh, ["import random", "%%experiment noisy\nvalue = random.random()"])
    differ = nbexp_cli("rerun", "noisy", cwd=project)
    assert differ.code == 3, differ
    assert "✗ 1 of 1 metrics differ" in differ.out

    (project / "data.txt").write_text("1\n2\n")
    record_session(fresh, ["%%experiment reads\ntotal = sum(map(int, open('data.txt')))"])
    (project / "data.txt").write_text("1\n3\n")
    changed = nbexp_cli("rerun", "reads", cwd=project)
    assert changed.code == 2, changed
    assert "input data data.txt changed" in changed.out
    assert nbexp_cli("rerun", "reads", "--no-check-data", cwd=project).code == 3
    assert nbexp_cli("rerun", "reads", "--no-check-data", "--atol", "2", cwd=project).code == 0

    monkeypatch.setenv("NBEXP_TEST_FACTOR", "3")
    record_session(
        fresh, ["%%experiment needs-env\nimport os\nk = int(os.environ['NBEXP_TEST_FACTOR'])"]
    )
    monkeypatch.delenv("NBEXP_TEST_FACTOR")
    failed = nbexp_cli("rerun", "needs-env", cwd=project)
    assert failed.code == 4, failed
    assert "the script failed" in failed.out and "KeyError" in failed.out
    assert open_store(project).get("last").status == "failed"

    assert_user_error(nbexp_cli("rerun", "nosuch", cwd=project), "nosuch")


def test_metric_agreement() -> None:
    assert agree(1.0, 1.0 + 1e-9) and not agree(1.0, 1.001)
    assert agree(1.0, 1.001, rtol=1e-2)
    assert agree(float("nan"), float("nan")) and not agree(float("nan"), 1.0)
    assert agree(float("inf"), float("inf")) and not agree(float("inf"), float("-inf"))
    assert agree([1, {"a": 2.0}], [1, {"a": 2.0 + 1e-12}]) and not agree([1], [1, 2])
    assert agree("x", "x") and not agree(True, 1.5)
    assert parse_metrics('noise\nNBEXP_METRICS {"a": {"$float": "nan"}, "b": 1}\n') is not None
    assert parse_metrics("nothing here") is None


# -- branch -------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"},
    )
    return completed.stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real repository on `main` with one commit, as the working directory."""
    if shutil.which("git") is None:
        pytest.skip("needs the git executable")
    folder = tmp_path / "repo"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.email", "tester@example.com")
    git(folder, "config", "user.name", "Tester")
    git(folder, "config", "commit.gpgsign", "false")
    (folder / "train.py").write_text("depth = 3\n")
    git(folder, "add", "train.py")
    git(folder, "commit", "-q", "-m", "first")
    monkeypatch.chdir(folder)
    return folder


def _user_state(repo: Path) -> dict[str, str]:
    """What the user sees of their repository: HEAD, branch, index, working tree."""
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "index": git(repo, "ls-files", "--stage"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "worktree": git(repo, "diff"),
        "train": (repo / "train.py").read_text(),
    }


def test_branch_holds_the_experiment_without_touching_the_user(ip: Any, repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "train.py").write_text("depth = 5\n")  # uncommitted, unstaged
    (repo / "notes.txt").write_text("staged, not committed\n")
    git(repo, "add", "notes.txt")
    assert run(ip, "%%experiment in-repo\nalpha = 0.5\nscore = alpha * 2").success
    experiment = nbexp.get("in-repo")
    assert experiment.git and experiment.git["dirty"]
    before = _user_state(repo)

    made = nbexp_cli("branch", "in-repo", "exp/in-repo", cwd=repo)
    assert made.code == 0, made
    assert "exp/in-repo" in made.out
    assert _user_state(repo) == before

    assert git(repo, "rev-parse", "exp/in-repo^").strip() == base
    assert git(repo, "log", "--format=%s", "-1", "exp/in-repo").startswith(
        "nbexp: experiment in-repo"
    )
    assert git(repo, "show", "exp/in-repo:train.py") == "depth = 5\n"
    assert git(repo, "show", "exp/in-repo:notes.txt") == "staged, not committed\n"
    files = set(git(repo, "ls-tree", "-r", "--name-only", "exp/in-repo").split())
    assert {"in-repo.py", "in-repo.ipynb", "in-repo.nbexp.json"} <= files
    record = json.loads(git(repo, "show", "exp/in-repo:in-repo.nbexp.json"))
    assert record["id"] == experiment.id
    notebook = json.loads(git(repo, "show", "exp/in-repo:in-repo.ipynb"))
    assert any("parameters" in c["metadata"].get("tags", []) for c in notebook["cells"])

    script = repo.parent / "from-branch.py"
    script.write_text(git(repo, "show", "exp/in-repo:in-repo.py"))
    completed = subprocess.run(
        [sys.executable, str(script)], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert parse_metrics(completed.stdout) == experiment.metrics

    exists = assert_user_error(nbexp_cli("branch", "in-repo", "exp/in-repo", cwd=repo), "exists")
    assert "another name" in exists
    assert_user_error(nbexp_cli("branch", "in-repo", "bad..name", cwd=repo), "branch name")
    assert _user_state(repo) == before


def test_branch_refuses_an_experiment_without_a_commit(fresh: Any, project: Path) -> None:
    record_session(fresh, ["%%experiment nowhere\nk = 1\nsquare = k * k"])
    message = assert_user_error(nbexp_cli("branch", "nowhere", "exp", cwd=project), "git")
    assert "no git commit" in message
