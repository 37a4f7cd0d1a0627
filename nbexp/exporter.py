"""An experiment record → a standalone script or a papermill notebook that reproduces it.

The export is assembled from the record alone (no kernel): the earlier cells the body depends
on (`slicing`), translated to plain Python for a script (`translate`), the params as
top-level constants the command line (or papermill) can override, a check that the input
files still have their recorded hashes, the body with its param assignments taken out, and
the metrics printed at the end as one `NBEXP_METRICS {...}` line that `nbexp rerun` reads.
The script needs only Python, xxhash and the user's own packages, not nbexp.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import math
import os
import re
import shlex
import sys
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import analysis, slicing, translate
from .errors import NbexpError
from .record import Experiment

METRICS_PREFIX = "NBEXP_METRICS "
DATA_CHANGED_EXIT = 2
FORMATS = ("script", "notebook", "dvc")


class ExportError(NbexpError):
    """The experiment cannot be exported as asked."""


@dataclass
class Cell:
    """One piece of code in two dialects: plain Python (scripts) and as typed (notebooks)."""

    python: str
    ipython: str
    label: str


@dataclass
class Plan:
    """Everything an export holds, before it is written as a script or a notebook."""

    experiment: Experiment
    params: dict[str, Any]
    cells: list[Cell]
    body: Cell
    files: list[tuple[str, str]]
    metrics: list[str]
    history_total: int
    failed: list[tuple[int, str]] = field(default_factory=list)  # kept cells that raised
    # input variables the kept cells rebuild: (name, recorded hash, files the cells name)
    variables: list[tuple[str, str, list[str]]] = field(default_factory=list)
    # metrics recorded from `nbexp.log` alone: a variable of that name is not the metric
    logged_only: list[str] = field(default_factory=list)
    # an earlier cell ran `from __future__ import annotations`: the export turns it on first
    future_annotations: bool = False
    uses_log: bool = False
    uses_display: bool = False
    headless: bool = False
    packages: dict[str, str] = field(default_factory=dict)


# -- planning ---------------------------------------------------------------------------


def plan(experiment: Experiment) -> Plan:
    """Decide what the export of `experiment` holds; ExportError when it cannot be exported."""
    from_files = {k for keys in (experiment.links.get("params_files") or {}).values() for k in keys}
    params = {k: v for k, v in experiment.params.items() if k not in from_files}  # files read them
    python_body, ipython_body = _body(experiment)
    statements = _param_statements(python_body, params)
    # the record keeps params as JSON ({0: 10} has string keys there, a set is a string):
    # the value the body's own literal gives is the one the script must start from
    params.update(_exact_literals(python_body, statements))
    history = list(experiment.code.history)
    pythons = [translate.to_python(cell) for cell in history]
    failures = _failures(experiment, pythons)
    for index, failure in failures.items():
        pythons[index] = failure.cut(pythons[index], guard=True)
    lazy = _lazy_annotations(pythons)
    facts = [slicing.facts(code, lazy_annotations=lazy[i]) for i, code in enumerate(pythons)]
    body_facts = slicing.facts(_remove(python_body, statements, set()), lazy_annotations=lazy[-1])
    if body_facts is None:  # removing whole statements keeps the code parseable
        raise ExportError(f"cannot export {_who(experiment)}: its code could not be analysed")
    needed = set(body_facts.reads | body_facts.deferred) - set(params)
    bound_by_body = body_facts.binds
    logged_only = _logged_only_metrics(experiment, bound_by_body)
    wanted = set(experiment.metrics) - bound_by_body - set(params) - logged_only
    found = slicing.slice_history(facts, needed, wanted)
    if found.unresolved:
        raise ExportError(_missing_message(experiment, found, len(history)))

    kept = found.kept
    kept_facts = [f for f in (facts[i] for i in kept) if f is not None]
    rebound: set[str] = set().union(*(f.binds for f in kept_facts))
    keep_references = rebound & set(params)
    body = Cell(
        python=_remove(python_body, statements, keep_references).strip("\n"),
        ipython=_remove(ipython_body, statements, keep_references).strip("\n"),
        label=_label("the experiment", experiment.code.execution_count),
    )
    cells = []
    for position, i in enumerate(kept):
        python, ipython = pythons[i], translate.to_ipython(history[i])
        failed = failures.get(i)
        if failed is not None:
            later = [facts[j] for j in kept[position + 1 :]]
            used = needed | wanted | set().union(*(f.reads for f in later if f is not None))
            guard = failed.binds_any(used)
            python = failed.cut(translate.to_python(history[i]), guard=guard)
            # a cell magic's body cannot go inside a `try`: the notebook gets the Python
            ipython = (
                python if history[i].lstrip().startswith("%%") else failed.cut(ipython, guard=guard)
            )
        cells.append(
            Cell(
                python=python.strip("\n"),
                ipython=ipython.strip("\n"),
                label=_label("an earlier cell", i + 1),
            )
        )
    code = "\n".join([*(cell.python for cell in cells), body.python])
    reads = set().union(*(f.reads for f in kept_facts)) | needed
    return Plan(
        experiment=experiment,
        params=params,
        cells=cells,
        body=body,
        files=[
            (str(item.path), item.hash)
            for item in experiment.data
            if item.is_file
            and item.hash
            and item.path not in (experiment.links.get("params_files") or {})
        ],
        metrics=list(experiment.metrics),
        logged_only=sorted(logged_only),
        future_annotations=lazy[-1] or slicing.future_annotations(ast.parse(python_body)),
        history_total=len(history),
        failed=[(i + 1, failures[i].error) for i in kept if i in failures],
        variables=_rebuilt_variables(experiment, [facts[i] for i in kept], cells, rebound),
        uses_log=bool(re.search(r"\bnbexp\.log\(|from nbexp import [^\n]*\blog\b", code)),
        uses_display="display" in reads and "display" not in rebound,
        headless=bool(re.search(r"^\s*(import|from) matplotlib\b", code, re.MULTILINE))
        and 'matplotlib.use("Agg")' not in code,
        packages=_packages(code, experiment.env.get("packages") or {}),
    )


@dataclass(frozen=True)
class _Failure:
    """A history cell that raised in the notebook, and where (`first`..`last`: the lines of
    its top-level statement that raised; the whole cell when that is not known)."""

    number: int
    kind: str
    error: str
    first: int
    last: int
    ran: bool
    statement: slicing.Facts | None = None  # what the statement that raised does

    def cut(self, code: str, *, guard: bool) -> str:
        """What the kernel ran of the cell: the statements before the one that raised; that
        one inside a `try` reproducing its effect (or commented out when nothing later uses
        what it binds); none of the statements after it. A cell that never ran is empty."""
        if not self.ran:
            error = _one_line(self.error)
            return f"# {translate.NOTE} In [{self.number}] never ran in the notebook ({error})"
        lines = code.split("\n")
        before, statement = lines[: self.first - 1], lines[self.first - 1 : self.last]
        after = [line for line in lines[self.last :] if line.strip()]
        note = f"in the notebook this raised {_one_line(self.error)}"
        if self.kind == "KeyboardInterrupt":  # stopped by hand: here it runs to its end
            out = [*before, f"# {translate.NOTE} {note}", *statement]
        elif guard:
            exception = self.kind if _is_builtin_exception(self.kind) else "Exception"
            out = [
                *before,
                "try:",
                *(f"    {line}" if line.strip() else line for line in statement),
                f"except {exception}:  # {translate.NOTE} {note}",
                "    pass",
            ]
        else:
            out = [
                *before,
                f"# {translate.NOTE} {note}; nothing after it uses what it binds:",
                *(f"# {line}" for line in statement),
            ]
        if after:
            out.append(
                f"# {translate.NOTE} the rest of In [{self.number}] never ran in the notebook"
            )
        return "\n".join(out)

    def binds_any(self, names: set[str]) -> bool:
        """Whether the statement that raised binds or changes one of `names` (or may)."""
        if self.statement is None:
            return True
        return self.statement.opaque or bool(
            (self.statement.binds | self.statement.mutates) & names
        )


def _is_builtin_exception(name: str) -> bool:
    import builtins

    value = getattr(builtins, name, None)
    return isinstance(value, type) and issubclass(value, BaseException)


def _failures(experiment: Experiment, pythons: list[str]) -> dict[int, _Failure]:
    """The history cells the record says raised (index → where), located in their Python."""
    found: dict[int, _Failure] = {}
    for number, failure in (getattr(experiment.code, "failed", None) or {}).items():
        try:
            index = int(number) - 1
        except ValueError:
            continue
        if not 0 <= index < len(pythons) or not isinstance(failure, dict):
            continue
        code = pythons[index]
        total = len(code.split("\n"))
        first, last = 1, total  # unknown: the whole cell is guarded
        statement_code = None
        line = failure.get("line")
        try:
            tree = ast.parse(code)
        except SyntaxError:
            tree = None
        if tree is not None and isinstance(line, int):
            for statement in tree.body:
                end = statement.end_lineno or statement.lineno
                if statement.lineno <= line <= end:
                    first, last = statement.lineno, end
                    statement_code = ast.unparse(statement)
                    break
        elif tree is not None:
            statement_code = code
        found[index] = _Failure(
            number=index + 1,
            kind=str(failure.get("type") or "Exception"),
            error=str(failure.get("error") or "an error"),
            first=first,
            last=last,
            ran=bool(failure.get("ran", True)),
            statement=slicing.facts(statement_code) if statement_code is not None else None,
        )
    return found


def _rebuilt_variables(
    experiment: Experiment,
    kept_facts: list[slicing.Facts | None],
    cells: list[Cell],
    rebound: set[str],
) -> list[tuple[str, str, list[str]]]:
    """The recorded input variables (frames, series, arrays the body read) that the kept
    cells rebuild, each with the path-like strings of the cells it depends on: the files it
    was probably read from, named when the rebuilt value is not the recorded one."""
    found = []
    for item in experiment.data:
        name, digest = item.name, item.hash
        if not item.is_variable or not name or not digest or name not in rebound:
            continue
        needed = slicing.slice_history(kept_facts, {str(name)})
        paths: list[str] = []
        for index in needed.kept:
            for path in _path_strings(cells[index].python):
                if path not in paths:
                    paths.append(path)
        found.append((str(name), str(digest), paths))
    return found


def _path_strings(code: str) -> list[str]:
    """String constants that look like file paths (`data/x.csv`), in order."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and 0 < len(node.value) < 500
        and "\n" not in node.value
        and re.search(r"[\\/]|\.\w{1,8}$", node.value) is not None
    ]


