"""Snapshotting the kernel's variables into objects, and loading them back.

Each variable is pickled (cloudpickle, protocol 5). Large buffers — numpy arrays, pandas
blocks, Arrow buffers — leave the pickle out-of-band, zero-copy, and are stored in 1 MiB
content-addressed chunks: an unchanged array costs a hash and no new bytes, a one-column add
stores about one column, `df2 = df.copy()` stores nothing new.

Sharing between variables is kept by storing together what belongs together: pickling each
variable once also tells which user-level mutable objects it reaches (the pickler's memo);
variables that reach a common one — `fig` and `axes`, two pipelines on one scaler, variables
referring to each other — form a group, stored as one pickle of a tuple, so pickle's memo
restores the sharing and the cycles. Nothing is pickled twice when it can be helped: a variable
an earlier pickle already holds is not pickled alone, and a group's pickle is its largest
member's own, continued by the members it lacks and closed by fetching every member from the
memo (`_group_in_segments`). Chunks stay content-addressed, so a grouped array still costs
nothing when unchanged. Library objects never glue variables together: modules, classes, functions,
dtypes and atoms are not counted, and module-level objects of installed libraries
(`scipy.stats.loguniform`) are pickled as a reference (`module.attr`), resolved by import on
load, as modules are.

Records of state format 1 (one pickle per variable, identity only between variables' values
through persistent references) still load.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import decimal
import enum
import fractions
import functools
import gc
import importlib
import io
import itertools
import linecache
import os
import pickle
import site
import struct
import sys
import sysconfig
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from .errors import StoreError
from .hashing import CHUNK
from .secrets import encoded_secrets, looks_like_secret
from .store import Store

STATE_FORMAT = 2
INLINE_LIMIT = 512  # pickles this small live in the record: no object file, no fsync
# Buffers this small stay inside their pickle: a figure or a forest holds hundreds of tiny
# arrays, and hashing, looking up and listing each as its own chunk cost more than the bytes.
IN_BAND_LIMIT = 4096
_ATOMS = (int, float, complex, str, bytes, bool, type(None), range, slice)
# Values whose identity nobody can observe through a mutation: sharing them is not sharing.
_IMMUTABLE = (
    *_ATOMS,
    tuple,
    frozenset,
    type(Ellipsis),
    type(NotImplemented),
    types.CodeType,
    decimal.Decimal,
    fractions.Fraction,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.tzinfo,
    enum.Enum,
)
# Code and names: pickled by reference or rebuilt from their definition, never user data.
_CODE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    property,
    staticmethod,
    classmethod,
)


class UnstorableError(Exception):
    """A value that cannot be stored faithfully (raised while pickling it)."""


def _refuse(reason: str) -> Any:
    raise UnstorableError(reason)


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return (
        kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
    )


def _is_by_reference(value: Any) -> bool:
    """Importable classes and functions pickle as a name, so they need no identity tracking."""
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return getattr(value, "__module__", "__main__") != "__main__"
    return False


# -- module-level objects of installed libraries ---------------------------------------------

# A library object's place: (module, attribute), or one step further into a module-level
# class, (module, class, "attr", name), into a module-level dict, (module, dict, "item", key),
# or into a module-level list or tuple, (module, sequence, "index", position) — e.g. the rows
# of matplotlib's colormap tables, which every colormap copy holds.
LibraryPath = tuple[str, ...]
_NOT_LIBRARY_OBJECT = (*_IMMUTABLE, *_CODE)
_MISSING = object()
_library: dict[int, LibraryPath] = {}
_scanned: dict[str, int] = {}  # module name -> id of the module object scanned
_scanned_count = -1


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """Folders installed code lives in (stdlib, site-packages), as given and resolved."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    with contextlib.suppress(AttributeError):  # some embedded interpreters lack it
        roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    every = {os.path.join(root, "") for root in roots if root}
    every.update(os.path.join(os.path.realpath(root), "") for root in roots if root)
    return tuple(sorted(every))


def _is_library_module(name: str, module: Any, roots: tuple[str, ...]) -> bool:
    if name.startswith("__") or not isinstance(module, types.ModuleType):
        return False
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):
        return name in sys.builtin_module_names
    return path.startswith(roots)


_module_ranks: dict[str, tuple[bool, int]] = {}  # module name -> (private, dots)


def _module_rank(module: str) -> tuple[bool, int]:
    """Whether a module's dotted name has a private part, and how deep it is (per name once:
    a scan ranks thousands of places, most in a few modules)."""
    known = _module_ranks.get(module)
    if known is None:
        known = _module_ranks[module] = (
            any(part.startswith("_") for part in module.split(".")),
            module.count("."),
        )
    return known


def _rank(path: LibraryPath) -> tuple[bool, bool, int, int, str]:
    """Prefer a short public path (`scipy.stats.loguniform`) over where it was defined."""
    private, dots = _module_rank(path[0])
    return (private, path[1].startswith("_"), len(path), dots, path[0])


def _collide(key: int, known: LibraryPath, path: LibraryPath) -> None:
    """A value met at a second place: keep the better-ranked one."""
    rank, known_rank = _rank(path), _ranks.get(key)
    if known_rank is None:
        known_rank = _ranks[key] = _rank(known)
    if rank < known_rank:
        _library[key] = path
        _ranks[key] = rank


_ranks: dict[int, tuple[bool, bool, int, int, str]] = {}  # of the places that met another
# type -> whether its instances are never library objects / are descriptors. A scan looks at
# some 100,000 values, mostly of a few types, and `isinstance` against `_NOT_LIBRARY_OBJECT`
# (an ABC among them) costs more than a dict lookup.
_excluded_types: dict[type, bool] = {}
_descriptor_types: dict[type, bool] = {}


def _never_library(value: Any) -> bool:
    kind = type(value)
    verdict = _excluded_types.get(kind)
    if verdict is None:
        verdict = isinstance(value, _NOT_LIBRARY_OBJECT)
        if value.__class__ is not kind:  # an object lying about its class: no caching
            return verdict
        _excluded_types[kind] = verdict
    return verdict


def _is_descriptor(value: Any) -> bool:
    kind = type(value)
    verdict = _descriptor_types.get(kind)
    if verdict is None:
        verdict = _descriptor_types[kind] = hasattr(kind, "__get__")
    return verdict


def _scan_class(name: str, attribute: str, cls: type) -> None:
    """Note the instances a library class defined in module `name` holds as attributes."""
    excluded = _excluded_types
    library = _library
    for inner, member in list(vars(cls).items()):
        if excluded.get(type(member)) or inner[:2] == "__":
            continue
        if _never_library(member):
            continue
        if _is_descriptor(member):  # a descriptor (six's lazy imports...)
            continue
        path: LibraryPath = (name, attribute, "attr", inner)
        known = library.get(id(member))
        if known is None:
            library[id(member)] = path
        else:
            _collide(id(member), known, path)


