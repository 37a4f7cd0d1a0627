"""Where a run happened: interpreter, platform, imported packages, git state, notebook.

Package versions are those of the distributions behind the modules actually imported in the
kernel (not everything installed), less those nbexp imported for itself: from the moment this
module loads (`%load_ext nbexp`), an import hook notes, for each top-level package imported
after, whether nbexp's code or the user's asked for it first. GitPython, gitdb, smmap... then
never appear in a record because nbexp read git, unless the user imported or uses them.
Git is read with GitPython, imported only when the working directory is inside a repository.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .installed import Installed, Scan
from .secrets import allowed_environment

MAX_DIFF_BYTES = 2 * 1024 * 1024


class _InstallWatch:
    """Tells when the cached module → distribution → version lookups below may be out of
    date: installing, upgrading or removing a distribution adds or removes its `.dist-info`
    folder in a folder on `sys.path`, which changes that folder's mtime. A folder that holds
    no distribution (a project's `src`, `/tmp`: written to all the time) is listed again
    only when it changed, and counts only once a distribution appears in it; the working
    folder (where the store and the user's files are written) is not watched."""

    def __init__(self) -> None:
        self.generation = 0
        self._seen: dict[str, tuple[int | None, bool]] = {}  # folder → (mtime, holds any)

    def check(self) -> int:
        """The generation of what is installed: it grows when something may have changed."""
        here = os.getcwd()
        changed = False
        for entry in sys.path:
            if not isinstance(entry, str) or not entry or entry == here:
                continue
            try:
                stamp: int | None = os.stat(entry).st_mtime_ns
            except (OSError, ValueError):
                stamp = None
            known = self._seen.get(entry)
            if known is not None and known[0] == stamp:
                continue
            holds = stamp is not None and _holds_distributions(entry)
            self._seen[entry] = (stamp, holds)
            if known is None:
                changed = changed or self.generation == 0 or holds  # a new folder on the path
            elif holds or known[1]:
                changed = True
        if changed:
            self.generation += 1
        return self.generation


def _holds_distributions(folder: str) -> bool:
    try:
        with os.scandir(folder) as listing:
            return any(item.name.endswith((".dist-info", ".egg-info")) for item in listing)
    except (OSError, ValueError):
        return False


_installs = _InstallWatch()


_installed_lock = threading.Lock()
_installed: Installed | None = None
_pending: tuple[Any, Scan] | None = None  # (generation of what is installed, its scan)


def start_scan() -> None:
    """Start reading what is installed in a child process (`installed.Scan`, at
    `%load_ext`): the kernel's cells keep the GIL, and the first record reads the answer."""
    global _pending
    generation = _forget_if_installs_changed()
    with _installed_lock:
        if _installed is None and _pending is None:
            with contextlib.suppress(OSError, ValueError):  # no child: scanned when needed
                _pending = (generation, Scan([p for p in sys.path if isinstance(p, str)]))


def _installed_now() -> Installed:
    """The one-pass scan: the child's answer when one was started for what is installed
    now, else made here, when first needed."""
    global _installed, _pending
    with _installed_lock:
        if _installed is None:
            pending, _pending = _pending, None
            if pending is not None:
                if pending[0] == _installed_under:
                    _installed = pending[1].result()
                else:  # something was installed since it started
                    pending[1].discard()
            if _installed is None:
                _installed = Installed()
        return _installed


# top-level module -> (distribution, version) pairs, for the modules imported so far, with
# what they were read under: how many modules were imported, and `_install_signature()`
_package_cache: tuple[Any, dict[str, list[tuple[str, str]]]] = (None, {})
_installed_under: Any = None

# top-level package -> True when nbexp's own code imported it first (only those imported
# after this module loaded are known; earlier ones count as the user's)
_first_imported_by_nbexp: dict[str, bool] = {}
_for_user = threading.local()


@contextlib.contextmanager
def on_behalf_of_user() -> Iterator[None]:
    """Imports made inside (unpickling the user's values, rendering the user's figures)
    are the user's, though nbexp's code runs them."""
    depth = getattr(_for_user, "depth", 0)
    _for_user.depth = depth + 1
    try:
        yield
    finally:
        _for_user.depth = depth


def _imported_by_nbexp() -> bool:
    """Whether the import under way was asked for by nbexp's code: the nearest frame that is
    either the user's (`__main__`: cells, `%%experiment` bodies) or nbexp's decides."""
    if getattr(_for_user, "depth", 0):
        return False
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if name == "__main__":
            return False
        if name == "nbexp" or name.startswith("nbexp."):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class _ImportAttribution:
    """A meta path finder that finds nothing: it only notes who imported a package first."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        top = fullname.partition(".")[0]
        if top not in _first_imported_by_nbexp and top not in sys.modules:
            _first_imported_by_nbexp[top] = _imported_by_nbexp()
        return None


def _install_attribution() -> None:
    if not any(type(finder).__name__ == "_ImportAttribution" for finder in sys.meta_path):
        sys.meta_path.insert(0, _ImportAttribution())


_install_attribution()


def _forget_if_installs_changed() -> Any:
    """Drop the scan of what is installed when a package was installed, upgraded or
    removed since it was read; returns the generation of what is installed."""
    global _installed_under, _installed
    with _installed_lock:
        installed = _installs.check()
        if installed != _installed_under:
            _installed = None
            _bases.clear()
            _vendored.clear()
            _installed_under = installed
    return installed


def warm_up_steps() -> list[Callable[[], object]]:
    """What a kernel's first experiment would otherwise do, in small steps for `warmup` to
    run while the kernel is idle: read the scan's answer (`start_scan`), ask `platform`,
    import `headless` (psutil) and read the kernel's parent command, import `state` and
    `watcher` and find the folders of installed code. Nothing here changes what a record
    says; a step that fails only leaves its work to the record."""

    def call(module: str, function: str) -> Callable[[], object]:
        return lambda: getattr(importlib.import_module(f"nbexp.{module}"), function)()

    return [
        _installed_now,
        platform.platform,
        lambda: importlib.import_module("nbexp.headless"),
        call("headless", "runner_notebook"),
        lambda: importlib.import_module("nbexp.state"),
        call("state", "_library_roots"),
        lambda: importlib.import_module("nbexp.watcher"),
        call("watcher", "_ignored_roots"),
    ]


_bases: dict[str, Path | None] = {}


def _distribution_base(distribution: str) -> Path | None:
    base = _bases.get(distribution, _MISSING)
    if base is _MISSING:
        base = _bases[distribution] = _installed_now().base(distribution)
    return base


_MISSING: Any = object()


def _vendored_elsewhere(top: str, module: Any, distribution: str) -> bool:
    """Whether the module imported under a distribution's top-level name is another
    package's private copy: debugpy imports its own `pydevd_plugins`, a name omegaconf
    also installs, and every Jupyter record listed omegaconf though nobody imported it.
    A module loaded from `<site-packages>/<some other folder>/…` is not that distribution's;
    one loaded from outside the distribution's folder (an editable install) still is."""
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str):
        return False
    key = (top, filename, distribution)  # realpath costs a few lstat calls: once per file
    verdict = _vendored.get(key)
    if verdict is None:
        base = _distribution_base(distribution)
        try:
            inside = Path(os.path.realpath(filename)).relative_to(base) if base else None
        except ValueError:
            inside = None
        verdict = _vendored[key] = inside is not None and inside.parts[0].partition(".")[0] != top
    return verdict


_vendored: dict[tuple[str, str, str], bool] = {}


def _user_namespace() -> Mapping[str, Any]:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "user_ns", None) or {}


