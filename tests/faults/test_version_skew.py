"""Version skew (SPEC §2, §9, §11): records and indexes written by other versions of nbexp.

The record schema is v1, the first. A record without a valid schema_version, or with one
below 1, is refused as damaged (there is no older nbexp that wrote it); `record.MIGRATIONS`
is where an upgrade from an older schema goes once there is one, and records are upgraded in
memory, never rewritten. A record from a newer nbexp is refused with "upgrade nbexp" by
load/show/export/diff/restore/pull, and never takes the rest of the store down with it: the
listing, the other experiments, fsck and push keep working, and gc refuses to run rather than
delete objects it cannot tell are needed. Indexes from older layouts (before remotes, before
plain columns) give the same answers as a fresh one; an incompatible one says `nbexp reindex`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import record as record_module
from nbexp import store as store_module
from nbexp.errors import RecordError
from nbexp.record import SCHEMA_VERSION, Experiment
from nbexp.restorer import restore_into
from nbexp.store import Store, open_store
from tests.conftest import run
from tests.faults import figures
from tests.faults.stores import cli, fsck_lines, one_line_error
from tests.test_store import make_experiment

_REFUSED: dict[str, int] = {"records": 0, "surfaces": 0}


@pytest.fixture
def store(project: Path) -> Store:
    store_module._stores.clear()
    return open_store()


def write_body(store: Store, body: dict[str, Any]) -> str:
    """Write a record body as another nbexp would have: its id is the hash of its content."""
    body = {key: value for key, value in body.items() if key != "id"}
    body["id"] = Store.make_id(body)
    path = store.record_path(body["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))
    return str(body["id"])


def good_body(store: Store, name: str, minutes: int = 0) -> dict[str, Any]:
    return make_experiment(store, name, params={"depth": 3}, minutes=minutes, save=False).to_dict()


# -- records older than v1, or without a version ----------------------------------------------


@pytest.mark.parametrize(
    "version", [0, -1, "1", 1.0, True, None, "missing"], ids=lambda v: f"schema_version={v!r}"
)
def test_a_record_without_a_readable_schema_version_is_refused_as_damaged(
    store: Store, version: Any
) -> None:
    kept = make_experiment(store, "kept", minutes=0)
    body = good_body(store, "old", minutes=1)
    if version == "missing":
        del body["schema_version"]
    else:
        body["schema_version"] = version
    old_id = write_body(store, body)
    short = old_id[:8]

    with pytest.raises(RecordError) as caught:
        store.load(old_id)
    message = str(caught.value)
    assert "\n" not in message and short in message and "nbexp fsck" in message
    assert "damaged" in message or "not written by nbexp" in message
    assert cli("reindex").code == 0  # skips it; the others are listed
    assert [row["name"] for row in json.loads(cli("list", "--format", "json").out)] == ["kept"]
    found = fsck_lines(cli("fsck"))
    assert list(found) == [("record", short)] and "schema" in found[("record", short)]
    assert nbexp.get("kept").id == kept.id
    _REFUSED["records"] += 1


def test_the_migration_hook_upgrades_an_older_record_in_memory_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What adding schema v2 will look like: MIGRATIONS[1] upgrades v1 bodies as they are read."""

    def v0_to_v1(body: dict[str, Any]) -> dict[str, Any]:
        body["name"] = body.pop("title")  # say v0 called the name "title"
        return body

    body = good_body(store, "legacy")
    body["schema_version"] = 0
    body["title"] = body.pop("name")
    legacy_id = write_body(store, body)
    on_disk = store.record_path(legacy_id).read_bytes()
    with pytest.raises(RecordError, match="schema 0"):
        store.load(legacy_id)

    monkeypatch.setitem(record_module.MIGRATIONS, 0, v0_to_v1)
    experiment = store.load(legacy_id)
    assert experiment.name == "legacy" and experiment.schema_version == SCHEMA_VERSION
    assert experiment.params == {"depth": 3} and experiment.id == legacy_id
    assert cli("reindex").code == 0 and cli("show", "legacy").code == 0
    assert cli("fsck").code == 0  # its id still checks against the bytes on disk
    assert store.record_path(legacy_id).read_bytes() == on_disk  # never rewritten
    with pytest.raises(RecordError, match=r"schema -1"):  # below what can be migrated
        Experiment.from_dict({**body, "schema_version": -1})