def _scan_module(name: str, module: types.ModuleType) -> None:
    """Note a library module's instances, those of its classes and of its dicts (rcParams).

    The hot loop of a first record (a package's hundreds of modules, some 60,000 values):
    each value's type verdict is looked up once, inline (a class is always one of the excluded
    values, so only those are asked whether they are classes), and a place is written straight
    into the map unless its value was met before (`_collide` ranks the two places)."""
    try:
        items = list(vars(module).items())
    except TypeError:
        return
    excluded = _excluded_types
    library = _library
    never = _never_library
    for attribute, value in items:
        if attribute[:2] == "__":
            continue
        kind = type(value)
        verdict = excluded.get(kind)
        if verdict is None:
            verdict = never(value)
        if verdict:  # never a library object itself; a class's members may be
            if (kind is type or isinstance(value, type)) and getattr(
                value, "__module__", None
            ) == name:
                _scan_class(name, attribute, value)
            continue
        known = library.get(id(value))
        if known is None:
            library[id(value)] = (name, attribute)
        else:
            _collide(id(value), known, (name, attribute))
        if isinstance(value, dict) and len(value) <= 10_000:
            for key, member in list(dict.items(value)):
                if not isinstance(key, str):
                    continue
                verdict = excluded.get(type(member))
                if verdict if verdict is not None else never(member):
                    continue
                path = (name, attribute, "item", key)
                known = library.get(id(member))
                if known is None:
                    library[id(member)] = path
                else:
                    _collide(id(member), known, path)
        elif isinstance(value, (list, tuple)) and len(value) <= 10_000:
            for position, member in enumerate(value):
                verdict = excluded.get(type(member))
                if verdict if verdict is not None else never(member):
                    continue
                path = (name, attribute, "index", str(position))
                known = library.get(id(member))
                if known is None:
                    library[id(member)] = path
                else:
                    _collide(id(member), known, path)


def _library_objects() -> dict[int, LibraryPath]:
    """id -> place of the instances installed libraries keep at module level.

    Scans only modules imported since the last call. An id is always checked against its
    place (`_library_reference`) before use, so a stale one can never misname a value.
    """
    global _scanned_count
    if _scanned_count == len(sys.modules):
        return _library
    _scan_modules(list(sys.modules))
    _scanned_count = len(sys.modules)
    return _library


def _scan_modules(names: Iterable[str]) -> None:
    """Scan the library modules among `names` not scanned since they were imported."""
    roots = _library_roots()
    modules = sys.modules
    for name in names:
        module = modules.get(name)
        if module is None or _scanned.get(name) == id(module):
            continue
        _scanned[name] = id(module)
        if _is_library_module(name, module, roots):
            try:
                _scan_module(name, module)
            except Exception:  # an odd module must never fail a recording: it is just not scanned
                continue


class _LibraryIndex(Mapping[int, LibraryPath]):
    """The library map of one snapshot, scanned package by package as the snapshot meets
    objects of a package's types: a forest's pickle scans scikit-learn and numpy, not the
    hundreds of modules of scipy, IPython or fontTools the kernel also imported (a full
    scan cost a notebook's first record about as much as pickling its whole state).

    A library object is found when the package its type comes from was scanned, which is
    where libraries keep their own instances (`scipy.stats.loguniform`, `matplotlib.rcParams`).
    One held at module level by another package is pickled by value, as everything was
    before library references; a plain dict or list is pickled by value anyway."""

    def __init__(self) -> None:
        self._seen: set[type] = set()
        self._done: set[str] = set()

    def reach(self, obj: Any) -> None:
        """Scan the package `obj`'s type comes from, once per snapshot."""
        kind = type(obj)
        if kind in self._seen:
            return
        self._seen.add(kind)
        module = getattr(kind, "__module__", None)
        top = module.partition(".")[0] if isinstance(module, str) else ""
        if not top or top in self._done:
            return
        self._done.add(top)
        _scan_modules(_package_modules().get(top, ()))

    def __getitem__(self, key: int) -> LibraryPath:
        return _library[key]

    def get(self, key: int, default: Any = None) -> Any:
        return _library.get(key, default)

    def __iter__(self) -> Iterator[int]:
        return iter(_library)

    def __len__(self) -> int:
        return len(_library)

    def __bool__(self) -> bool:
        return True


_packages: tuple[int, dict[str, list[str]]] = (-1, {})


def _package_modules() -> dict[str, list[str]]:
    """top-level package -> the names of its imported modules; rebuilt when an import
    changed `sys.modules` (thousands of names: not once per snapshot)."""
    global _packages
    count = len(sys.modules)
    if _packages[0] != count:
        tops: dict[str, list[str]] = {}
        for name in list(sys.modules):
            tops.setdefault(name.partition(".")[0], []).append(name)
        _packages = (count, tops)
    return _packages[1]


def _resolve(path: LibraryPath) -> Any:
    module = sys.modules.get(path[0])
    if module is None:
        return _MISSING
    value = vars(module).get(path[1], _MISSING)
    if len(path) == 2 or value is _MISSING:
        return value
    if path[2] == "attr":
        return vars(value).get(path[3], _MISSING) if isinstance(value, type) else _MISSING
    if path[2] == "index":
        position = int(path[3])
        if isinstance(value, (list, tuple)) and position < len(value):
            return value[position]
        return _MISSING
    return dict.get(value, path[3], _MISSING) if isinstance(value, dict) else _MISSING


def _library_reference(obj: Any, library: Mapping[int, LibraryPath]) -> LibraryPath | None:
    if isinstance(library, _LibraryIndex):
        library.reach(obj)
    path = library.get(id(obj))
    if path is None or _resolve(path) is not obj:
        return None
    return path


def _reduce_reference(path: LibraryPath) -> tuple[Any, tuple[Any, ...]]:
    """How pickle rebuilds a library object: by import and lookup, never by value."""
    owner = vars(sys.modules[path[0]])[path[1]]
    if len(path) == 2:
        return (getattr, (sys.modules[path[0]], path[1]))
    if path[2] == "attr":
        return (getattr, (owner, path[3]))
    # a plain dict or list is pickled by value whatever reducer_override says: look it up
    return (_library_lookup, (path,))


def _library_lookup(path: LibraryPath) -> Any:
    """A library object inside a module-level dict or list, found again by import."""
    importlib.import_module(path[0])
    value = _resolve(path)
    if value is _MISSING:
        raise LookupError(f"{'.'.join(path[:2])} no longer holds {path[3]!r}")
    return value


# -- pickling --------------------------------------------------------------------------------


# What the pickler does with an object of a given type, decided once per type and snapshot:
# the pickler asks for every object it meets that is not a dict, list, tuple, set, str or number
# (some 100,000 for a figure), so the per-object path is one dict lookup and, for most objects,
# one more for the library map.
_PLAIN = 0  # a library object (by reference) or anything else (pickle's own reduction)
_VALUE = 1  # an immutable value: never a library object
_CODE_PLAN = 2  # classes, functions: cloudpickle's reduction
_CODE_OBJECT = 3  # a code object: cloudpickle's, keeping the cell's file name and lines
_ARRAY = 4  # numpy.ndarray: views, library arrays
_DTYPE = 5  # numpy dtypes: builtin ones canonical
_TENSOR = 6  # torch tensors: refused off the CPU
_CALLBACKS = 7  # matplotlib's CallbackRegistry: a pickle that does not change the object
_REFUSED = 8  # open files, generators, frames


def _refusal(obj: Any) -> str:
    # cloudpickle would silently turn an open file into a StringIO and dill would reopen
    # it (truncating a 'w' file): refusing is better than a value that comes back different.
    if isinstance(obj, io.IOBase):
        return "an open file cannot be stored; reopen it after restoring"
    if isinstance(obj, types.GeneratorType):
        return "a generator cannot be stored; rebuild it after restoring"
    if isinstance(obj, types.FrameType):
        return "a stack frame cannot be stored"
    return ""


