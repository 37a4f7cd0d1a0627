"""What a cell's code assigns and reads, found by parsing it (never by running it).

Params are the top-level assignments of literals; metric candidates are every other name the
cell binds at module level; inputs are the names it reads. `-p` overrides rewrite the literal
in the source text itself, so the body really runs with the new value and formatting survives.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .errors import NbexpError


class CodeError(NbexpError):
    """The cell's code cannot be analysed (it does not parse)."""


@dataclass
class Param:
    name: str
    value: Any
    spans: list[tuple[int, int, int, int]] = field(default_factory=list)  # value node positions


@dataclass
class CodeInfo:
    """The facts about one cell's code that recording needs."""

    params: dict[str, Param]
    assigned: list[str]
    loaded: set[str]
    seeds: dict[str, Any]
    # names the code binds to an expression that is not a literal param (`x = f()`, `a, b = 1, 2`,
    # `if c: x = 3`): a `-p` value injected before the body would be silently overwritten
    computed: set[str] = field(default_factory=set)
    # names the body binds to different literals at top level (`s = {0: 10}` ... `s = {0: 25}`):
    # not params, since no one value (or rewrite) stands for what the body did
    rebound: set[str] = field(default_factory=set)


def literal_value(node: ast.AST) -> tuple[bool, Any]:
    """(True, value) when `node` is a Python literal (incl. negative numbers and containers)."""
    if type(node) is ast.Constant:  # most literals: what literal_eval would return
        return True, node.value
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements that run at module scope: the body plus the inside of if/for/while/with/try."""
    statements: list[ast.stmt] = []
    pending = list(tree.body)
    while pending:
        statement = pending.pop(0)
        statements.append(statement)
        for name in ("body", "orelse", "finalbody"):
            children = getattr(statement, name, None)
            if isinstance(children, list) and not isinstance(
                statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ):
                pending.extend(child for child in children if isinstance(child, ast.stmt))
        for handler in getattr(statement, "handlers", []) or []:
            pending.extend(handler.body)
    return statements


def target_names(target: ast.AST) -> list[str]:
    """The plain names an assignment target binds (`a`, `a, (b, *c)`), not attributes/items."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in target_names(element)]
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    return []


def _span(node: ast.expr) -> tuple[int, int, int, int]:
    return (node.lineno, node.col_offset, node.end_lineno or node.lineno, node.end_col_offset or 0)


_SEED_CALLS = {"seed", "manual_seed", "set_seed", "set_random_seed"}


@lru_cache(maxsize=64)
def parse(source: str) -> ast.Module:
    """The tree of a cell's code, parsed once per text: the analysis here, the params files'
    and the secrets scan all read the same cell (none of them changes the tree)."""
    return ast.parse(source)


def top_level_await(tree: ast.Module) -> int | None:
    """The line of the first `await` (`async for`, `async with`, async comprehension)
    outside any function: IPython runs such a cell as a coroutine; code that runs it
    another way (a cell magic, a script) must know."""
    pending: list[ast.AST] = list(reversed(tree.body))
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return node.lineno
        if isinstance(node, ast.comprehension) and node.is_async:
            return node.iter.lineno
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pending.extend(reversed(node.decorator_list))  # they run where it is defined
            continue
        pending.extend(reversed(list(ast.iter_child_nodes(node))))
    return None


@lru_cache(maxsize=64)
def nodes(source: str) -> tuple[ast.AST, ...]:
    """Every node of `parse(source)`, in `ast.walk`'s order (breadth first), listed once."""
    found: list[ast.AST] = [parse(source)]
    for node in found:  # grows while it is read: each node's children go to the end
        found.extend(_children(node))
    return tuple(found)


