"""Snapshotting the kernel's variables into objects, and loading them back.

Each variable is pickled on its own (cloudpickle, protocol 5). Large buffers — numpy arrays,
pandas blocks, Arrow buffers — leave the pickle out-of-band, zero-copy, and are stored in
1 MiB content-addressed chunks: an unchanged array costs a hash and no new bytes, a one-column
add stores about one column, `df2 = df.copy()` stores nothing new.

Identity between variables is kept without gluing them together: when the pickle of one
variable meets an object that is another variable's value, it writes a reference to that name
instead (pickle's persistent ids), and loading resolves the reference to the same object.
Library objects (modules, importable classes and functions) are never such references, so
they cannot bind unrelated variables into one blob.
"""

from __future__ import annotations

import base64
import io
import pickle
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from .errors import StoreError
from .hashing import CHUNK
from .secrets import encoded_secrets, looks_like_secret
from .store import Store

STATE_FORMAT = 1
INLINE_LIMIT = 512  # pickles this small live in the record: no object file, no fsync
_ATOMS = (int, float, complex, str, bytes, bool, type(None), range, slice)


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


def _pickler_class() -> type:
    import cloudpickle

    class _StatePickler(cloudpickle.CloudPickler):
        """cloudpickle that refuses lossy values and references other named variables."""

        def __init__(self, sink: Any, named: Mapping[int, str], own_name: str, **kwargs: Any):
            super().__init__(sink, protocol=5, **kwargs)
            self._named = named
            self._own_name = own_name
            self.references: set[str] = set()

        def persistent_id(self, obj: Any) -> str | None:
            name = self._named.get(id(obj))
            if name is None or name == self._own_name:
                return None
            self.references.add(name)
            return name

        def reducer_override(self, obj: Any) -> Any:
            # cloudpickle would silently turn an open file into a StringIO and dill would reopen
            # it (truncating a 'w' file): refusing is better than a value that comes back different.
            if isinstance(obj, io.IOBase):
                _refuse("an open file cannot be stored; reopen it after restoring")
            if isinstance(obj, types.GeneratorType):
                _refuse("a generator cannot be stored; rebuild it after restoring")
            if isinstance(obj, types.FrameType):
                _refuse("a stack frame cannot be stored")
            if type(obj).__module__ == "torch" and type(obj).__name__ in ("Tensor", "Parameter"):
                device = getattr(obj, "device", None)
                if device is not None and getattr(device, "type", "cpu") != "cpu":
                    _refuse(f"a tensor on {device} cannot be stored; move it to the CPU first")
            return super().reducer_override(obj)

    return _StatePickler


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


def snapshot(
    store: Store,
    values: Mapping[str, Any],
    *,
    imports: Mapping[str, str] | None = None,
    secret_names: Iterable[str] = (),
    secret_values: Iterable[str] = (),
    known: dict[str, tuple[int, dict[str, Any]]] | None = None,
) -> Snapshot:
    """Store every value; unchanged content costs a hash and no new bytes.

    `secret_values` are strings that must never be written: a variable whose pickle contains
    one is reported as unstored instead.
    """
    result = Snapshot(imports=dict(imports or {}), secrets=list(secret_names))
    needles = encoded_secrets(secret_values)
    pickler_class = _pickler_class()
    named: dict[int, str] = {}
    for name, value in values.items():
        if isinstance(value, _ATOMS) or _is_by_reference(value):
            continue
        named.setdefault(id(value), name)

    for name, value in values.items():
        canonical = named.get(id(value))
        if canonical is not None and canonical != name:
            result.variables[name] = {"type": _type_name(value), "alias_of": canonical}
            continue
        try:
            entry = _store_value(store, pickler_class, name, value, named, needles, result)
        except UnstorableError as error:
            result.unstored[name] = str(error)
            continue
        except StoreError:  # the store cannot take it (disk full): no variable's fault
            raise
        except Exception as error:  # pickling arbitrary user objects can raise anything
            result.unstored[name] = f"cannot be pickled: {type(error).__name__}: {error}"[:300]
            continue
        result.variables[name] = entry

    _break_reference_cycles(store, pickler_class, values, result, needles)
    _drop_dangling(result)
    return result