class _Plans:
    """type -> what the pickler does with its objects (one of the plans above), for one
    snapshot: the library map is scanned for a type's package when the type is first met."""

    def __init__(self, library: _LibraryIndex) -> None:
        self.library = library
        self.by_type: dict[type, int] = {}
        self.refusals: dict[type, str] = {}
        numpy = sys.modules.get("numpy")
        self.dtype: Any = numpy.dtype if numpy is not None else None
        self.ndarray: Any = numpy.ndarray if numpy is not None else None

    def plan(self, obj: Any) -> int:
        kind = type(obj)
        refusal = _refusal(obj)
        if refusal:
            plan = _REFUSED
            self.refusals[kind] = refusal
        elif kind is types.CodeType:
            plan = _CODE_OBJECT
        elif isinstance(obj, _CODE):
            plan = _CODE_PLAN
        elif self.dtype is not None and isinstance(obj, self.dtype):
            plan = _DTYPE
        elif isinstance(obj, _IMMUTABLE):
            plan = _VALUE
        else:
            module = kind.__module__
            if module == "torch" and kind.__name__ in ("Tensor", "Parameter"):
                plan = _TENSOR
            elif kind is self.ndarray:
                plan = _ARRAY
            elif module == "matplotlib.cbook" and kind.__qualname__ == "CallbackRegistry":
                plan = _CALLBACKS
            else:
                plan = _PLAIN
            self.library.reach(obj)
        if obj.__class__ is kind:  # an object lying about its class is asked each time
            self.by_type[kind] = plan
        return plan


@functools.cache
def _pickler_class() -> type:
    import cloudpickle
    from cloudpickle.cloudpickle import _code_reduce as cloudpickle_code_reduce

    library = _library
    resolve = _resolve
    reduce_reference = _reduce_reference
    array_root = _array_root
    window_reduce = _window_reduce

    class _StatePickler(cloudpickle.CloudPickler):
        """cloudpickle that refuses lossy values, names library objects and canonical dtypes,
        and pickles a view of an array met earlier in the stream (or of a `view_roots` one)
        as a window on it."""

        def __init__(
            self, sink: Any, plans: _Plans, view_roots: Collection[int] = (), **kwargs: Any
        ):
            # cloudpickle's table is a ChainMap: looked up, in Python, for every object that
            # reaches pickle's own reduction, and missed nearly every time. A dict is looked
            # up in C. (The pickler reads it when initialised.)
            self.dispatch_table: dict[Any, Any] = dict(cloudpickle.CloudPickler.dispatch_table)
            super().__init__(sink, protocol=5, **kwargs)
            self._plans = plans
            self._by_type = plans.by_type
            self._view_roots = view_roots
            self._arrays: set[int] = set()  # ids of arrays pickled so far (the memo holds them)
            # root id -> contiguous views of it pickled by value so far (windows for later ones)
            self._holders: dict[int, list[Any]] = {}
            # ids of the roots of every view met: the only place `view_roots` changes a
            # decision (see `_group_in_segments`)
            self.met_roots: set[int] = set()
            # (view, root) of the views pickled by value: no window on anything met before
            self.copied_views: list[tuple[Any, Any]] = []
            self._lines: dict[str, tuple[str, ...]] = {}

        def reducer_override(self, obj: Any) -> Any:
            plan = self._by_type.get(type(obj))
            if plan is None:
                plan = self._plans.plan(obj)
            if plan == _PLAIN:
                path = library.get(id(obj))
                if path is not None and resolve(path) is obj:
                    return reduce_reference(path)
                return NotImplemented
            if plan == _VALUE:
                return NotImplemented
            if plan == _CODE_PLAN:
                return super().reducer_override(obj)
            if plan == _ARRAY:
                return self._array_reduce(obj)
            if plan == _DTYPE:
                # numpy's own reduce rebuilds a builtin dtype as a new instance (copy=True):
                # naming it gives restored arrays the canonical `np.dtype("float64")` again
                dtype = self._plans.dtype
                if obj.isbuiltin == 1 and dtype(obj.str) is obj:
                    return (dtype, (obj.str,))
                return NotImplemented
            if plan == _CODE_OBJECT:
                code = self._code_reduce(obj)
                return code if code is not None else super().reducer_override(obj)
            if plan == _REFUSED:
                _refuse(self._plans.refusals.get(type(obj)) or _refusal(obj))
            if plan == _TENSOR:
                device = getattr(obj, "device", None)
                if device is not None and getattr(device, "type", "cpu") != "cpu":
                    _refuse(f"a tensor on {device} cannot be stored; move it to the CPU first")
            if plan == _CALLBACKS:
                return _callbacks_reduce(obj)
            path = library.get(id(obj))
            if path is not None and resolve(path) is obj:
                return reduce_reference(path)
            return NotImplemented

        def _array_reduce(self, array: Any) -> Any:
            self._arrays.add(id(array))
            if array.base is not None:
                root = array_root(array)
                if root is not array:
                    window = self._window(array, root)
                    if window is not None:
                        return window
            path = library.get(id(array))
            if path is not None and resolve(path) is array:
                return reduce_reference(path)
            return NotImplemented

        def _window(self, view: Any, root: Any) -> Any:
            """A view as a window on its root, when the root was pickled earlier in this
            stream (or is a `view_roots` one), else on an earlier contiguous view of the same
            root that holds it (`X = np.arange(12.0).reshape(4, 3)` is a view too, of an
            array no variable holds, and `x = X[:, 0]` lies in it)."""
            key = id(root)
            self.met_roots.add(key)
            if key in self._arrays or key in self._view_roots:
                return window_reduce(view, root)
            holders = self._holders.setdefault(key, [])
            for holder in holders[-8:]:
                window = window_reduce(view, holder)
                if window is not None:
                    return window
            if window_reduce(view, root) is not None:  # (an empty view never is a window)
                self.copied_views.append((view, root))
            if view.flags.c_contiguous or view.flags.f_contiguous:
                holders.append(view)
            return None

        def _code_reduce(self, code: types.CodeType) -> tuple[Any, tuple[Any, ...]] | None:
            """A cell's code keeps its file name and the cell's lines, which cloudpickle drops
            ("<dynamic-code>"), so `inspect.getsource` and tracebacks work after a restore."""
            lines = _cell_lines(code.co_filename)
            if lines is None:
                return None
            if code.co_filename not in self._lines:
                self._lines[code.co_filename] = lines  # one object: pickled once per file
            constructor, args = cloudpickle_code_reduce(code)
            args = tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)
            return (_code_with_source, (constructor, args, self._lines[code.co_filename]))

    return _StatePickler


def _callbacks_reduce(registry: Any) -> Any:
    """matplotlib's CallbackRegistry pickles its next callback id by drawing it (`__getstate__`
    calls `next` on its counter): every pickle of a figure differed from the one before, so an
    unchanged figure was stored again by every record. The counter is put back where it was."""
    reduced = registry.__reduce_ex__(5)
    state = reduced[2] if isinstance(reduced, tuple) and len(reduced) > 2 else None
    counter = state.get("_cid_gen") if isinstance(state, dict) else None
    if isinstance(counter, int) and isinstance(
        getattr(registry, "_cid_gen", None), itertools.count
    ):
        registry._cid_gen = itertools.count(counter)
    return reduced