# -- records from a newer nbexp --------------------------------------------------------------


def _future(store: Store, name: str, minutes: int) -> Experiment:
    """A record a newer nbexp saved into this store, index row included."""
    draft = replace(make_experiment(store, name, minutes=minutes, save=False), schema_version=99)
    future = replace(draft, id=Store.make_id(draft.to_dict()))
    store.save(future)
    return future


def test_a_record_from_a_newer_nbexp_is_refused_everywhere_and_harms_nothing_else(
    ip: Any, capsys: Any, tmp_path: Path
) -> None:
    assert run(ip, "%%experiment today\nimport numpy as np\nweights = np.arange(300_000.0)").success
    today = nbexp.get("today")
    store = open_store()
    future = _future(store, "tomorrow", minutes=10**7)  # in 2043: sorts as the newest
    short = future.short_id

    # listed (its index row was written by the newer nbexp), refused wherever it is read
    listing = cli("list", "--format", "json")
    assert [row["name"] for row in json.loads(listing.out)] == ["tomorrow", "today"]
    for argv in (
        ["show", "tomorrow"],
        ["show", "last"],
        ["export", "tomorrow"],
        ["diff", "today", "tomorrow"],
    ):
        line = one_line_error(cli(*argv), "upgrade nbexp", short)
        assert "schema 99" in line
        _REFUSED["surfaces"] += 1
    for call in (nbexp.get, nbexp.load, nbexp.restore):
        with pytest.raises(RecordError, match="upgrade nbexp"):
            call("tomorrow")
        _REFUSED["surfaces"] += 1
    for magic in ("%exp_show tomorrow", "%exp_restore tomorrow", "%exp_export tomorrow"):
        capsys.readouterr()
        result = run(ip, magic)
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert not result.success and len(errors) == 1 and "upgrade nbexp" in errors[0]
        _REFUSED["surfaces"] += 1
    # gc cannot know which objects a newer record needs: it refuses instead of guessing
    one_line_error(cli("gc", "--yes"), short, "gc cannot tell")
    # the rest keeps working
    ip.user_ns["weights"] = "clobbered"
    assert run(ip, "%exp_restore today").success and len(ip.user_ns["weights"]) == 300_000
    found = fsck_lines(cli("fsck"))
    assert list(found) == [("record", short)] and "upgrade nbexp" in found[("record", short)]
    remote = tmp_path / "remote"
    assert cli("remote", "add", "backup", str(remote)).code == 0
    one_line_error(cli("push", "backup", "-q"), "pushed 1 of 2", short, "upgrade nbexp")
    assert [p.stem for p in (remote / "records").rglob("*.json")] == [today.id]
    figures.report(
        "version skew: places a newer-schema record is refused with `upgrade nbexp`",
        _REFUSED["surfaces"],
    )


def test_pulling_a_newer_record_refuses_it_and_pulls_the_rest(tmp_path: Path) -> None:
    store_module._stores.clear()
    newer = Store(tmp_path / "newer machine" / ".nbexp")  # a teammate on a newer nbexp
    current = make_experiment(newer, "current", params={"depth": 2})
    future = _future(newer, "future", minutes=5)
    remote = tmp_path / "remote"
    assert cli("--store", str(newer.root), "remote", "add", "team", str(remote)).code == 0
    # the newer nbexp pushes both (this one would refuse to read `future`: place it by hand)
    assert cli("--store", str(newer.root), "push", "team", "current", "-q").code == 0
    target = remote / "records" / future.id[:2] / f"{future.id}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(newer.record_path(future.id).read_bytes())

    here = tmp_path / "this machine" / ".nbexp"
    here.mkdir(parents=True)
    assert cli("--store", str(here), "remote", "add", "team", str(remote)).code == 0
    pulled = cli("--store", str(here), "pull", "team", "-q")
    line = one_line_error(pulled, "pulled 1 of 2", future.short_id, "upgrade nbexp")
    assert "Traceback" not in line
    rows = json.loads(cli("--store", str(here), "list", "--format", "json").out)
    assert [row["id"] for row in rows] == [current.id]
    assert cli("--store", str(here), "fsck").code == 0  # nothing half-pulled
    assert not (Path(here) / "records" / future.id[:2] / f"{future.id}.json").exists()