def _label(what: str, number: int | None) -> str:
    return f"{what}, In [{number}]" if number else what


def _body(experiment: Experiment) -> tuple[str, str]:
    """The body as (plain Python, as typed): from the cell as typed where it translates,
    else from the source IPython ran, its `get_ipython()` calls written back as magics."""
    _, raw = translate.split_experiment_line(experiment.code.cell)
    for candidate in (raw, translate.untransform(experiment.code.source)):
        python = translate.to_python(candidate)
        try:
            ast.parse(python)
        except SyntaxError:
            continue
        return python, translate.to_ipython(candidate)
    try:
        ast.parse(experiment.code.source)
    except SyntaxError as error:
        raise ExportError(
            f"cannot export {_who(experiment)}: its code does not parse "
            f"({error.msg}, line {error.lineno}), so it never ran; fix the cell and run it again"
        ) from error
    raise ExportError(
        f"cannot export {_who(experiment)}: its IPython syntax has no plain-Python translation; "
        "rewrite the magics in the cell as Python and run it again"
    )


def _lazy_annotations(pythons: list[str]) -> list[bool]:
    """Per history cell, and last for the body: whether a cell before it turned on postponed
    annotations (IPython compiles every later cell with an earlier cell's future import)."""
    lazy, seen = [], False
    for code in pythons:
        lazy.append(seen)
        with contextlib.suppress(SyntaxError):  # a cell that does not parse never ran
            seen = seen or slicing.future_annotations(ast.parse(code))
    return [*lazy, seen]


