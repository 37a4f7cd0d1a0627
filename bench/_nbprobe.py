"""Probes that bench/notebooks.py runs inside the measured kernels.

Imported by harness cells (run with `store_history=False` and binding no name, so nbexp
neither records them in the history nor stores them as variables). Kept free of nbexp and
jupyter imports: only what the kernel already has.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers as numbers_module
import re
import socket
import sys
import types
from collections import abc
from typing import Any

MARK = "@@nbprobe "
NETWORK_MARK = "nbexp-bench: network disabled"
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
_FILE = re.compile(r'file "[^"]*", line \d+')
_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_MAX_DEPTH = 6
_MAX_ITEMS = 20_000
_REACH_DEPTH = 4
_REACH_NODES = 5_000


def _local(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) and address else address
    return isinstance(host, str) and (
        host in ("localhost", "::1", "") or host.startswith("127.") or host.startswith("/")
    )


def guard_network() -> None:
    """Fail fast and recognisably on any non-loopback connection or DNS lookup.

    The machine has no general internet; without the guard an item that downloads data
    hangs on timeouts or fails with an error that looks like the notebook's own.
    """
    if getattr(socket, "_nbprobe_guarded", False):
        return
    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex
    getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
            raise OSError(f"{NETWORK_MARK}: connect {address!r}")
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
            raise OSError(f"{NETWORK_MARK}: connect {address!r}")
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _local((host,)) and host is not None:
            raise OSError(f"{NETWORK_MARK}: resolve {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo
    socket._nbprobe_guarded = True  # type: ignore[attr-defined]


def _user_ns() -> dict[str, Any]:
    shell = sys.modules["IPython"].get_ipython()
    return shell.user_ns if shell is not None else sys.modules["__main__"].__dict__


def _emit(payload: Any) -> None:
    print(MARK + json.dumps(payload, default=str))


def numbers() -> None:
    """Print the namespace's numeric scalars (nbexp's metric candidates) and every variable's
    digest: two plain runs that differ there are a notebook that is not deterministic."""
    out: dict[str, Any] = {}
    digests: dict[str, str] = {}
    for name, value in list(_user_ns().items()):
        if name.startswith("_") or isinstance(value, bool):
            continue
        with contextlib.suppress(Exception):
            if isinstance(value, numbers_module.Real):
                number = float(value)
                out[name] = "nan" if math.isnan(number) else number
        if not isinstance(value, types.ModuleType) and name not in ("In", "Out"):
            with contextlib.suppress(Exception):
                digests[name] = digest(value)
    _emit({"numbers": out, "digests": digests})


def time_phases() -> None:
    """Time each phase of the records made from now on (`_phases`; harness cell)."""
    import _phases

    _phases.install()


def last_experiment() -> None:
    """Print the id of the newest experiment in the store (nbexp is loaded in this kernel),
    and the seconds per phase of the records since the last call, if they are timed."""
    phases = sys.modules["_phases"].take() if "_phases" in sys.modules else {}
    try:
        import nbexp

        _emit({"last": nbexp.get("last").id, "phases": phases})
    except Exception as error:  # an empty store
        _emit({"last": None, "error": repr(error), "phases": phases})


# ---- equality-friendly digests -------------------------------------------------------------


def _h(*parts: Any) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode("utf-8", "replace"))
        digest.update(b"\x00")
    return digest.hexdigest()


def _qual(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _module_of(value: Any) -> str:
    return type(value).__module__ or ""


def digest(value: Any, depth: int = 0, stack: set[int] | None = None) -> str:
    """A digest equal for values a tolerant comparison calls equal, across processes."""
    stack = set() if stack is None else stack
    if value is None or isinstance(value, (bool, int, str, bytes, complex)):
        return _h(type(value).__name__, repr(value))
    if isinstance(value, float):
        return _h("float", "nan" if math.isnan(value) else repr(value))
    if depth > _MAX_DEPTH:
        return _h("deep", _qual(value))
    if id(value) in stack:
        return _h("cycle", _qual(value))
    module = _module_of(value)
    if module.startswith(("matplotlib", "mpl_toolkits", "seaborn")):
        return _h("mpl", _qual(value))  # compared by type only
    if isinstance(value, types.ModuleType):
        return _h("module", value.__name__)
    if isinstance(value, type):
        return _h("class", value.__module__, value.__qualname__)
    if isinstance(value, (types.FunctionType, types.MethodType)):
        function = getattr(value, "__func__", value)
        code = function.__code__
        # nested code objects show their file: nbexp restores functions from "<dynamic-code>"
        consts = _FILE.sub("", _ADDRESS.sub("", repr(code.co_consts)))[:2000]
        return _h("function", function.__qualname__, code.co_code, consts)
    if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return _h("builtin", getattr(value, "__qualname__", repr(value)))
    stack.add(id(value))
    try:
        return _digest_container(value, depth, stack, module)
    finally:
        stack.discard(id(value))


def _unordered_edges(value: Any) -> bool:
    """An edge view of an undirected networkx graph (whose edges compare either way round)."""
    if not _module_of(value).startswith("networkx.classes.reportviews"):
        return False
    graph = getattr(value, "_graph", None)
    return type(value).__name__ in ("EdgeView", "MultiEdgeView") and not graph.is_directed()


def _digest_container(value: Any, depth: int, stack: set[int], module: str) -> str:
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    if np is not None and isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            flat = value.ravel()
            if flat.size > _MAX_ITEMS:
                return _h("objarray", value.shape)
            return _h("objarray", value.shape, *(digest(x, depth + 1, stack) for x in flat))
        return _h("ndarray", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if np is not None and isinstance(value, np.generic):
        return _h("npscalar", value.dtype.str, "nan" if value != value else repr(value.item()))
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series, pd.Index)):
        shape = value.shape
        dtypes = str(value.dtypes) if hasattr(value, "dtypes") else str(value.dtype)
        try:
            content = pd.util.hash_pandas_object(value, index=not isinstance(value, pd.Index))
            body: Any = content.to_numpy().tobytes()
        except Exception:
            body = repr(value.to_dict() if hasattr(value, "to_dict") else list(value))
        names = repr(list(value.columns)) if isinstance(value, pd.DataFrame) else ""
        return _h("pandas", type(value).__name__, shape, dtypes, names, body)
    if isinstance(value, _VIEWS):
        return _h(type(value).__name__, digest(list(value), depth + 1, stack))
    if isinstance(value, (list, tuple)):
        items = value[:_MAX_ITEMS]
        return _h(type(value).__name__, len(value), *(digest(x, depth + 1, stack) for x in items))
    if isinstance(value, dict):
        pairs = sorted(
            (digest(k, depth + 1, stack), digest(v, depth + 1, stack))
            for k, v in list(value.items())[:_MAX_ITEMS]
        )
        return _h("dict", _qual(value), len(value), *(a + b for a, b in pairs))
    if isinstance(value, (set, frozenset)):
        return _h(
            "set",
            type(value).__name__,
            *sorted(digest(x, depth + 1, stack) for x in list(value)[:_MAX_ITEMS]),
        )
    if hasattr(value, "get_params") and hasattr(value, "fit"):  # a scikit-learn estimator
        try:
            params = value.get_params(deep=False)
        except Exception:
            params = {}
        fitted = {
            k: v for k, v in vars(value).items() if k.endswith("_") and not k.startswith("__")
        }
        return _h(
            "estimator",
            _qual(value),
            digest(params, depth + 1, stack),
            digest(fitted, depth + 1, stack),
        )
    if module == "random" and hasattr(value, "getstate"):
        return _h("random", repr(value.getstate()))
    if np is not None and isinstance(value, np.random.Generator):
        return _h("generator", repr(value.bit_generator.state))
    if np is not None and isinstance(value, np.random.RandomState):
        state = value.get_state()
        return _h("randomstate", state[0], state[1].tobytes(), state[2:])
    if _unordered_edges(value):
        # an undirected graph's edges are unordered pairs: `(u, v)` or `(v, u)` is whichever
        # end a set of nodes yields first, and set order changes with the process's hash seed
        pairs = sorted(
            "".join(sorted(digest(end, depth + 1, stack) for end in edge[:2]))
            + digest(tuple(edge[2:]), depth + 1, stack)  # a multigraph's key
            + digest(value[edge], depth + 1, stack)
            for edge in list(value)[:_MAX_ITEMS]
        )
        return _h("edges", _qual(value), len(value), *pairs)
    if isinstance(value, abc.Mapping):  # e.g. networkx's views: compared by content
        return _h("mapping", _qual(value), digest(dict(value.items()), depth + 1, stack))
    if isinstance(value, abc.Set):
        return _h("set", _qual(value), digest(set(value), depth + 1, stack))
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return _h("object", _qual(value), digest(attributes, depth + 1, stack))
    text = repr(value)
    if " at 0x" in text:
        return _h("opaque", _qual(value))
    return _h("repr", _qual(value), text)


# ---- sharing between variables --------------------------------------------------------------

_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range)


def _library_ids() -> set[int]:
    """Ids of objects bound at module level in imported modules: library objects, not the user's."""
    ids: set[int] = set()
    user = _user_ns()
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and namespace is not user:
            for value in list(namespace.values()):
                ids.add(id(value))
                if type(value) is not dict and isinstance(value, dict) and len(value) < 10_000:
                    # a settings mapping such as matplotlib's rcParams: its entries (e.g. the
                    # default `path.effects` list every artist holds) are library objects too
                    ids.update(id(entry) for entry in value.values())
    return ids


