"""Which earlier cells an experiment depends on: def-use analysis over the recorded history.

The history holds every cell the kernel ran before the experiment, in order, re-executions
included. Walking it backwards from the experiment with the set of names still needed, a
cell is kept when it binds one of them (its latest binding before the experiment wins: once a
cell binds a name unconditionally, earlier bindings of it are no longer needed) or changes
one in place (`df["c"] = …`, `lst.append(…)`, `model.fit(…)`); a kept cell's own inputs are
then needed in turn. Cells that only display something bind and change nothing and so fall
out. This works on names, not values: it cannot see a function that mutates a global it does
not name at the call site, nor names defined by code the history does not show.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable
from dataclasses import dataclass, field

from .analysis import free_names, target_names

# Calls that only look at their arguments (or show them): a cell of these changes nothing.
_PURE_FUNCTIONS = {
    "print", "display", "repr", "str", "len", "type", "id", "help", "dir", "vars",
    "pprint", "isinstance", "sorted", "list", "dict", "set", "tuple", "sum", "min", "max",
    "any", "all", "abs", "round", "format", "hash", "iter", "next", "zip", "enumerate",
}  # fmt: skip
_PURE_METHODS = {
    "head", "tail", "describe", "info", "sample", "show", "plot", "hist", "boxplot", "scatter",
    "copy", "to_string", "to_markdown", "to_html", "to_csv", "to_parquet", "to_json",
    "value_counts", "unique", "nunique", "count", "mean", "sum", "min", "max", "std", "var",
    "median", "corr", "isna", "isnull", "notna", "keys", "values", "items", "get", "index",
    "format", "summary", "savefig", "predict", "predict_proba", "score", "transform",
    "memory_usage", "equals", "all", "any", "tolist", "to_numpy", "astype", "groupby",
    "agg", "apply", "query", "filter", "select_dtypes", "nlargest", "nsmallest", "round",
    "drop", "merge", "join", "rename", "fillna", "dropna", "reset_index", "set_index",
    "sort_values", "sort_index", "assign", "pivot", "pivot_table", "melt", "map", "replace",
    "split", "strip", "lower", "upper", "startswith", "endswith", "read_csv", "read_parquet",
}  # fmt: skip
_DISPLAY_MODULES = {"plt", "sns", "px", "pyplot", "IPython", "display"}
# Names IPython (not Python) puts in a kernel's namespace: no cell defines them.
IPYTHON_NAMES = {"get_ipython", "display", "In", "Out", "exit", "quit", "_", "__", "___"}
BUILTIN_NAMES = set(dir(builtins)) | {"__name__", "__file__", "__doc__", "__builtins__"}


@dataclass(frozen=True)
class Facts:
    """What one cell's code does to the namespace."""

    reads: frozenset[str]  # names it reads before binding them
    binds: frozenset[str]  # names it may bind at module level
    kills: frozenset[str]  # names it certainly binds (a top-level, unconditional binding)
    mutates: frozenset[str]  # names whose object it may change in place
    opaque: bool = False  # `%run` & co.: may bind any name


@dataclass
class Slice:
    """The cells to keep (indexes into the history, in execution order) and what is missing."""

    kept: list[int] = field(default_factory=list)
    unresolved: set[str] = field(default_factory=set)
    unparsed: list[int] = field(default_factory=list)