def _store_value(
    store: Store,
    pickler_class: type,
    name: str,
    value: Any,
    named: Mapping[int, str],
    needles: list[bytes],
    result: Snapshot,
) -> dict[str, Any]:
    buffers: list[pickle.PickleBuffer] = []
    sink = io.BytesIO()
    pickler = pickler_class(sink, named, name, buffer_callback=buffers.append)
    pickler.dump(value)
    payload = sink.getbuffer()
    flat = payload.tobytes() if needles else b""  # `bytes in memoryview` is not a substring test
    for needle in needles:
        if needle in flat:
            raise UnstorableError("holds a credential value, so it is not stored")
    content = xxhash.xxh3_128()
    size = len(payload)
    pickle_hash = xxhash.xxh3_128_hexdigest(payload)
    inline = len(payload) <= INLINE_LIMIT
    if inline:
        result.new_bytes += len(payload)  # it travels inside the new record
    elif not store.has_object(pickle_hash):
        _put(store, payload, pickle_hash)
        result.new_bytes += len(payload)
    content.update(pickle_hash.encode())
    chunk_lists: list[list[str]] = []
    reach = max((len(needle) for needle in needles), default=1) - 1
    for buffer in buffers:
        raw = buffer.raw()
        chunks: list[str] = []
        for start, stop in _chunk_spans(buffer, raw.nbytes):
            piece = raw[start:stop]
            digest = xxhash.xxh3_128_hexdigest(piece)
            if not store.has_object(digest):
                # out-of-band buffers (numpy arrays, Arrow strings) can hold a secret too
                around = raw[max(0, start - reach) : stop + reach].tobytes() if needles else b""
                if any(needle in around for needle in needles):
                    raise UnstorableError("holds a credential value, so it is not stored")
                _put(store, piece, digest)
                result.new_bytes += piece.nbytes
            chunks.append(digest)
            content.update(digest.encode())
        size += raw.nbytes
        chunk_lists.append(chunks)
        content.update(b"|")
    result.total_bytes += size
    entry: dict[str, Any] = {
        "type": _type_name(value),
        "size": size,
        "hash": content.hexdigest(),
        "pickle": pickle_hash,
    }
    if inline:
        entry["inline"] = base64.b64encode(payload).decode()
    if chunk_lists:
        entry["buffers"] = chunk_lists
    if pickler.references:
        entry["refs"] = sorted(pickler.references)
    return entry


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


def _break_reference_cycles(
    store: Store,
    pickler_class: type,
    values: Mapping[str, Any],
    result: Snapshot,
    needles: list[bytes],
) -> None:
    """Variables referring to each other in a cycle are re-stored without the references."""
    for name in list(result.variables):
        if _reaches(result.variables, name, name):
            entry = _store_value(store, pickler_class, name, values[name], {}, needles, result)
            result.variables[name] = entry


def _reaches(variables: Mapping[str, dict[str, Any]], start: str, target: str) -> bool:
    seen: set[str] = set()
    stack = list(variables.get(start, {}).get("refs", ()))
    while stack:
        current = stack.pop()
        if current == target:
            return True
        if current in seen:
            continue
        seen.add(current)
        stack.extend(variables.get(current, {}).get("refs", ()))
    return False


def _drop_dangling(result: Snapshot) -> None:
    """A variable referring to one that could not be stored cannot be loaded either."""
    changed = True
    while changed:
        changed = False
        for name, entry in list(result.variables.items()):
            needed = list(entry.get("refs", ())) + (
                [entry["alias_of"]] if "alias_of" in entry else []
            )
            broken = [other for other in needed if other not in result.variables]
            if broken:
                del result.variables[name]
                result.unstored[name] = f"refers to {broken[0]}, which was not stored"
                changed = True


def entry_objects(entry: Mapping[str, Any]) -> list[str]:
    """Every object hash one variable's entry needs."""
    hashes = [entry["pickle"]] if "pickle" in entry and "inline" not in entry else []
    for chunks in entry.get("buffers", ()):
        hashes.extend(chunks)
    return hashes


class StateLoader:
    """Loads variables of one record's state on demand, resolving shared references."""

    def __init__(self, store: Store, state: Mapping[str, Any]) -> None:
        self._store = store
        self._entries: Mapping[str, dict[str, Any]] = state.get("variables", {})
        self._loaded: dict[str, Any] = {}

    def names(self) -> list[str]:
        return list(self._entries)

    def dependencies(self, name: str) -> list[str]:
        entry = self._entries[name]
        return list(entry.get("refs", ())) + ([entry["alias_of"]] if "alias_of" in entry else [])

    def load(self, name: str) -> Any:
        """One variable's value, verified chunk by chunk against its recorded hashes."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries[name]
        value = self.load(entry["alias_of"]) if "alias_of" in entry else self._unpickle(name, entry)
        self._loaded[name] = value
        return value

    def _unpickle(self, name: str, entry: Mapping[str, Any]) -> Any:
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
        buffers = []
        for chunks in entry.get("buffers", ()):
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
        if content.hexdigest() != entry.get("hash"):
            from .errors import IntegrityError

            raise IntegrityError(
                f"variable {name} does not match its recorded hash; "
                "run `nbexp fsck` to see what is affected"
            )
        resolve: Callable[[str], Any] = self.load
        unpickler = pickle.Unpickler(io.BytesIO(payload), buffers=buffers)
        unpickler.persistent_load = resolve  # type: ignore[method-assign]
        return unpickler.load()