def _reach(value: Any, library: set[int]) -> set[int]:
    """Ids of the user-level mutable objects a variable reaches (bounded walk)."""
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    found: set[int] = set()
    frontier: list[tuple[Any, int]] = [(value, 0)]
    visited: set[int] = set()
    while frontier and len(visited) < _REACH_NODES:
        obj, depth = frontier.pop()
        if id(obj) in visited or isinstance(obj, _IMMUTABLE) or id(obj) in library:
            continue
        if isinstance(
            obj,
            (
                types.ModuleType,
                type,
                types.FunctionType,
                types.BuiltinFunctionType,
                types.MethodType,
            ),
        ):
            continue
        visited.add(id(obj))
        if not isinstance(obj, (tuple, frozenset)):
            found.add(id(obj))
        if depth >= _REACH_DEPTH:
            continue
        children: list[Any] = []
        if np is not None and isinstance(obj, np.ndarray):
            if isinstance(obj.base, np.ndarray):
                children.append(obj.base)
            elif obj.dtype.hasobject and obj.size <= 1000:
                children.extend(obj.ravel().tolist())
        elif pd is not None and isinstance(obj, (pd.DataFrame, pd.Series, pd.Index)):
            pass  # a leaf: its blocks are pandas internals
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children.extend(list(obj)[:1000])
        elif isinstance(obj, dict):
            items = list(obj.items())[:1000]
            children.extend(k for k, _ in items)
            children.extend(v for _, v in items)
        else:
            attributes = getattr(obj, "__dict__", None)
            if isinstance(attributes, dict):
                children.extend(list(attributes.values())[:1000])
        frontier.extend((child, depth + 1) for child in children)
    return found


