"""The typed parts of a record: a data input, an artifact, the state and one variable in it.

Each part is the JSON object the record holds, exactly as written (so a record's bytes, and
so its id, never change however it is read or passed on), seen through typed, read-only
attributes that mypy checks: `item.path`, `state.variables["model"].buffers`. A part is
also the read-only mapping of that JSON (`item["hash"]`, `dict(item)`), which is what the
published schema (`schema/record-v1.json`) describes and what older code and plain JSON
tools read; keys this version does not know travel along untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypedDict, TypeVar

_P = TypeVar("_P", bound="Part")


class Part(Mapping[str, Any]):
    """One JSON object of a record, immutable, with typed attributes in subclasses."""

    __slots__ = ("_json",)
    _json: dict[str, Any]

    def __init__(self, body: Mapping[str, Any]) -> None:
        if not isinstance(body, Mapping):
            raise TypeError(f"{type(self).__name__} is read from a JSON object, not {body!r}")
        object.__setattr__(self, "_json", dict(body))

    @classmethod
    def from_json(cls: type[_P], body: Mapping[str, Any]) -> _P:
        """The part over `body` (a part already is one: returned as it is)."""
        return body if isinstance(body, cls) else cls(body)

    def to_json(self) -> dict[str, Any]:
        """The JSON object, as written in the record (a shallow copy)."""
        return dict(self._json)

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (records are never changed)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._json!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._json,))

    def _text(self, key: str) -> str | None:
        value = self._json.get(key)
        return None if value is None else str(value)

    def _number(self, key: str) -> int | None:
        value = self._json.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class DataInput(Part):
    """Data the run read: a file (`kind` "file": path, size, and for tables rows, columns,
    dtypes, a per-column profile) or a variable of the kernel (`kind` "variable": name,
    type, shape, dtypes, profile); `hash` is its content hash. `dvc`: DVC's md5 of a tracked
    file."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        return str(self._json.get("kind", ""))

    @property
    def hash(self) -> str:
        return str(self._json.get("hash", ""))

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    @property
    def is_variable(self) -> bool:
        return self.kind == "variable"

    @property
    def path(self) -> str | None:
        """The file as the run named it (relative to its working folder)."""
        return self._text("path")

    @property
    def abspath(self) -> str | None:
        return self._text("abspath")

    @property
    def name(self) -> str | None:
        """The variable's name."""
        return self._text("name")

    @property
    def label(self) -> str:
        """How to name it to a user: the file's path or the variable's name."""
        return self.path or self.name or self.hash[:12]

    @property
    def size(self) -> int | None:
        return self._number("size")

    @property
    def type(self) -> str | None:
        return self._text("type")

    @property
    def format(self) -> str | None:
        return self._text("format")

    @property
    def rows(self) -> int | None:
        return self._number("rows")

    @property
    def columns(self) -> list[str]:
        return [str(column) for column in self._json.get("columns") or ()]

    @property
    def shape(self) -> tuple[int, ...] | None:
        shape = self._json.get("shape")
        return None if shape is None else tuple(int(size) for size in shape)

    @property
    def dtypes(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self._json.get("dtypes") or {}).items()}

    @property
    def profile(self) -> dict[str, dict[str, Any]]:
        """Column → its recorded profile (quantiles, counts): what drift is computed from."""
        return dict(self._json.get("profile") or {})

    @property
    def profile_error(self) -> str | None:
        return self._text("profile_error")

    @property
    def dvc(self) -> dict[str, Any] | None:
        dvc = self._json.get("dvc")
        return dict(dvc) if isinstance(dvc, Mapping) else None


class Artifact(Part):
    """A file the run wrote, stored as an object: its path as written and its hash."""

    __slots__ = ()

    @property
    def path(self) -> str:
        return str(self._json.get("path", ""))

    @property
    def abspath(self) -> str | None:
        return self._text("abspath")

    @property
    def hash(self) -> str:
        return str(self._json.get("hash", ""))

    @property
    def size(self) -> int | None:
        return self._number("size")


class VariableRef(Part):
    """One variable of the state: stored (`pickle`, out-of-band `buffers` in chunks, or the
    pickle `inline`; `members` when it was pickled with the variables sharing its objects),
    stored in another's group (`in_group`), or another name for one (`alias_of`)."""

    __slots__ = ()

    @property
    def type(self) -> str:
        return str(self._json.get("type", ""))

    @property
    def size(self) -> int | None:
        return self._number("size")

    @property
    def hash(self) -> str | None:
        return self._text("hash")

    @property
    def pickle(self) -> str | None:
        return self._text("pickle")

    @property
    def inline(self) -> str | None:
        return self._text("inline")

    @property
    def buffers(self) -> list[list[str]]:
        return [list(chunks) for chunks in self._json.get("buffers", ())]

    @property
    def members(self) -> list[str]:
        return list(self._json.get("members", ()))

    @property
    def in_group(self) -> str | None:
        return self._text("in_group")

    @property
    def alias_of(self) -> str | None:
        return self._text("alias_of")

    def object_order(self) -> list[str]:
        """The objects holding this variable, in order: its pickle (unless inline), then
        each buffer's chunks in sequence (format 1's `objects` first)."""
        order = [str(digest) for digest in self._json.get("objects", ())]
        if self.pickle and self.inline is None:
            order.append(self.pickle)
        for chunks in self.buffers:
            order += chunks
        return order


class StateRef(Part):
    """The kernel's variables at the end of the run: name → `VariableRef`, and what was not
    stored (name → why), bound by imports, or withheld as a secret."""

    __slots__ = ()

    @property
    def format(self) -> int:
        return int(self._json.get("format", 1))

    @property
    def variables(self) -> dict[str, VariableRef]:
        return {
            str(name): VariableRef.from_json(info)
            for name, info in (self._json.get("variables") or {}).items()
        }

    @property
    def unstored(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self._json.get("unstored") or {}).items()}

    @property
    def imports(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self._json.get("imports") or {}).items()}

    @property
    def secrets(self) -> list[str]:
        return [str(name) for name in self._json.get("secrets") or ()]

    @property
    def manifest(self) -> str | None:
        return self._text("manifest")

    @property
    def new_bytes(self) -> int | None:
        return self._number("new_bytes")

    @property
    def total_bytes(self) -> int | None:
        return self._number("total_bytes")

    def object_order(self) -> list[str]:
        """Every object the state references, in order (manifest, then each variable's)."""
        order = [self.manifest] if self.manifest else []
        for info in self.variables.values():
            order += info.object_order()
        return order


class IndexRow(TypedDict):
    """One experiment as the index lists it (`api.rows`): what tables, the panel, plots and
    `status` show without reading its record."""

    id: str
    name: str
    created: str
    status: str
    duration: float | None
    note: str | None
    tags: list[str]
    params: dict[str, Any]
    metrics: dict[str, Any]
    notebook: str | None
    sweep: str | None
    origin: str | None
