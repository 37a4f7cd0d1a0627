"""Which files a cell reads and writes, noticed without the user naming them.

Python's audit hook sees every `open` made from Python code (`open`, `pd.read_csv`, `np.load`,
`pickle.load`, `savefig`…). Readers that open files in C++ (pyarrow's Parquet/Feather/ORC)
raise no audit event, so their entry points in pandas and pyarrow are wrapped for the
duration of the run. An audit hook cannot be removed, so ours is installed once and does
nothing unless a watch is active.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

_active: list[FileWatch] = []
_hook_installed = False
_install_lock = threading.Lock()

_IGNORED_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd", ".pth", ".dist-info", ".egg-info")
_IGNORED_NAMES = ("__pycache__", ".ipython", ".jupyter", ".cache", ".matplotlib", ".git", ".nbexp")


@lru_cache(maxsize=1)
def _ignored_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc", "/sys", "/dev", "/etc", "/usr"}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            roots.add(sysconfig.get_paths()[key])
    return tuple(sorted(os.path.realpath(root) for root in roots if root))


@lru_cache(maxsize=64)
def _real_folder(path: str) -> str:
    """A folder left out of the watch (the store's, the same on every run), resolved once."""
    return os.path.realpath(path)


class FileWatch:
    """Collects the files opened for reading and for writing while it is active."""

    def __init__(self, ignore: tuple[str, ...] = ()) -> None:
        self.reads: dict[str, None] = {}
        self.writes: dict[str, None] = {}
        self._ignore = _ignored_roots() + tuple(_real_folder(path) for path in ignore)
        self._thread = threading.get_ident()

    def note(self, path: Any, writing: bool) -> None:
        absolute = self._user_file(path)
        if absolute is not None:
            (self.writes if writing else self.reads).setdefault(absolute, None)

    def _user_file(self, path: Any) -> str | None:
        """The absolute path when `path` is one of the user's files (not a library's, a
        cache's or the store's), else None."""
        if isinstance(path, int) or path is None:
            return None
        try:
            text = os.fsdecode(path)
        except (TypeError, ValueError):
            return None
        absolute = os.path.abspath(text)
        if absolute.endswith(_IGNORED_SUFFIXES) or any(
            part in _IGNORED_NAMES for part in absolute.split(os.sep)
        ):
            return None
        real = os.path.realpath(absolute)
        if any(real == root or real.startswith(root + os.sep) for root in self._ignore):
            return None
        return absolute

    def files(self) -> tuple[list[str], list[str]]:
        """(read, written): regular files that exist now; a file both read and written is written."""
        written = [path for path in self.writes if os.path.isfile(path)]
        read = [path for path in self.reads if path not in self.writes and os.path.isfile(path)]
        return read, written


class _WriteRefusal(FileWatch):
    """Makes opening one of the user's files for writing fail, for code nbexp replays on its
    own initiative (`--recompute`): replaying `f = open("out.csv", "w")` would truncate it."""

    def note(self, path: Any, writing: bool) -> None:
        absolute = self._user_file(path) if writing else None
        if absolute is not None:
            raise PermissionError(f"it would write {absolute}, and replaying never writes files")


def _is_write(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str):
        return any(letter in mode for letter in "wax+")
    if isinstance(flags, int):
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
    return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _active:
        return
    watch = _active[-1]
    if threading.get_ident() != watch._thread:
        return
    path, mode, flags = ((*tuple(args), None, None, None))[:3]
    watch.note(path, _is_write(mode, flags))


def _install_hook() -> None:
    global _hook_installed
    with _install_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)
            _hook_installed = True