def fingerprint(names: list[str]) -> None:
    """Print each variable's digest and which pairs of variables share a mutable object."""
    namespace = _user_ns()
    digests: dict[str, str] = {}
    errors: dict[str, str] = {}
    present = [name for name in names if name in namespace]
    for name in present:
        try:
            digests[name] = digest(namespace[name])
        except Exception as error:
            errors[name] = repr(error)[:200]
    library = _library_ids()
    reached = {name: _reach(namespace[name], library) for name in present}
    pairs = []
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            if reached[a] & reached[b]:
                pairs.append(f"{a}|{b}")
    _emit(
        {
            "digests": digests,
            "pairs": pairs,
            "missing": sorted(set(names) - set(present)),
            "errors": errors,
        }
    )


def profiled_experiment(name: str, body: str) -> None:
    """Run `%%experiment name` on body under cProfile; print cumulative time by function."""
    import cProfile
    import pstats

    shell = sys.modules["IPython"].get_ipython()
    profile = cProfile.Profile()
    with contextlib.suppress(Exception):  # the body's own error: still profiled
        profile.runcall(shell.run_cell_magic, "experiment", name, body)
    stats = pstats.Stats(profile)
    rows: dict[str, float] = {}
    for (filename, _line, function), entry in stats.stats.items():  # type: ignore[attr-defined]
        cumulative = entry[3]
        where = filename.replace("\\", "/")
        if "/nbexp/" in where:
            key = "nbexp." + where.rsplit("/nbexp/", 1)[1].removesuffix(".py").replace("/", ".")
        elif "cloudpickle" in where:
            key = "cloudpickle"
        elif "/git/" in where:
            key = "GitPython"
        elif where == "~" and ("pickle" in function.lower() or "fsync" in function):
            key = "builtin"
        else:
            continue
        label = f"{key}:{function}"
        rows[label] = max(rows.get(label, 0.0), cumulative)
    _emit({"profile": rows})