def analyze(source: str) -> CodeInfo:
    """Parse plain Python (IPython syntax already transformed) and collect its facts."""
    try:
        tree = parse(source)
    except SyntaxError as error:
        raise CodeError(f"the cell does not parse: {error.msg} (line {error.lineno})") from error
    params: dict[str, Param] = {}
    assigned: list[str] = []
    computed: set[str] = set()
    rebound: set[str] = set()
    top_level = tree.body
    for statement in _module_level(tree):
        names: list[str] = []
        value: ast.expr | None = None
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                names.extend(target_names(target))
            value = statement.value
            simple = all(isinstance(target, ast.Name) for target in statement.targets)
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            names = target_names(statement.target)
            value = statement.value
            simple = isinstance(statement.target, ast.Name)
        elif isinstance(statement, ast.AugAssign):
            names = target_names(statement.target)
            simple = False
        else:
            continue
        for name in names:
            if name not in assigned:
                assigned.append(name)
        if value is None or not simple or statement not in top_level:
            if value is not None:
                computed.update(names)
            continue
        is_literal, literal = literal_value(value)
        if not is_literal:
            computed.update(names)
            continue
        for name in names:
            if name in rebound:
                continue
            param = params.setdefault(name, Param(name, literal))
            if not _same_literal(param.value, literal):
                rebound.add(name)
                del params[name]
                continue
            param.spans.append(_span(value))

    return CodeInfo(
        params=params,
        assigned=assigned,
        loaded=free_names(tree),
        seeds=_seeds_in(nodes(source)),
        computed=computed,
        rebound=rebound,
    )


def _same_literal(a: Any, b: Any) -> bool:
    """Equal and of one type (`1` and `1.0`, `1` and `True` are two values a user wrote)."""
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # a literal's == cannot fail, but a value that raises is not the same
        return False


def free_names(tree: ast.Module) -> set[str]:
    """Names the code reads before it binds them: its inputs from the namespace.

    Statements are taken in order; within one, reads happen before its own binding
    (`x = x + 1` reads the old x). Inside functions, lambdas and comprehensions their own
    parameters and locals are not inputs, but the globals they read are.
    """
    bound: set[str] = set()
    free: set[str] = set()
    _free_in_block(tree.body, bound, free)
    return free


def _free_in_block(statements: list[ast.stmt], bound: set[str], free: set[str]) -> None:
    """Walk statements in execution order; compound statements bind their targets (loop
    variables, `with … as`, `except … as`) before their bodies read them."""
    for statement in statements:
        if isinstance(statement, (ast.For, ast.AsyncFor)):
            free |= _reads_and_stores(statement.iter)[0] - bound
            bound |= _reads_and_stores(statement.target)[1]
            _free_in_block(statement.body, bound, free)
            _free_in_block(statement.orelse, bound, free)
        elif isinstance(statement, (ast.While, ast.If)):
            free |= _reads_and_stores(statement.test)[0] - bound
            _free_in_block(statement.body, bound, free)
            _free_in_block(statement.orelse, bound, free)
        elif isinstance(statement, (ast.With, ast.AsyncWith)):
            for item in statement.items:
                free |= _reads_and_stores(item.context_expr)[0] - bound
                if item.optional_vars is not None:
                    bound |= _reads_and_stores(item.optional_vars)[1]
            _free_in_block(statement.body, bound, free)
        elif isinstance(statement, ast.Try):
            _free_in_block(statement.body, bound, free)
            for handler in statement.handlers:
                if handler.type is not None:
                    free |= _reads_and_stores(handler.type)[0] - bound
                if handler.name:
                    bound.add(handler.name)
                _free_in_block(handler.body, bound, free)
            _free_in_block(statement.orelse, bound, free)
            _free_in_block(statement.finalbody, bound, free)
        else:
            reads, stores = _reads_and_stores(statement)
            free |= reads - bound
            bound |= stores


_SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


def _reads_and_stores(node: ast.AST) -> tuple[set[str], set[str]]:
    """(names read from the enclosing scope, names bound in it) for one node."""
    reads: set[str] = set()
    stores: set[str] = set()
    if isinstance(node, _SCOPES):
        inner_reads: set[str] = set()
        local: set[str] = set()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args
            local |= {
                a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)
            }
            local |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
            for default in (*arguments.defaults, *arguments.kw_defaults):
                if default is not None:
                    reads |= _reads_and_stores(default)[0]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stores.add(node.name)
            for decorator in node.decorator_list:
                reads |= _reads_and_stores(decorator)[0]
            body: list[ast.AST] = list(node.body)
        elif isinstance(node, ast.Lambda):
            body = [node.body]
        else:
            body = [
                *node.generators,
                *([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]),
            ]
        for child in body:
            child_reads, child_stores = _reads_and_stores(child)
            inner_reads |= child_reads
            local |= child_stores
        reads |= inner_reads - local
        return reads, stores
    if isinstance(node, ast.Name):
        (reads if isinstance(node.ctx, ast.Load) else stores).add(node.id)
        return reads, stores
    if isinstance(node, ast.ClassDef):
        stores.add(node.name)
    elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        reads.add(node.target.id)  # `x += 1` reads the x it rebinds
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        stores.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    for child in _children(node):
        if isinstance(child, _LEAVES):  # no names below: nothing to read or bind
            continue
        child_reads, child_stores = _reads_and_stores(child)
        reads |= child_reads
        stores |= child_stores
    return reads, stores


