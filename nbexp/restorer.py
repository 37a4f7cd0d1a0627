"""Putting a recorded experiment's variables back into a live namespace, with a report.

Each variable is loaded from its verified chunks (variables that share objects load together,
as one group, so the sharing comes back); one that fails (missing or corrupt object,
unpicklable in this environment) is reported and skipped while the rest are restored, as
IPython's storemagic does. Variables that could not be stored at record time can be rebuilt,
only when asked, by replaying the statement of the experiment that assigned them.
"""

from __future__ import annotations

import ast
import html
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NbexpError
from .state import StateLoader

if TYPE_CHECKING:  # a restore imports only what it uses: it starts many fresh kernels
    from .record import Experiment
    from .store import Store
    from .subrecords import StateRef


@dataclass
class RestoreReport:
    """What a restore did: restored, skipped (with why), overwritten live values, recomputed."""

    experiment: str
    restored: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    overwritten: list[str] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"restored {len(self.restored)} variable{'' if len(self.restored) == 1 else 's'} "
            f"from {self.experiment}: {', '.join(self.restored) or '—'}"
        ]
        if self.imports:
            lines.append(f"  re-imported: {', '.join(self.imports)}")
        if self.recomputed:
            lines.append(f"  recomputed by replaying their code: {', '.join(self.recomputed)}")
        if self.overwritten:
            lines.append(f"  overwrote live values of: {', '.join(self.overwritten)}")
        for name, reason in self.skipped.items():
            lines.append(f"  skipped {name}: {reason}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def _state(experiment: Experiment) -> StateRef:
    if not experiment.state:
        raise NbexpError(
            f"{experiment.name} ({experiment.short_id}) has no recorded state "
            "(it ran with --no-state); rerun it without --no-state to be able to restore it"
        )
    return experiment.state


def _require_trusted(store: Store, experiment: Experiment) -> None:
    """Pulled state unpickles others' bytes: only from a trusted remote (the remote module,
    and what it imports, is loaded only for a pulled experiment)."""
    if store.origin(experiment.id) is not None:
        from .remote import require_trusted

        require_trusted(store, experiment)


def restore_into(
    namespace: dict[str, Any],
    store: Store,
    experiment: Experiment,
    names: Iterable[str] | None = None,
    *,
    recompute: bool = False,
) -> RestoreReport:
    """Load the experiment's variables (all, or `names`) and bind them in `namespace`."""
    state = _state(experiment)
    _require_trusted(store, experiment)
    loader = StateLoader(store, state)
    stored = loader.names()
    unstored: Mapping[str, str] = state.get("unstored", {})
    imports: Mapping[str, str] = state.get("imports", {})
    secrets = set(state.get("secrets", ()))
    wanted = list(names) if names else [*imports, *stored, *unstored]
    report = RestoreReport(experiment=f"{experiment.name} ({experiment.short_id})")
    values: dict[str, Any] = {}
    for name in wanted:
        if name in imports:
            try:
                exec(imports[name], namespace)
                report.imports.append(name)
            except Exception as error:
                report.skipped[name] = f"`{imports[name]}` failed: {type(error).__name__}: {error}"
        elif name in stored:
            try:
                values[name] = loader.load(name)
            except NbexpError as error:  # ours end with what to do: never cut short
                report.skipped[name] = f"{type(error).__name__}: {error}"
            except Exception as error:  # any one variable may fail; the rest still restore
                report.skipped[name] = f"{type(error).__name__}: {error}"[:300]
        elif name in unstored:
            report.skipped[name] = f"was not stored: {unstored[name]}"
        elif name in secrets:
            report.skipped[name] = "looks like a credential, so it was never recorded"
        else:
            report.skipped[name] = f"not a variable of {experiment.name}"
    if names:
        report.notes.extend(_partial_groups(loader, values))
    for name, value in values.items():
        if name in namespace and namespace[name] is not value:
            report.overwritten.append(name)
        namespace[name] = value
        report.restored.append(name)
    if recompute:
        for name in [n for n in wanted if n in unstored]:
            statement = assigning_statement(experiment, name)
            if statement is None:
                report.skipped[name] = (
                    f"was not stored ({unstored[name]}) and no statement assigns it"
                )
                continue
            from .watcher import refusing_writes

            try:
                with refusing_writes():
                    exec(compile(statement, f"<recompute {name}>", "exec"), namespace)
            except Exception as error:
                report.skipped[name] = f"recomputing `{statement.strip()}` failed: {error}"
                continue
            report.skipped.pop(name, None)
            report.recomputed.append(name)
    return report


def _partial_groups(loader: StateLoader, values: Mapping[str, Any]) -> list[str]:
    """Variables stored together share objects; restoring only some of them gives those
    objects to the restored ones alone (the live others keep their own). Say so, once per group:
    only the names asked for are bound, since binding the rest would silently overwrite them."""
    notes: list[str] = []
    seen: set[str] = set()
    for name in values:
        group = loader.group_of(name)
        left = [other for other in group if other not in values]
        if not left or group[0] in seen:
            continue
        seen.add(group[0])
        asked = [other for other in group if other in values]
        notes.append(
            f"{', '.join(asked)} shared objects with {', '.join(left)} when recorded; restore "
            f"them together (`%exp_restore REF {' '.join(group)}`) to keep that sharing"
        )
    return notes


def assigning_statement(experiment: Experiment, name: str) -> str | None:
    """The source of the last top-level statement that binds `name` in the run or its history."""
    found: str | None = None
    for source in (*experiment.code.history, experiment.code.source):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for statement in tree.body:
            if name in _bound_names(statement):
                found = ast.get_source_segment(source, statement) or found
    return found


def _bound_names(statement: ast.stmt) -> set[str]:
    targets: list[ast.AST] = []
    if isinstance(statement, ast.Assign):
        targets = list(statement.targets)
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
        targets = [statement.target]
    elif isinstance(statement, (ast.With, ast.For)):
        targets = [
            item.optional_vars for item in getattr(statement, "items", []) if item.optional_vars
        ]
        if isinstance(statement, ast.For):
            targets.append(statement.target)
    elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    names: set[str] = set()
    for target in targets:
        names.update(node.id for node in ast.walk(target) if isinstance(node, ast.Name))
    return names


class LazyNamespace(Mapping[str, Any]):
    """An experiment's variables, each loaded (and verified) on first access.

    `old = nbexp.load("rf-v1"); old.model.predict(X)` — the live kernel is left untouched.
    """

    def __init__(self, store: Store, experiment: Experiment, names: Iterable[str] | None = None):
        state = _state(experiment)
        _require_trusted(store, experiment)
        self._experiment = experiment
        self._store = store
        self._loader = StateLoader(store, state)
        available = self._loader.names()
        if names is not None:
            wanted = list(names)
            missing = [name for name in wanted if name not in available]
            if missing:
                raise NbexpError(
                    f"{experiment.name} has no stored variable {missing[0]!r}; "
                    f"it has: {', '.join(available) or 'none'}"
                )
            available = wanted
        self._names = available

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickles as a reference to the experiment, so it can itself be snapshotted."""
        return (_reload, (str(self._store.root), self._experiment.id, self._names))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{self._experiment.name} has no stored variable {name!r}; "
                f"it has: {', '.join(self._names) or 'none'}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        try:
            return self._loader.load(name)
        except NbexpError as error:  # say which variable: the store's message names an object
            experiment = self._experiment
            raise type(error)(
                f"variable {name!r} of {experiment.name} ({experiment.short_id}) cannot be "
                f"loaded: {error}"
            ) from error

    def __contains__(self, name: object) -> bool:  # Mapping's default would load the value
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __dir__(self) -> list[str]:
        return sorted(set(self._names) | set(super().__dir__()))

    def __repr__(self) -> str:
        return (
            f"<variables of {self._experiment.name} ({self._experiment.short_id}): "
            f"{', '.join(self._names)}>"
        )


def _reload(store_root: str, experiment_id: str, names: list[str]) -> LazyNamespace:
    from .store import open_store

    store = open_store(store_root)
    return LazyNamespace(store, store.load(experiment_id), names)
