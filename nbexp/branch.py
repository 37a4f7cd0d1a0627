"""`nbexp branch REF NAME`: a git branch that holds an experiment, made without a checkout.

Like `dvc exp branch`, the branch starts at the experiment's recorded commit and gets one
commit on top: the uncommitted changes recorded with the experiment, its exported script and
notebook, and its record. Everything happens in git's object database through a temporary
index (`GIT_INDEX_FILE`), so the user's working tree, index and current branch are untouched.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NbexpError
from .exporter import render
from .record import Experiment
from .store import Store

_ZERO = "0" * 40


class BranchError(NbexpError):
    """The experiment cannot be turned into a branch as asked."""


@dataclass
class BranchResult:
    name: str
    commit: str
    base: str
    files: list[str] = field(default_factory=list)
    diff_applied: bool = False


def branch(store: Store, ref: str, name: str) -> BranchResult:
    """Create branch `name` holding experiment `ref`; refuses to touch an existing branch."""
    import git

    from .remote import require_trusted

    experiment = store.get(ref)
    require_trusted(store, experiment, "branch")
    recorded = experiment.git or {}
    base = recorded.get("commit")
    if not base:
        why = recorded.get("error") or (
            "its repository had no commit yet" if recorded else "it ran outside a git repository"
        )
        raise BranchError(
            f"{_who(experiment)} has no git commit to branch from ({why}); "
            "`nbexp export` still writes its script"
        )
    if recorded.get("diff_truncated"):
        raise BranchError(
            f"the uncommitted changes recorded with {_who(experiment)} were truncated (over "
            "2 MiB), so its code cannot be rebuilt; commit such changes before experimenting"
        )
    repo = _repository(store.root.parent)
    try:
        return _make(repo, store, experiment, name, base, recorded)
    except git.GitCommandError as error:
        message = (error.stderr or str(error)).strip().replace("\n", " ")
        message = re.sub(r"^stderr: ", "", message).strip("' ")
        raise BranchError(f"git could not make branch {name}: {message}") from error


def _who(experiment: Experiment) -> str:
    return f"experiment {experiment.name} ({experiment.short_id})"


def _repository(project: Path) -> Any:
    """The git repository of this project (the folder holding the store). Never the one a
    record names: that path is data its author wrote."""
    import git

    try:
        return git.Repo(project, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise BranchError(
            f"no git repository at {project}; run from inside the experiment's repository"
        ) from None


def _make(
    repo: Any,
    store: Store,
    experiment: Experiment,
    name: str,
    base: str,
    recorded: dict[str, Any],
) -> BranchResult:
    import git

    try:
        repo.git.check_ref_format("--branch", name)
    except git.GitCommandError as error:
        raise BranchError(
            f"{name!r} is not a valid branch name; try e.g. exp-{experiment.short_id}"
        ) from error
    if _exists(repo, f"refs/heads/{name}"):
        raise BranchError(
            f"branch {name} already exists; choose another name, e.g. {name}-{experiment.short_id}"
        )
    if not _exists(repo, f"{base}^{{commit}}", kind="commit"):
        raise BranchError(
            f"commit {base[:12]} of {_who(experiment)} is not in {repo.working_tree_dir}; "
            "fetch it first (git fetch) or run from the repository it was recorded in"
        )
    folder = _folder(repo, experiment)
    with tempfile.TemporaryDirectory(prefix="nbexp-branch-") as scratch:
        env = {"GIT_INDEX_FILE": os.path.join(scratch, "index")}
        repo.git.read_tree(base, env=env)
        diff = recorded.get("diff") or ""
        applied = False
        if recorded.get("dirty") and diff.strip():
            patch = Path(scratch) / "changes.patch"
            patch.write_text(diff if diff.endswith("\n") else diff + "\n", encoding="utf-8")
            try:
                repo.git.apply("--cached", "--whitespace=nowarn", str(patch), env=env)
            except git.GitCommandError as error:
                raise BranchError(
                    f"the uncommitted changes recorded with {_who(experiment)} do not apply to "
                    f"commit {base[:12]}: {(error.stderr or '').strip().splitlines()[-1:]}"
                ) from error
            applied = True
        stem = _stem(repo, env, folder, experiment)
        contents = {
            f"{stem}.py": render(experiment, "script", filename=Path(stem).name + ".py").encode(),
            f"{stem}.ipynb": render(experiment, "notebook").encode(),
            f"{stem}.nbexp.json": _record_bytes(store, experiment),
        }
        files = []
        for index, (relative, data) in enumerate(contents.items()):
            source = Path(scratch) / f"file-{index}"
            source.write_bytes(data)
            blob = repo.git.hash_object("-w", "--no-filters", str(source))
            mode = "100755" if relative.endswith(".py") else "100644"
            repo.git.update_index("--add", "--cacheinfo", f"{mode},{blob},{relative}", env=env)
            files.append(relative)
        tree = repo.git.write_tree(env=env)
    message = _message(experiment, applied, files)
    commit = repo.git.commit_tree(tree, "-p", base, "-m", message)
    repo.git.update_ref(f"refs/heads/{name}", commit, _ZERO)
    return BranchResult(name=name, commit=commit, base=base, files=files, diff_applied=applied)


def _exists(repo: Any, ref: str, *, kind: str = "ref") -> bool:
    import git

    try:
        if kind == "commit":
            repo.git.cat_file("-e", ref)
        else:
            repo.git.show_ref("--verify", "--quiet", ref)
    except git.GitCommandError:
        return False
    return True


def _folder(repo: Any, experiment: Experiment) -> str:
    """Where the files go: the experiment's working directory inside the repository (so the
    script's relative data paths hold), else the repository's root."""
    cwd = experiment.env.get("cwd")
    root = os.path.realpath(str(repo.working_tree_dir))
    if cwd:
        real = os.path.realpath(cwd)
        if real == root or real.startswith(root + os.sep):
            relative = os.path.relpath(real, root)
            return "" if relative == "." else Path(relative).as_posix()
    return ""


def _stem(repo: Any, env: dict[str, str], folder: str, experiment: Experiment) -> str:
    """`folder/<name>`, or `folder/<name>-<id>` when the tree already has such files."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment.name).strip("-.") or experiment.short_id
    prefix = f"{folder}/" if folder else ""
    taken = set(repo.git.ls_files(env=env).splitlines())
    stem = prefix + slug
    if any(f"{stem}{suffix}" in taken for suffix in (".py", ".ipynb", ".nbexp.json")):
        stem = f"{prefix}{slug}-{experiment.short_id}"
    return stem


def _record_bytes(store: Store, experiment: Experiment) -> bytes:
    if store.has_record(experiment.id):
        return store.record_bytes(experiment.id)
    return (json.dumps(experiment.to_dict(), indent=1, sort_keys=True) + "\n").encode()


def _message(experiment: Experiment, applied: bool, files: list[str]) -> str:
    lines = [f"nbexp: experiment {experiment.name} ({experiment.short_id})", ""]
    if experiment.params:
        lines.append("params:  " + ", ".join(f"{k}={v!r}" for k, v in experiment.params.items()))
    if experiment.metrics:
        lines.append("metrics: " + ", ".join(f"{k}={v!r}" for k, v in experiment.metrics.items()))
    lines.append(f"recorded {experiment.created}, status {experiment.status}")
    if applied:
        lines.append("includes the uncommitted changes recorded with the experiment")
    lines.append("files: " + ", ".join(files))
    return "\n".join(lines) + "\n"
