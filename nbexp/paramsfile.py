"""Params files (`params.yaml|yml|json|toml`, `--params-file`): which keys the body reads.

Found by parsing, as the body's own params are: an expression that loads a params file (a call
naming it, `yaml.safe_load(open("params.yaml"))`), a dict in the namespace equal to one (or to a
part of one, loaded in an earlier cell), names bound to those, and the subscript chains on them
with constant keys (`cfg["train"]["max_depth"]`, `.get("seed")`). A chain ending on a value is
one param, named by its dotted key path (`train.max_depth`); a chain used whole (`**cfg["train"]`)
reads every key under it. Names the body binds from a chain are not metrics.

`-p train.max_depth=6` rewrites the body's chains that read that key, as `-p` rewrites a literal:
the chain itself becomes `6`, a chain above it `{**chain, "max_depth": 6}`. The file is untouched.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .analysis import nodes, parse
from .errors import NbexpError

DEFAULT_NAMES = ("params.yaml", "params.yml", "params.json", "params.toml")


class ParamsFileError(NbexpError):
    """A params file that cannot be read, or a `-p` key it does not hold."""


_cache: dict[str, tuple[tuple[int, int], Any]] = {}


def load(path: str) -> dict[str, Any]:
    """A params file's content (cached by mtime and size); one-line error when it is unusable."""
    try:
        stat = os.stat(path)
    except OSError as error:
        raise ParamsFileError(f"params file {path}: {error.strerror or error}") from error
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        content = cached[1]
    else:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            if path.endswith(".json"):
                content = json.loads(raw)
            elif path.endswith(".toml"):
                import tomllib  # type: ignore[import-not-found,unused-ignore]

                content = tomllib.loads(raw.decode("utf-8"))
            else:
                import yaml

                content = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except ImportError as error:
            content = ParamsFileError(f"params file {path}: {error} (Python 3.11+ reads TOML)")
        except Exception as error:  # YAML, JSON and TOML each have their own errors
            first = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            content = ParamsFileError(f"params file {path} does not parse: {first}")
        _cache[path] = (key, content)
    if isinstance(content, ParamsFileError):
        raise content
    if not isinstance(content, dict):
        raise ParamsFileError(f"params file {path} holds no mapping of keys to values")
    return content


