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

from .analysis import target_names

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
    # names its functions read when called (not when defined), which it does not bind itself:
    # any cell before the call may bind them, also one after the definition
    deferred: frozenset[str] = frozenset()


@dataclass
class Slice:
    """The cells to keep (indexes into the history, in execution order) and what is missing."""

    kept: list[int] = field(default_factory=list)
    unresolved: set[str] = field(default_factory=set)
    unparsed: list[int] = field(default_factory=list)


def facts(code: str, *, lazy_annotations: bool = False) -> Facts | None:
    """The facts of plain Python code; None when it does not parse (then it ran nothing).

    `lazy_annotations`: an earlier cell ran `from __future__ import annotations` (IPython's
    compiler keeps a future import for the cells after it), so annotations are never
    evaluated and read nothing; the code's own future import has the same effect.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if lazy_annotations or future_annotations(tree):
        tree = _AnnotationsRemoved().visit(tree)
    flow = _Flow(_Scopes.of(tree))
    flow.block(tree.body)
    kills: set[str] = set()
    for statement in tree.body:
        kills |= _bound(statement)
    mutates: set[str] = set()
    opaque = False
    for statement in _statements(tree.body):
        mutates |= _mutated(statement)
        opaque = opaque or _is_opaque(statement)
    return Facts(
        reads=frozenset(flow.reads),
        binds=frozenset(flow.binds | kills),
        kills=frozenset(kills),
        mutates=frozenset(mutates),
        opaque=opaque,
        deferred=frozenset(flow.deferred - flow.binds - kills),
    )


def future_annotations(tree: ast.Module) -> bool:
    """Whether the module turns on postponed evaluation of annotations (PEP 563)."""
    return any(
        isinstance(statement, ast.ImportFrom)
        and statement.module == "__future__"
        and any(alias.name == "annotations" for alias in statement.names)
        for statement in tree.body
    )


class _AnnotationsRemoved(ast.NodeTransformer):
    """The tree with every annotation dropped: what postponed annotations evaluate."""

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.returns = None
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        node.annotation = ast.Constant(value=None)
        self.generic_visit(node)
        return node


def slice_history(
    cells: list[Facts | None], needed: Iterable[str], wanted: Iterable[str] = ()
) -> Slice:
    """Walk `cells` (oldest first) backwards from the end, keeping what `needed` depends on.

    `wanted` names are kept when some cell binds them but not reported missing otherwise
    (metrics the body does not bind, which may come from `nbexp.log`).
    """
    needed, wanted = set(needed), set(wanted)
    late: set[str] = set()  # what kept functions read when called, bound anywhere before
    while True:
        result = _walk(cells, needed | late, wanted)
        kept = [cells[i] for i in result.kept]
        called = set().union(*(cell.deferred for cell in kept if cell is not None))
        if called <= late:
            return result
        late |= called


def _walk(cells: list[Facts | None], needed: set[str], wanted: set[str]) -> Slice:
    """One backward walk of `slice_history`."""
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


def _bound(statement: ast.stmt) -> set[str]:
    """Names a top-level statement certainly binds in the module namespace: the statement
    itself binds them, not a branch, loop body, comprehension or function inside it."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {
            (alias.asname or alias.name).split(".")[0]
            for alias in statement.names
            if alias.name != "*"
        }
    parts: list[ast.AST]
    if isinstance(statement, ast.Assign):
        parts = list(statement.targets)
    elif isinstance(statement, ast.AnnAssign):
        parts = [statement.target] if statement.value else []
    elif isinstance(statement, (ast.With, ast.AsyncWith)):
        parts = [item.optional_vars for item in statement.items if item.optional_vars]
    else:
        return set()
    names = {name for part in parts for name in target_names(part)}
    # a walrus in the statement's own expressions binds at module level
    for node in _own_nodes(statement):
        if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
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
        if isinstance(node, (ast.Lambda, ast.stmt, *_COMPREHENSIONS)):
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


# -- scopes ---------------------------------------------------------------------------------
# Python's own scoping rules, so that a function's `r += [1]` is its local and not a read of
# the kernel's `r`. `_Scopes` resolves every name of every nested scope (functions, lambdas,
# classes, comprehensions) the way the compiler does (`global`, `nonlocal`, class bodies
# invisible to the functions inside them, comprehension targets local to the comprehension but
# a walrus in one binding in the enclosing function or module); `_Flow` then walks the
# module-level statements in execution order to find what the cell reads before binding it.

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_TRIES: tuple[type[ast.Try], ...] = (ast.Try, getattr(ast, "TryStar", ast.Try))


