"""Packages nbexp imports for itself (GitPython, gitdb, smmap...) are not the user's: they
never appear in a record's environment, unless the user imports or uses them.

Each case runs a real IPython shell in a fresh interpreter, so which packages were imported
before nbexp loaded is known (the test process itself has imported nearly everything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
ip.run_line_magic("load_ext", "nbexp")
import nbexp
cells = json.loads(sys.argv[1])
packages = []
for cell in cells:
    result = ip.run_cell(cell, store_history=True)
    assert result.success, result.error_in_exec
    if cell.startswith("%%experiment"):
        experiment = nbexp.get("last")
        packages.append(experiment.env["packages"])
        assert experiment.git and experiment.git.get("commit"), experiment.git
print("RESULT " + json.dumps(packages))
"""


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture
def repo(project: Path) -> Path:
    _git(project, "init", "-q")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "t")
    (project / "train.py").write_text("x = 1\n")
    _git(project, "add", "train.py")
    _git(project, "commit", "-qm", "first")
    return project


def run_shell(folder: Path, cells: list[str]) -> list[dict[str, str]]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("NBEXP_STORE", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), json.dumps(cells)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    line = next(text for text in done.stdout.splitlines() if text.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_two_identical_runs_list_the_same_packages_without_nbexp_s_own(repo: Path):
    first, second = run_shell(repo, ["%%experiment a\nx = 1", "%%experiment a\nx = 1"])
    assert first == second
    for name in ("GitPython", "gitdb", "smmap"):
        assert name not in first, first


def test_a_user_who_imports_git_still_sees_gitpython(repo: Path):
    # nbexp imported git first (the first run read the repository); the user imports it after
    plain, used = run_shell(repo, ["%%experiment a\nx = 1", "import git", "%%experiment b\nx = 1"])
    assert "GitPython" not in plain
    assert "GitPython" in used
    # and one who imported it before nbexp needed it
    (early,) = run_shell(repo, ["import git\nrepo_ = git.Repo('.')", "%%experiment c\ny = 2"])
    assert "GitPython" in early


def test_packages_the_body_imports_are_listed(repo: Path):
    (packages,) = run_shell(repo, ["%%experiment a\nimport numpy as np\nx = np.arange(3)"])
    assert "numpy" in packages


VENDORED = """
import json, sys
site, first = sys.argv[1], sys.argv[2]
sys.path[:0] = [first, site]
import plugmod
from nbexp.environment import imported_packages
print("RESULT " + json.dumps([plugmod.__file__, imported_packages({"plugmod": plugmod})]))
"""


def _imported_from(site: Path, first: Path) -> tuple[str, dict[str, str]]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(VENDORED), str(site), str(first)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(text for text in done.stdout.splitlines() if text.startswith("RESULT "))
    where, packages = json.loads(line[len("RESULT ") :])
    return where, packages


def test_a_package_s_private_copy_of_a_module_is_not_the_distribution_of_that_name(
    tmp_path: Path,
):
    # debugpy imports its own vendored `pydevd_plugins`; omegaconf installs a top-level
    # `pydevd_plugins` too, and every Jupyter record listed omegaconf, never imported
    site = tmp_path / "site-packages"
    (site / "plugmod").mkdir(parents=True)
    (site / "plugmod" / "__init__.py").write_text("ORIGIN = 'plugdist'\n")
    info = site / "plugdist-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugdist\nVersion: 1.2\n")
    (info / "top_level.txt").write_text("plugmod\n")
    (info / "RECORD").write_text("plugmod/__init__.py,,\nplugdist-1.2.dist-info/METADATA,,\n")
    vendored = site / "hostpkg" / "_vendored"
    (vendored / "plugmod").mkdir(parents=True)
    (vendored / "plugmod" / "__init__.py").write_text("ORIGIN = 'hostpkg'\n")

    where, packages = _imported_from(site, vendored)
    assert "_vendored" in where
    assert "plugdist" not in packages, packages
    where, packages = _imported_from(site, site)
    assert "_vendored" not in where
    assert packages.get("plugdist") == "1.2", packages