def _logged_only_metrics(experiment: Experiment, bound_by_body: frozenset[str]) -> set[str]:
    """Metrics the recorder took from the body's `nbexp.log` series: the body never bound
    the name and `-m` did not name it (a variable of that name is an earlier cell's)."""
    arguments, _ = translate.split_experiment_line(experiment.code.cell)
    named: set[str] = set()
    try:
        words = shlex.split(arguments or "")
    except ValueError:
        words = []
    for word, following in zip(words, [*words[1:], ""], strict=True):
        if word in ("-m", "--metric"):
            named.add(following)
        elif word.startswith("--metric="):
            named.add(word.partition("=")[2])
    logged = set(experiment.series) & set(experiment.metrics)
    return logged - set(bound_by_body) - named


def _who(experiment: Experiment) -> str:
    return f"{experiment.name} ({experiment.short_id})"


def _missing_message(experiment: Experiment, found: slicing.Slice, total: int) -> str:
    names = ", ".join(sorted(found.unresolved))
    if total == 0:
        where = (
            "its record holds no earlier cells (IPython history was off, or the kernel kept none)"
        )
    else:
        where = f"none of the {total} earlier cells in its history defines them"
        if found.unparsed:
            where += f" ({len(found.unparsed)} of them could not be parsed)"
    return (
        f"cannot export {_who(experiment)}: its code reads {names} from the kernel, but {where}; "
        "only the experiment's own cell, params and data checks could be exported — define "
        "those names in the cell (or in cells run in the same kernel before it) and run it again"
    )


@dataclass(frozen=True)
class _Statement:
    """A top-level assignment of a param's literal in the body."""

    first: int
    last: int
    start: int
    end: int
    names: tuple[str, ...]
    alone: bool


def _param_statements(code: str, params: dict[str, Any]) -> list[_Statement]:
    """The body's top-level literal assignments to params (what `-p` overrides)."""
    tree = ast.parse(code)
    lines_used: dict[int, int] = {}
    for statement in tree.body:
        for line in range(statement.lineno, (statement.end_lineno or statement.lineno) + 1):
            lines_used[line] = lines_used.get(line, 0) + 1
    found = []
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets: list[ast.expr] = list(statement.targets)
            value: ast.expr | None = statement.value
        elif isinstance(statement, ast.AnnAssign):
            targets, value = [statement.target], statement.value
        else:
            continue
        if value is None or not all(isinstance(t, ast.Name) and t.id in params for t in targets):
            continue
        try:
            ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        first, last = statement.lineno, statement.end_lineno or statement.lineno
        found.append(
            _Statement(
                first=first,
                last=last,
                start=statement.col_offset,
                end=statement.end_col_offset or 0,
                names=tuple(t.id for t in targets if isinstance(t, ast.Name)),
                alone=all(lines_used[line] == 1 for line in range(first, last + 1)),
            )
        )
    return found


