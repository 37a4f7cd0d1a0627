"""The experiment record: a frozen, versioned description of one run, to and from JSON.

A record is written once and never changed. Large things (variables, files, figures) are
not inside it: it names them by content hash and the store keeps the bytes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import RecordError
from .subrecords import Artifact, DataInput, StateRef, VariableRef

SCHEMA_VERSION = 1
SHORT_ID_LENGTH = 8

# Upgrades of older record bodies, keyed by the schema version each one reads: MIGRATIONS[n]
# turns a version-n body into a version-(n + 1) body. Records on disk are never rewritten (their
# id is the hash of their bytes); they are upgraded in memory each time they are read. v1 is
# the first schema, so there is nothing to migrate yet: a version below 1 is refused.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_EXPECTATION_FAILED = "expectation-failed"
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_EXPECTATION_FAILED)


def encode_value(value: Any) -> Any:
    """A user value made strict JSON: non-finite floats become {"$float": "nan"|"inf"|"-inf"}."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, dict):
        return {str(key): encode_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(item) for item in value]
    return value


def decode_value(value: Any) -> Any:
    """The inverse of encode_value."""
    if isinstance(value, dict):
        if len(value) == 1 and "$float" in value:
            return float(value["$float"])
        return {key: decode_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    return value


@dataclass(frozen=True)
class Code:
    """What ran: the cell as typed, the source that actually executed, and where it came from."""

    cell: str
    source: str
    notebook: str | None = None
    notebook_hash: str | None = None
    history: tuple[str, ...] = ()
    execution_count: int | None = None
    # history cells that raised, by execution number: {"3": {type, error, line, ran}};
    # written only when there are some, so records without failures keep their bytes
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """How the run ended."""

    status: str
    started: str
    duration: float
    stdout: str = ""
    stderr: str = ""
    error: dict[str, Any] | None = None
    figures: tuple[str, ...] = ()
    output_truncated: bool = False


@dataclass(frozen=True)
class Experiment:
    """One recorded run. Immutable; `id` is unique, `name` is for humans and may repeat."""

    id: str
    name: str
    created: str
    code: Code
    outcome: Outcome
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[list[Any]]] = field(default_factory=dict)
    # typed parts (`subrecords`); plain JSON objects given here are read into them
    data: list[DataInput] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] | None = None
    state: StateRef | None = None
    expectations: list[dict[str, Any]] = field(default_factory=list)
    tags: tuple[str, ...] = ()
    note: str | None = None
    links: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # the JSON objects of older callers and of from_dict become typed parts (their JSON,
        # and so the record's bytes and id, unchanged)
        object.__setattr__(self, "data", [DataInput.from_json(item) for item in self.data])
        object.__setattr__(self, "artifacts", [Artifact.from_json(item) for item in self.artifacts])
        if self.state is not None:
            object.__setattr__(self, "state", StateRef.from_json(self.state))

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LENGTH]

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def variables(self) -> dict[str, VariableRef]:
        """The recorded variables: name → its `VariableRef` (type, size, hash, ...); empty
        with --no-state."""
        return {} if self.state is None else self.state.variables

    def with_tags(self, tags: tuple[str, ...]) -> Experiment:
        """The same record seen with a different tag set (tags live beside the record)."""
        return Experiment(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "tags": tags})

    def to_dict(self) -> dict[str, Any]:
        """The JSON body. Shallow where it can be: callers must not mutate nested values."""
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["code"] = {f.name: getattr(self.code, f.name) for f in fields(self.code)}
        body["code"]["history"] = list(self.code.history)
        if not self.code.failed:
            del body["code"]["failed"]
        body["outcome"] = {f.name: getattr(self.outcome, f.name) for f in fields(self.outcome)}
        body["outcome"]["figures"] = list(self.outcome.figures)
        body["tags"] = list(self.tags)
        body["data"] = [item.to_json() for item in self.data]
        body["artifacts"] = [item.to_json() for item in self.artifacts]
        body["state"] = None if self.state is None else self.state.to_json()
        for key in ("params", "metrics", "series", "expectations"):
            body[key] = encode_value(body[key])
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Experiment:
        if not isinstance(body, dict):
            raise RecordError("a record must be a JSON object; it was not written by nbexp")
        short = str(body.get("id", "?"))[:SHORT_ID_LENGTH]
        version = body.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int):  # True is an int too
            raise RecordError(
                f"record {short} has no valid schema_version ({version!r}): it is damaged or "
                "was not written by nbexp; run `nbexp fsck` to list damaged records"
            )
        if version > SCHEMA_VERSION:
            raise RecordError(
                f"record {short} uses record schema "
                f"{version}, newer than this nbexp understands ({SCHEMA_VERSION}); "
                "upgrade nbexp: pip install -U nbexp"
            )
        if version < SCHEMA_VERSION:
            oldest = SCHEMA_VERSION
            while oldest - 1 in MIGRATIONS:
                oldest -= 1
            if version < oldest:
                readable = f"{oldest} to {SCHEMA_VERSION}" if oldest < SCHEMA_VERSION else oldest
                raise RecordError(
                    f"record {short} uses record schema {version}, which this nbexp cannot read "
                    f"(it reads schema {readable}): the record is damaged or was not written by "
                    "nbexp; run `nbexp fsck` to list damaged records"
                )
            body = copy.deepcopy(body)  # the caller's body still hashes to the record's id
            while version < SCHEMA_VERSION:
                body = MIGRATIONS[version](body)
                version += 1
                body["schema_version"] = version
        try:
            code = body["code"]
            outcome = body["outcome"]
            return cls(
                id=body["id"],
                name=body["name"],
                created=body["created"],
                code=Code(**{**code, "history": tuple(code.get("history", ()))}),
                outcome=Outcome(**{**outcome, "figures": tuple(outcome.get("figures", ()))}),
                params=decode_value(body.get("params", {})),
                metrics=decode_value(body.get("metrics", {})),
                series=decode_value(body.get("series", {})),
                data=list(body.get("data", [])),
                artifacts=list(body.get("artifacts", [])),
                env=dict(body.get("env", {})),
                git=body.get("git"),
                state=body.get("state"),
                expectations=decode_value(body.get("expectations", [])),
                tags=tuple(body.get("tags", ())),
                note=body.get("note"),
                links=dict(body.get("links", {})),
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # damaged fields
            raise RecordError(
                f"record {str(body.get('id', '?'))[:SHORT_ID_LENGTH]} is malformed ({error}); "
                "run `nbexp fsck` to list damaged records"
            ) from error

    def object_hashes(self) -> set[str]:
        """Every object this record references (for gc, fsck and push)."""
        return set(self.object_order())

    def object_order(self) -> list[str]:
        """The objects this record references, once each, in the order it names them: a
        variable's buffer chunks in sequence (a pull packs them so, and restore then maps
        them as one range)."""
        order = [item.hash for item in self.artifacts if item.hash]
        order += self.outcome.figures
        if self.state is not None:
            order += self.state.object_order()
        return list(dict.fromkeys(order))

    def recorded_paths(self) -> list[str]:
        """Every file path this record names (data read, artifacts written, the notebook, the
        working folder): data its author wrote, checked before any reaches the file system."""
        paths = [path for item in self.data for path in (item.path, item.abspath) if path]
        paths += [path for item in self.artifacts for path in (item.path, item.abspath) if path]
        paths += [str(p) for p in (self.code.notebook, self.env.get("cwd")) if p]
        return paths

    def _repr_html_(self) -> str:
        from .show import html_view

        return html_view(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from .show import text_view

        printer.text(text_view(self) if not cycle else f"Experiment({self.short_id})")