# -- indexes from older and newer layouts -------------------------------------------------------


def _answers(root: Path) -> list[Any]:
    """The listing and two queries as JSON rows and as the CSV table; an index this version
    cannot use is rebuilt on the spot, saying so in one line (never a refusal)."""
    answers: list[Any] = []
    for query in (None, "params.depth >= 2", 'tags == "best"'):
        for form in ("json", "csv"):
            argv = ["--store", str(root), "list", *([query] if query else []), "--format", form]
            result = cli(*argv)
            assert result.code == 0, result
            notes = [line for line in result.err.splitlines() if line.strip()]
            assert not notes or (len(notes) == 1 and "rebuilt it from" in notes[0]), result
            answers.append(json.loads(result.out) if form == "json" else result.out)
    return answers


def _relayout(index: Path, layout: str) -> None:
    db = sqlite3.connect(index)
    if layout == "before-remotes":  # no origin column: it is added after the plain columns
        db.execute("ALTER TABLE experiments DROP COLUMN origin")
    elif layout == "before-plain-columns":
        db.execute("DROP TABLE columns")
        db.execute("CREATE TABLE columns (section TEXT, key TEXT, scalar INTEGER)")
    elif layout == "before-caches":
        db.execute("DROP TABLE cache")
        db.execute("DROP TABLE file_hashes")
    elif layout == "newer-compatible":  # more columns, tables and a version number
        db.execute("ALTER TABLE experiments ADD COLUMN future_thing TEXT DEFAULT 'x'")
        db.execute("CREATE TABLE future_table (a, b)")
        db.execute("PRAGMA user_version = 7")
    elif layout == "newer-incompatible":  # a column this nbexp needs is gone
        db.execute("ALTER TABLE experiments RENAME COLUMN params TO parameters")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    "layout",
    [
        "before-remotes",
        "before-plain-columns",
        "before-caches",
        "newer-compatible",
        "newer-incompatible",
    ],
)
def test_an_index_from_another_layout_answers_the_same(store: Store, layout: str) -> None:
    for i in range(6):
        make_experiment(
            store,
            f"run-{i}",
            params={"depth": i, "loss": "l1"},
            metrics={"f1": i / 6},
            minutes=i,
            tags=("best",) if i == 4 else (),
        )
    before = _answers(store.root)
    store.close()
    store_module._stores.clear()
    _relayout(store.index_path, layout)

    assert _answers(store.root) == before  # a layout it cannot use is rebuilt, not refused
    assert cli("fsck").code == 0
    store_module._stores.clear()
    later = make_experiment(open_store(), "later", params={"depth": 9}, minutes=99)
    assert nbexp.get("last").id == later.id  # and it takes new records


# -- the --cache lookup in an index whose cache table has another layout ----------------------


CACHE_LAYOUTS = {
    # writing the lookup fails: "table cache has 3 columns but 2 values were supplied"
    "an-extra-column": "key TEXT PRIMARY KEY, value TEXT NOT NULL, at TEXT NOT NULL DEFAULT ''",
    # reading it fails before the body runs: "no such column: value"
    "a-renamed-column": "key TEXT PRIMARY KEY, payload TEXT NOT NULL",
}


@pytest.mark.parametrize("layout", list(CACHE_LAYOUTS))
def test_a_cache_table_it_cannot_use_never_skips_or_unrecords_a_run(
    store: Store, ip: Any, capsys: Any, layout: str
) -> None:
    """An index from a newer nbexp whose `cache` table has another layout: `--cache` can
    neither look the run up nor note it after the save. The body still runs, the run is
    saved, and the user is told it was recorded — never "NOT recorded" for a saved run —
    and the next identical run runs and records again."""
    store.close()
    store_module._stores.clear()
    connection = sqlite3.connect(store.index_path)
    connection.executescript(f"DROP TABLE cache; CREATE TABLE cache ({CACHE_LAYOUTS[layout]})")
    connection.close()
    for attempt in ("first", "again"):
        capsys.readouterr()
        assert run(ip, "%%experiment cached --cache\nscore = 3 * 7\n").success
        captured = capsys.readouterr()
        assert "✓ recorded cached " in captured.out, (attempt, captured)
        assert "NOT recorded" not in captured.err and "Traceback" not in captured.err, captured
        assert ip.user_ns["score"] == 21
    assert [row["name"] for row in json.loads(cli("list", "--format", "json").out)] == [
        "cached",
        "cached",
    ]
    assert cli("fsck").code == 0