def _used_by_user(namespace: Mapping[str, Any]) -> set[str]:
    """Top-level packages the user's variables are modules, classes, functions or instances of."""
    used: set[str] = set()
    for name, value in list(namespace.items()):
        if name.startswith("_"):
            continue
        module = value.__name__ if isinstance(value, type(sys)) else None
        if module is None:
            module = getattr(value, "__module__", None)
            if not isinstance(module, str):
                module = type(value).__module__
        used.add(module.partition(".")[0])
    return used


def imported_packages(namespace: Mapping[str, Any] | None = None) -> dict[str, str]:
    """{distribution: version} for the top-level modules imported in this process, less
    those only nbexp imported for itself (`namespace`, the user's, tells what they use)."""
    global _package_cache
    modules = sys.modules
    installed = _forget_if_installs_changed()
    if _package_cache[0] != (len(modules), installed):
        scan = _installed_now()
        mapping = scan.tops
        by_top: dict[str, list[tuple[str, str]]] = {}
        for top in {name.partition(".")[0] for name in list(modules)}:
            if top.startswith("_") or top in sys.stdlib_module_names:
                continue
            for distribution in mapping.get(top, ()):
                version = scan.version(distribution)
                if version and not _vendored_elsewhere(top, modules.get(top), distribution):
                    by_top.setdefault(top, []).append((distribution, version))
        _package_cache = ((len(modules), installed), by_top)
    by_top = _package_cache[1]
    nbexp_only = {top for top in by_top if _first_imported_by_nbexp.get(top)}
    if nbexp_only:
        nbexp_only -= _used_by_user(_user_namespace() if namespace is None else namespace)
    found: dict[str, str] = {}
    for top, distributions in by_top.items():
        if top not in nbexp_only:
            found.update(distributions)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def environment(
    seeds: dict[str, Any] | None = None,
    *,
    cwd: str | None = None,
    packages: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The record's `env` section (`cwd` and `packages` given when describing another process)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cwd": os.getcwd() if cwd is None else cwd,
        "packages": imported_packages() if packages is None else packages,
        "seeds": dict(seeds or {}),
        "variables": allowed_environment(),
    }