def _cell_lines(filename: str) -> tuple[str, ...] | None:
    """The lines of a notebook cell as IPython registered them (linecache, no file behind)."""
    entry = linecache.cache.get(filename)
    if entry is None or len(entry) != 4 or entry[1] is not None:
        return None
    return tuple(entry[2])


def _code_with_source(constructor: Any, args: tuple[Any, ...], lines: tuple[str, ...]) -> Any:
    """A restored code object, its cell's lines put back where `inspect` and tracebacks look."""
    code = constructor(*args)
    if code.co_filename not in linecache.cache:
        linecache.cache[code.co_filename] = (
            sum(len(line) for line in lines),
            None,
            list(lines),
            code.co_filename,
        )
    return code


def _array_root(array: Any) -> Any:
    """The ndarray whose memory a view lies in (numpy keeps `base` one step from it)."""
    root = array
    while type(root.base) is type(array):
        root = root.base
    return root


def _window_reduce(view: Any, base: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """How pickle rebuilds a view as a window on `base` (its root, or a contiguous array of
    the same root that holds its memory), or None when it cannot.

    numpy pickles a view as a copy of its elements, so `x = X[:, 0]` would come back as an
    array of its own; naming the array it lies in keeps `x` a window on the restored `X`.
    """
    if view.dtype.hasobject or base.dtype.hasobject or view.size == 0 or base.nbytes == 0:
        return None
    if not (base.flags.c_contiguous or base.flags.f_contiguous):
        return None
    if view.flags.writeable and not base.flags.writeable:
        return None  # a window on a read-only array would come back read-only
    start = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    low = start + sum(s * (n - 1) for s, n in zip(view.strides, view.shape, strict=True) if s < 0)
    high = (
        start
        + view.itemsize
        + sum(s * (n - 1) for s, n in zip(view.strides, view.shape, strict=True) if s > 0)
    )
    if low < 0 or high > base.nbytes:
        return None
    return (
        _array_view,
        (base, start, view.shape, view.strides, view.dtype, bool(view.flags.writeable)),
    )


def _array_view(
    root: Any,
    offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: Any,
    writeable: bool,
) -> Any:
    """A restored view: the same window on the restored array (`_window_reduce`'s inverse)."""
    numpy = sys.modules["numpy"]
    raw = root.ravel(order="K").view(numpy.uint8)
    view = numpy.ndarray(shape, dtype=dtype, buffer=raw, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


_NEVER_SHARED = (*_IMMUTABLE, *_CODE)
_NEVER, _ALWAYS, _IF_WRITABLE = 0, 1, 2  # what a type says about whether its objects can be shared
_shareable_types: dict[type, int] = {}  # type -> one of the three


def _shareable_kind(obj: Any, dtype: type | None) -> int:
    """What `obj`'s type says about sharing it (`_shares` caches the answer per type)."""
    if isinstance(obj, _NEVER_SHARED):
        return _NEVER
    if dtype is not None and isinstance(obj, dtype):
        return _NEVER
    module = type(obj).__module__
    if module.startswith("numpy") and type(obj).__name__ in ("ndarray", "matrix", "memmap"):
        # a read-only array over read-only memory is a value (matplotlib's cached path codes,
        # which paths in every figure hold): nobody can change it through either variable
        return _IF_WRITABLE
    # numpy scalars (np.float64(1.0), ...) are immutable values
    if module.startswith("numpy") and hasattr(obj, "dtype") and not hasattr(obj, "__dict__"):
        return _NEVER
    return _ALWAYS


def _shares(obj: Any, library: Mapping[int, LibraryPath], dtype: type | None) -> bool:
    """Whether two variables reaching `obj` share something a user could notice. What its
    type says is worked out once per type: a snapshot asks for every object it pickled."""
    kind = type(obj)
    shareable = _shareable_types.get(kind)
    if shareable is None:
        shareable = _shareable_kind(obj, dtype)
        if obj.__class__ is kind:  # an object lying about its class is asked every time
            _shareable_types[kind] = shareable
    if shareable == _NEVER:
        return False
    if shareable == _IF_WRITABLE and not (obj.flags.writeable or _array_root(obj).flags.writeable):
        return False
    return _library_reference(obj, library) is None


@dataclass
class Snapshot:
    """The state section of a record, plus what writing it cost."""

    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    unstored: dict[str, str] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    new_bytes: int = 0
    total_bytes: int = 0

    def to_record(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "variables": self.variables,
            "unstored": self.unstored,
            "imports": self.imports,
            "secrets": sorted(self.secrets),
        }


def import_line(name: str, module: types.ModuleType) -> str:
    """The import statement that binds `module` to `name`."""
    full = module.__name__
    if name == full:
        return f"import {full}"
    if "." in full and full.rsplit(".", 1)[1] == name:
        parent, leaf = full.rsplit(".", 1)
        return f"from {parent} import {leaf}"
    return f"import {full} as {name}"


def select_variables(
    namespace: Mapping[str, Any], hidden: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Split the user's namespace into values to store, modules (as import lines), secrets."""
    skip = set(hidden) | {"In", "Out", "exit", "quit", "get_ipython"}
    values: dict[str, Any] = {}
    imports: dict[str, str] = {}
    secret_names: list[str] = []
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in skip:
            continue
        if isinstance(value, types.ModuleType):
            imports[name] = import_line(name, value)
        elif looks_like_secret(name):
            secret_names.append(name)
        else:
            values[name] = value
    return values, imports, secret_names


@dataclass
class _Pickled:
    """One pickle and its out-of-band buffers, already hashed (and chunks already stored).

    A tracked pickle also keeps its pickler's memo (id -> (memo index, object)): which
    objects it holds, for sharing between variables, and where, for a group built on it. The
    memo holds its objects, so no id in it can pass to another object while it lives."""

    payload: bytes
    pickle_hash: str
    chunks: list[list[str]]
    size: int
    hash: str
    memo: dict[int, tuple[int, Any]] = field(default_factory=dict)
    # roots of the views pickled by value (their memory is reached, the root is not pickled)
    roots: dict[int, Any] = field(default_factory=dict)
    # a view pickled by value though its root comes later in the same pickle
    loose_views: bool = False
    # ids of the roots of views pickled by value (in this pickle and those it continues)
    copied_roots: frozenset[int] = frozenset()
    # ids of the roots of every view it met (pickled as a window or by value)
    met_roots: frozenset[int] = frozenset()


def _content_hash(pickle_hash: str, chunk_lists: Iterable[list[str]]) -> str:
    """A pickle's hash with its out-of-band buffers' chunk hashes: the stored value's identity."""
    content = xxhash.xxh3_128(pickle_hash.encode())
    for chunks in chunk_lists:
        for digest in chunks:
            content.update(digest.encode())
        content.update(b"|")
    return content.hexdigest()


class _Writer:
    """Pickles values for one snapshot: stores chunks, remembers which buffers it hashed."""

    def __init__(self, store: Store, needles: list[bytes], result: Snapshot) -> None:
        self.store = store
        self.needles = needles
        self.reach = max((len(needle) for needle in needles), default=1) - 1
        self.result = result
        self.pickler_class = _pickler_class()
        self.library = _LibraryIndex()
        self.plans = _Plans(self.library)
        numpy = sys.modules.get("numpy")
        self.dtype: type | None = numpy.dtype if numpy is not None else None
        # (address, size) -> (the buffer, kept alive so the address stays its own; digests)
        self._digests: dict[tuple[int, int], tuple[memoryview, list[str]]] = {}

    def dump(
        self,
        value: Any,
        *,
        track: bool,
        view_roots: Collection[int] = (),
    ) -> _Pickled:
        """Pickle `value`, refusing secrets; with `track`, keep the memo (what it holds) and
        the roots of views pickled by value; views of `view_roots` are pickled as views."""
        buffers: list[pickle.PickleBuffer] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            """pickle's callback: a true answer keeps the buffer in the stream."""
            if memoryview(buffer).nbytes < IN_BAND_LIMIT:
                return True
            buffers.append(buffer)
            return False

        pickler: Any = None
        if type(value) in _SAVED_BY_PICKLE:
            # pickle writes these itself, never asking `reducer_override`: the same bytes
            # without building a pickler (most of a scalar's cost); a str or bytes is the
            # only object its memo would hold
            payload = pickle.dumps(value, protocol=5)
            memo: dict[int, tuple[int, Any]] = (
                {id(value): (0, value)} if type(value) in (str, bytes) else {}
            )
        else:
            sink = io.BytesIO()
            pickler = self.pickler_class(sink, self.plans, view_roots, buffer_callback=out_of_band)
            pickler.dump(value)
            payload = sink.getvalue()
            memo = pickler.memo.copy() if track else {}
        pickled = self.finish(payload, buffers)
        if track:
            pickled.memo = memo
            copied: set[int] = set()
            for view, root in pickler.copied_views if pickler is not None else ():
                key = id(root)
                # its root pickled later, or another view of the same root pickled by value:
                # in a group's own pickle they would be windows on that root
                if key in memo or key in copied:
                    pickled.loose_views = True
                copied.add(key)
                if _shares(view, self.library, self.dtype):
                    # a view reaches its base's memory: `x = X[:, 0]` joins X
                    pickled.roots[key] = root
            pickled.copied_roots = frozenset(copied)
            pickled.met_roots = frozenset(pickler.met_roots) if pickler is not None else frozenset()
        return pickled

    def finish(self, payload: bytes, buffers: list[pickle.PickleBuffer]) -> _Pickled:
        """A pickle refused if it holds a secret, else hashed, its buffers stored as chunks."""
        for needle in self.needles:
            if needle in payload:
                raise UnstorableError("holds a credential value, so it is not stored")
        pickle_hash = xxhash.xxh3_128_hexdigest(payload)
        size = len(payload)
        chunk_lists: list[list[str]] = []
        for buffer in buffers:
            raw = buffer.raw()
            chunk_lists.append(self._chunks(buffer, raw))
            size += raw.nbytes
        return _Pickled(
            payload, pickle_hash, chunk_lists, size, _content_hash(pickle_hash, chunk_lists)
        )

    def _chunks(self, buffer: pickle.PickleBuffer, raw: memoryview) -> list[str]:
        key = _address(raw)
        if key is not None and key in self._digests:
            return self._digests[key][1]
        chunks: list[str] = []
        for start, stop in _chunk_spans(buffer, raw.nbytes):
            piece = raw[start:stop]
            digest = xxhash.xxh3_128_hexdigest(piece)
            if not self.store.has_object(digest):
                # out-of-band buffers (numpy arrays, Arrow strings) can hold a secret too
                around = (
                    raw[max(0, start - self.reach) : stop + self.reach].tobytes()
                    if self.needles
                    else b""
                )
                if any(needle in around for needle in self.needles):
                    raise UnstorableError("holds a credential value, so it is not stored")
                _put(self.store, piece, digest)
                self.result.new_bytes += piece.nbytes
            chunks.append(digest)
        if key is not None:
            self._digests[key] = (raw, chunks)
        return chunks

    def write(self, pickled: _Pickled) -> dict[str, Any]:
        """Store the pickle itself (chunks are stored already); the entry's storage fields."""
        payload = pickled.payload
        entry: dict[str, Any] = {"pickle": pickled.pickle_hash}
        if len(payload) <= INLINE_LIMIT:
            self.result.new_bytes += len(payload)  # it travels inside the new record
            entry["inline"] = base64.b64encode(payload).decode()
        elif not self.store.has_object(pickled.pickle_hash):
            _put(self.store, memoryview(payload), pickled.pickle_hash)
            self.result.new_bytes += len(payload)
        if pickled.chunks:
            entry["buffers"] = pickled.chunks
        self.result.total_bytes += pickled.size
        return entry


class _Continuation:
    """One pickler that continues a tracked pickle (its memo copied in once) for the members
    of a group that pickle lacks, each `dump` a segment loading after the ones before.

    Nothing copies its memo back out (for a figure's 20,000 entries that cost more than the
    continuation itself): where a member lies in the memo is asked of the pickler itself —
    pickling an object it already holds writes only the opcode that fetches it (`index`) —
    and whether a root of a view lies in it is answered by the base's memo and the arrays
    this pickler met (every ndarray it pickles passes `reducer_override`, and is memoized)."""

    def __init__(self, writer: _Writer, base: _Pickled) -> None:
        self.writer = writer
        self.base = base
        self.buffers: list[pickle.PickleBuffer] = []
        self.sink = io.BytesIO()
        self.pickler = writer.pickler_class(
            self.sink, writer.plans, base.memo, buffer_callback=self._out_of_band
        )
        self.pickler.memo = base.memo
        self.copied: set[int] = set(base.copied_roots)

    def _out_of_band(self, buffer: pickle.PickleBuffer) -> bool:
        if memoryview(buffer).nbytes < IN_BAND_LIMIT:
            return True
        self.buffers.append(buffer)
        return False

    def _pickle(self, value: Any) -> bytes:
        self.sink.seek(0)
        self.sink.truncate()
        self.pickler.dump(value)
        return self.sink.getvalue()

    def holds(self, key: int) -> bool:
        """Whether the memo holds the ndarray with id `key` (a view's root)."""
        return key in self.base.memo or key in self.pickler._arrays

    def index(self, value: Any) -> int | None:
        """`value`'s place in the memo, if it holds it (else None, and the memo is spoilt:
        the value was pickled by this very question, so the group must be given up)."""
        return _fetched_index(self._pickle(value))

    def dump(self, value: Any) -> _Pickled | None:
        """The segment that pickles `value` after the parts before it; None when the memo
        holds it already (no segment needed)."""
        self.buffers.clear()
        start = len(self.pickler.copied_views)
        payload = self._pickle(value)
        if _fetched_index(payload) is not None:
            return None
        segment = self.writer.finish(payload, self.buffers)
        for _view, root in self.pickler.copied_views[start:]:
            key = id(root)
            # its root pickled in some part, or another view of it pickled by value: in one
            # tuple they would be windows (the same test `_Writer.dump` makes on its memo)
            if self.holds(key) or key in self.copied:
                segment.loose_views = True
            self.copied.add(key)
        return segment

    def loose_roots(self) -> bool:
        """Whether a view was pickled by value in one part while its root is in another."""
        return any(self.holds(key) for key in self.copied)


def _fetched_index(payload: bytes) -> int | None:
    """The memo index a pickle consisting of one memo fetch fetches (protocol 5: PROTO,
    perhaps a FRAME, BINGET or LONG_BINGET, STOP), else None."""
    body = payload[2:] if payload[:1] == pickle.PROTO else payload
    if body[:1] == pickle.FRAME:
        body = body[9:]
    if len(body) == 3 and body[:1] == pickle.BINGET and body[2:] == pickle.STOP:
        return body[1]
    if len(body) == 6 and body[:1] == pickle.LONG_BINGET and body[5:] == pickle.STOP:
        return int(struct.unpack("<I", body[1:5])[0])
    return None


def _address(raw: memoryview) -> tuple[int, int] | None:
    """Where a buffer's memory is, to hash the same buffer only once per snapshot."""
    numpy = sys.modules.get("numpy")
    if numpy is None or raw.nbytes == 0:
        return None
    try:
        view = numpy.frombuffer(raw, dtype=numpy.uint8)
        return (int(view.__array_interface__["data"][0]), raw.nbytes)  # `.ctypes` is slower
    except (TypeError, ValueError):
        return None


class PickleCache:
    """Pickles taken earlier in a stretch of recording during which the kernel runs no user
    code: the trials of one sweep landing on the driver (see `executor`). Only nbexp's code
    runs between two such records, so an object it pickled before is still what it was, and
    pickling it again would only repeat the same bytes. Never kept across cells: there, any
    cell may have changed any object in place, and only a fresh pickle's hash is proof.

    Entries hold their values, so an id cannot pass to another object while they live.
    """

    def __init__(self) -> None:
        self._entries: dict[
            tuple[int, ...], tuple[tuple[Any, ...], frozenset[bytes], _Pickled]
        ] = {}

    def get(self, values: tuple[Any, ...], needles: list[bytes], store: Store) -> _Pickled | None:
        """The pickle of `values` taken under the same secrets, if its objects are all still
        in the store (a record that failed to save may have left them unwritten)."""
        entry = self._entries.get(tuple(id(value) for value in values))
        if entry is None or entry[1] != frozenset(needles):
            return None
        held, _, pickled = entry
        if any(a is not b for a, b in zip(held, values, strict=True)):
            return None
        if not all(store.has_object(digest) for chunks in pickled.chunks for digest in chunks):
            return None
        if len(pickled.payload) > INLINE_LIMIT and not store.has_object(pickled.pickle_hash):
            return None
        return pickled

    def put(self, values: tuple[Any, ...], needles: list[bytes], pickled: _Pickled) -> None:
        key = tuple(id(value) for value in values)
        self._entries[key] = (values, frozenset(needles), pickled)

    def clear(self) -> None:
        self._entries.clear()


def snapshot(
    store: Store,
    values: Mapping[str, Any],
    *,
    imports: Mapping[str, str] | None = None,
    secret_names: Iterable[str] = (),
    secret_values: Iterable[str] = (),
    reuse: PickleCache | None = None,
    fresh: Iterable[str] = (),
) -> Snapshot:
    """Store every value, variables that share objects as one group; unchanged content costs
    a hash and no new bytes.

    `secret_values` are strings that must never be written: a variable whose pickle contains
    one is reported as unstored instead (and so never joins a group). `reuse` (only while
    no user code runs between snapshots: see `PickleCache`) skips pickling a value again;
    the `fresh` names (a trial's own values, new each time) are neither looked up nor kept.
    """
    with _cyclic_gc_paused():
        return _snapshot(store, values, imports, secret_names, secret_values, reuse, fresh)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pickling a figure allocates some 100,000 short-lived tuples and dicts, and the cyclic
    collector, woken every 700 allocations, walked them again and again: it took about half
    of a snapshot's time. Reference counting frees them as usual meanwhile."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _snapshot(
    store: Store,
    values: Mapping[str, Any],
    imports: Mapping[str, str] | None,
    secret_names: Iterable[str],
    secret_values: Iterable[str],
    reuse: PickleCache | None,
    fresh: Iterable[str],
) -> Snapshot:
    result = Snapshot(imports=dict(imports or {}), secrets=list(secret_names))
    writer = _Writer(store, encoded_secrets(secret_values), result)

    new_names = set(fresh)

    def dump(names: tuple[str, ...], *, track: bool, view_roots: Collection[int] = ()) -> _Pickled:
        members = tuple(values[name] for name in names)
        cache = reuse if reuse is not None and not new_names.intersection(names) else None
        if cache is not None:
            cached = cache.get(members, writer.needles, store)
            if cached is not None:
                return cached
        done = writer.dump(members[0] if track else members, track=track, view_roots=view_roots)
        if cache is not None:
            cache.put(members, writer.needles, done)
        return done

    canonical: dict[int, str] = {}
    for name, value in values.items():
        if not (isinstance(value, _ATOMS) or _is_by_reference(value)):
            canonical.setdefault(id(value), name)

    # Each variable is pickled once, in namespace order — unless an earlier variable's pickle
    # holds it already (`ax` inside `fig`): then it is in that variable's group, and pickling
    # it alone would only pickle the same objects again.
    sharing = _Sharing(writer.library, writer.dtype)
    pickled: dict[str, _Pickled] = {}
    for name, value in values.items():
        first = canonical.get(id(value))
        if first is not None and first != name:
            result.variables[name] = {"type": _type_name(value), "alias_of": first}
            continue
        holders = sharing.holders_of(value)
        if holders:
            for holder in holders:
                sharing.join(holder, name)
            continue
        try:
            pickled[name] = dump((name,), track=True)
        except UnstorableError as error:
            result.unstored[name] = str(error)
            continue
        except StoreError:  # the store cannot take it (disk full): no variable's fault
            raise
        except Exception as error:  # pickling arbitrary user objects can raise anything
            result.unstored[name] = f"cannot be pickled: {type(error).__name__}: {error}"[:300]
            continue
        sharing.add(name, pickled[name])

    for members in sharing.groups(values):
        first_name = members[0]
        if len(members) == 1:
            one = pickled[first_name]
            result.variables[first_name] = {
                "type": _type_name(values[first_name]),
                "size": one.size,
                "hash": one.hash,
                **writer.write(one),
            }
            continue
        try:
            group = _group_in_segments(members, values, pickled, writer, sharing.shared)
        except StoreError:
            raise
        except Exception:  # a member not pickled alone failed: try the group as one tuple
            group = None
        if group is None:
            try:
                group = dump(tuple(members), track=False, view_roots=sharing.shared)
            except StoreError:
                raise
            except Exception as error:
                reason = (
                    f"shares objects with {', '.join(members)}, which cannot be stored together"
                )
                for name in members:
                    result.unstored[name] = f"{reason}: {type(error).__name__}: {error}"[:300]
                continue
        for name in members:
            # a member held by another's pickle was not pickled alone: it changes with the group
            own = pickled.get(name, group)
            result.variables[name] = {
                "type": _type_name(values[name]),
                "size": own.size,
                "hash": own.hash,
                "in_group": first_name,
            }
        owner = result.variables[first_name]
        del owner["in_group"]
        owner.update(writer.write(group))
        owner["members"] = list(members)
        owner["group_hash"] = group.hash
    _drop_dangling(result)
    return result


_NUMBERS = (int, float, complex, bool, type(None))
# Exact types pickle saves itself, without `reducer_override` (see `_Writer.dump`)
_SAVED_BY_PICKLE = frozenset({int, float, bool, type(None), str, bytes})
_KEY_ATOMS = (*_NUMBERS, str)


class _Sharing:
    """Which variables reach a common shareable object (so are stored as one group), from
    each pickle's memo: the memos' ids are intersected by set operations, in C, and only the
    objects two pickles both hold are judged one by one (`_shares`; mostly strings and
    classes, whose verdict is cached per type). Union-find over the variables' names."""

    def __init__(self, library: Mapping[int, LibraryPath], dtype: type | None) -> None:
        self._library = library
        self._dtype = dtype
        self._first: dict[int, str] = {}  # id -> a variable whose pickle reached it
        self._parent: dict[str, str] = {}
        self._memos: dict[str, dict[int, tuple[int, Any]]] = {}
        numpy = sys.modules.get("numpy")
        self._ndarray: type | None = numpy.ndarray if numpy is not None else None
        self.shared: set[int] = set()  # arrays reached by more than one variable

    def holder_of(self, value: Any) -> str | None:
        """The variable whose pickle already holds `value`, if `value` can be shared."""
        name = self._first.get(id(value))
        if name is None:
            return None
        held = self._memos[name].get(id(value))
        if held is None or held[1] is not value:  # reached as a view's root only
            return None
        return name if _shares(value, self._library, self._dtype) else None

    def holders_of(self, value: Any) -> list[str]:
        """The variables whose pickles hold `value`, or else every object in it (`axs`, an
        array of the axes a figure pickled before holds; a list of fitted models): then
        whatever reaches it reaches them, so it belongs to their group and pickling it alone
        would pickle them again. Empty when something in it is new, or a string (a secret in
        it would refuse the whole group)."""
        holder = self.holder_of(value)
        if holder is not None:
            return [holder]
        kind = type(value)
        if kind is list or kind is tuple:
            items: Iterable[Any] = value
        elif kind is dict:
            if not all(type(key) in _KEY_ATOMS for key in value):
                return []
            items = value.values()
        elif kind is self._ndarray and value.dtype.hasobject:
            items = value.flat
        else:
            return []
        if not 0 < (value.size if kind is self._ndarray else len(value)) <= 10_000:
            return []
        holders: list[str] = []
        for item in items:
            if type(item) in _NUMBERS:
                continue
            holder = self.holder_of(item)
            if holder is None:
                return []
            if holder not in holders:
                holders.append(holder)
        return holders

    def add(self, name: str, pickled: _Pickled) -> None:
        """A variable's pickle: joined with every earlier one that holds a shareable object
        it holds too (or the root of a view it holds)."""
        self._parent.setdefault(name, name)
        memo = pickled.memo
        self._memos[name] = memo
        first = self._first
        verdicts, ndarray = _shareable_types, self._ndarray
        joined: set[str] = set()  # holders joined with this variable already
        for key in memo.keys() & first.keys():
            obj = memo[key][1]
            kind = type(obj)
            if verdicts.get(kind) == _NEVER:  # strings, classes, functions: most of them
                continue
            other = first[key]
            if other in joined and kind is not ndarray:
                continue
            if _shares(obj, self._library, self._dtype):
                if other not in joined:
                    self.join(other, name)
                    joined.add(other)
                if kind is ndarray:  # a root for the views of a group's pickle
                    self.shared.add(key)
        for key in pickled.roots:
            other = first.setdefault(key, name)
            if other != name:
                self.join(other, name)
                self.shared.add(key)
        # any variable holding an id will do as its holder: those holding a shareable
        # object are joined by now (fromkeys of a dict, then update: two C loops, no set)
        first.update(dict.fromkeys(memo, name))

    def _root(self, name: str) -> str:
        parent = self._parent
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    def join(self, a: str, b: str) -> None:
        self._parent.setdefault(a, a)
        self._parent.setdefault(b, b)
        root_a, root_b = self._root(a), self._root(b)
        if root_a != root_b:
            self._parent[root_b] = root_a

    def groups(self, order: Iterable[str]) -> list[list[str]]:
        """The groups, each in namespace order, in the order of their first member."""
        found: dict[str, list[str]] = {}
        for name in order:
            if name in self._parent:
                found.setdefault(self._root(name), []).append(name)
        return list(found.values())


def _group_in_segments(
    members: list[str],
    values: Mapping[str, Any],
    pickled: Mapping[str, _Pickled],
    writer: _Writer,
    shared: Collection[int],
) -> _Pickled | None:
    """A group's pickle built on its largest member's own pickle instead of pickling the whole
    group again: that pickle's bytes, then each member it does not hold (`axs`, an array of
    the axes of the `fig` it follows) pickled as a continuation of it — only the objects it
    adds, the rest fetched from the memo (`_Continuation`) —, then the members fetched from
    the memo into one tuple. A figure, its axes and its array of axes cost one pickle of the
    figure.

    None (pickle the group as one tuple, with the `shared` arrays' views as windows) when a
    view was pickled by value while its root, or another view of that root, is in the group
    too: as one tuple, they would be windows. Unless the tuple would store exactly what the
    segments store (`_same_as_tuple`, `_continued_as_tuple`): a figure's own views of its own
    arrays (an undrawn line keeps some) made its group pickle the figure twice."""
    base_name = max(
        (name for name in members if name in pickled),
        key=lambda name: len(pickled[name].memo),
        default=None,
    )
    if base_name is None:
        return None
    base = pickled[base_name]
    like_tuple = base.loose_views and _same_as_tuple(base_name, members, base, shared)
    if (base.loose_views and not like_tuple) or not base.payload.endswith(pickle.STOP):
        return None
    parts = [base.payload[:-1] + pickle.POP]  # POP: STOP's length, the last frame keeps its own
    chunks = list(base.chunks)
    size = base.size - len(base.payload)
    indexes = []
    continuation: _Continuation | None = None
    for name in members:
        value = values[name]
        held = base.memo.get(id(value))
        if held is not None and held[1] is value:
            indexes.append(held[0])
            continue
        if continuation is None:
            continuation = _Continuation(writer, base)
        segment = continuation.dump(value)  # None: an earlier segment holds it
        if segment is not None:
            if segment.loose_views or not segment.payload.endswith(pickle.STOP):
                return None
            parts.append(segment.payload[:-1] + pickle.POP)
            chunks.extend(segment.chunks)
            size += segment.size - len(segment.payload)
        index = continuation.index(value)
        if index is None:
            return None  # (an atom: not in any memo)
        indexes.append(index)
    if continuation is not None:
        if like_tuple:
            if not _continued_as_tuple(continuation, base, shared):
                return None
        elif continuation.loose_roots():
            return None  # a view pickled by value before its root, in another part
    fetch = b"".join(_memo_get(index) for index in indexes)
    payload = b"".join(parts) + pickle.MARK + fetch + pickle.TUPLE + pickle.STOP
    pickle_hash = xxhash.xxh3_128_hexdigest(payload)
    return _Pickled(
        payload, pickle_hash, chunks, size + len(payload), _content_hash(pickle_hash, chunks)
    )


def _same_as_tuple(
    base_name: str, members: list[str], base: _Pickled, shared: Collection[int]
) -> bool:
    """Whether pickling the group as one tuple would pickle the base member exactly as its own
    pickle did, views by value included. Why that holds when this says so: the tuple pickles
    its members in order, so a base that comes first is met first, object by object in the
    same order as alone; the one thing the tuple's pickler does differently is to pickle a view
    of a `shared` root as a window on it, and it is asked only about the roots of views met
    (`_StatePickler._window`) — none of which is shared here. The members after it are checked
    by `_group_in_segments`."""
    return members[0] == base_name and not any(key in shared for key in base.met_roots)


def _continued_as_tuple(
    continuation: _Continuation, base: _Pickled, shared: Collection[int]
) -> bool:
    """Whether the tuple would pickle the members after the base as the continuation did.
    Its pickler differs from the continuation's only in what it asks about a view's root
    (`_StatePickler._window`): a root the base holds is a window for both (the tuple met
    it in the base's part, the continuation has the base's memo); else the tuple tries a
    `shared` root as a window, and the contiguous views of it the base's part met as
    holders. So every root the continuation met is either held by the base, or neither
    shared nor met by the base. And no root of a view pickled by value (by either) was
    pickled by the continuation afterwards."""
    pickler = continuation.pickler
    for key in pickler.met_roots:
        if key not in base.memo and (key in shared or key in base.met_roots):
            return False
    return not any(key in pickler._arrays for key in continuation.copied)


def _memo_get(index: int) -> bytes:
    """The pickle opcode that pushes memo entry `index`."""
    if index < 256:
        return pickle.BINGET + bytes((index,))
    return pickle.LONG_BINGET + struct.pack("<I", index)


def _put(store: Store, data: memoryview, digest: str) -> None:
    """Store one object. A write the store refuses (disk full, file too large, I/O error)
    is a StoreError, which `snapshot` lets through: it fails the whole recording — the user
    is told the run was not recorded — instead of passing for a variable that "cannot be
    pickled" in a record that looks complete."""
    store.put_bytes(data, digest)


def _chunk_spans(buffer: pickle.PickleBuffer, size: int) -> Iterable[tuple[int, int]]:
    """1 MiB pieces. A 2-D C-contiguous buffer with rows of at least 1 MiB (a pandas block:
    one row per column) is also cut at every row start, so a column stores the same chunks
    wherever pandas' consolidation (`copy()`, ...) moves it inside a block."""
    view = memoryview(buffer)
    row = view.strides[0] if view.ndim == 2 and view.c_contiguous and view.strides else 0
    segment = row if row >= CHUNK else max(size, 1)
    for base in range(0, size, segment):
        end = min(base + segment, size)
        for start in range(base, end, CHUNK):
            yield start, min(start + CHUNK, end)


def _drop_dangling(result: Snapshot) -> None:
    """A variable naming one that could not be stored (an alias) cannot be loaded either."""
    changed = True
    while changed:
        changed = False
        for name, entry in list(result.variables.items()):
            needed = [*entry.get("refs", ()), *([entry["alias_of"]] if "alias_of" in entry else ())]
            broken = [other for other in needed if other not in result.variables]
            if broken:
                del result.variables[name]
                result.unstored[name] = f"refers to {broken[0]}, which was not stored"
                changed = True


def entry_objects(entry: Mapping[str, Any]) -> list[str]:
    """Every object hash one variable's entry needs (a group's owner: the whole group's)."""
    hashes = [entry["pickle"]] if "pickle" in entry and "inline" not in entry else []
    for chunks in entry.get("buffers", ()):
        hashes.extend(chunks)
    return hashes


class StateLoader:
    """Loads variables of one record's state on demand; a group is loaded whole, once."""

    def __init__(self, store: Store, state: Mapping[str, Any]) -> None:
        self._store = store
        self._entries: Mapping[str, dict[str, Any]] = state.get("variables", {})
        self._loaded: dict[str, Any] = {}

    def names(self) -> list[str]:
        return list(self._entries)

    def dependencies(self, name: str) -> list[str]:
        """The other variables loading `name` loads too (format 1 references, aliases)."""
        entry = self._entries[name]
        return [
            *entry.get("refs", ()),
            *([entry["alias_of"]] if "alias_of" in entry else ()),
            *([entry["in_group"]] if "in_group" in entry else ()),
        ]

    def group_of(self, name: str) -> list[str]:
        """The variables stored together with `name` (sharing objects with it), itself included."""
        entry = self._entries.get(name, {})
        while "alias_of" in entry:
            name = entry["alias_of"]
            entry = self._entries.get(name, {})
        owner = entry.get("in_group", name)
        members = list(self._entries.get(owner, {}).get("members", (name,)))
        aliases = [
            other
            for other, info in self._entries.items()
            if info.get("alias_of") in members and other not in members
        ]
        return members + aliases

    def load(self, name: str) -> Any:
        """One variable's value, verified chunk by chunk against its recorded hashes."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries[name]
        if "alias_of" in entry:
            value = self.load(entry["alias_of"])
        elif "in_group" in entry or "members" in entry:
            owner = entry.get("in_group", name)
            self._load_group(owner)
            return self._loaded[name]
        else:
            value = self._unpickle(name, entry)
        self._loaded[name] = value
        return value

    def _load_group(self, owner: str) -> None:
        entry = self._entries[owner]
        members = list(entry["members"])
        values = self._unpickle(", ".join(members), entry)
        if not isinstance(values, tuple) or len(values) != len(members):
            from .errors import IntegrityError

            raise IntegrityError(f"the group {', '.join(members)} does not hold its variables")
        for member, value in zip(members, values, strict=True):
            self._loaded[member] = value

    def _unpickle(self, name: str, entry: Mapping[str, Any]) -> Any:
        """The entry's pickle (a group's: the tuple of its members), verified."""
        expected = entry.get("group_hash") if "members" in entry else entry.get("hash")
        if "inline" in entry:
            try:
                payload = base64.b64decode(entry["inline"], validate=True)
            except ValueError:  # damaged base64 in the record: refused just below
                payload = b""
            if xxhash.xxh3_128_hexdigest(payload) != entry["pickle"]:
                from .errors import IntegrityError

                raise IntegrityError(
                    f"variable {name} does not match its recorded hash; "
                    "run `nbexp fsck` to see what is affected"
                )
        else:
            payload = self._store.read_object(entry["pickle"])
        content = xxhash.xxh3_128(entry["pickle"].encode())
        buffers: list[memoryview | bytearray] = []
        for chunks in entry.get("buffers", ()):
            mapped = self._store.map_objects(chunks)  # one run of a pack: no copy
            if mapped is not None:
                content.update("".join(chunks).encode() + b"|")
                buffers.append(mapped)
                continue
            sizes = [self._store.object_size(digest) for digest in chunks]
            buffer = bytearray(sum(sizes))
            view = memoryview(buffer)
            offset = 0
            for digest, size in zip(chunks, sizes, strict=True):
                self._store.read_object_into(digest, view[offset : offset + size])
                offset += size
                content.update(digest.encode())
            content.update(b"|")
            buffers.append(buffer)
        if content.hexdigest() != expected:
            from .errors import IntegrityError

            raise IntegrityError(
                f"variable {name} does not match its recorded hash; "
                "run `nbexp fsck` to see what is affected"
            )
        # format 1 records name other variables by persistent id; format 2 has none
        resolve: Callable[[str], Any] = self.load
        unpickler = pickle.Unpickler(io.BytesIO(payload), buffers=buffers)
        unpickler.persistent_load = resolve  # type: ignore[method-assign]
        from .environment import on_behalf_of_user

        with on_behalf_of_user():  # what the user's values import is the user's package
            return unpickler.load()