def facts(code: str) -> Facts | None:
    """The facts of plain Python code; None when it does not parse (then it ran nothing)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    binds: set[str] = set()
    kills: set[str] = set()
    mutates: set[str] = set()
    opaque = False
    reads = _reads(tree.body, set())
    for statement in tree.body:
        # `x += 1` reads x, though its target is a store
        for node in ast.walk(statement):
            target = node.target if isinstance(node, ast.AugAssign) else None
            if isinstance(target, ast.Name) and target.id not in kills:
                reads.add(target.id)
        kills |= _bound(statement, top=True)
    for statement in _statements(tree.body):
        binds |= _bound(statement, top=False)
        mutates |= _mutated(statement)
        opaque = opaque or _is_opaque(statement)
    return Facts(
        reads=frozenset(reads),
        binds=frozenset(binds),
        kills=frozenset(kills),
        mutates=frozenset(mutates),
        opaque=opaque,
    )


def slice_history(
    cells: list[Facts | None], needed: Iterable[str], wanted: Iterable[str] = ()
) -> Slice:
    """Walk `cells` (oldest first) backwards from the end, keeping what `needed` depends on.

    `wanted` names are kept when some cell binds them but not reported missing otherwise
    (metrics the body does not bind, which may come from `nbexp.log`).
    """
    result = Slice()
    needed = set(needed) - BUILTIN_NAMES
    wanted = set(wanted) - BUILTIN_NAMES
    for index in range(len(cells) - 1, -1, -1):
        cell = cells[index]
        if cell is None:
            result.unparsed.append(index)
            continue
        looking = needed | wanted
        if not (cell.binds & looking or cell.mutates & looking or (cell.opaque and needed)):
            continue
        result.kept.append(index)
        resolved = needed if cell.opaque else cell.kills
        needed = (needed - resolved) | (cell.reads - BUILTIN_NAMES)
        wanted -= cell.kills
    result.kept.reverse()
    result.unparsed.reverse()
    result.unresolved = needed - IPYTHON_NAMES
    return result


def _reads(body: list[ast.stmt], bound: set[str]) -> set[str]:
    """Names the statements read before binding them, statement by statement and into the
    blocks of compound statements (`with open(p) as f: f.read()` does not read an outer f).
    A name bound in a branch or loop counts as bound afterwards."""
    free: set[str] = set()
    bound = set(bound)
    for statement in body:
        if isinstance(statement, (ast.With, ast.AsyncWith)):
            for item in statement.items:
                free |= _expression_reads(item.context_expr) - bound
                if item.optional_vars is not None:
                    free |= _target_reads(item.optional_vars) - bound
                    bound |= set(target_names(item.optional_vars))
            free |= _reads(statement.body, bound)
        elif isinstance(statement, (ast.For, ast.AsyncFor)):
            free |= _expression_reads(statement.iter) - bound
            inner = bound | set(target_names(statement.target))
            free |= _target_reads(statement.target) - bound
            free |= _reads(statement.body, inner) | _reads(statement.orelse, inner)
        elif isinstance(statement, (ast.If, ast.While)):
            free |= _expression_reads(statement.test) - bound
            free |= _reads(statement.body, bound) | _reads(statement.orelse, bound)
        elif isinstance(statement, ast.Try):
            free |= _reads(statement.body, bound)
            for handler in statement.handlers:
                if handler.type is not None:
                    free |= _expression_reads(handler.type) - bound
                free |= _reads(handler.body, bound | ({handler.name} if handler.name else set()))
            free |= _reads(statement.orelse, bound) | _reads(statement.finalbody, bound)
        else:
            free |= free_names(ast.Module(body=[statement], type_ignores=[])) - bound
        bound |= {name for node in _statements([statement]) for name in _bound(node, top=False)}
    return free


def _expression_reads(node: ast.expr) -> set[str]:
    return free_names(ast.Module(body=[ast.Expr(value=node)], type_ignores=[]))


def _target_reads(target: ast.expr) -> set[str]:
    """Names a binding target reads (`d` in `for d[k] in …`), not those it binds."""
    return {
        node.id
        for node in ast.walk(target)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run at module scope, nested control flow included (not functions)."""
    found: list[ast.stmt] = []
    pending = list(body)
    while pending:
        statement = pending.pop(0)
        found.append(statement)
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            children = getattr(statement, name, None)
            if isinstance(children, list):
                pending.extend(child for child in children if isinstance(child, ast.stmt))
        for handler in getattr(statement, "handlers", None) or []:
            pending.extend(handler.body)
        for case in getattr(statement, "cases", None) or []:
            pending.extend(case.body)
    return found