def find_git_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: cwd) holding `.git` (every record
    asks: plain string paths, not pathlib's, for the walk up)."""
    folder = str(Path(start or os.getcwd()).absolute())
    while True:
        if os.path.exists(os.path.join(folder, ".git")):
            return Path(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


_RACY_NS = 2_000_000_000
_repos: dict[Path, Any] = {}
_git_results: dict[Path, tuple[Any, dict[str, Any]]] = {}
_tracked: dict[Path, tuple[Any, list[str]]] = {}


def git_state(start: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Commit, branch and the diff of uncommitted tracked changes; None outside a repository.

    Asking git costs two subprocesses; when HEAD, the index and every tracked file's size and
    mtime are as they were last time, the last answer is still true and is reused.
    """
    root = find_git_root(start)
    if root is None:
        return None
    try:
        import git
    except ImportError:  # GitPython needs the git executable; without it, say so in the record
        return {"root": str(root), "error": "GitPython could not be imported"}
    try:
        repo = _repos.get(root)
        if repo is None:
            repo = _repos[root] = git.Repo(root)
        signature = _work_tree_signature(root, repo)
        cached = _git_results.get(root)
        if signature is not None and cached is not None and cached[0] == signature:
            return dict(cached[1])
        result = _ask_git(root, repo)
        if signature is not None:
            _git_results[root] = (signature, result)
        return dict(result)
    except (git.GitError, OSError, ValueError) as error:
        _repos.pop(root, None)
        return {"root": str(root), "error": f"{type(error).__name__}: {error}"[:300]}


def _ask_git(root: Path, repo: Any) -> dict[str, Any]:
    try:
        commit = repo.head.commit.hexsha
    except ValueError:  # a repository with no commit yet
        return {
            "root": str(root),
            "commit": None,
            "branch": _branch(repo),
            "dirty": True,
            "diff": "",
        }
    diff = repo.git.diff("HEAD", "--no-color", "--no-ext-diff")
    truncated = len(diff.encode()) > MAX_DIFF_BYTES
    if truncated:
        diff = diff.encode()[:MAX_DIFF_BYTES].decode(errors="ignore")
    return {
        "root": str(root),
        "commit": commit,
        "branch": _branch(repo),
        "dirty": bool(diff),
        "diff": diff,
        "diff_truncated": truncated,
    }


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _work_tree_signature(root: Path, repo: Any) -> Any:
    """What git's answer depends on, read with stat calls only; None if it can't be read."""
    git_dir = Path(repo.git_dir)
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    refs: tuple[Any, ...] = (head,)
    if head.startswith("ref: "):
        refs += (_stat_key(git_dir / head[5:]), _stat_key(git_dir / "packed-refs"))
    index = _stat_key(git_dir / "index")
    known = _tracked.get(root)
    if known is None or known[0] != index:
        # The list of tracked files changes only with the index.
        files = [name for name in repo.git.ls_files("-z").split("\0") if name]
        known = _tracked[root] = (index, files)
    stats = tuple(_stat_key(root / name) for name in known[1])
    # A file changed within the file system's timestamp granularity of the last look may
    # show the same mtime and size with other bytes ("racy git"): while anything is that
    # recent, ask git itself.
    recent = time.time_ns() - _RACY_NS
    if any(key is not None and key[0] >= recent for key in (index, *stats)):
        return None
    return (refs, index, stats)


def _branch(repo: Any) -> str | None:
    try:
        return str(repo.active_branch.name)
    except (TypeError, ValueError):  # detached HEAD
        return None


def notebook_path(user_ns: dict[str, Any]) -> str | None:
    """The notebook's path as the front end told the kernel (or `NBEXP_NOTEBOOK`, or the
    command line of a headless runner: see `headless`); None in a terminal."""
    given = os.environ.get("NBEXP_NOTEBOOK")
    if given:
        return os.path.abspath(given)
    vscode = user_ns.get("__vsc_ipynb_file__")
    if isinstance(vscode, str) and vscode:
        return vscode
    session = os.environ.get("JPY_SESSION_NAME")
    if session and session.endswith(".ipynb"):
        candidate = Path(session)
        if not candidate.is_absolute():
            candidate = (
                Path(os.getcwd()) / candidate.name
                if not candidate.exists()
                else candidate.absolute()
            )
        return str(candidate)
    from .headless import runner_notebook

    return runner_notebook()