@dataclass(eq=False)
class _Scope:
    """One scope: what it binds, declares and loads (names only, no order)."""

    kind: str  # "module", "function", "class" or "comprehension"
    parent: _Scope | None
    bound: set[str] = field(default_factory=set)
    declared_global: set[str] = field(default_factory=set)
    declared_nonlocal: set[str] = field(default_factory=set)
    loads: set[str] = field(default_factory=set)
    children: list[_Scope] = field(default_factory=list)
    to_module: set[str] = field(default_factory=set)  # walrus targets it binds in the module

    def resolves_to_module(self, name: str) -> bool:
        """Whether `name` used in this scope means the module's (the kernel's) binding."""
        if self.kind == "module" or name in self.declared_global:
            return True
        if name in self.declared_nonlocal or name in self.bound:
            return False
        scope = self.parent
        while scope is not None and scope.kind != "module":
            if scope.kind != "class":  # a class body is invisible to the scopes inside it
                if name in scope.declared_global:
                    return True
                if name in scope.declared_nonlocal or name in scope.bound:
                    return False
            scope = scope.parent
        return True

    def module_names(self) -> tuple[set[str], set[str]]:
        """(names this scope and those inside it read from the module, names they bind there)."""
        reads = {name for name in self.loads if self.resolves_to_module(name)}
        binds = (
            set(self.bound)
            if self.kind == "module"
            else (self.bound & self.declared_global) | self.to_module
        )
        for child in self.children:
            child_reads, child_binds = child.module_names()
            reads |= child_reads
            binds |= child_binds
        return reads, binds