def _bound(statement: ast.stmt, *, top: bool) -> set[str]:
    """Names a statement binds in the module namespace. With `top`, only certain bindings:
    the statement itself must bind them, not a branch or loop body inside it."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names = {statement.name}
        if not top:  # `global x` in a function: calling it binds x
            for node in ast.walk(statement):
                if isinstance(node, ast.Global):
                    names.update(node.names)
        return names
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
    if top and not isinstance(statement, (ast.Assign, ast.AnnAssign, ast.With)):
        return set()
    parts: list[ast.AST]
    if isinstance(statement, ast.Assign):
        parts = list(statement.targets)
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        parts = (
            [statement.target]
            if not isinstance(statement, ast.AnnAssign) or statement.value
            else []
        )
    elif isinstance(statement, (ast.For, ast.AsyncFor)):
        parts = [statement.target]
    elif isinstance(statement, (ast.With, ast.AsyncWith)):
        parts = [item.optional_vars for item in statement.items if item.optional_vars]
    else:
        parts = []
    names = {name for part in parts for name in target_names(part)}
    # walrus anywhere in the statement's own expressions binds at module level
    for node in _own_nodes(statement):
        if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    if isinstance(statement, ast.Try) and not top:
        names |= {h.name for h in statement.handlers if h.name}
    return names


def _own_nodes(statement: ast.stmt) -> list[ast.AST]:
    """The expression nodes of a statement, not those of its nested statements or scopes."""
    nodes: list[ast.AST] = []
    pending: list[ast.AST] = [
        child for child in ast.iter_child_nodes(statement) if not isinstance(child, ast.stmt)
    ]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, (ast.Lambda, ast.stmt)):
            continue
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def _root(node: ast.AST) -> str | None:
    """`df` for `df`, `df.loc`, `df["c"]`, `df.a.b[0]`, `df.method(...).x`."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _mutated(statement: ast.stmt) -> set[str]:
    """Names whose object the statement may change in place (its own bindings aside)."""
    targets: list[ast.AST] = []
    if isinstance(statement, ast.Assign):
        targets = list(statement.targets)
    elif isinstance(statement, (ast.AugAssign, ast.AnnAssign)):
        targets = [statement.target]
    elif isinstance(statement, ast.Delete):
        targets = list(statement.targets)
    names: set[str] = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(
                getattr(node, "ctx", None), (ast.Store, ast.Del)
            ):
                root = _root(node)
                if root:
                    names.add(root)
    value = getattr(statement, "value", None)
    if isinstance(value, ast.Call):
        # a statement of its own may change its arguments too; `y = x.pop()` only x
        names |= _mutated_by_call(value, arguments=isinstance(statement, ast.Expr))
    return names


def _mutated_by_call(call: ast.Call, *, arguments: bool) -> set[str]:
    """`lst.append(x)` may change lst; `shuffle(lst)` may change lst; `print(df)` changes
    nothing; `df.head()` changes nothing; `df.drop(…, inplace=True)` changes df."""
    function = call.func
    in_place = any(
        keyword.arg == "inplace" and isinstance(keyword.value, ast.Constant) and keyword.value.value
        for keyword in call.keywords
    )
    if in_place and isinstance(function, ast.Attribute):
        root = _root(function)
        return {root} if root else set()
    if isinstance(function, ast.Name):
        if function.id in _PURE_FUNCTIONS:
            return set()
        receiver = None
    elif isinstance(function, ast.Attribute):
        root = _root(function)
        if function.attr in _PURE_METHODS or root in _DISPLAY_MODULES:
            return set()
        receiver = root
    else:
        return set()
    names = {receiver} if receiver else set()
    if not arguments:
        return names
    for argument in [*call.args, *(keyword.value for keyword in call.keywords)]:
        value = argument.value if isinstance(argument, ast.Starred) else argument
        if isinstance(value, ast.Name):
            names.add(value.id)
    return names


def _is_opaque(statement: ast.stmt) -> bool:
    """`globals().update(runpy.run_path(...))` (a translated `%run`) may bind anything."""
    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
        return False
    function = statement.value.func
    return (
        isinstance(function, ast.Attribute)
        and function.attr == "update"
        and isinstance(function.value, ast.Call)
        and isinstance(function.value.func, ast.Name)
        and function.value.func.id == "globals"
    )