# -- a store written before pack files: loose objects only -----------------------------------

OLD_WRITER = """
import sys
from IPython.core.interactiveshell import InteractiveShell
import nbexp.store
assert nbexp.store.__file__.startswith(sys.argv[1]), nbexp.store.__file__
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "nbexp")
cell = '''%%experiment before-packs
import numpy as np
import pandas as pd
pieces = [np.full(20_000, float(k)) for k in range(40)]
frame = pd.DataFrame({"x": np.arange(50_000.0), "y": np.arange(50_000) % 7})
alias = pieces[0]
score = 0.25
'''
sys.exit(0 if shell.run_cell(cell, store_history=True).success else 3)
"""


def _old_nbexp(folder: Path) -> Path:
    """The nbexp of the commit before pack files, extracted from git; skip without history."""
    repo = Path(__file__).resolve().parents[2]

    def git(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, check=False)

    added = git("log", "--diff-filter=A", "--format=%H", "--", "nbexp/store/packs.py")
    commits = added.stdout.decode().split()
    if added.returncode != 0 or not commits:
        pytest.skip("no git history here to take the nbexp from before pack files")
    archive = git("archive", "--format=tar", f"{commits[-1]}^", "nbexp")
    if archive.returncode != 0:
        pytest.skip("the commit before pack files is not in this clone")
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def test_a_store_written_before_packs_restores_the_same_values(
    tmp_path: Path, project: Path
) -> None:
    """Experiments recorded by the nbexp before pack files (every object a loose file)
    restore the very values with this one, fsck is clean, a new run reuses the loose objects
    instead of packing them again, and gc works across loose and packed objects."""
    import numpy as np
    import pandas as pd

    old = _old_nbexp(tmp_path / "old")
    root = project / ".nbexp"
    env = {**os.environ, "PYTHONPATH": str(old), "NBEXP_STORE": str(root), "MPLBACKEND": "Agg"}
    env.pop("JPY_SESSION_NAME", None)
    done = subprocess.run(
        [sys.executable, "-c", OLD_WRITER, str(old)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (root / "packs").exists()  # the old layout: loose objects only
    loose = old_loose = sum(1 for path in (root / "objects").rglob("*") if path.is_file())
    assert loose > 40

    store_module._stores.clear()
    store = open_store()
    experiment = store.get("before-packs")
    namespace: dict[str, Any] = {}
    report = restore_into(namespace, store, experiment)
    assert not report.skipped, report.skipped
    for k, piece in enumerate(namespace["pieces"]):
        assert np.array_equal(piece, np.full(20_000, float(k)))
    assert namespace["alias"] is namespace["pieces"][0]
    expected = pd.DataFrame({"x": np.arange(50_000.0), "y": np.arange(50_000) % 7})
    pd.testing.assert_frame_equal(namespace["frame"], expected)
    assert namespace["score"] == 0.25
    assert cli("fsck").code == 0

    # this nbexp: the same values again are no new objects; new values become a pack
    from nbexp.state import snapshot

    with store.writing(), store.object_batch():
        snapshot(store, {"pieces": namespace["pieces"]})
    assert not list(root.glob("packs/*.idx"))  # its 40 chunks are the loose ones
    loose = sum(1 for path in (root / "objects").rglob("*") if path.is_file())  # + its pickle
    with store.writing(), store.object_batch():
        fresh = snapshot(store, {"more": [np.full(20_000, -float(k)) for k in range(40)]})
    assert fresh.new_bytes >= 40 * 160_000 and len(list(root.glob("packs/*.idx"))) == 1
    assert sum(1 for path in (root / "objects").rglob("*") if path.is_file()) == loose
    # nothing names the new objects: gc finds them packed, and deletes the pack
    garbage, _ = store.gc(delete=True)
    assert len(garbage) >= 40 and not list(root.glob("packs/*.idx"))
    assert sum(1 for path in (root / "objects").rglob("*") if path.is_file()) == old_loose
    assert cli("fsck").code == 0
    namespace = {}
    assert not restore_into(namespace, store, experiment).skipped
    figures.report("version skew: loose-object stores restored by this nbexp (values equal)", 1)