def _exact_literals(code: str, statements: list[_Statement]) -> dict[str, Any]:
    """Each param's value as the body's literal gives it, where JSON would have changed it."""
    tree = ast.parse(code)
    exact: dict[str, Any] = {}
    wanted = {statement.first: statement for statement in statements}
    for node in tree.body:
        statement = wanted.get(node.lineno)
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if statement is None or value is None:
            continue
        literal = ast.literal_eval(value)
        if _changed_by_json(literal):
            exact.update(dict.fromkeys(statement.names, literal))
    return exact


def _changed_by_json(value: Any) -> bool:
    """Whether JSON cannot keep `value` as it is: a set, a tuple, bytes, a complex number, or
    a dict with keys that are not strings (anywhere inside)."""
    if isinstance(value, (set, frozenset, tuple, bytes, complex)):
        return True
    if isinstance(value, dict):
        return any(
            not isinstance(key, str) or _changed_by_json(item) for key, item in value.items()
        )
    if isinstance(value, list):
        return any(_changed_by_json(item) for item in value)
    return False


def _remove(code: str, statements: list[_Statement], references: set[str]) -> str:
    """The code without its param assignments; a param that an earlier kept cell rebinds is
    set again from the params block instead (`depth = NBEXP_PARAMS["depth"]`)."""
    lines = code.split("\n")
    for statement in sorted(statements, key=lambda s: s.first, reverse=True):
        kept = [name for name in statement.names if name in references]
        replacement = "; ".join(f"{name} = NBEXP_PARAMS[{name!r}]" for name in kept)
        if statement.alone:
            indent = lines[statement.first - 1][: statement.start]
            lines[statement.first - 1 : statement.last] = (
                [indent + replacement] if replacement else []
            )
            continue
        first, last = lines[statement.first - 1], lines[statement.last - 1]
        prefix = first.encode()[: statement.start].decode(errors="ignore")
        suffix = last.encode()[statement.end :].decode(errors="ignore")
        lines[statement.first - 1 : statement.last] = [prefix + (replacement or "pass") + suffix]
    return "\n".join(lines)


def _packages(code: str, recorded: dict[str, str]) -> dict[str, str]:
    """{distribution: recorded version} for the third-party modules the exported code imports."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {}
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names)
    by_key = {_normal(name): (name, version) for name, version in recorded.items()}
    found: dict[str, str] = {}
    for module in sorted(modules):
        hit = by_key.get(_normal(module))
        names = [hit[0]] if hit else _distributions().get(module, [])
        for name in names:
            if _normal(name) in by_key:
                found[by_key[_normal(name)][0]] = by_key[_normal(name)][1]
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return dict(packages_distributions())


# -- literals -------------------------------------------------------------------------------


def python_literal(value: Any) -> str:
    """Python source for a recorded param value (JSON types, nan and inf included)."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return 'float("nan")'
        return 'float("inf")' if value > 0 else '-float("inf")'
    if isinstance(value, dict):
        items = ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(item) for item in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(python_literal(item) for item in value)
        return "(" + inner + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, (set, frozenset)):
        if not value:
            return f"{type(value).__name__}()"
        items = ", ".join(sorted(python_literal(item) for item in value))
        return "{" + items + "}" if isinstance(value, set) else f"frozenset({{{items}}})"
    if value is None or isinstance(value, (bool, int, float, str, bytes, complex)):
        return repr(value)
    raise ExportError(f"a param of type {type(value).__name__} cannot be written as a literal")


