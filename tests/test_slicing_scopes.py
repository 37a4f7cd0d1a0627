"""`slicing.facts` follows Python's scoping rules (issue item 2).

Random programs built from every binding form (plain, augmented, tuple/starred and nested
targets, walrus, for/with/except targets, comprehensions, global/nonlocal, del, class bodies,
decorators, default arguments, match captures, imports) are checked against the compiler's
own symbol table (`symtable`): which names the code reads from the module namespace, in any
scope, and which it binds there. The order-dependent part (a name bound before it is read is
not an input) is checked on hand-written cells, and on the gallery function that made
`%exp_export` refuse.
"""

from __future__ import annotations

import ast
import symtable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nbexp import slicing

NAMES = ["a", "b", "c", "r", "f"]
name = st.sampled_from(NAMES)


@st.composite
def expressions(draw: Any, depth: int = 2) -> str:
    """An expression that reads, and with walrus and comprehensions binds, names."""
    if depth <= 0:
        return draw(st.one_of(name, st.just("1")))
    inner = expressions(depth - 1)
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return draw(name)
    if kind == 1:
        return f"{draw(name)} + {draw(inner)}"
    if kind == 2:
        return f"({draw(name)} := {draw(inner)})"
    if kind == 3:
        target = draw(st.sampled_from(["i", "a", "(i, j)", "(a, *b)"]))
        return f"[{draw(inner)} for {target} in {draw(inner)} if {draw(inner)}]"
    if kind == 4:
        return f"{{{draw(name)}: {draw(inner)} for {draw(name)} in {draw(inner)}}}"
    if kind == 5:
        return f"(lambda {draw(name)}={draw(inner)}: {draw(inner)})"
    if kind == 6:
        return f"{draw(name)}({draw(inner)})"
    if kind == 7:
        return f"[{draw(inner)} for i in {draw(inner)} for j in {draw(inner)}]"
    return f"{draw(inner)}.attr[{draw(inner)}]"


def indent(block: str) -> str:
    return "\n".join("    " + line for line in block.split("\n"))


@st.composite
def blocks(draw: Any, depth: int = 2, in_function: bool = False) -> str:
    """A block of statements (the first may declare names global or nonlocal)."""
    count = draw(st.integers(1, 3))
    lines: list[str] = []
    if in_function and draw(st.booleans()):
        lines.append(f"{draw(st.sampled_from(['global', 'nonlocal']))} {draw(name)}")
    lines.extend(draw(statements(depth, in_function)) for _ in range(count))
    return "\n".join(lines)


@st.composite
def statements(draw: Any, depth: int = 2, in_function: bool = False) -> str:
    expression = expressions(1)
    simple = [
        lambda: f"{draw(name)} = {draw(expression)}",
        lambda: f"{draw(name)} += {draw(expression)}",
        lambda: f"{draw(name)}, *{draw(name)} = {draw(expression)}",
        lambda: f"({draw(name)}, ({draw(name)}, {draw(name)})) = {draw(expression)}",
        lambda: f"{draw(name)}.x = {draw(name)}[{draw(expression)}] = {draw(expression)}",
        lambda: f"{draw(name)}: int = {draw(expression)}",
        lambda: f"{draw(name)}: int",
        lambda: f"del {draw(name)}",
        lambda: f"print({draw(expression)})",
        lambda: f"import {draw(name)}",
        lambda: f"from m import {draw(name)} as {draw(name)}",
        lambda: f"from {draw(name)}.sub import x",
    ]
    if in_function:
        simple.append(lambda: f"return {draw(expression)}")
    if depth <= 0:
        return draw(st.sampled_from(simple))()
    block = blocks(depth - 1, in_function)
    function_block = blocks(depth - 1, True)
    compound = [
        lambda: f"for {draw(name)}, *{draw(name)} in {draw(expression)}:\n{indent(draw(block))}",
        lambda: f"with {draw(expression)} as ({draw(name)}, {draw(name)}):\n{indent(draw(block))}",
        lambda: (
            f"try:\n{indent(draw(block))}\nexcept {draw(name)} as {draw(name)}:\n"
            f"{indent(draw(block))}"
        ),
        lambda: f"if {draw(expression)}:\n{indent(draw(block))}\nelse:\n{indent(draw(block))}",
        lambda: (
            f"@{draw(name)}\ndef {draw(name)}({draw(name)}={draw(expression)}, "
            f"*{draw(name)}, k: {draw(name)} = {draw(expression)}) -> {draw(name)}:\n"
            f"{indent(draw(function_block))}"
        ),
        lambda: f"class {draw(name)}({draw(name)}):\n{indent(draw(block))}",
        lambda: (
            f"match {draw(expression)}:\n"
            f"    case [{draw(name)}, *{draw(name)}]:\n{indent(indent(draw(block)))}\n"
            f"    case {{'k': {draw(name)}, **{draw(name)}}}:\n{indent(indent(draw(block)))}\n"
            f"    case {draw(name)}.C(x={draw(name)}) as {draw(name)} if {draw(expression)}:\n"
            f"{indent(indent(draw(block)))}"
        ),
    ]
    return draw(st.sampled_from(simple + compound))()