# Nodes with no name anywhere below them (`ast.Load`, `ast.Store`... on every Name; constants)
_LEAVES = (ast.expr_context, ast.Constant, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def _children(node: ast.AST) -> list[ast.AST]:
    """`ast.iter_child_nodes(node)` as a list, without its two generators per node."""
    found: list[ast.AST] = []
    node_type = ast.AST
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, node_type):
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, node_type))
    return found


def find_seeds(tree: ast.AST) -> dict[str, Any]:
    """Literal seeds passed to `random.seed(…)`, `np.random.seed(…)`, `torch.manual_seed(…)`…"""
    return _seeds_in(ast.walk(tree))


def _seeds_in(every_node: Iterable[ast.AST]) -> dict[str, Any]:
    seeds: dict[str, Any] = {}
    for node in every_node:
        if not isinstance(node, ast.Call) or not node.args:
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        if name in _SEED_CALLS:
            ok, value = literal_value(node.args[0])
            if ok:
                seeds[ast.unparse(function)] = value
        for keyword in node.keywords:
            if keyword.arg in ("random_state", "seed"):
                ok, value = literal_value(keyword.value)
                if ok and value is not None:
                    seeds[f"{ast.unparse(function)}({keyword.arg}=)"] = value
    return seeds


def parse_override(text: str) -> tuple[str, str, Any]:
    """`KEY=VALUE` from `-p` → (key, literal source, value); VALUE must be a Python literal."""
    key, separator, literal = text.partition("=")
    key = key.strip()
    if not separator or not (  # a name, or a params file's dotted key path (train.max_depth)
        key.isidentifier() or all(part.replace("-", "_").isidentifier() for part in key.split("."))
    ):
        raise NbexpError(f"-p {text}: expected KEY=VALUE, e.g. -p lr=0.01")
    literal = literal.strip()
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise NbexpError(
            f"-p {text}: {literal!r} is not a Python literal; quote strings "
            f"(-p {key}='{literal}') or give a number, list, dict, True/False/None"
        ) from error
    if _overflows(value):
        raise NbexpError(
            f"-p {text}: {literal} is beyond a float's range (Python reads it as inf); give a "
            "finite number"
        )
    return key, literal, value


def _overflows(value: Any) -> bool:
    """A literal float that Python silently turned into ±inf (`1e999999`)."""
    if isinstance(value, float):
        return math.isinf(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_overflows(item) for item in value)
    if isinstance(value, dict):
        return any(_overflows(item) for item in value.values())
    if isinstance(value, complex):
        return math.isinf(value.real) or math.isinf(value.imag)
    return False


def apply_overrides(source: str, info: CodeInfo, overrides: dict[str, str]) -> str:
    """Rewrite the literal of each overridden param; inject assignments for the others."""
    lines = source.splitlines(keepends=True)
    edits: list[tuple[tuple[int, int, int, int], str]] = []
    injected: list[str] = []
    for key, literal in overrides.items():
        param = info.params.get(key)
        if param is None:
            injected.append(f"{key} = {literal}\n")
            continue
        edits.extend((span, literal) for span in param.spans)
    # Apply from the end so earlier positions stay valid.
    for (start_line, start_col, end_line, end_col), literal in sorted(edits, reverse=True):
        first = lines[start_line - 1]
        last = lines[end_line - 1]
        prefix = first.encode()[:start_col].decode(errors="ignore")
        suffix = last.encode()[end_col:].decode(errors="ignore")
        lines[start_line - 1 : end_line] = [prefix + literal + suffix]
    return "".join(injected) + "".join(lines)