# -- the header ---------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Recorded text (a name, a path, an error) for a `#` comment: a line break in it would
    end the comment and make the rest code, so control characters become spaces."""
    return "".join(" " if ord(character) < 32 else character for character in str(text))


def header_lines(p: Plan) -> list[str]:
    """What the export reproduces and what it needs, one fact a line (values that vary in
    length, like paths and versions, each on a line of their own, so nothing is re-wrapped)."""
    e = p.experiment
    more = " " * 13
    created = e.created
    try:
        moment = dt.datetime.fromisoformat(created).astimezone(dt.timezone.utc)
        created = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        pass
    lines = [
        f"experiment:  {e.name} (id {e.id})",
        f"recorded:    {created}, status {e.status}, {e.outcome.duration:.2f} s",
    ]
    if e.code.notebook:
        lines.append(f"notebook:    {e.code.notebook}")
    cwd = e.env.get("cwd")
    if cwd:
        lines.append(f"working dir: {cwd}")
        lines.append(f"{more}(run from there: the code's paths are relative to it)")
    lines.extend(_git_lines(e, more))
    if p.files:
        lines.append("input data:  (xxh3-128 content hashes, checked before running)")
        lines.extend(f"  {path}  {digest}" for path, digest in p.files)
    for number, error in p.failed:
        lines.append(f"failed:      In [{number}] raised {error} in the notebook;")
        lines.append(f"{more}the script runs only what ran there")
    variables = [item for item in e.data if item.is_variable]
    if variables:
        lines.append(
            "input variables read from the kernel (rebuilt by the cells below, then checked):"
        )
        lines.extend(f"  {item.name}  {item.hash}" for item in variables)
    needs = [f"Python {e.env.get('python', '3')}"]
    if p.files or p.variables:
        needs.append("xxhash (for the input-data check)")
    if p.uses_log:
        needs.append("nbexp (the code calls nbexp.log)")
    needs.extend(f"{name} {version} (as recorded)" for name, version in p.packages.items())
    lines.append(f"needs:       {needs[0]}")
    lines.extend(more + need for need in needs[1:])
    if not p.history_total:
        lines.append("cells:       the record holds no earlier cells; the experiment needs none")
    elif not p.cells:
        lines.append(f"cells:       none of the {p.history_total} earlier cells defines anything")
        lines.append(f"{more}the experiment uses")
    else:
        kept = ", ".join(cell.label.split(", ")[-1] for cell in p.cells)
        lines.extend(
            textwrap.wrap(
                f"cells:       {len(p.cells)} of {p.history_total} earlier cells kept ({kept}); "
                "the others define nothing the experiment uses",
                width=92,
                subsequent_indent=more,
            )
        )
    return [line.replace("\n", " ") for line in lines]


def _git_lines(e: Experiment, more: str) -> list[str]:
    git = e.git
    if not git:
        return ["git:         not recorded inside a git repository"]
    if git.get("error") or not git.get("commit"):
        why = git.get("error") or "the repository had no commit"
        return ["git:         no commit recorded", f"{more}({why})"]
    lines = [
        f"git:         commit {git['commit']}"
        + (f" on {git['branch']}" if git.get("branch") else "")
    ]
    if git.get("dirty"):
        lines.append(f"{more}plus uncommitted changes, kept in the record:")
        lines.append(f"{more}`nbexp branch {e.short_id} NAME` makes a branch with them")
    return [_one_line(line) for line in lines]  # recorded text never leaves its comment


def _usage(p: Plan, filename: str) -> str:
    example = ""
    if p.params:
        numbers = [
            (k, v)
            for k, v in p.params.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        name, value = (numbers or list(p.params.items()))[0]
        example = f" [--{name} {_example_value(value)}]"
    return f"python {filename}{example} [--no-check-data] [--help]"


def _example_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(not value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return value if value and " " not in value else f"'{value}'"
    return f"'{python_literal(value)}'"


# -- the script -----------------------------------------------------------------------------

_ARGUMENTS = '''\
def _nbexp_arguments(params):
    """The params with command-line overrides, each typed like its recorded value (lists,
    dicts and None as Python literals); and whether to check the input data."""
    import argparse
    import ast

    def typed(recorded):
        def convert(text):
            if isinstance(recorded, bool):
                if text.lower() in ("true", "1", "yes"):
                    return True
                if text.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(text)
            if isinstance(recorded, (int, float, str)):
                return type(recorded)(text)
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                if recorded is None:
                    return text
                raise ValueError(text) from None

        convert.__name__ = "literal" if recorded is None else type(recorded).__name__
        return convert

    parser = argparse.ArgumentParser(description=__doc__)
    for name, recorded in params.items():
        flags = dict.fromkeys(["--" + name, "--" + name.replace("_", "-")])
        parser.add_argument(
            *flags, dest=name, type=typed(recorded), default=recorded, metavar="VALUE",
            help=f"default (recorded): {recorded!r}",
        )
    parser.add_argument(
        "--no-check-data", action="store_true",
        help="run even when an input file is missing or changed",
    )
    arguments = vars(parser.parse_args())
    return {name: arguments[name] for name in params}, not arguments["no_check_data"]
'''

_CHECK = '''\
def _nbexp_check_data(files):
    """Stop when an input file is missing or no longer has its recorded content hash."""
    import os

    import xxhash

    for path, recorded in files:
        if not os.path.isfile(path):
            problem = f"input data {path} is missing (recorded xxh3-128 {recorded})"
        else:
            hasher = xxhash.xxh3_128()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(chunk)
            if hasher.hexdigest() == recorded:
                continue
            problem = (
                f"input data {path} changed: recorded xxh3-128 {recorded}, "
                f"now {hasher.hexdigest()}"
            )
        __STOP__
'''

_VARIABLES = '''\
def _nbexp_check_variables(variables):
    """Stop when an input variable the cells above rebuilt is not what the experiment read:
    its content hash (xxh3-128 over dtypes, shape, index and values, as nbexp computes it)
    differs from the recorded one."""
    import os
    import sys

    import xxhash

    def raw(array):
        import numpy as np

        return memoryview(np.ascontiguousarray(array).reshape(-1).view("u1"))

    def column(hasher, values):
        import numpy as np
        import pandas as pd

        if isinstance(values.dtype, np.dtype) and not values.dtype.hasobject:
            hasher.update(raw(values.to_numpy()))
            return
        try:
            rows = pd.util.hash_pandas_object(values, index=False).to_numpy()
        except (TypeError, ValueError):
            import pickle

            hasher.update(pickle.dumps(values.tolist(), protocol=5))
            return
        hasher.update(raw(rows))

    def digest(value):
        kind = type(value)
        module = kind.__module__.split(".")[0]
        hasher = xxhash.xxh3_128()
        if module == "numpy" and kind.__name__ == "ndarray":
            hasher.update(f"ndarray|{value.dtype.str}|{value.shape}|".encode())
            if value.dtype.hasobject:
                import pickle

                hasher.update(pickle.dumps(value.tolist(), protocol=5))
            else:
                hasher.update(raw(value))
            return hasher.hexdigest()
        if module != "pandas" or kind.__name__ not in ("DataFrame", "Series"):
            return None
        import pandas as pd

        if kind.__name__ == "Series":
            hasher.update(f"series|{value.name!r}|{value.dtype}|{len(value)}|".encode())
            column(hasher, value)
        else:
            hasher.update(f"frame|{value.shape}|".encode())
            for position in range(value.shape[1]):
                values = value.iloc[:, position]
                hasher.update(f"{value.columns[position]!r}|{values.dtype}|".encode())
                column(hasher, values)
        index = value.index
        if index.nlevels > 1:
            hasher.update(b"index|multi|")
            levels = index.to_frame(index=False)
            for position in range(levels.shape[1]):
                column(hasher, levels.iloc[:, position])
        else:
            hasher.update(f"index|{index.dtype}|".encode())
            column(hasher, pd.Series(index))
        return hasher.hexdigest()

    for name, recorded, paths in variables:
        if name in globals() and digest(globals()[name]) == recorded:
            continue
        files = [path for path in paths if os.path.isfile(path)]
        if name not in globals():
            problem = f"{name} was not rebuilt by the cells above"
        elif files:
            problem = (
                f"{name} is not what the experiment read "
                f"(it was rebuilt from {', '.join(files)}, which changed)"
            )
        else:
            problem = (
                f"{name} is not what the experiment read "
                "(the cells above rebuilt it with other values)"
            )
        __STOP__
'''

_REPORT = '''\
def _nbexp_report(names, logged=None, logged_only=()):
    """Print the recorded metrics' new values as one JSON line (`nbexp rerun` reads it)."""
    import json
    import math
    import numbers

    def plain(value):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            value = float(value)
            if math.isfinite(value):
                return value
            return {"$float": "nan" if value != value else ("inf" if value > 0 else "-inf")}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {str(key): plain(item) for key, item in value.items()}
        if hasattr(value, "tolist"):
            return plain(value.tolist())
        return repr(value)[:500]

    found = dict(logged or {})
    found.update(
        {name: globals()[name] for name in names if name in globals() and name not in logged_only}
    )
    metrics = {name: plain(found[name]) for name in names if name in found}
    print("__PREFIX__" + json.dumps(metrics), flush=True)
