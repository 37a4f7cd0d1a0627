"""The store (SPEC §2, §5, §11): location, atomic immutable records, objects, index, references."""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import store as store_module
from nbexp.errors import IntegrityError, NbexpError, QueryError, RecordError, RefError, StoreError
from nbexp.record import Code, Experiment, Outcome
from nbexp.store import Store, find_store_root, open_store
from nbexp.store import index as store_index
from tests.conftest import run

_BASE_TIME = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def make_experiment(
    store: Store,
    name: str = "exp",
    *,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    minutes: int = 0,
    status: str = "ok",
    tags: tuple[str, ...] = (),
    save: bool = True,
) -> Experiment:
    """A minimal valid record, created `minutes` after a fixed base time, saved unless told not."""
    created = (_BASE_TIME + dt.timedelta(minutes=minutes)).isoformat(timespec="microseconds")
    draft = Experiment(
        id="",
        name=name,
        created=created,
        code=Code(cell=f"%%experiment {name}\nx = 1\n", source="x = 1\n"),
        outcome=Outcome(status=status, started=created, duration=0.5 + minutes),
        params=dict(params or {}),
        metrics=dict(metrics or {}),
        env={"python": "3", "platform": "test", "packages": {}},
        tags=tags,
    )
    experiment = replace(draft, id=Store.make_id(draft.to_dict()))
    if save:
        store.save(experiment)
    return experiment