def symtable_names(code: str) -> tuple[set[str], set[str]]:
    """(names read from the module namespace, names bound there) by the compiler's rules."""
    reads: set[str] = set()
    binds: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        module = table.get_type() == "module"
        for symbol in table.get_symbols():
            bound = symbol.is_assigned() or symbol.is_imported()
            if symbol.is_referenced() and (module or symbol.is_global()):
                reads.add(symbol.get_name())
            if bound and (module or symbol.is_declared_global()):
                binds.add(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(code, "<cell>", "exec"))
    return reads, binds


def class_locals_read(code: str) -> set[str]:
    """Names a class body both binds and reads: the symbol table calls them the class's own,
    but a read before the binding looks in the module (`class A: x = x`)."""
    found: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        if table.get_type() == "class":
            found.update(
                s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_local()
            )
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(code, "<cell>", "exec"))
    return found


def valid(code: str) -> bool:
    try:
        compile(code, "<cell>", "exec", dont_inherit=True)
    except SyntaxError as error:
        return "outside function" in str(error)  # `return` at module level: symtable is fine
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks(depth=3))
def test_module_names_agree_with_the_symbol_table(code: str) -> None:
    assume(valid(code))
    try:
        expected = symtable_names(code)
    except SyntaxError:
        assume(False)
    assert slicing.module_names(code) == expected, code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks(depth=3))