# (module, attribute path, index of the path argument, name of the path keyword, writes?)
_C_LEVEL_IO: tuple[tuple[str, str, int, str, bool], ...] = (
    ("pandas", "read_parquet", 0, "path", False),
    ("pandas", "read_feather", 0, "path", False),
    ("pandas", "read_orc", 0, "path", False),
    ("pandas", "DataFrame.to_parquet", 1, "path", True),
    ("pandas", "DataFrame.to_feather", 1, "path", True),
    ("pyarrow.parquet", "read_table", 0, "source", False),
    ("pyarrow.parquet", "write_table", 1, "where", True),
    ("pyarrow.feather", "read_table", 0, "source", False),
    ("pyarrow.feather", "read_feather", 0, "source", False),
    ("pyarrow.feather", "write_feather", 1, "dest", True),
)


def _wrap(function: Callable[..., Any], position: int, keyword: str, writing: bool) -> Any:
    def watched(*args: Any, **kwargs: Any) -> Any:
        path = kwargs.get(keyword, args[position] if len(args) > position else None)
        if _active and isinstance(path, (str, bytes, os.PathLike)):
            _active[-1].note(path, writing)
        return function(*args, **kwargs)

    watched.__wrapped__ = function  # type: ignore[attr-defined]
    watched.__name__ = getattr(function, "__name__", "watched")
    watched.__doc__ = function.__doc__
    return watched


@contextlib.contextmanager
def _patched_readers() -> Iterator[None]:
    undo: list[tuple[Any, str, Any]] = []
    pending = list(_C_LEVEL_IO)

    def patch_loaded(finished: str | None = None) -> None:
        for entry in list(pending):
            module_name, attribute, position, keyword, writing = entry
            module = sys.modules.get(module_name)
            if module is None:
                continue
            spec = getattr(module, "__spec__", None)
            if module_name != finished and getattr(spec, "_initializing", False):
                continue  # still being imported; patched when its import finishes
            owner: Any = module
            *parents, leaf = attribute.split(".")
            try:
                for parent in parents:
                    owner = getattr(owner, parent)
                original = owner.__dict__[leaf] if isinstance(owner, type) else getattr(owner, leaf)
            except (AttributeError, KeyError):
                continue
            pending.remove(entry)
            setattr(owner, leaf, _wrap(original, position, keyword, writing))
            undo.append((owner, leaf, original))

    # A module the body itself imports first (`import pandas` in the experiment cell, or
    # pyarrow.parquet imported inside read_parquet) is patched as soon as it has loaded.
    finder = _AfterImport({entry[0] for entry in pending}, patch_loaded)
    patch_loaded()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        for owner, leaf, original in reversed(undo):
            setattr(owner, leaf, original)


class _AfterImport:
    """A meta path finder that calls `loaded(name)` once one of `names` has been imported."""

    def __init__(self, names: set[str], loaded: Callable[[str], None]) -> None:
        self._names = {name for name in names if name not in sys.modules}
        self._loaded = loaded

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self._names:
            return None
        self._names.discard(fullname)
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if finder is not self and find else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _NotifyingLoader(spec.loader, lambda: self._loaded(fullname))
        return spec


class _NotifyingLoader:
    """Delegates to the real loader, then reports that the module has been executed."""

    def __init__(self, loader: Any, done: Callable[[], None]) -> None:
        self._loader = loader
        self._done = done

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        __tracebackhide__ = True
        module.__loader__ = module.__spec__.loader = self._loader  # the module sees its own
        self._loader.exec_module(module)
        with contextlib.suppress(Exception):  # watching must never break an import
            self._done()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


@contextlib.contextmanager
def watch_files(ignore: tuple[str, ...] = ()) -> Iterator[FileWatch]:
    """Record the files opened while the block runs (in this thread)."""
    _install_hook()
    watch = FileWatch(ignore)
    _active.append(watch)
    try:
        with _patched_readers():
            yield watch
    finally:
        _active.remove(watch)


@contextlib.contextmanager
def refusing_writes() -> Iterator[None]:
    """Make code run in the block (in this thread) unable to open the user's files for
    writing; reading is untouched."""
    _install_hook()
    refusal = _WriteRefusal()
    _active.append(refusal)
    try:
        with _patched_readers():
            yield
    finally:
        _active.remove(refusal)