'''


def _helpers(p: Plan, *, notebook: bool) -> str:
    parts = []
    if not notebook:
        parts.append(_ARGUMENTS)
    if p.files:
        if notebook:
            stop = "raise RuntimeError(problem + '; restore it, or set NBEXP_CHECK_DATA = False')"
            parts.append(_CHECK.replace("__STOP__", stop))
        else:
            check = _CHECK.replace("    import os\n", "    import os\n    import sys\n")
            stop = (
                'print(f"nbexp: {problem}; restore it, or pass --no-check-data", file=sys.stderr)'
                f"\n        sys.exit({DATA_CHANGED_EXIT})"
            )
            parts.append(check.replace("__STOP__", stop))
    if p.variables:
        if notebook:
            stop = "raise RuntimeError(problem + '; set NBEXP_CHECK_DATA = False to run anyway')"
        else:
            stop = (
                'print(f"{os.path.basename(sys.argv[0])}: {problem}; '
                'pass --no-check-data to run anyway", file=sys.stderr)'
                f"\n        sys.exit({DATA_CHANGED_EXIT})"
            )
        parts.append(_VARIABLES.replace("__STOP__", stop))
    parts.append(_REPORT.replace("__PREFIX__", METRICS_PREFIX))
    return "\n\n".join(parts)


def _files_literal(p: Plan) -> str:
    if len(p.files) == 1:
        return f"[{p.files[0]!r}]"
    return "[\n" + "".join(f"    {item!r},\n" for item in p.files) + "]"


def _variables_literal(p: Plan) -> str:
    return "[\n" + "".join(f"    {item!r},\n" for item in p.variables) + "]"


def _setup_lines(p: Plan, *, notebook: bool) -> list[str]:
    """After the helpers: overrides applied, data checked, display and nbexp.log provided."""
    lines = []
    names = ", ".join(f"{name!r}: {name}" for name in p.params)
    if len(names) > 60:
        names = "\n" + "".join(f"    {name!r}: {name},\n" for name in p.params)
    if notebook:
        lines.append(f"NBEXP_PARAMS = {{{names}}}")
        if p.files:
            lines.append(f"if NBEXP_CHECK_DATA:\n    _nbexp_check_data({_files_literal(p)})")
    else:
        lines.append(f"NBEXP_PARAMS, _nbexp_check = _nbexp_arguments({{{names}}})")
        if p.params:
            lines.append("globals().update(NBEXP_PARAMS)")
        if p.files:
            lines.append(f"if _nbexp_check:\n    _nbexp_check_data({_files_literal(p)})")
        if p.headless:
            lines.append(
                'import matplotlib\n\nmatplotlib.use("Agg")  # no screen: figures are drawn, not shown'
            )
        if p.uses_display:
            lines.append(
                "try:\n    from IPython.display import display\n"
                "except ImportError:  # no IPython: show things the plain way\n"
                "    display = print"
            )
    return lines


_LOG_SETUP = (
    "from nbexp.series import collecting as _nbexp_collecting\n\n"
    "_nbexp_collector = _nbexp_collecting()  # kept referenced: it collects until the end\n"
    "_nbexp_series = _nbexp_collector.__enter__()"
)


def _report_call(p: Plan) -> str:
    logged = ", _nbexp_series.last_values()" if p.uses_log else ""
    if p.uses_log and p.logged_only:
        logged += f", logged_only={p.logged_only!r}"
    return f"_nbexp_report({p.metrics!r}{logged})"


_FUTURE = "from __future__ import annotations"


def _without_future_imports(code: str) -> str:
    """`code` with its `from __future__` imports commented out: in a script they may only
    come first, so the export turns postponed annotations on at its top instead."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.split("\n")
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            for number in range(statement.lineno - 1, statement.end_lineno or statement.lineno):
                lines[number] = f"# {lines[number]}  # {translate.NOTE} at the top of the script"
    return "\n".join(lines)


def _awaits_at_top_level(code: str) -> bool:
    """Whether the cell awaits outside any function, as IPython lets a cell do: a script
    has to run such a cell as a coroutine."""
    try:
        return analysis.top_level_await(ast.parse(code)) is not None
    except SyntaxError:
        return False


def _as_coroutine(code: str) -> str:
    """A top-level-awaiting cell as a coroutine run on the script's one event loop; the
    names it binds stay module globals, as in the notebook."""
    facts = slicing.facts(code)
    bound = sorted((facts.binds if facts else set()) | slicing.module_names(code)[1])
    in_strings = _lines_inside_strings(code)
    body = [
        line if number in in_strings or not line.strip() else "    " + line
        for number, line in enumerate(code.split("\n"), start=1)
    ]
    lines = [f"async def _nbexp_cell():  # {translate.NOTE} the cell awaits at its top level"]
    if bound:
        lines.append(f"    global {', '.join(bound)}")
    lines.extend(body)
    lines.extend(["", "", "_nbexp_loop.run_until_complete(_nbexp_cell())"])
    return "\n".join(lines)


def _lines_inside_strings(code: str) -> set[int]:
    """Line numbers that continue a multi-line string: indenting them would change it."""
    import io
    import tokenize

    inside: set[int] = set()
    with contextlib.suppress(tokenize.TokenError, SyntaxError):
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    return inside


def _script_cell(code: str) -> str:
    code = _without_future_imports(code)
    return _as_coroutine(code) if _awaits_at_top_level(code) else code


def to_script(experiment: Experiment, filename: str = "run.py") -> str:
    """The standalone Python script reproducing `experiment` (`filename` for its usage line)."""
    p = plan(experiment)
    e = p.experiment
    out = ["#!/usr/bin/env python3"]
    out.append(repr(f"Reproduces the nbexp experiment {e.name} ({e.short_id}).") + "\n")
    if p.future_annotations:
        out.append(f"{_FUTURE}  # {translate.NOTE} a notebook cell turned it on\n")
    out.extend(f"# {line}" for line in header_lines(p))
    out.append(f"#\n# usage: {_usage(p, filename)}")
    out.append(f"# The last line printed holds the metrics: {METRICS_PREFIX}{{...}} (JSON).")
    out.append("")
    out.append("# %% parameters (override any on the command line: --NAME VALUE)")
    out.extend(f"{name} = {python_literal(value)}" for name, value in p.params.items())
    if not p.params:
        out.append("# none recorded")
    out.append("")
    out.append("# %% nbexp: command-line overrides and the input-data check")
    out.append(_helpers(p, notebook=False))
    out.append("")
    out.extend(_setup_lines(p, notebook=False))
    cells = [_script_cell(cell.python) for cell in p.cells]
    body = _script_cell(p.body.python)
    if any(_awaits_at_top_level(cell.python) for cell in [*p.cells, p.body]):
        out.extend(["import asyncio", "", "_nbexp_loop = asyncio.new_event_loop()"])
    for cell, python in zip(p.cells, cells, strict=True):
        out.extend(["", "", f"# %% {cell.label}", python])
    if p.variables:
        out.extend(["", "", "# %% nbexp: the rebuilt input variables are what the experiment read"])
        out.append(f"if _nbexp_check:\n    _nbexp_check_variables({_variables_literal(p)})")
    if p.uses_log:
        out.extend(["", "", "# %% nbexp: collect nbexp.log() series as %%experiment does"])
        out.append(_LOG_SETUP)
    out.extend(["", "", f"# %% {p.body.label}: {_one_line(e.name)}", body])
    out.extend(["", "", "# %% nbexp: the metrics, as one JSON line", _report_call(p), ""])
    return "\n".join(out)


def to_notebook(experiment: Experiment) -> Any:
    """An nbformat v4 notebook reproducing `experiment`, with a papermill `parameters` cell."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    p = plan(experiment)
    e = p.experiment
    intro = [f"# Reproduces the nbexp experiment {_one_line(e.name)} ({e.short_id})", ""]
    intro.extend(f"    {line}" for line in header_lines(p))
    intro.extend(
        [
            "",
            "Override the params with papermill: "
            f"`papermill in.ipynb out.ipynb -p NAME VALUE`. The last cell prints the metrics "
            f"as one `{METRICS_PREFIX.strip()} {{...}}` JSON line.",
        ]
    )
    params = [f"{name} = {python_literal(value)}" for name, value in p.params.items()]
    params.append("NBEXP_CHECK_DATA = True  # False runs even when an input file changed")
    setup = [_helpers(p, notebook=True).rstrip(), "", "", *_setup_lines(p, notebook=True)]
    if p.future_annotations:  # IPython keeps a cell's future import for the cells after it
        setup.insert(0, f"{_FUTURE}  # {translate.NOTE} a notebook cell turned it on")
    cells = [
        new_markdown_cell("\n".join(intro)),
        new_code_cell("# parameters\n" + "\n".join(params), metadata={"tags": ["parameters"]}),
        new_code_cell("\n".join(setup)),
        *(new_code_cell(cell.ipython) for cell in p.cells),
    ]
    if p.variables:
        cells.append(
            new_code_cell(
                f"if NBEXP_CHECK_DATA:\n    _nbexp_check_variables({_variables_literal(p)})"
            )
        )
    if p.uses_log:
        cells.append(new_code_cell(_LOG_SETUP))
    cells.append(new_code_cell(p.body.ipython))
    cells.append(new_code_cell(_report_call(p)))
    for number, cell in enumerate(cells):
        cell.id = f"nbexp-{number}"
    notebook = new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "nbexp": {"experiment": e.id, "name": e.name},
    }
    nbformat.validate(notebook)
    return notebook


def render(experiment: Experiment, format: str = "script", *, filename: str = "run.py") -> str:
    """The export as text: a script, or a notebook's JSON."""
    if format == "script":
        return to_script(experiment, filename)
    if format == "notebook":
        import nbformat

        text: str = nbformat.writes(to_notebook(experiment))
        return text + "\n"
    raise ExportError(f"unknown export format {format!r}; use one of: {', '.join(FORMATS)}")


def infer_format(path: str | os.PathLike[str] | None, format: str | None) -> str:
    """The format asked for, else the one the path's suffix names (.ipynb: notebook)."""
    if format is not None:
        return format
    return "notebook" if path is not None and str(path).endswith(".ipynb") else "script"


def default_path(experiment: Experiment, format: str) -> Path:
    """`<name>.py` (or `.ipynb`) in the working directory, for an export without a path."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment.name).strip("-.") or experiment.short_id
    return Path(slug + (".ipynb" if format == "notebook" else ".py"))


def write(
    experiment: Experiment,
    path: str | os.PathLike[str],
    format: str = "script",
    *,
    force: bool = False,
) -> Path:
    """Write the export to `path` (atomically); refuses to overwrite unless `force`.
    Format dvc writes the script and its stage in dvc.yaml (`dvcstage`)."""
    if format == "dvc":
        from .dvcstage import write as write_stage

        return write_stage(experiment, path, force=force)[0]
    target = Path(path)
    if format == "script" and target.suffix == ".ipynb":
        raise ExportError(
            f"{target} is a notebook name; export with format notebook, or a .py path"
        )
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force (force=True) to overwrite it")
    write_text_atomically(target, render(experiment, format, filename=target.name))
    return target


def write_text_atomically(target: Path, text: str, failure: type[NbexpError] = ExportError) -> None:
    """Write a user's file so it is whole or untouched; an OSError is one `failure` line."""
    temporary = target.with_name(f".{target.name}.nbexp-{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise failure(f"cannot write {target}: {error.strerror or error}") from error