def load_schema() -> dict[str, Any]:
    import importlib.resources

    text = (importlib.resources.files("nbexp") / "schema" / "record-v1.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_errors(body: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        load_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]


def record_files(store: Store) -> list[Path]:
    return sorted(store.records_dir.glob("*/*.json"))


@pytest.fixture
def store(project: Path) -> Store:
    store_module._stores.clear()
    return open_store()


# -- location ------------------------------------------------------------------------------


def _ancestors_clean(path: Path) -> bool:
    return not any(
        (folder / ".nbexp").is_dir() or (folder / ".git").exists() for folder in path.parents
    )


def test_store_is_in_the_working_directory_by_default(project: Path) -> None:
    if not _ancestors_clean(project):
        pytest.skip("an ancestor of the temp folder holds .nbexp or .git")
    (project / "sub").mkdir()
    os.chdir(project / "sub")
    assert find_store_root() == project / "sub" / ".nbexp"
    store = open_store()
    assert store.root == project / "sub" / ".nbexp"
    assert (store.root / "records").is_dir() and (store.root / "objects").is_dir()


def test_store_is_the_nearest_ancestor_holding_nbexp(project: Path) -> None:
    (project / ".git").mkdir()  # the git root is further up than the existing store
    (project / "a" / ".nbexp").mkdir(parents=True)
    (project / ".nbexp").mkdir()
    deep = project / "a" / "b" / "c"
    deep.mkdir(parents=True)
    os.chdir(deep)
    assert find_store_root() == project / "a" / ".nbexp"
    assert open_store().root == project / "a" / ".nbexp"


def test_store_is_at_the_git_root_when_no_store_exists(project: Path) -> None:
    (project / ".git").mkdir()
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    os.chdir(deep)
    assert find_store_root() == project / ".nbexp"
    assert not (deep / ".nbexp").exists()


def test_git_worktree_file_counts_as_a_git_root(project: Path) -> None:
    (project / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")
    (project / "nb").mkdir()
    os.chdir(project / "nb")
    assert find_store_root() == project / ".nbexp"


def test_nbexp_store_environment_variable_overrides(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".nbexp").mkdir()
    elsewhere = tmp_path / "shared" / "store"
    monkeypatch.setenv("NBEXP_STORE", str(elsewhere))
    assert find_store_root() == elsewhere
    store = open_store()
    assert store.root == elsewhere
    assert elsewhere.is_dir()  # created on first use
    experiment = make_experiment(store)
    assert store.record_path(experiment.id).is_file()
    assert not list((project / ".nbexp").rglob("*.json"))


def test_open_store_with_a_project_folder_or_a_store_folder(project: Path) -> None:
    other = project / "other"
    (other / "deep").mkdir(parents=True)
    (other / ".nbexp").mkdir()
    assert open_store(other / "deep").root == other / ".nbexp"
    assert open_store(other / ".nbexp").root == other / ".nbexp"


# -- records: atomic, immutable, schema, id ---------------------------------------------------


def test_records_are_written_atomically(store: Store) -> None:
    experiment = make_experiment(store, "one")
    assert record_files(store) == [store.record_path(experiment.id)]
    assert not list(store.records_dir.rglob("*.tmp"))
    assert list(store.tmp_dir.iterdir()) == []
    assert store.load(experiment.id) == experiment


def test_a_crash_during_save_leaves_no_half_written_record(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = make_experiment(store, "before")

    def power_cut(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.os, "replace", power_cut)
    doomed = make_experiment(store, "doomed", minutes=1, save=False)
    with pytest.raises(StoreError, match=r"the disk is full .*; free some space"):
        store.save(doomed)
    monkeypatch.undo()
    assert record_files(store) == [store.record_path(before.id)]
    assert list(store.tmp_dir.iterdir()) == []
    assert store.load(before.id) == before
    assert [row["name"] for row in store.rows()] == ["before"]


def test_saving_an_existing_record_is_refused(store: Store) -> None:
    experiment = make_experiment(store)
    original = store.record_path(experiment.id).read_bytes()
    with pytest.raises(StoreError, match="already exists"):
        store.save(experiment)
    assert store.record_path(experiment.id).read_bytes() == original


def test_recorded_experiment_validates_against_the_schema_and_id_is_its_hash(ip: Any) -> None:
    run(ip, "import numpy as np\nbase = np.arange(100)")
    result = run(
        ip,
        '%%experiment schema-check -t first --note "a note" --expect "acc > 0.5"\n'
        "lr = 0.1\nlayers = [64, 32]\nloss_kind = 'l2'\n"
        "acc = 0.9 + 0.0\nbad = float('nan')\nhuge = float('inf')\nneg = -float('inf')\n"
        "view = base\nnew = base * 2\n"
        "import nbexp\nnbexp.log('loss', 0.5)\nnbexp.log('loss', float('nan'))\n"
        "print('hello')\n",
    )
    assert result.success
    store = open_store()
    (path,) = record_files(store)
    body = json.loads(path.read_bytes())
    assert schema_errors(body) == []
    assert body["id"] == path.stem == Store.make_id(body)
    assert body["metrics"]["bad"] == {"$float": "nan"}
    assert body["metrics"]["huge"] == {"$float": "inf"}
    assert body["metrics"]["neg"] == {"$float": "-inf"}
    assert body["state"]["variables"]["view"].get("alias_of") == "base"
    assert path.read_bytes().endswith(b"\n")
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    # a failed run validates too, with its error
    assert not run(ip, "%%experiment broken --no-state\nx = 1\n1 / 0\n").success
    failed = store.get("broken").to_dict()
    assert failed["outcome"]["status"] == "failed"
    assert failed["state"] is None
    assert schema_errors(failed) == []


def test_typed_parts_read_a_real_record_and_write_its_bytes_back_unchanged(
    ip: Any, project: Path
) -> None:
    """Data inputs, artifacts and the state are typed parts over the record's own JSON: a
    record read and written again is byte for byte the file, so its id never changes."""
    from nbexp.hashing import canonical_json
    from nbexp.subrecords import Artifact, DataInput, StateRef, VariableRef

    (project / "in.csv").write_text("a,b\n1,2\n3,4\n")
    run(ip, "import numpy as np\nbase = np.arange(100_000)")
    result = run(
        ip,
        "%%experiment parts\nimport pandas as pd\nframe = pd.read_csv('in.csv')\n"
        "total = float(base.sum())\nopen('out.txt', 'w').write('done')\nview = base\n",
    )
    assert result.success
    store = open_store()
    experiment = store.get("parts")
    (path,) = record_files(store)
    assert canonical_json(experiment.to_dict()) + b"\n" == path.read_bytes()
    assert Store.make_id(experiment.to_dict()) == experiment.id

    (csv,) = [item for item in experiment.data if item.is_file]
    assert isinstance(csv, DataInput) and csv.path == "in.csv" and csv.rows == 2
    assert csv.columns == ["a", "b"] and set(csv.profile) == {"a", "b"}
    assert csv["hash"] == csv.hash and dict(csv) == csv.to_json()  # the JSON, as a mapping
    (read,) = [item for item in experiment.data if item.is_variable]
    assert read.name == "base" and read.shape == (100_000,) and read.label == "base"
    (written,) = experiment.artifacts
    assert isinstance(written, Artifact) and written.path == "out.txt" and written.size == 4
    assert isinstance(experiment.state, StateRef)
    variables = experiment.state.variables
    assert isinstance(variables["base"], VariableRef) and variables["view"].alias_of == "base"
    assert variables["base"].buffers and variables["base"].hash
    chunks = [digest for chunks in variables["base"].buffers for digest in chunks]
    order = experiment.object_order()
    assert set(order) == experiment.object_hashes() and written.hash in order
    assert [digest for digest in order if digest in chunks] == chunks  # in sequence
    with pytest.raises(AttributeError):
        written.path = "elsewhere"  # type: ignore[misc]


def test_typed_parts_keep_keys_this_version_does_not_know(store: Store) -> None:
    """A record written by another nbexp (extra keys, nulls) loads, and its JSON, id and
    bytes stay exactly as they were."""
    base = make_experiment(store, "plain", save=False).to_dict()
    body = {
        **base,
        "data": [
            {"kind": "file", "hash": "a" * 32, "path": "x.csv", "abspath": "/p/x.csv",
             "size": 3, "future": {"nested": [1, None]}, "format": None},
            {"kind": "variable", "hash": "b" * 32, "name": "df", "type": "DataFrame",
             "shape": [2, 1], "dtypes": {"c": "int64"}},
        ],
        "artifacts": [{"path": "m.bin", "abspath": "/p/m.bin", "hash": "c" * 32, "size": 1,
                       "mode": "0644"}],
        "state": {"format": 2, "variables": {"x": {"type": "int", "size": 28, "hash": "d" * 32,
                  "pickle": "e" * 32, "inline": "gAUu", "later": True}},
                  "unstored": {}, "imports": {}, "secrets": [], "unknown": 1},
    }  # fmt: skip
    body["id"] = Store.make_id(body)
    loaded = Experiment.from_dict(json.loads(json.dumps(body)))
    assert loaded.to_dict() == body and Store.make_id(loaded.to_dict()) == body["id"]
    assert loaded.data[0].format is None and loaded.data[0]["future"] == {"nested": [1, None]}
    assert loaded.data[1].shape == (2, 1) and loaded.data[1].dtypes == {"c": "int64"}
    assert loaded.artifacts[0]["mode"] == "0644"
    assert loaded.state is not None and loaded.state["unknown"] == 1
    assert loaded.state.variables["x"].object_order() == []  # inline: no object file
    assert loaded.object_hashes() == {"c" * 32}
    saved = store.save(loaded)
    assert store.record_bytes(saved.id) == canonical_json_line(body)


def canonical_json_line(body: dict[str, Any]) -> bytes:
    from nbexp.hashing import canonical_json

    return canonical_json(body) + b"\n"


def test_schema_rejects_what_nbexp_never_writes(store: Store) -> None:
    good = make_experiment(store, save=False).to_dict()
    assert schema_errors(good) == []
    for mutate in (
        lambda b: b.pop("outcome"),
        lambda b: b["outcome"].update(status="done"),
        lambda b: b["metrics"].update(x={"$float": "NaN"}),
        lambda b: b["metrics"].update(x={"$float": "nan", "other": 1}),
        lambda b: b.update(id="not-a-hash"),
        lambda b: b.update(state={"format": 1, "variables": {"x": {"type": "int"}}}),
        lambda b: b.update(unknown=1),
    ):
        body = json.loads(json.dumps(good))
        mutate(body)
        assert schema_errors(body), body


def test_schema_ships_inside_the_package() -> None:
    import importlib.resources

    resource = importlib.resources.files("nbexp") / "schema" / "record-v1.json"
    assert resource.is_file()
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_a_record_from_a_newer_nbexp_is_refused_with_upgrade_advice(store: Store) -> None:
    future = make_experiment(store, "future", save=False)
    future = replace(future, schema_version=2)
    future = replace(future, id=Store.make_id(future.to_dict()))
    store.save(future)
    with pytest.raises(RecordError, match=r"upgrade nbexp") as caught:
        store.get("future")
    assert "schema 2" in str(caught.value)
    assert "\n" not in str(caught.value)


# -- objects --------------------------------------------------------------------------------


def _object_files(store: Store) -> list[Path]:
    return [p for p in store.objects_dir.rglob("*") if p.is_file()]


def test_objects_are_stored_once(store: Store) -> None:
    first = store.put_bytes(b"same content" * 100)
    second = store.put_bytes(bytearray(b"same content" * 100))
    assert first == second
    assert len(_object_files(store)) == 1
    fresh = Store(store.root)  # a second process knows nothing in memory
    assert fresh.put_bytes(memoryview(b"same content" * 100)) == first
    assert len(_object_files(store)) == 1
    assert store.read_object(first) == b"same content" * 100
    assert list(store.tmp_dir.iterdir()) == []


def test_put_file_deduplicates_and_copies_back_identically(store: Store, project: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (project / "a.bin").write_bytes(data)
    (project / "b.bin").write_bytes(data)
    digest_a, size_a = store.put_file(project / "a.bin")
    digest_b, size_b = store.put_file(project / "b.bin")
    assert (digest_a, size_a) == (digest_b, size_b) == (store.put_bytes(data), len(data))
    assert len(_object_files(store)) == 1
    assert list(store.tmp_dir.iterdir()) == []
    store.copy_object_to(digest_a, project / "out.bin")
    assert (project / "out.bin").read_bytes() == data


def test_read_object_refuses_a_corrupted_object(store: Store) -> None:
    digest = store.put_bytes(b"precious bytes")
    path = store.object_path(digest)
    path.write_bytes(b"precious bytez")
    with pytest.raises(IntegrityError, match="corrupt") as caught:
        store.read_object(digest)
    assert "nbexp fsck" in str(caught.value)
    path.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.read_object(digest)


# -- fsck and reindex -------------------------------------------------------------------------


def test_fsck_is_clean_on_a_healthy_store(ip: Any) -> None:
    run(ip, "import numpy as np\nweights = np.ones(1000)")
    assert run(ip, "%%experiment a\nlr = 0.1\nscore = float(weights.sum())\n").success
    assert open_store().fsck() == []


def test_fsck_names_a_corrupted_state_object(ip: Any) -> None:
    run(ip, "import numpy as np\nweights = np.arange(1000.0)")
    assert run(ip, "%%experiment a\nlr = 0.1\n").success
    store = open_store()
    experiment = store.get("a")
    chunk = experiment.variables["weights"]["buffers"][0][0]
    assert chunk in experiment.object_hashes()
    path = store.object_path(chunk)
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    problems = store.fsck()
    assert [(p.kind, p.item) for p in problems] == [("object", chunk[:12])]
    assert "corrupt" in str(problems[0])
    assert experiment.short_id in str(problems[0])


def test_fsck_names_a_missing_object(store: Store) -> None:
    digest = store.put_bytes(b"artifact bytes")
    draft = make_experiment(store, save=False)
    draft = replace(draft, artifacts=[{"path": "m", "abspath": "/m", "hash": digest, "size": 14}])
    experiment = replace(draft, id=Store.make_id(draft.to_dict()))
    store.save(experiment)
    store.object_path(digest).unlink()
    (problem,) = store.fsck()
    assert problem.kind == "object" and problem.item == digest[:12]
    assert "missing" in problem.detail


def test_fsck_names_a_corrupted_record(store: Store) -> None:
    tampered = make_experiment(store, "tampered", metrics={"f1": 0.5})
    garbage = make_experiment(store, "garbage", minutes=1)
    healthy = make_experiment(store, "healthy", minutes=2)
    path = store.record_path(tampered.id)
    path.write_text(path.read_text().replace('"f1":0.5', '"f1":0.99'))
    store.record_path(garbage.id).write_bytes(b'{"schema_version": 1, "id": "tru')
    problems = {(p.kind, p.item): p.detail for p in store.fsck()}
    assert set(problems) == {("record", tampered.short_id), ("record", garbage.short_id)}
    assert "does not match its id" in problems[("record", tampered.short_id)]
    assert "unreadable" in problems[("record", garbage.short_id)]
    assert healthy.short_id not in str(problems)


def test_fsck_names_a_record_missing_from_the_index(store: Store) -> None:
    kept = make_experiment(store, "kept")
    lost = make_experiment(store, "lost", minutes=1)
    with sqlite3.connect(store.index_path) as connection:
        connection.execute("DELETE FROM experiments WHERE id = ?", (lost.id,))
    (problem,) = store.fsck()
    assert (problem.kind, problem.item) == ("index", lost.short_id)
    assert "reindex" in problem.detail
    assert kept.short_id not in str(problem)
    assert store.reindex() == 2
    assert store.fsck() == []


def test_reindex_rebuilds_a_deleted_index_with_the_same_rows(store: Store) -> None:
    for i in range(5):
        make_experiment(
            store,
            f"run-{i}",
            params={"depth": i},
            metrics={"f1": i / 10, "bad": math.nan},
            minutes=i,
            tags=("t",) if i % 2 else (),
        )
    store.add_tag(store.resolve("run-3"), "best")
    before = store.rows()
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(store.index_path) + suffix).unlink(missing_ok=True)
    store_module._stores.clear()
    fresh = open_store()  # a missing index is rebuilt on open
    assert len(fresh.rows()) == 5
    assert fresh.reindex() == 5
    after = fresh.rows()
    assert json.dumps(after, default=str, sort_keys=True) == json.dumps(
        before, default=str, sort_keys=True
    )
    assert fresh.get("best").name == "run-3"


def test_reindex_keeps_other_processes_connected(store: Store) -> None:
    make_experiment(store, "before")
    other = Store(store.root)  # e.g. `nbexp reindex` while this kernel keeps running
    assert other.reindex() == 1
    later = make_experiment(store, "after", minutes=1)
    assert [row["name"] for row in other.rows()] == ["after", "before"]
    assert Store(store.root).resolve("last") == later.id
    assert store.fsck() == []


def test_reindex_drops_rows_whose_record_is_gone_or_unreadable(store: Store) -> None:
    kept = make_experiment(store, "kept")
    removed = make_experiment(store, "removed", minutes=1)
    broken = make_experiment(store, "broken", minutes=2)
    store.record_path(removed.id).unlink()
    store.record_path(broken.id).write_text("{not json")
    assert store.reindex() == 1
    assert [row["id"] for row in store.rows()] == [kept.id]


def test_reindex_replaces_an_index_with_a_foreign_schema(store: Store) -> None:
    make_experiment(store, "one")
    store.close()
    store_module._stores.clear()
    for suffix in ("", "-wal", "-shm"):
        Path(str(store.index_path) + suffix).unlink(missing_ok=True)
    with sqlite3.connect(store.index_path) as connection:
        connection.execute("CREATE TABLE experiments (id TEXT, name TEXT, created TEXT)")
    connection.close()
    fresh = open_store()
    assert fresh.reindex() == 1
    assert [row["name"] for row in fresh.rows()] == ["one"]


# -- file-hash cache --------------------------------------------------------------------------


def test_file_hash_cache_skips_unchanged_files_and_rehashes_changed_ones(
    store: Store, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = store_index.hash_file

    def counting(path: Any) -> tuple[str, int]:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(store_index, "hash_file", counting)
    data = project / "train.csv"
    data.write_text("a,b\n1,2\n")
    first = store.file_hash(data)
    assert len(calls) == 1
    assert store.file_hash(data) == first
    assert store.file_hash(str(data)) == first
    assert Store(store.root).file_hash(data) == first  # the cache lives in the index
    assert len(calls) == 1
    stat = data.stat()
    data.write_text("a,b\n3,4\n")  # same size, new content
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = store.file_hash(data)
    assert len(calls) == 2
    assert second != first and second == real(data)


# -- references -------------------------------------------------------------------------------


def test_references(store: Store) -> None:
    a1 = make_experiment(store, "alpha", minutes=0)
    b = make_experiment(store, "beta", minutes=1, tags=("baseline",))
    a2 = make_experiment(store, "alpha", minutes=2, params={"v": 2})
    assert store.resolve("last") == a2.id
    assert store.resolve("last~0") == a2.id
    assert store.resolve("last~1") == b.id
    assert store.resolve("last~2") == a1.id
    with pytest.raises(RefError, match="holds 3 experiments"):
        store.resolve("last~3")
    assert store.resolve("alpha") == a2.id  # a name means its latest run
    assert store.resolve("beta") == b.id
    assert store.resolve(a1.id[:4]) == a1.id
    assert store.resolve(a1.id[:4].upper()) == a1.id
    assert store.resolve(a1.id) == a1.id
    assert store.resolve("baseline") == b.id
    store.add_tag(a1.id, "keep")
    assert store.resolve("keep") == a1.id
    assert store.get("keep").tags == ("keep",)
    with pytest.raises(RefError, match="too short") as short:
        store.resolve(a1.id[:3])
    assert "4" in str(short.value)
    with pytest.raises(RefError, match="no experiment matches `nope`") as unknown:
        store.resolve("nope")
    assert "nbexp list" in str(unknown.value)
    with pytest.raises(RefError, match="empty"):
        store.resolve("  ")


def _ambiguous_pair(store: Store) -> tuple[Experiment, Experiment, str]:
    seen: dict[str, Experiment] = {}
    for i in range(100_000):
        candidate = make_experiment(store, f"c{i}", minutes=i, save=False)
        prefix = candidate.id[:4]
        if prefix in seen:
            return seen[prefix], candidate, prefix
        seen[prefix] = candidate
    raise AssertionError("no shared prefix found")


def test_an_ambiguous_prefix_lists_the_candidates(store: Store) -> None:
    first, second, prefix = _ambiguous_pair(store)
    store.save(first)
    store.save(second)
    with pytest.raises(RefError, match="ambiguous") as caught:
        store.resolve(prefix)
    message = str(caught.value)
    assert first.id[:8] in message and second.id[:8] in message
    assert "\n" not in message
    longer = next(n for n in range(5, 33) if first.id[:n] != second.id[:n])
    assert store.resolve(first.id[:longer]) == first.id


def test_a_short_hex_looking_tag_still_resolves(store: Store) -> None:
    experiment = make_experiment(store, tags=("bad",))
    assert store.resolve("bad") == experiment.id
    assert nbexp.get("bad").id == experiment.id


def test_api_errors_are_nbexp_errors(store: Store) -> None:
    with pytest.raises(NbexpError):
        nbexp.get("last")
    with pytest.raises(QueryError):
        nbexp.experiments("metrics.f1 >")


# -- unwritable store -------------------------------------------------------------------------


def test_an_unwritable_store_is_one_clear_store_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0:
        blocker = project / "a-file"
        blocker.write_text("not a folder")
        monkeypatch.setenv("NBEXP_STORE", str(blocker / ".nbexp"))
    else:
        locked = project / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        monkeypatch.setenv("NBEXP_STORE", str(locked / ".nbexp"))
    try:
        with pytest.raises(StoreError) as caught:
            open_store()
    finally:
        if os.geteuid() != 0:
            (project / "locked").chmod(0o700)
    message = str(caught.value)
    assert "\n" not in message
    assert "cannot use the store" in message and "NBEXP_STORE" in message


# -- nbexp.experiments() ----------------------------------------------------------------------


def test_experiments_dataframe_columns_and_query(store: Store) -> None:
    make_experiment(store, "rf", params={"depth": 3}, metrics={"f1": 0.7}, minutes=0)
    make_experiment(
        store, "rf", params={"depth": 8, "loss": "l2"}, metrics={"f1": 0.9, "auc": 0.95}, minutes=1
    )
    make_experiment(store, "gb", params={"depth": 12}, metrics={"f1": 0.85}, minutes=2,
                    status="failed", tags=("slow",))  # fmt: skip
    frame = nbexp.experiments()
    assert list(frame.columns[:6]) == ["id", "name", "created", "status", "duration", "tags"]
    rest = list(frame.columns[6:])
    params = [c for c in rest if c.startswith("params.")]
    metrics = [c for c in rest if c.startswith("metrics.")]
    assert rest == params + metrics
    assert set(params) == {"params.depth", "params.loss"}
    assert set(metrics) == {"metrics.f1", "metrics.auc"}
    assert list(frame["name"]) == ["gb", "rf", "rf"]  # newest first
    assert list(frame["params.depth"]) == [12, 8, 3]
    assert frame["id"].str.len().eq(8).all()
    assert str(frame["created"].dt.tz) == "UTC"
    assert list(frame["tags"].iloc[0]) == ["slow"]

    good = nbexp.experiments("metrics.f1 > 0.8 and params.depth < 10")
    assert list(good["params.depth"]) == [8]
    assert list(nbexp.experiments('status == "failed"')["name"]) == ["gb"]
    assert list(nbexp.experiments('tags == "slow"')["name"]) == ["gb"]
    assert list(nbexp.experiments('params.loss in ["l1", "l2"]')["metrics.auc"]) == [0.95]
    assert len(nbexp.experiments("metrics.f1 > 2")) == 0
    assert list(nbexp.experiments(sort="metrics.f1")["metrics.f1"]) == [0.7, 0.85, 0.9]
    assert list(nbexp.experiments(sort="-params.depth")["params.depth"]) == [12, 8, 3]


def test_experiments_on_an_empty_store(store: Store) -> None:
    frame = nbexp.experiments()
    assert list(frame.columns) == ["id", "name", "created", "status", "duration", "tags"]
    assert len(frame) == 0


def test_non_finite_metrics_round_trip(store: Store) -> None:
    experiment = make_experiment(
        store, "odd", metrics={"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 1.5}
    )
    text = store.record_path(experiment.id).read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = store.get("odd")
    assert math.isnan(loaded.metrics["nan"])
    assert loaded.metrics["inf"] == math.inf and loaded.metrics["ninf"] == -math.inf
    assert loaded.metrics["ok"] == 1.5
    (row,) = store.rows()
    assert math.isnan(row["metrics"]["nan"]) and row["metrics"]["inf"] == math.inf
    frame = nbexp.experiments()
    assert math.isnan(frame["metrics.nan"].iloc[0])
    assert frame["metrics.ninf"].iloc[0] == -math.inf
    assert store.fsck() == []


def test_non_finite_metric_recorded_through_the_magic(ip: Any) -> None:
    cell = "%%experiment nf --no-state\nhuge = 1e999\nscore = float('nan')\nbest = float('inf')\n"
    assert run(ip, cell).success
    loaded = nbexp.get("nf")
    assert math.isnan(loaded.metrics["score"]) and loaded.metrics["best"] == math.inf
    assert loaded.params["huge"] == math.inf  # a literal: a param, encoded the same way
    assert schema_errors(loaded.to_dict()) == []


def test_listing_columns_keep_types_across_mixed_values_and_reindex(project):
    from nbexp import api

    store = open_store()
    first = _listing_experiment(store, "a", {"lr": 0.1, "layers": 2}, {"acc": 0.5})
    second = _listing_experiment(store, "b", {"lr": 0.2, "layers": [64, 32]}, {"acc": float("nan")})
    names, rows = store.table()
    by_name = {row[names.index("name")]: row for row in rows}
    assert by_name["a"][names.index("params.layers")] == 2
    assert by_name["b"][names.index("params.layers")] == [64, 32]
    assert math.isnan(by_name["b"][names.index("metrics.acc")])
    frame = api.experiments(store=store)
    assert list(frame["params.lr"]) == [0.2, 0.1]
    store.reindex()
    assert store.table() == (names, rows) or _same_listing(store.table(), (names, rows))
    assert {first.id, second.id} == {row[0] for row in store.table()[1]}


def _same_listing(left, right) -> bool:
    return json.dumps(left, default=str, sort_keys=True).replace("NaN", "nan") == json.dumps(
        right, default=str, sort_keys=True
    ).replace("NaN", "nan")


def _listing_experiment(store, name, params, metrics):
    from nbexp.record import Code, Experiment, Outcome

    draft = Experiment(
        id="",
        name=name,
        created=f"2026-11-23T00:00:0{len(store.rows())}.000000+00:00",
        code=Code(cell="", source=""),
        outcome=Outcome(status="ok", started="2026-11-23T00:00:00+00:00", duration=0.1),
        params=params,
        metrics=metrics,
    )
    body = draft.to_dict()
    body["id"] = store.make_id(body)
    return store.save(Experiment.from_dict(body))


def test_listed_keys_and_metric_bounds_agree_with_the_whole_listing(project):
    """The widget's columns and best values come from SQL (`listed_keys`, `metric_bounds`)
    without reading the rows out; they must say what the whole listing says."""
    from nbexp.widgets import render

    store = open_store()
    _listing_experiment(store, "a", {"lr": 0.1, "gone": None}, {"acc": 0.5, "mixed": "n/a"})
    _listing_experiment(store, "b", {"lr": 0.3, "layers": [64]}, {"acc": 2, "mixed": 0.25})
    _listing_experiment(store, "c", {"lr": 0.2}, {"acc": float("inf"), "mixed": 7, "ok": True})
    _listing_experiment(store, "d", {"lr": 0.2}, {"acc": -1.5, "odd": float("nan"), "ok": 3})

    for query in (None, 'name != "d"', "metrics.acc > 100"):
        names, rows = store.table(query)
        if query is None:
            assert store.listed_keys() == [n for n in names if "." in n]
            assert "params.gone" not in names  # only null values: no column
        expected = {}
        for index, name in enumerate(names):
            numbers = [row[index] for row in rows if render.is_number(row[index])]
            if name.startswith("metrics.") and numbers:
                expected[name] = (min(numbers), max(numbers))
        assert store.metric_bounds(query) == expected
    assert store.metric_bounds()["metrics.mixed"] == (0.25, 7)  # the text "n/a" is no number
    assert store.metric_bounds()["metrics.ok"] == (3, 3)  # True is no number
    assert "metrics.odd" not in store.metric_bounds()  # nan only


def test_the_whole_listing_is_served_from_its_cache_only_while_the_index_is_unchanged(project):
    """`experiments()` and `nbexp list` read the whole listing from cache/listing while the
    index's generation is the one it was written from: every change (a new experiment, a
    tag, a deletion, a reindex, another process's write) shows at once; a damaged cache
    file is ignored."""
    from nbexp import api

    store = open_store()
    first = _listing_experiment(store, "a", {"lr": 0.1}, {"acc": 0.5})
    fresh = lambda: store._listing(None, None, None, 0, True)  # noqa: E731 (SQL, no cache)
    assert store.listing(short_ids=True) == fresh()
    assert store.listing_cache_path.exists()
    assert store.listing(short_ids=True) == fresh()  # from the file

    second = _listing_experiment(store, "b", {"lr": 0.2, "depth": 3}, {"acc": 0.7})
    assert list(api.experiments(store=store)["params.depth"].isna()) == [False, True]
    store.add_tag(first.id, "best")
    assert api.table(store=store)[1][5] == [[], ["best"]]
    other = Store(store.root)  # another process's handle
    other.delete(second.id)
    other.close()
    assert store.listing(short_ids=True) == fresh() and len(fresh()[1][0]) == 1
    store.reindex()
    assert store.listing(short_ids=True) == fresh()

    data = bytearray(store.listing_cache_path.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte: the file's hash no longer matches
    store.listing_cache_path.write_bytes(bytes(data))
    assert store.listing(short_ids=True) == fresh()
    store.listing_cache_path.write_bytes(b"nonsense")
    assert store.listing(short_ids=True) == fresh()


def test_the_listing_texts_kept_are_the_ones_in_use(project):
    """`nbexp list` keeps its text per set of options, a few of them: those printed last.
    The whole table listed between ten filters typed once each is never made again."""
    from nbexp.store import listing_cache

    store = open_store()
    _listing_experiment(store, "a", {"lr": 0.1}, {"acc": 0.5})
    made: list[str] = []

    def text(options: str) -> bytes:
        return store.listing_text(options, lambda: made.append(options) or options.encode())

    assert text("whole") == b"whole"
    for k in range(10):
        assert text(f"filter {k}") == f"filter {k}".encode()
        assert text("whole") == b"whole"
    assert made == ["whole"] + [f"filter {k}" for k in range(10)]
    kept = list((store.root / "cache").glob("text-*"))
    assert len(kept) == listing_cache.TEXTS_KEPT
    assert text("filter 9") == b"filter 9" and made[-1] == "filter 9"  # kept: not made
    assert text("filter 0") == b"filter 0" and made[-1] == "filter 0"  # dropped: made again
    _listing_experiment(store, "b", {"lr": 0.2}, {"acc": 0.6})
    assert text("whole") == b"whole" and made[-1] == "whole"  # the index changed


def _saved(store, name, created, params, metrics=None):
    draft = Experiment(
        id="",
        name=name,
        created=created,
        code=Code(cell="", source=""),
        outcome=Outcome(status="ok", started=created, duration=0.1),
        params=params,
        metrics=metrics or {},
    )
    body = draft.to_dict()
    body["id"] = store.make_id(body)
    return store.save(Experiment.from_dict(body))


def test_a_changed_index_patches_the_cached_listing_with_only_the_changed_rows(
    project, monkeypatch
):
    """After a change the cached listing is brought up to date by reading only the rows
    the index logged as changed since (new, tagged, deleted, a new key, another process's
    write, rows created in the same instant ordered by id), and it equals what SQL lists;
    too many changes, or a log that no longer reaches back to the cache, make it again."""
    store = open_store()
    for k in range(6):
        _saved(store, f"e{k}", f"2026-12-01T00:00:0{k}.000000+00:00", {"lr": k / 10})
    fresh = lambda: store._listing(None, None, None, 0, True)  # noqa: E731 (SQL, no cache)
    assert store.listing(short_ids=True) == fresh()  # the cache written
    reads: list[Any] = []
    sql = store._listing_columns

    def counted(*args: Any) -> Any:
        reads.append(None if len(args) < 7 else sorted(args[6]))
        return sql(*args)

    monkeypatch.setattr(store, "_listing_columns", counted)

    def listed_after(change: Any) -> list[Any]:
        reads.clear()
        change()
        listed = store.listing(short_ids=True)
        done = list(reads)
        assert listed == fresh(), done
        return done

    same = "2026-12-01T00:00:03.000000+00:00"  # three rows created in one instant
    twins = [_saved(store, name, same, {"lr": 0.5}) for name in ("t1", "t2")]
    assert len(listed_after(lambda: _saved(store, "t3", same, {"lr": 0.6}))) == 1
    rows = store.listing(short_ids=True)[1]
    at = [i for i, created in enumerate(rows[2]) if created == same]
    assert [rows[0][i] for i in at] == sorted(rows[0][i] for i in at)  # ties by id
    first = store.get("e0")
    assert listed_after(lambda: store.add_tag(first.id, "best")) == [[first.id]]
    assert listed_after(lambda: store.delete(twins[0].id)) == [[twins[0].id]]
    newest = []
    assert listed_after(
        lambda: newest.append(_saved(store, "k", "2026-12-02T00:00:00+00:00", {"depth": 3}))
    ) == [[newest[0].id]]
    assert "params.depth" in store.listing(short_ids=True)[0]

    def elsewhere() -> None:
        other = Store(store.root)  # another process's handle
        other.delete(newest[0].id)
        _saved(other, "late", "2026-11-30T00:00:00+00:00", {"lr": 9})
        other.close()

    patched = listed_after(elsewhere)
    assert len(patched) == 1 and len(patched[0]) == 2
    assert "params.depth" not in store.listing(short_ids=True)[0]  # no value left: not shown

    monkeypatch.setattr(store_index, "PATCH_AT_MOST", 1)
    assert listed_after(lambda: [store.add_tag(e.id, "x") for e in (first, twins[1])]) == [None]
    monkeypatch.setattr(store_index, "PATCH_AT_MOST", 200)
    with store._lock:
        store._db.execute("DELETE FROM changed_rows")  # as if older than the changes kept
    assert listed_after(lambda: store.add_tag(first.id, "again")) == [None]
    assert len(listed_after(lambda: store.add_tag(first.id, "more"))) == 1  # patched again


def test_a_record_torn_by_a_power_cut_before_its_index_row_is_deleted_on_open(
    store: Store,
) -> None:
    """A record is fsynced with its folder only after its rename: a power cut between the
    two can leave its name on disk with its bytes missing. Its note says it was being
    published (never acknowledged), so the next open deletes it; a damaged record under a
    tag change's note (acknowledged long ago) is left for fsck to name."""
    from nbexp.store.records import PUBLISHING

    torn = make_experiment(store, "torn", minutes=1, save=False)
    path = store.record_path(torn.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"artifacts":[],"co')  # the bytes that reached the disk
    (store.tmp_dir / f"{torn.id}{store_module.UNINDEXED_SUFFIX}").write_bytes(PUBLISHING)
    tagged = make_experiment(store, "tagged", minutes=2)
    tagged_path = store.record_path(tagged.id)
    tagged_path.write_bytes(tagged_path.read_bytes()[:-10])  # damaged since, by a disk
    (store.tmp_dir / f"{tagged.id}{store_module.UNINDEXED_SUFFIX}").write_bytes(b"")
    store.close()
    store_module._stores.clear()

    reopened = Store(store.root)
    try:
        assert not path.exists()
        assert not (store.tmp_dir / f"{torn.id}{store_module.UNINDEXED_SUFFIX}").exists()
        assert [row["name"] for row in reopened.rows()] == ["tagged"]
        assert tagged_path.exists()  # not ours to delete: fsck names it
        assert any(tagged.id[:8] in str(problem) for problem in reopened.fsck())
    finally:
        reopened.close()


def test_a_row_whose_record_a_power_cut_lost_is_deleted_on_open(store: Store) -> None:
    """A record's index row is written while the record is being synced: a power cut then
    can keep the row and lose the record. Its note says it was being published, so the next
    open deletes the row; a row without its record under a tag change's note (acknowledged
    long ago) is left for fsck to name."""
    from nbexp.store.records import PUBLISHING

    lost = make_experiment(store, "lost", minutes=1)
    store.record_path(lost.id).unlink()  # the row reached the disk, the record did not
    (store.tmp_dir / f"{lost.id}{store_module.UNINDEXED_SUFFIX}").write_bytes(PUBLISHING)
    kept = make_experiment(store, "kept", minutes=2)
    store.record_path(kept.id).unlink()  # deleted by hand since: not ours to hide
    (store.tmp_dir / f"{kept.id}{store_module.UNINDEXED_SUFFIX}").write_bytes(b"")
    store.close()
    store_module._stores.clear()

    reopened = Store(store.root)
    try:
        assert [row["name"] for row in reopened.rows()] == ["kept"]
        assert not list(reopened.tmp_dir.glob(f"*{store_module.UNINDEXED_SUFFIX}"))
        assert any(kept.id[:8] in str(problem) for problem in reopened.fsck())
    finally:
        reopened.close()


def test_a_record_is_durable_and_indexed_when_save_returns_and_taken_back_if_its_sync_fails(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`save` writes the index row while the record's file and folder are synced; a failed
    sync takes back the record and its row (the caller says it was not recorded), and
    leaves no note behind."""
    saved = make_experiment(store, "synced", minutes=1)
    assert store.record_path(saved.id).exists()
    assert [row["name"] for row in store.rows()] == ["synced"]
    assert not list(store.tmp_dir.glob(f"*{store_module.UNINDEXED_SUFFIX}"))

    real_fsync = os.fsync

    def failing(descriptor: int) -> None:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", failing)
    draft = make_experiment(store, "failed", minutes=2, save=False)
    with pytest.raises(StoreError, match="the disk reported an error"):
        store.save(draft)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not store.record_path(draft.id).exists()
    assert [row["name"] for row in store.rows()] == ["synced"]
    assert not list(store.tmp_dir.glob(f"*{store_module.UNINDEXED_SUFFIX}"))


def test_saved_bytes_are_the_canonical_json_of_the_record_and_its_id_is_their_hash(
    ip: Any,
) -> None:
    """`Store.seal` serialises each part once for both the id and the file: the file is
    exactly the record's canonical JSON, and the id the hash of it without the id."""
    from nbexp.hashing import canonical_json

    run(ip, "x = 1/0")  # a failed cell: `code.failed` has integer keys in memory
    assert run(ip, "%%experiment sealed -p lr=0.5\nlr = 0.1\nnote = 'é \"q\" \\\\'\n").success
    experiment = nbexp.get("sealed")
    store = open_store()
    data = store.record_path(experiment.id).read_bytes()
    assert data == canonical_json(experiment.to_dict()) + b"\n"
    assert Store.make_id(json.loads(data)) == experiment.id
    assert experiment.code.failed


# -- gc merges small packs ------------------------------------------------------------------


def test_gc_merges_small_packs_into_one_and_leaves_a_large_one_alone(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbexp import api
    from nbexp.store import maintenance
    from tests.test_remote import blobs_for, fake

    monkeypatch.setattr(maintenance, "SMALL_PACK", 100_000)
    store = open_store()

    def packed(name: str, count: int, size: int, minutes: int) -> Experiment:
        blobs = blobs_for(name, count, size=size)
        with store.writing(), store.object_batch():  # more than 16 objects: one pack
            for blob in blobs:
                store.put_bytes(blob)
        return fake(store, name, blobs, minutes=minutes)  # its objects are there: a record

    def where(digest: str) -> tuple[str, int]:
        found = store.object_location(digest)
        assert found is not None, f"{digest[:12]} is in no pack"
        return found[0].name, found[1]

    def packs() -> list[str]:
        return sorted(p.name for p in (store.root / "packs").glob("*.pack"))

    small = [packed(f"small-{i}", 20, 2_000, i) for i in range(3)]
    large = packed("large", 20, 10_000, 9)
    before = packs()
    assert len(before) == 4 and len(store.small_packs()) == 3
    store.delete(small[1].id)  # its pack now holds garbage only

    dry = api.gc(store=store)
    assert dry.small_packs == 3 and len(dry.objects) == 20 and packs() == before
    collected = api.gc(delete=True, store=store)
    assert collected.small_packs == 3 and len(collected.objects) == 20
    after = packs()
    large_pack = where(large.artifacts[0]["hash"])[0]
    assert len(after) == 2 and set(before) & set(after) == {large_pack}  # left alone
    kept = [e for e in small if e is not small[1]]
    merged = {where(item["hash"])[0] for e in kept for item in e.artifacts}
    assert len(merged) == 1 and merged <= set(after) and large_pack not in merged
    for experiment in kept:  # each run's objects still in sequence, and whole
        offsets = [where(item["hash"])[1] for item in experiment.artifacts]
        assert offsets == sorted(offsets)
        blobs = blobs_for(experiment.name, 20, size=2_000)
        for item, blob in zip(experiment.artifacts, blobs, strict=True):
            assert store.read_object(item["hash"]) == blob
    assert not any(store.has_object(item["hash"]) for item in small[1].artifacts)
    assert store.fsck() == []
    again = api.gc(delete=True, store=store)  # one small pack left: nothing to merge
    assert again.small_packs == 0 and packs() == after


def test_a_reader_opened_beside_a_writer_keeps_the_writer_s_index_alive(store: Store) -> None:
    """A kernel holds the recorder's store and a read-only one for listings: opening the
    second must not drop the first's SQLite locks (a closed descriptor of the index would),
    or another process closing the index takes it for unused and deletes its WAL."""
    import subprocess
    import sys

    from nbexp import api

    make_experiment(store, "first", minutes=0)
    reader = open_store(read_only=True)
    assert reader is not store and [row["name"] for row in api.rows(store=reader)] == ["first"]
    other = subprocess.run(
        [sys.executable, "-m", "nbexp.cli", "--store", str(store.root), "gc", "--yes"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    make_experiment(store, "second", minutes=1)
    fresh = sqlite3.connect(store.index_path)  # another reader sees both rows
    try:
        names = sorted(row[0] for row in fresh.execute("SELECT name FROM experiments"))
    finally:
        fresh.close()
    assert names == ["first", "second"]
    assert store.fsck() == []


def test_a_reader_of_a_store_being_created_lists_nothing_and_repairs_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reader that opens a store folder before any writer made its index (racing kernels
    creating the store) lists it empty, silently, writes nothing, and then sees what the
    writers record."""
    from nbexp import api

    store_module._stores.clear()
    root = project / ".nbexp"
    (root / "tmp").mkdir(parents=True)  # a writer has begun creating the store
    reader = open_store(read_only=True)
    assert api.rows(store=reader) == [] and api.count(store=reader) == 0
    assert sorted(p.name for p in root.rglob("*")) == ["tmp"]
    assert capsys.readouterr().err == ""
    writer = open_store()
    make_experiment(writer, "first")
    assert [row["name"] for row in api.rows(store=reader)] == ["first"]
    assert capsys.readouterr().err == ""
    assert list(writer.tmp_dir.iterdir()) == []


def test_a_new_fan_out_folder_is_made_durable_in_its_parent(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fsyncing a record's folder keeps the record's name, not the new `records/ab/`'s own
    name in `records/`: a power cut could lose the whole folder. The parent is synced when
    the folder is made (the real fsync still runs; the test only watches which folders)."""
    from nbexp.store import files, objects

    synced: list[Path] = []
    real = files.fsync_dir

    def watched(folder: Path) -> None:
        synced.append(folder)
        real(folder)

    monkeypatch.setattr(files, "fsync_dir", watched)
    monkeypatch.setattr(objects, "fsync_dir", watched)
    experiment = make_experiment(store, "first")
    assert (store.records_dir / experiment.id[:2]).is_dir()
    assert store.records_dir in synced
    with store.object_batch():
        digest = store.put_bytes(b"payload" * 100)
    assert store.has_object(digest)
    assert store.objects_dir in synced


def test_a_pack_index_pointing_past_its_pack_is_damaged_and_never_followed(
    project: Path,
) -> None:
    """An index whose checksum holds but whose entries point past the pack's objects (an
    index written for another pack, or by hand) is taken as damaged: nothing is read from
    beyond the objects, nor allocated for an absurd length; the pack's own copy is used."""
    from nbexp.store.packs import decode_index, encode_index
    from tests.test_remote import blobs_for, fake

    store = open_store()
    blobs = blobs_for("packed", 20, size=2_000)
    with store.writing(), store.object_batch():
        for blob in blobs:
            store.put_bytes(blob)
    experiment = fake(store, "packed", blobs)
    (index,) = (store.root / "packs").glob("*.idx")
    entries = decode_index(index.read_bytes())
    assert entries is not None
    victim = experiment.artifacts[0]["hash"]
    entries[victim] = (entries[victim][0], 2**62)  # a length no pack holds
    index.write_bytes(encode_index(entries))
    store_module._stores.clear()
    store = open_store()
    assert [store.read_object(item["hash"]) for item in experiment.artifacts] == blobs
    assert [(p.kind, p.item) for p in store.fsck()] == [("pack", index.stem)]
    store.gc(delete=True)
    assert store.fsck() == [] and decode_index(index.read_bytes()) != entries
