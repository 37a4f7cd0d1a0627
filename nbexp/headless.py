"""Headless runs: which notebook a runner (papermill, `jupyter execute`) is executing, and the
names its parameters cells set.

A kernel is never told which notebook it runs, and papermill puts its input path only in the
output notebook's metadata, which the kernel cannot see. What the kernel can see is the
process that started it (`JPY_PARENT_PID`, which jupyter_client sets, else the parent pid):
its command line names the notebook, relative to its working directory. That is read once per
kernel (via psutil, which ipykernel already requires). Runners started from Python
(`papermill.execute_notebook`, nbclient) leave nothing to read: `NBEXP_NOTEBOOK=PATH` says it.

Parameters cells: the cell tagged `parameters` is found in the notebook file (its tags are not
in the kernel's history) and papermill's injected cell by its shape (a `# Parameters` comment,
then only literal assignments: papermill's Python translator writes exactly that).
"""

from __future__ import annotations

import ast
import functools
import json
import os
from typing import Any

# papermill's options that take values (its cli.py), so that a value is not read as a path
_PAPERMILL_VALUED = {
    "-p": 2, "--parameters": 2, "-r": 2, "--parameters_raw": 2,
    "-f": 1, "--parameters_file": 1, "-y": 1, "--parameters_yaml": 1,
    "-b": 1, "--parameters_base64": 1, "--engine": 1, "--autosave-cell-every": 1,
    "-k": 1, "--kernel": 1, "-l": 1, "--language": 1, "--cwd": 1, "--stdout-file": 1,
    "--stderr-file": 1, "--log-level": 1, "--start-timeout": 1, "--start_timeout": 1,
    "--execution-timeout": 1,
}  # fmt: skip
_INJECTED_MARK = "# Parameters"


def _parent_command() -> tuple[list[str], str] | None:
    """(argv, working directory) of the process that started this kernel, or None."""
    try:
        pid = int(os.environ.get("JPY_PARENT_PID") or os.getppid())
        import psutil

        process = psutil.Process(pid)
        return list(process.cmdline()), process.cwd()
    except Exception:  # no psutil, no permission, a parent gone: nothing is knowable
        return None


def _runner_notebook(argv: list[str], cwd: str) -> str | None:
    """The notebook a runner's command line executes: papermill's first positional argument,
    or the single `.ipynb` given to `jupyter execute` / `jupyter nbconvert --execute`."""
    runner = next(
        (
            i
            for i, word in enumerate(argv[:4])
            if os.path.basename(word).startswith(("papermill", "jupyter"))
        ),
        None,
    )
    if runner is None:
        return None
    program = os.path.basename(argv[runner])
    words = argv[runner + 1 :]
    if program.startswith("papermill"):
        positional: list[str] = []
        skip = 0
        for word in words:
            if skip:
                skip -= 1
            elif word in _PAPERMILL_VALUED:
                skip = _PAPERMILL_VALUED[word]
            elif not word.startswith("-"):
                positional.append(word)
        chosen = positional[:1]
    else:
        chosen = [word for word in words if word.endswith(".ipynb")]
        if len(chosen) != 1:  # several notebooks, one kernel each: which one is unknowable
            return None
    if not chosen or not chosen[0].endswith(".ipynb"):
        return None
    path = os.path.join(cwd, chosen[0])
    return os.path.abspath(path) if os.path.isfile(path) else None


@functools.lru_cache(maxsize=1)
def runner_notebook() -> str | None:
    """The notebook a headless runner is executing in this kernel, if its command says so."""
    found = _parent_command()
    return _runner_notebook(*found) if found else None


def notebook_path() -> str | None:
    """`NBEXP_NOTEBOOK`, else the notebook a runner's command line names."""
    given = os.environ.get("NBEXP_NOTEBOOK")
    if given:
        return os.path.abspath(given)
    return runner_notebook()


_tagged_cache: dict[str, tuple[tuple[int, int], list[str]]] = {}


def _tagged_sources(notebook: str) -> list[str]:
    """The sources of the notebook's cells tagged `parameters` (cached by mtime and size)."""
    try:
        stat = os.stat(notebook)
    except OSError:
        return []
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _tagged_cache.get(notebook)
    if cached and cached[0] == key:
        return cached[1]
    sources: list[str] = []
    try:
        with open(notebook, encoding="utf-8") as handle:
            cells = json.load(handle).get("cells", [])
        for cell in cells:
            tags = (cell.get("metadata") or {}).get("tags") or []
            if cell.get("cell_type") == "code" and "parameters" in tags:
                source = cell.get("source", "")
                sources.append("".join(source) if isinstance(source, list) else str(source))
    except (OSError, ValueError, AttributeError, TypeError):
        sources = []
    _tagged_cache[notebook] = (key, sources)
    return sources


def _literal_names(text: str, *, only_literals: bool) -> list[str] | None:
    """Names a cell assigns literals to at top level; None when `only_literals` and the cell
    holds anything else (then it is not papermill's injected cell)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    names = []
    for statement in tree.body:
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            try:
                ast.literal_eval(statement.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                if only_literals:
                    return None
                continue
            names.append(statement.targets[0].id)
        elif only_literals:
            return None
    return names


def parameter_names(history: list[str] | tuple[str, ...], notebook: str | None) -> list[str]:
    """Names set by the parameters cells among the kernel's earlier cells: the cell tagged
    `parameters` in the notebook, and papermill's injected cell."""
    tagged = {source.strip() for source in _tagged_sources(notebook)} if notebook else set()
    names: list[str] = []
    for text in history:
        if not isinstance(text, str):
            continue
        stripped = text.strip()
        found: list[str] | None = None
        if stripped.startswith(_INJECTED_MARK):
            found = _literal_names(text, only_literals=True)
        if found is None and stripped in tagged:
            found = _literal_names(text, only_literals=False)
        for name in found or ():
            if name not in names:
                names.append(name)
    return names


def parameter_values(
    history: list[str] | tuple[str, ...],
    notebook: str | None,
    reads: set[str],
    assigned: set[str],
    namespace: dict[str, Any],
) -> dict[str, Any]:
    """The parameters cells' names the body reads but does not set, with their values now
    (literals only: a name later rebound to a model is not a param)."""
    values: dict[str, Any] = {}
    for name in parameter_names(history, notebook):
        if name not in reads or name in assigned or name not in namespace:
            continue
        value = namespace[name]
        if _is_literal(value):
            values[name] = value
    return values


def _is_literal(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_literal(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_literal(v) for k, v in value.items())
    return False