def test_facts_stay_within_the_symbol_table(code: str) -> None:
    """What a cell reads before binding is among the names it reads at all (the symbol table
    counts neither `del x` nor `x += 1` as a read, though both need x); what it may bind is
    what the symbol table says, less bare annotations and `del` (they bind nothing)."""
    assume(valid(code))
    try:
        reads, binds = symtable_names(code)
    except SyntaxError:
        assume(False)
    found = slicing.facts(code)
    assert found is not None
    deleted = {
        node.id
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Del)
    }
    augmented = {
        node.target.id
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
    }
    # and a class body reading its own name before binding it (`x = x`) reads the module's
    read = found.reads | found.deferred
    assert read <= reads | deleted | augmented | class_locals_read(code), code
    assert found.binds <= binds, code
    bare = {
        node.target.id
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert binds - found.binds <= deleted | bare, code
    assert found.kills <= found.binds


def reads(code: str) -> set[str]:
    found = slicing.facts(code)
    assert found is not None
    return set(found.reads | found.deferred) - slicing.BUILTIN_NAMES


def binds(code: str) -> set[str]:
    found = slicing.facts(code)
    assert found is not None
    return set(found.binds)


def test_the_gallery_benchmark_function_reads_nothing_from_the_kernel() -> None:
    assert reads("def g():\n    r = []\n    r += [1]\n    return r\n") == set()
    benchmark = (
        "def bench(sizes):\n"
        "    results = []\n"
        "    for n in sizes:\n"
        "        results += [(n, timeit(n))]\n"
        "    return results\n"
    )
    assert reads(benchmark) == {"timeit"}


@pytest.mark.parametrize(
    ("code", "expected_reads", "expected_binds"),
    [
        ("r += [1]", {"r"}, {"r"}),  # module level: augmented assignment reads the old value
        ("r = []\nr += [1]", set(), {"r"}),
        ("x = x + 1", {"x"}, {"x"}),
        ("a, (b, *c) = data", {"data"}, {"a", "b", "c"}),
        ("if (n := len(data)) > 2:\n    print(n)", {"data"}, {"n"}),
        ("total = [y := v for v in values]\nprint(y)", {"values"}, {"total", "y"}),
        ("squares = [v * v for v in range(3)]\nprint(v)", {"v"}, {"squares"}),
        ("for i in items:\n    last = i\nprint(i, last)", {"items"}, {"i", "last"}),
        ("with open(p) as f:\n    text = f.read()", {"p"}, {"f", "text"}),
        ("try:\n    import yaml\nexcept ImportError as e:\n    print(e)", set(), {"yaml", "e"}),
        ("def f():\n    global counter\n    counter += 1", set(), {"f", "counter"}),
        ("def f():\n    global g\n    return g", {"g"}, {"f"}),
        (
            "def outer():\n    n = 0\n    def inner():\n        nonlocal n\n        n += 1\n"
            "    return inner",
            set(),
            {"outer"},
        ),
        ("del model", {"model"}, set()),
        ("class A:\n    size = size\n    def m(self):\n        return size", {"size"}, {"A"}),
        ("class A:\n    size = 1\n    twice = size * 2", set(), {"A"}),
        ("class A:\n    k = 1\n    def m(self):\n        return k", {"k"}, {"A"}),
        ("class A:\n    k = 1\n    ks = [k for _ in range(2)]", {"k"}, {"A"}),
        (
            "@register(name)\ndef f(x=default, *, y: Kind = other):\n    return x",
            {"register", "name", "default", "Kind", "other"},
            {"f"},
        ),
        ("f = lambda x, y=base: x + y + offset", {"base", "offset"}, {"f"}),
        (
            "match point:\n    case Point(x=0, y=yy) as p:\n        print(yy)\n"
            "    case [first, *others]:\n        pass\n    case {'k': v, **more}:\n        pass",
            {"point", "Point"},
            {"yy", "p", "first", "others", "v", "more"},
        ),
        ("import os.path as osp, numpy.linalg\nfrom x import y as z", set(), {"osp", "numpy", "z"}),
    ],
)
def test_binding_forms(code: str, expected_reads: set[str], expected_binds: set[str]) -> None:
    assert reads(code) == expected_reads
    assert binds(code) == expected_binds


def test_a_function_reads_its_globals_when_called_not_when_defined() -> None:
    """Defaults and decorators run at the definition; the body's globals at each call, so
    any cell before the call may bind them (`deferred`)."""
    found = slicing.facts("@wraps(f)\ndef g(x=np.pi):\n    return h(x) + k\nk = 1\n")
    assert found is not None
    assert set(found.reads) - slicing.BUILTIN_NAMES == {"wraps", "f", "np"}
    assert found.deferred == {"h"}  # k is bound by the cell itself
    cells = [
        slicing.facts("def t(v):\n    return np.sum(v)\n"),
        slicing.facts("import numpy as np"),
    ]
    kept = slicing.slice_history(cells, {"t"})
    assert kept.kept == [0, 1] and not kept.unresolved


def test_a_local_augmented_assignment_does_not_pull_in_an_earlier_cell() -> None:
    cells = [
        slicing.facts("results = ['stale']"),
        slicing.facts("def bench():\n    results = []\n    results += [1]\n    return results"),
    ]
    body = slicing.facts("score = len(bench())")
    assert body is not None
    found = slicing.slice_history(cells, body.reads)
    assert found.kept == [1] and not found.unresolved


def test_postponed_annotations_read_nothing() -> None:
    """Under `from __future__ import annotations` (in the cell, or in an earlier cell:
    IPython keeps it) a signature's and a variable's annotations are never evaluated."""
    code = "def f(x: Model = default) -> Result:\n    y: Local = 1\n    return x\nz: Alias = 2\n"
    eager = slicing.facts(code)
    lazy = slicing.facts(code, lazy_annotations=True)
    own = slicing.facts("from __future__ import annotations\n" + code)
    assert eager is not None and lazy is not None and own is not None
    assert {"Model", "Result", "Alias", "default"} <= eager.reads
    assert lazy.reads == own.reads == {"default"}  # a default value is still evaluated
    assert lazy.binds == {"f", "z"}