class _Scopes(ast.NodeVisitor):
    """The scope tree of a module: `scopes[node]` for each function, lambda, class and
    comprehension node."""

    def __init__(self) -> None:
        self.module = _Scope("module", None)
        self.current = self.module
        self.scopes: dict[ast.AST, _Scope] = {}

    @classmethod
    def of(cls, tree: ast.Module) -> _Scopes:
        built = cls()
        for statement in tree.body:
            built.visit(statement)
        return built

    def _enter(self, node: ast.AST, kind: str) -> _Scope:
        scope = _Scope(kind, self.current)
        self.current.children.append(scope)
        self.scopes[node] = scope
        return scope

    def _visit_all(self, nodes: Iterable[ast.AST | None]) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node)

    def _inside(self, scope: _Scope, nodes: Iterable[ast.AST | None]) -> None:
        outer, self.current = self.current, scope
        try:
            self._visit_all(nodes)
        finally:
            self.current = outer

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.current.loads.add(node.id)
        else:  # a store, or `del x` (which makes x local too)
            self.current.bound.add(node.id)

    def visit_Global(self, node: ast.Global) -> None:
        self.current.declared_global.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.current.declared_nonlocal.update(node.names)

    def _arguments(self, arguments: ast.arguments) -> list[str]:
        """Visit what a signature evaluates where it is defined; return its parameters."""
        self._visit_all([*arguments.defaults, *arguments.kw_defaults])
        every = [
            *arguments.posonlyargs, *arguments.args, arguments.vararg,
            *arguments.kwonlyargs, arguments.kwarg,
        ]  # fmt: skip
        self._visit_all(argument.annotation for argument in every if argument is not None)
        return [argument.arg for argument in every if argument is not None]

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._visit_all(node.decorator_list)
        parameters = self._arguments(node.args)
        self._visit_all([node.returns])
        self.current.bound.add(node.name)
        scope = self._enter(node, "function")
        scope.bound.update(parameters)
        self._inside(scope, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        parameters = self._arguments(node.args)
        scope = self._enter(node, "function")
        scope.bound.update(parameters)
        self._inside(scope, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._visit_all([*node.decorator_list, *node.bases, *node.keywords])
        self.current.bound.add(node.name)
        self._inside(self._enter(node, "class"), node.body)

    def _comprehension(self, node: ast.AST, generators: list[ast.comprehension]) -> None:
        self.visit(generators[0].iter)  # the first iterable is evaluated outside
        scope = self._enter(node, "comprehension")
        parts: list[ast.AST] = []
        for number, generator in enumerate(generators):
            parts.extend([*([generator.iter] if number else []), generator.target, *generator.ifs])
        if isinstance(node, ast.DictComp):
            parts.extend([node.key, node.value])
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            parts.append(node.elt)
        self._inside(scope, parts)

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, node.generators)

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._comprehension(node, node.generators)

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._comprehension(node, node.generators)

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, node.generators)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        name = node.target.id
        scope = self.current
        while scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent  # a walrus in a comprehension binds in the enclosing scope
        scope.bound.add(name)
        if scope is not self.current and scope.kind == "module":
            self.current.to_module.add(name)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.current.bound.add((alias.asname or alias.name).split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self._visit_all([node.type])
        if node.name:
            self.current.bound.add(node.name)
        self._visit_all(node.body)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        self._visit_all([node.pattern])
        if node.name:
            self.current.bound.add(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.current.bound.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self._visit_all([*node.keys, *node.patterns])
        if node.rest:
            self.current.bound.add(node.rest)


def module_names(code: str) -> tuple[set[str], set[str]]:
    """(every name the code reads from the module namespace, every name it binds there),
    in any scope and in any order: what the compiler's symbol table says."""
    scopes = _Scopes.of(ast.parse(code))
    return scopes.module.module_names()


class _Flow:
    """Module-level statements in execution order: which names they read before binding
    them (`reads`) and which they may bind (`binds`). A name bound in a branch or loop counts
    as bound afterwards; a function's reads count where it is defined."""

    def __init__(self, scopes: _Scopes) -> None:
        self.scopes = scopes.scopes
        self.bound: set[str] = set()
        self.reads: set[str] = set()
        self.deferred: set[str] = set()
        self.binds: set[str] = set()
        self.class_bound: set[str] | None = None  # inside a module-level class body

    def load(self, name: str) -> None:
        if self.class_bound is not None and name in self.class_bound:
            return
        if name not in self.bound:
            self.reads.add(name)

    def store(self, name: str) -> None:
        if self.class_bound is not None:
            self.class_bound.add(name)
            return
        self.bound.add(name)
        self.binds.add(name)

    def nested(self, node: ast.AST) -> None:
        """A function, lambda, class or comprehension scope: its module reads and binds. A
        function's (or lambda's) reads happen when it is called: they are `deferred`."""
        reads, binds = self.scopes[node].module_names()
        called_later = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for name in reads:
            if name not in self.bound:
                (self.deferred if called_later else self.reads).add(name)
        self.bound |= binds
        self.binds |= binds

    def expression(self, node: ast.AST | None) -> None:
        """Visit an expression in evaluation order."""
        if node is None:
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.load(node.id)
            elif isinstance(node.ctx, ast.Store):
                self.store(node.id)
            else:
                self.load(node.id)  # `del x` needs x
        elif isinstance(node, ast.NamedExpr):
            self.expression(node.value)
            self.store(node.target.id)
        elif isinstance(node, ast.Lambda):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                self.expression(default)
            self.nested(node)
        elif isinstance(node, _COMPREHENSIONS):
            self.expression(node.generators[0].iter)
            self.nested(node)
        else:
            for child in ast.iter_child_nodes(node):
                self.expression(child)

    def block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function(node)
        elif isinstance(node, ast.ClassDef):
            for part in [*node.decorator_list, *node.bases, *node.keywords]:
                self.expression(part)
            self.class_body(node)
            self.store(node.name)
        elif isinstance(node, ast.Assign):
            self.expression(node.value)
            for target in node.targets:
                self.expression(target)
        elif isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name):
                self.load(node.target.id)
            self.expression(node.value)
            self.expression(node.target)
        elif isinstance(node, ast.AnnAssign):
            self.expression(node.annotation)
            self.expression(node.value)
            if node.value is not None or not isinstance(node.target, ast.Name):
                self.expression(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expression(node.iter)
            self.expression(node.target)
            self.block(node.body)
            self.block(node.orelse)
        elif isinstance(node, (ast.While, ast.If)):
            self.expression(node.test)
            self.block(node.body)
            self.block(node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expression(item.context_expr)
                self.expression(item.optional_vars)
            self.block(node.body)
        elif isinstance(node, _TRIES):
            self.block(node.body)
            for handler in node.handlers:
                self.expression(handler.type)
                if handler.name:
                    self.store(handler.name)
                self.block(handler.body)
            self.block(node.orelse)
            self.block(node.finalbody)
        elif isinstance(node, ast.Match):
            self.expression(node.subject)
            for case in node.cases:
                self.pattern(case.pattern)
                self.expression(case.guard)
                self.block(case.body)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    self.store((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            pass
        else:  # Expr, Delete, Return, Raise, Assert, Pass, Break, Continue
            for child in ast.iter_child_nodes(node):
                self.expression(child)

    def pattern(self, node: ast.pattern) -> None:
        """A `case` pattern: values and classes it reads, captures it binds."""
        if isinstance(node, ast.MatchValue):
            self.expression(node.value)
        elif isinstance(node, ast.MatchClass):
            self.expression(node.cls)
        elif isinstance(node, ast.MatchMapping):
            for key in node.keys:
                self.expression(key)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.pattern):
                self.pattern(child)
        name = getattr(node, "name", None) or getattr(node, "rest", None)
        if isinstance(name, str):
            self.store(name)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A def evaluates its decorators, defaults and annotations now; the globals its body
        reads are counted here too (it may be called at once), and its name is bound."""
        arguments = node.args
        every = [
            *arguments.posonlyargs, *arguments.args, arguments.vararg,
            *arguments.kwonlyargs, arguments.kwarg,
        ]  # fmt: skip
        for part in [
            *node.decorator_list,
            *arguments.defaults,
            *arguments.kw_defaults,
            *(argument.annotation for argument in every if argument is not None),
            node.returns,
        ]:
            self.expression(part)
        self.nested(node)
        self.store(node.name)

    def class_body(self, node: ast.ClassDef) -> None:
        """A class body runs now, binding in its own namespace (or the module's, for names it
        declares global); a name it reads before binding it there comes from the module."""
        declared = self.scopes[node].declared_global
        outer, self.class_bound = self.class_bound, set()
        try:
            for statement in node.body:
                if isinstance(statement, ast.Global):
                    continue
                self.statement(statement)
            for name in declared & self.class_bound:
                self.bound.add(name)
                self.binds.add(name)
        finally:
            self.class_bound = outer