def leaves(data: Any, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every value under `data` by its dotted key path."""
    if isinstance(data, dict) and data:
        found: dict[str, Any] = {}
        for key, value in data.items():
            found.update(leaves(value, (*prefix, str(key))))
        return found
    return {".".join(prefix): data} if prefix else {}


def _at(data: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


@dataclass
class _Site:
    """A chain expression in the body that reads a params file's key path (or a part of it)."""

    file: int
    path: tuple[str, ...]
    span: tuple[int, int, int, int]


@dataclass
class Use:
    """What the body reads from params files."""

    files: list[tuple[str, dict[str, Any]]]  # (path as shown, content)
    reads: dict[str, Any] = field(default_factory=dict)  # dotted key → value
    read_from: dict[str, str] = field(default_factory=dict)  # dotted key → file as shown
    derived: dict[str, str] = field(default_factory=dict)  # name the body binds → dotted key
    sites: list[_Site] = field(default_factory=list)

    def keys_by_file(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for key, shown in self.read_from.items():
            grouped.setdefault(shown, []).append(key)
        return grouped


def _string_constants(every_node: Iterable[ast.AST]) -> list[str]:
    return [
        node.value
        for node in every_node
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 400
    ]


def candidates(
    tree: ast.AST, cwd: str, explicit: list[str], every_node: Iterable[ast.AST] | None = None
) -> list[str]:
    """The params files in play: `--params-file` ones, params files the body names, then the
    default names in the working directory."""
    found: list[str] = []
    for path in explicit:
        if not os.path.isfile(path):
            raise ParamsFileError(f"--params-file {path}: no such file")
        found.append(os.path.abspath(path))
    for text in _string_constants(ast.walk(tree) if every_node is None else every_node):
        if os.path.basename(text) in DEFAULT_NAMES:
            path = os.path.join(cwd, text)
            if os.path.isfile(path):
                found.append(os.path.abspath(path))
    for name in DEFAULT_NAMES:
        path = os.path.join(cwd, name)
        if os.path.isfile(path):
            found.append(path)
    return list(dict.fromkeys(found))


def _span(node: ast.expr) -> tuple[int, int, int, int]:
    return (
        node.lineno,
        node.col_offset,
        node.end_lineno or node.lineno,
        node.end_col_offset or 0,
    )


class _Analysis:
    def __init__(self, files: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.files = files  # (absolute path, shown, content)
        self.roots: dict[str, tuple[int, tuple[str, ...]]] = {}

    def _names_file(self, node: ast.AST) -> int | None:
        """The params file a load expression reads: its name as a call's argument, through
        calls and attributes only (`yaml.safe_load(open("params.yaml"))`,
        `json.loads(Path("params.json").read_text())`), not through subscripts."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for index, (path, shown, _) in enumerate(self.files):
                if node.value in (path, shown) or os.path.abspath(node.value) == path:
                    return index
            return None
        if isinstance(node, ast.Attribute):
            return self._names_file(node.value)
        if isinstance(node, ast.Call):
            parts = [node.func, *node.args, *(k.value for k in node.keywords)]
            for part in parts:
                found = self._names_file(part)
                if found is not None:
                    return found
        return None

    def resolve(self, node: ast.AST) -> tuple[int, tuple[str, ...]] | None:
        """(file, key path) when `node` evaluates to a part of a params file."""
        found: tuple[int, tuple[str, ...]] | None = None
        if isinstance(node, ast.Name):
            found = self.roots.get(node.id)
        elif isinstance(node, ast.Subscript):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, (str, int)):
                base = self.resolve(node.value)
                if base is not None:
                    found = (base[0], (*base[1], str(key.value)))
        elif isinstance(node, ast.Call):
            function = node.func
            if (
                isinstance(function, ast.Attribute)
                and function.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                base = self.resolve(function.value)
                if base is not None:
                    found = (base[0], (*base[1], node.args[0].value))
            else:
                index = self._names_file(node)
                if index is not None:
                    found = (index, ())
        if found is not None and not _at(self.files[found[0]][2], found[1])[0]:
            return None
        return found


def analyze(
    source: str,
    cwd: str,
    explicit: list[str],
    namespace: dict[str, Any],
    free: set[str],
) -> Use | None:
    """What the body reads from params files; None when no params file is in play."""
    try:
        tree = parse(source)
    except SyntaxError:
        return None
    paths = candidates(tree, cwd, explicit, nodes(source))
    if not paths:
        return None
    files: list[tuple[str, str, dict[str, Any]]] = []
    for path in paths:
        shown = os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else path
        try:
            files.append((path, shown, load(path)))
        except ParamsFileError:
            if path in [os.path.abspath(p) for p in explicit]:
                raise
            continue  # a default-named file that does not parse: the body will say so
    if not files:
        return None
    state = _Analysis(files)
    for name in free:  # a dict loaded in an earlier cell
        value = namespace.get(name)
        if isinstance(value, dict) and value:
            match = _find_subtree(files, value)
            if match is not None:
                state.roots[name] = match
    aliases: set[int] = set()
    for _ in range(3):  # bindings of bindings, in any order
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                found = state.resolve(node.value)
                if found is not None and isinstance(_at(files[found[0]][2], found[1])[1], dict):
                    state.roots[node.targets[0].id] = found
                    aliases.add(id(node.value))
    use = Use(files=[(shown, content) for _, shown, content in files])
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and state.resolve(node) is not None:
            # the file's name inside a load call (`open("params.yaml")`) is not a read itself
            inner.update(id(child) for child in ast.walk(node) if child is not node)
        if isinstance(node, ast.Subscript):
            inner.add(id(node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get":
                inner.add(id(node.func.value))
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            inner.add(id(node))
    targets: dict[int, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and isinstance(getattr(node, "targets", [getattr(node, "target", None)])[0], ast.Name)
            and node.value is not None
        ):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                targets[id(node.value)] = target.id
    for node in ast.walk(tree):
        if id(node) in inner or id(node) in aliases or not isinstance(node, ast.expr):
            continue
        found = state.resolve(node)
        if found is None:
            continue
        index, key_path = found
        shown, content = use.files[index]
        value = _at(content, key_path)[1]
        use.sites.append(_Site(index, key_path, _span(node)))
        for key, leaf in leaves(value, key_path).items():
            if key not in use.reads:
                use.reads[key] = leaf
                use.read_from[key] = shown
        if not isinstance(value, dict) and id(node) in targets:
            use.derived[targets[id(node)]] = ".".join(key_path)
    return use


def _find_subtree(
    files: list[tuple[str, str, dict[str, Any]]], value: dict[str, Any]
) -> tuple[int, tuple[str, ...]] | None:
    for index, (_, _, content) in enumerate(files):
        pending: list[tuple[tuple[str, ...], Any]] = [((), content)]
        while pending:
            path, part = pending.pop()
            if part == value:
                return index, path
            if isinstance(part, dict):
                pending.extend(((*path, str(k)), v) for k, v in part.items())
    return None


def route(
    use: Use | None, overrides: dict[str, str], values: dict[str, Any], body_params: set[str]
) -> dict[str, tuple[str, Any]]:
    """The `-p` keys that name params-file keys (dotted, a key the body reads, or a name the
    body binds from one), as dotted key → (literal, value); ParamsFileError for a dotted key no
    params file holds or the body does not read."""
    routed: dict[str, tuple[str, Any]] = {}
    for key, literal in overrides.items():
        if key in body_params:
            continue
        dotted = key
        if use is not None and key in use.derived:
            dotted = use.derived[key]
        elif use is None or key not in use.reads:
            if "." not in key:
                continue  # an ordinary name: -p injects it, as always
            if use is None:
                raise ParamsFileError(
                    f"-p {key}: no params file ({', '.join(DEFAULT_NAMES)} here, or "
                    "--params-file PATH) is read by the body, so nothing holds the key"
                )
        if use is not None and dotted not in use.reads:
            holders = [
                shown for shown, content in use.files if _at(content, tuple(dotted.split(".")))[0]
            ]
            if not holders:
                names = ", ".join(shown for shown, _ in use.files)
                some = ", ".join(sorted(leaves(use.files[0][1]))[:8])
                raise ParamsFileError(f"-p {key}: {names} has no key {dotted} (it has {some})")
            raise ParamsFileError(
                f"-p {key}: the body does not read {dotted} from {holders[0]}, so the run "
                f"would not use {literal}; read it (e.g. cfg[...]) or drop -p {key}"
            )
        routed[dotted] = (literal, values[key])
    return routed


def _replacement(text: str, tree: dict[str, Any]) -> str:
    """`text` (a chain's code) with the overrides in `tree` merged in."""
    if "\0literal" in tree:
        return str(tree["\0literal"])
    items = ", ".join(
        f"{key!r}: {_replacement(f'({text})[{key!r}]', sub)}" for key, sub in tree.items()
    )
    return f"{{**{text}, {items}}}"


def apply(source: str, use: Use, routed: dict[str, tuple[str, Any]]) -> str:
    """Rewrite the chains that read overridden keys; the file stays as it is."""
    lines = source.splitlines(keepends=True)
    edits: list[tuple[tuple[int, int, int, int], str]] = []
    for site in use.sites:
        tree: dict[str, Any] = {}
        for dotted, (literal, value) in routed.items():
            key = tuple(dotted.split("."))
            if key[: len(site.path)] == site.path:
                node = tree
                for part in key[len(site.path) :]:
                    node = node.setdefault(part, {})
                node["\0literal"] = literal
            elif site.path[: len(key)] == key:
                ok, inner = _at(value, site.path[len(key) :])
                if ok:
                    tree["\0literal"] = repr(inner)
        if tree:
            first, last = site.span[0], site.span[2]
            text = "".join(lines[first - 1 : last])
            start = len(lines[first - 1].encode()[: site.span[1]].decode(errors="ignore"))
            end_line = lines[last - 1].encode()[: site.span[3]].decode(errors="ignore")
            offset = sum(len(line) for line in lines[first - 1 : last - 1])
            code = text[start : offset + len(end_line)]
            edits.append((site.span, _replacement(code, tree)))
    kept: list[tuple[tuple[int, int, int, int], str]] = []
    for span, text in sorted(edits):  # a chain inside another rewritten one is left alone
        if kept and (span[0], span[1]) < (kept[-1][0][2], kept[-1][0][3]):
            continue
        kept.append((span, text))
    for (first, start, last, end), text in reversed(kept):
        head = lines[first - 1].encode()[:start].decode(errors="ignore")
        tail = lines[last - 1].encode()[end:].decode(errors="ignore")
        lines[first - 1 : last] = [head + text + tail]
    return "".join(lines)
