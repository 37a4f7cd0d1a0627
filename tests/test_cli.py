"""The `nbexp` console script (SPEC §8, §11), run as a real subprocess on a real store."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbexp import store as store_module
from nbexp.record import Experiment
from nbexp.store import Store, open_store
from tests.conftest import run
from tests.test_store import _ambiguous_pair, make_experiment

_SCRIPT = Path(sys.executable).with_name("nbexp")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "nbexp.cli"]


@dataclass
class Result:
    code: int
    out: str
    err: str


def nbexp_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    completed = subprocess.run(
        [*COMMAND, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def assert_user_error(result: Result, *fragments: str) -> str:
    """Exit 1, exactly one stderr line starting `nbexp:`, no traceback; returns that line."""
    assert result.code == 1, result
    assert "Traceback" not in result.err + result.out
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("nbexp: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def filled(project: Path) -> tuple[Store, list[Experiment]]:
    """Three experiments with params and metrics, oldest first."""
    store_module._stores.clear()
    store = open_store()
    experiments = [
        make_experiment(store, "rf", params={"depth": 3}, metrics={"f1": 0.71}, minutes=0),
        make_experiment(
            store,
            "gb",
            params={"depth": 12, "loss": "l2"},
            metrics={"f1": 0.93, "auc": 0.97},
            minutes=1,
            tags=("best",),
        ),
        make_experiment(
            store, "rf", params={"depth": 8}, metrics={"f1": 0.85}, minutes=2, status="failed"
        ),
    ]
    return store, experiments


def test_the_console_script_is_installed() -> None:
    assert _SCRIPT.exists(), f"no console script next to {sys.executable}"
    result = nbexp_cli("--version")
    assert result.code == 0 and result.out.startswith("nbexp ")


def test_starting_the_cli_opens_no_store_and_imports_nothing_heavy() -> None:
    """`nbexp --version` (every command's start-up) loads only the command line itself: the
    store, SQLite, pandas and the remotes' modules come when a command needs them."""
    probe = (
        "import sys\n"
        "from nbexp import cli\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('nbexp.store', 'sqlite3', 'pandas', 'nbexp.transfer', 'fsspec', 'tqdm')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip().splitlines()[-1] == "[]", found.stdout


# -- list ---------------------------------------------------------------------------------------


def test_list_table(filled: tuple[Store, list[Experiment]]) -> None:
    _, (rf1, gb, rf2) = filled
    result = nbexp_cli("list")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    header = lines[0].split()
    assert header[:5] == ["id", "name", "created", "status", "duration"]
    assert "params.depth" in header and "metrics.f1" in header and "metrics.auc" in header
    assert [line.split()[0] for line in lines[1:]] == [rf2.short_id, gb.short_id, rf1.short_id]
    assert "failed" in lines[1] and "best" in lines[2]


def test_list_on_an_empty_store(project: Path) -> None:
    result = nbexp_cli("list")
    assert result.code == 0
    assert result.out.strip() == "no experiments yet"
    assert not (project / ".nbexp").exists()  # a reader creates nothing
    nbexp_cli("reindex")  # a writer creates the store
    assert (project / ".nbexp" / "records").is_dir()
    assert nbexp_cli("list").out.strip() == "no experiments yet"


def test_list_csv(filled: tuple[Store, list[Experiment]]) -> None:
    _, (rf1, gb, rf2) = filled
    result = nbexp_cli("list", "--format", "csv")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [row["id"] for row in rows] == [rf2.short_id, gb.short_id, rf1.short_id]
    assert rows[1]["params.loss"] == "l2" and rows[1]["tags"] == "best"
    assert [float(row["metrics.f1"]) for row in rows] == [0.85, 0.93, 0.71]
    assert rows[0]["metrics.auc"] == ""
    assert rows[0]["status"] == "failed"


def test_list_csv_and_table_keep_every_value_apart(project: Path) -> None:
    """The listing is written column by column (a repeated value formatted once); nothing
    may read differently for it: text needing quotes, equal numbers that print differently
    (0.0 and -0.0, 1 and 1.0), nothing, lists, non-finite floats. The CSV is what
    `csv.writer` writes for the same cells (minimal quoting, CRLF line ends)."""
    store = open_store()
    zeros = [0.0, 0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0]
    ones: list[Any] = [1, 1.0, 1, 1, 1, 1, 1, 1]
    notes = ['a, "b"', "line\nbreak", "cr\rhere", "plain", "plain", "plain", "plain", "é ü"]
    for k in range(8):
        metrics = {"zero": zeros[k], "one": ones[k], "lr": 0.1}
        metrics["odd"] = [float("nan"), float("inf"), None, [1, 2], True, 2, 3, 4][k]
        params = {"note": notes[k], "spare": None if k % 2 else 5}
        make_experiment(store, f"e{k}", params=params, metrics=metrics, minutes=8 - k)
    written = subprocess.run(
        [*COMMAND, "list", "--format", "csv"], capture_output=True, timeout=60, check=True
    ).stdout.decode()  # as bytes: text mode would turn the CRLF line ends into LF
    rows = list(csv.reader(io.StringIO(written, newline="")))
    again = io.StringIO(newline="")
    csv.writer(again).writerows(rows)
    assert written == again.getvalue()  # byte for byte csv.writer's own writing
    header, *cells = rows
    column = {name: [row[header.index(name)] for row in cells] for name in header}
    assert column["metrics.zero"] == ["0.0", "0.0", "0.0", "0.0", "-0.0", "0.0", "0.0", "0.0"]
    assert column["metrics.one"] == ["1", "1.0", "1", "1", "1", "1", "1", "1"]
    assert column["params.note"] == notes
    assert column["params.spare"] == ["5", "", "5", "", "5", "", "5", ""]
    assert column["metrics.odd"] == ["nan", "inf", "", "[1,2]", "True", "2", "3", "4"]
    assert column["metrics.lr"] == ["0.1"] * 8

    table = nbexp_cli("list").out.splitlines()
    by_name = {line.split()[1]: line for line in table[1:] if line.split()[1:2]}
    assert " -0 " in by_name["e4"] + " " and " -0 " not in by_name["e5"] + " "
    assert all(line == line.rstrip() for line in table)


def test_list_json(filled: tuple[Store, list[Experiment]]) -> None:
    _, (rf1, gb, rf2) = filled
    result = nbexp_cli("list", "--format", "json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [row["id"] for row in rows] == [rf2.id, gb.id, rf1.id]
    assert rows[1]["params"] == {"depth": 12, "loss": "l2"}
    assert rows[1]["metrics"] == {"f1": 0.93, "auc": 0.97}
    assert rows[1]["tags"] == ["best"]


def test_list_json_is_strict_json_with_non_finite_metrics(project: Path) -> None:
    make_experiment(open_store(), "odd", metrics={"loss": float("nan"), "top": float("inf")})
    result = nbexp_cli("list", "--format", "json")
    assert result.code == 0, result.err

    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {constant}")

    (row,) = json.loads(result.out, parse_constant=refuse)
    assert row["metrics"] == {"loss": {"$float": "nan"}, "top": {"$float": "inf"}}


def test_list_query(filled: tuple[Store, list[Experiment]]) -> None:
    _, (rf1, _, rf2) = filled
    result = nbexp_cli("list", "metrics.f1 > 0.8 and params.depth < 10", "--format", "json")
    assert result.code == 0, result.err
    assert [row["id"] for row in json.loads(result.out)] == [rf2.id]
    result = nbexp_cli("list", 'name == "rf"', "--format", "csv")
    assert [row["id"] for row in csv.DictReader(io.StringIO(result.out))] == [
        rf2.short_id,
        rf1.short_id,
    ]
    result = nbexp_cli("list", "metrics.f1 > 5")
    assert result.code == 0 and "no experiments match" in result.out


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("metrics.f1", ["rf1", "rf2", "gb"]),
        ("-metrics.f1", ["gb", "rf2", "rf1"]),
        ("params.depth", ["rf1", "rf2", "gb"]),
        ("-params.depth", ["gb", "rf2", "rf1"]),
        ("created", ["rf1", "gb", "rf2"]),
        ("-created", ["rf2", "gb", "rf1"]),
        ("name", ["gb", "rf2", "rf1"]),
        ("duration", ["rf1", "gb", "rf2"]),
        ("metrics.auc", ["gb", "rf2", "rf1"]),  # missing values last
    ],
)
def test_list_sort(filled: tuple[Store, list[Experiment]], sort: str, expected: list[str]) -> None:
    _, (rf1, gb, rf2) = filled
    names = {rf1.id: "rf1", gb.id: "gb", rf2.id: "rf2"}
    forms = [["--sort", sort]] + ([[f"--sort={sort}"]] if sort.startswith("-") else [])
    for argv in forms:
        result = nbexp_cli("list", *argv, "--format", "json")
        assert result.code == 0, (argv, result.err)
        assert [names[row["id"]] for row in json.loads(result.out)] == expected, argv


def test_list_limit(filled: tuple[Store, list[Experiment]]) -> None:
    _, (_, gb, rf2) = filled
    result = nbexp_cli("list", "--limit", "2", "--format", "json")
    assert [row["id"] for row in json.loads(result.out)] == [rf2.id, gb.id]


def _listings() -> dict[str, str]:
    """`nbexp list` as a table, as CSV and filtered, each checked to succeed."""
    found = {}
    for label, argv in (
        ("table", ["list"]),
        ("csv", ["list", "--format", "csv"]),
        ("filtered", ["list", "params.depth < 10"]),
    ):
        result = nbexp_cli(*argv)
        assert result.code == 0 and result.err == "", result
        found[label] = result.out
    return found


def _made_afresh(store: Store) -> dict[str, str]:
    """The listings made from the index alone: every kept text of them deleted first."""
    shutil.rmtree(store.root / "cache", ignore_errors=True)
    return _listings()


def test_each_change_between_two_lists_shows_in_the_second(
    filled: tuple[Store, list[Experiment]],
) -> None:
    """`nbexp list` of an unchanged store prints the text it kept from the last one; a tag,
    a removal, a new record (from this process or another) or a reindex between two lists
    shows in the second, which is byte for byte what a list made afresh prints."""
    store, (rf1, gb, rf2) = filled
    before = _listings()
    assert _listings() == before  # the second from the kept texts
    assert list((store.root / "cache").glob("text-*"))
    assert _made_afresh(store) == before

    assert nbexp_cli("tag", "last~2", "golden").code == 0
    tagged = _listings()
    assert tagged != before
    assert any(line.startswith(rf1.short_id) and "golden" in line
               for line in tagged["table"].splitlines())  # fmt: skip
    assert "golden" in tagged["csv"] and "golden" in tagged["filtered"]
    assert _made_afresh(store) == tagged

    assert nbexp_cli("rm", gb.id[:8]).code == 0
    removed = _listings()
    assert gb.short_id not in removed["table"] and gb.short_id not in removed["csv"]
    assert _made_afresh(store) == removed

    newest = make_experiment(store, "xgb", params={"depth": 4}, metrics={"f1": 0.99}, minutes=9)
    added = _listings()  # written by this process's store handle, listed by another process
    assert [line.split()[0] for line in added["table"].splitlines()[1:]] == [
        newest.short_id, rf2.short_id, rf1.short_id
    ]  # fmt: skip
    assert added["filtered"].splitlines()[1].startswith(newest.short_id)
    assert _made_afresh(store) == added

    store.remove_tag(rf1.id, "golden")
    assert "golden" not in _listings()["table"]
    assert nbexp_cli("reindex").code == 0
    assert _listings() == _made_afresh(store)


def test_a_damaged_or_foreign_kept_text_is_never_printed(
    filled: tuple[Store, list[Experiment]],
) -> None:
    store, _ = filled
    before = _listings()
    texts = sorted((store.root / "cache").glob("text-*"))
    assert len(texts) == 3
    for text in texts:
        data = bytearray(text.read_bytes())
        data[-2] ^= 0x20  # one letter's case: the file's hash no longer matches
        text.write_bytes(bytes(data))
    assert _listings() == before  # each made afresh, and kept again
    # one listing's text put in another's file: made for other options, never printed
    first, second = sorted((store.root / "cache").glob("text-*"))[:2]
    first.write_bytes(second.read_bytes())
    assert _listings() == before


def test_lists_while_another_process_writes_end_with_every_record(
    filled: tuple[Store, list[Experiment]],
) -> None:
    """Lists running while records are written (a text kept only when nothing changed
    while it was made): each prints some whole state, and the list after the last write
    names every record, as a list made afresh does."""
    store, _ = filled
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from nbexp.store import Store\n"
            "from tests.test_store import make_experiment\n"
            "store = Store(sys.argv[1])\n"
            "for k in range(20):\n"
            "    make_experiment(store, f'w{k}', params={'k': k}, minutes=10 + k)\n",
            str(store.root),
        ],
        cwd=Path(__file__).resolve().parents[1],
    )
    seen = []
    while writer.poll() is None:
        result = nbexp_cli("list", "--format", "csv")
        assert result.code == 0, result
        rows = list(csv.DictReader(io.StringIO(result.out)))
        seen.append(len(rows))
        written = [int(row["params.k"]) for row in rows if row.get("params.k")]
        assert written == sorted(written, reverse=True) == list(range(len(written)))[::-1]
    assert writer.wait(timeout=60) == 0
    assert seen, "the writer finished before any list ran"
    final = _listings()
    assert len(list(csv.DictReader(io.StringIO(final["csv"])))) == 23
    assert final == _made_afresh(store)


def test_list_into_a_closed_pipe_prints_no_traceback(
    filled: tuple[Store, list[Experiment]],
) -> None:
    """`nbexp list | head`: the reader goes away before the listing is written (stdout
    buffered, or not: PYTHONUNBUFFERED, common in containers)."""
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for argv, env in (
        (["list"], buffered),
        (["list", "--format", "csv"], buffered),
        (["list"], {**buffered, "PYTHONUNBUFFERED": "1"}),
    ):
        process = subprocess.Popen(
            [*COMMAND, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # before the interpreter has even started
        error = process.stderr.read().decode()
        assert process.wait(timeout=60) == 0, error
        assert error == "", error


# -- show, rm, tag --------------------------------------------------------------------------------


def test_show_text_and_json(filled: tuple[Store, list[Experiment]]) -> None:
    store, (_, gb, rf2) = filled
    result = nbexp_cli("show", "gb")
    assert result.code == 0, result.err
    assert "gb" in result.out and gb.short_id in result.out
    assert "depth" in result.out and "0.93" in result.out
    default = nbexp_cli("show")
    assert default.code == 0 and rf2.short_id in default.out  # `last` by default
    as_json = nbexp_cli("show", gb.id[:6], "--json")
    assert as_json.code == 0, as_json.err
    body = json.loads(as_json.out)
    assert body == json.loads(store.record_path(gb.id).read_bytes())
    assert body["id"] == Store.make_id(body)


def test_show_of_a_recorded_experiment(ip: Any) -> None:
    run(ip, "import numpy as np\nX = np.ones((10, 3))")
    assert run(ip, "%%experiment cli-show\ndepth = 4\nscore = float(X.sum()) / 100\n").success
    result = nbexp_cli("show", "cli-show")
    assert result.code == 0, result.err
    assert "cli-show" in result.out and "depth" in result.out and "score" in result.out
    body = json.loads(nbexp_cli("show", "last", "--json").out)
    assert body["params"] == {"depth": 4} and body["metrics"] == {"score": 0.3}
    assert "X" in body["state"]["variables"]


def test_rm(filled: tuple[Store, list[Experiment]]) -> None:
    store, (rf1, gb, rf2) = filled
    result = nbexp_cli("rm", gb.id[:8])
    assert result.code == 0, result.err
    assert "deleted gb" in result.out
    assert not store.record_path(gb.id).exists()
    listed = json.loads(nbexp_cli("list", "--format", "json").out)
    assert [row["id"] for row in listed] == [rf2.id, rf1.id]
    assert_user_error(nbexp_cli("show", gb.id[:8]), "no experiment matches")
    assert nbexp_cli("fsck").code == 0


def test_tag(filled: tuple[Store, list[Experiment]]) -> None:
    store, (rf1, gb, _) = filled
    result = nbexp_cli("tag", "last~2", "baseline")
    assert result.code == 0, result.err
    assert "tagged rf" in result.out and "baseline" in result.out
    assert json.loads(nbexp_cli("show", "baseline", "--json").out)["id"] == rf1.id
    assert nbexp_cli("tag", "gb", "final").code == 0
    rows = json.loads(nbexp_cli("list", 'tags == "final"', "--format", "json").out)
    assert [(row["id"], row["tags"]) for row in rows] == [(gb.id, ["best", "final"])]
    assert store.get("final").tags == ("best", "final")
    assert nbexp_cli("fsck").code == 0  # the record itself is untouched


def test_a_read_only_store_lists_shows_and_diffs_and_is_left_untouched(
    filled: tuple[Store, list[Experiment]],
) -> None:
    """Readers open the store read-only: a store nobody may write (chattr +i for root, chmod
    a-w otherwise), its index in place, answers without a note and without a change."""
    from tests.faults.stores import read_only

    store, (rf1, gb, rf2) = filled
    store.close()
    store_module._stores.clear()
    before = {p.relative_to(store.root): p.stat().st_mtime_ns for p in store.root.rglob("*")}
    try:
        with read_only(store.root):
            listed = nbexp_cli("list")
            as_json = nbexp_cli("list", "--format", "json")
            shown = nbexp_cli("show", "best")
            compared = nbexp_cli("diff", "rf", "gb")
            refused = nbexp_cli("tag", "last", "x")
    except OSError as error:
        pytest.skip(f"cannot make a folder read-only here: {error}")
    assert listed.code == 0 and listed.err == "", listed
    assert [line.split()[0] for line in listed.out.splitlines()[1:]] == [
        rf2.short_id,
        gb.short_id,
        rf1.short_id,
    ]
    assert [row["id"] for row in json.loads(as_json.out)] == [rf2.id, gb.id, rf1.id]
    assert shown.code == 0 and gb.id in shown.out and shown.err == "", shown
    assert compared.code == 0 and "depth" in compared.out, compared
    assert_user_error(refused, "cannot use the store", "writable")  # a writer is told
    after = {p.relative_to(store.root): p.stat().st_mtime_ns for p in store.root.rglob("*")}
    assert after == before


# -- reindex, fsck, gc ------------------------------------------------------------------------------


def test_reindex_after_the_index_is_deleted(filled: tuple[Store, list[Experiment]]) -> None:
    store, _ = filled
    nbexp_cli("tag", "last", "newest")
    before = json.loads(nbexp_cli("list", "--format", "json").out)
    store.close()
    store_module._stores.clear()
    for suffix in ("", "-wal", "-shm"):
        Path(str(store.index_path) + suffix).unlink(missing_ok=True)
    rebuilt = nbexp_cli("list", "--format", "json")  # rebuilt on open, never an empty answer
    assert "rebuilt it from 3 records" in rebuilt.err
    result = nbexp_cli("reindex")
    assert result.code == 0, result.err
    assert "indexed 3 experiments" in result.out
    assert json.loads(rebuilt.out) == json.loads(nbexp_cli("list", "--format", "json").out)
    after = json.loads(nbexp_cli("list", "--format", "json").out)
    assert sorted(json.dumps(r, sort_keys=True) for r in after) == sorted(
        json.dumps(r, sort_keys=True) for r in before
    )


def test_reindex_while_a_kernel_keeps_its_store_open(
    filled: tuple[Store, list[Experiment]],
) -> None:
    store, _ = filled  # this process plays the running kernel
    assert nbexp_cli("reindex").code == 0
    later = make_experiment(store, "after-reindex", minutes=10)
    rows = json.loads(nbexp_cli("list", "--format", "json").out)
    assert rows[0]["id"] == later.id and len(rows) == 4
    assert nbexp_cli("fsck").code == 0


@pytest.mark.parametrize("damage", ["garbage", "foreign-schema"])
def test_an_unreadable_index_is_rebuilt_on_open(
    filled: tuple[Store, list[Experiment]], damage: str
) -> None:
    store, _ = filled
    store.close()
    store_module._stores.clear()
    for suffix in ("", "-wal", "-shm"):
        Path(str(store.index_path) + suffix).unlink(missing_ok=True)
    if damage == "garbage":
        store.index_path.write_bytes(b"this is not a database" * 100)
    else:
        import sqlite3

        connection = sqlite3.connect(store.index_path)
        connection.execute("CREATE TABLE experiments (id TEXT, label TEXT)")
        connection.commit()
        connection.close()
    listed = nbexp_cli("list")  # an index it cannot use is rebuilt and kept aside
    assert listed.code == 0 and listed.out.count("\n") == 4, listed
    assert "rebuilt it from 3 records" in listed.err and "index.sqlite.damaged" in listed.err
    assert (store.root / "index.sqlite.damaged").exists()
    result = nbexp_cli("reindex")
    assert result.code == 0, result.err
    assert len(json.loads(nbexp_cli("list", "--format", "json").out)) == 3


def test_fsck_clean_then_names_a_flipped_object(ip: Any) -> None:
    run(ip, "import numpy as np\nweights = np.arange(5000.0)")
    assert run(ip, "%%experiment fsck-me\nalpha = 0.5\n").success
    result = nbexp_cli("fsck")
    assert result.code == 0, result.out + result.err
    assert result.out.startswith("ok:")
    store = open_store()
    experiment = store.get("fsck-me")
    pickle_hash = experiment.variables["weights"]["buffers"][0][0]  # the array's data chunk
    path = store.object_path(pickle_hash)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x5A
    path.write_bytes(bytes(damaged))
    result = nbexp_cli("fsck")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert f"object {pickle_hash[:12]}" in result.out and "corrupt" in result.out
    assert experiment.short_id in result.out
    assert "1 problem" in result.err


def test_fsck_names_a_tampered_record_and_an_unindexed_one(
    filled: tuple[Store, list[Experiment]],
) -> None:
    store, (rf1, gb, _) = filled
    path = store.record_path(rf1.id)
    path.write_text(path.read_text().replace('"depth":3', '"depth":4'))
    import sqlite3

    with sqlite3.connect(store.index_path) as connection:
        connection.execute("DELETE FROM experiments WHERE id = ?", (gb.id,))
    result = nbexp_cli("fsck")
    assert result.code == 1
    assert f"record {rf1.short_id}" in result.out
    assert f"index {gb.short_id}" in result.out and "reindex" in result.out
    assert "2 problems" in result.err


def test_gc_keeps_objects_of_recorded_state(ip: Any) -> None:
    run(ip, "import numpy as np\nkeep = np.arange(3000.0)")
    assert run(ip, "%%experiment gc-a\nalpha = 1\n").success
    result = nbexp_cli("gc", "--yes")
    assert result.code == 0, result.err
    assert "nothing to collect" in result.out
    assert nbexp_cli("fsck").code == 0
    assert nbexp_cli("rm", "gc-a").code == 0
    result = nbexp_cli("gc", "--yes")
    assert result.code == 0 and "deleted" in result.out


# -- user errors: one line, exit 1, no traceback -------------------------------------------------


def test_unknown_ref(filled: tuple[Store, list[Experiment]]) -> None:
    assert_user_error(nbexp_cli("show", "nosuch"), "no experiment matches `nosuch`")
    assert_user_error(nbexp_cli("rm", "nosuch"), "nosuch")
    assert_user_error(nbexp_cli("tag", "nosuch", "x"), "nosuch")
    assert_user_error(nbexp_cli("show", "last~9"), "holds 3 experiments")
    assert_user_error(nbexp_cli("show", "abc"), "too short")


def test_ambiguous_ref(project: Path) -> None:
    store = open_store()
    first, second, prefix = _ambiguous_pair(store)
    store.save(first)
    store.save(second)
    line = assert_user_error(nbexp_cli("show", prefix), "ambiguous")
    assert first.id[:8] in line and second.id[:8] in line
    assert_user_error(nbexp_cli("rm", prefix), "ambiguous")
    assert store.record_path(first.id).exists() and store.record_path(second.id).exists()


@pytest.mark.parametrize(
    "query", ["metrics.f1 >", "metrics.f1 > > 2", "(params.depth < 3", "bogus == 1", "and"]
)
def test_bad_query(filled: tuple[Store, list[Experiment]], query: str) -> None:
    assert_user_error(nbexp_cli("list", query), "query")


@pytest.mark.parametrize("sort", ["bogus", "-bogus", "params.", "params"])
def test_bad_sort(filled: tuple[Store, list[Experiment]], sort: str) -> None:
    assert_user_error(nbexp_cli("list", "--sort", sort), "cannot sort by")


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--format", "xml"],
        ["list", "--sort"],
        ["frobnicate"],
        [],
        ["tag", "last"],
        ["list", "--limit", "many"],
    ],
)
def test_bad_command_line(project: Path, argv: list[str]) -> None:
    assert_user_error(nbexp_cli(*argv), "--help")


def test_unwritable_store(project: Path) -> None:
    if os.geteuid() == 0:  # root ignores permissions: make the store's parent a regular file
        blocker = project / "plain-file"
        blocker.write_text("x")
        target = blocker / ".nbexp"
    else:
        locked = project / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / ".nbexp"
    try:
        for argv in (["fsck"], ["reindex"], ["tag", "last", "x"]):
            assert_user_error(
                nbexp_cli(*argv, env={"NBEXP_STORE": str(target)}),
                "cannot use the store",
                "NBEXP_STORE",
            )
        assert_user_error(nbexp_cli("--store", str(target), "rm", "last"), "cannot use the store")
        # readers create nothing: a store that cannot be made is an empty one to them
        listed = nbexp_cli("list", env={"NBEXP_STORE": str(target)})
        assert listed.code == 0 and listed.out.strip() == "no experiments yet", listed
        assert_user_error(nbexp_cli("--store", str(target), "show"), "holds 0 experiments")
    finally:
        if os.geteuid() != 0:
            (project / "locked").chmod(0o700)


def test_a_record_from_a_newer_nbexp(project: Path) -> None:
    from dataclasses import replace

    store = open_store()
    future = replace(make_experiment(store, "future", save=False), schema_version=99)
    store.save(replace(future, id=Store.make_id(future.to_dict())))
    assert_user_error(nbexp_cli("show", "future"), "upgrade nbexp")
    result = nbexp_cli("fsck")
    assert result.code == 1 and "upgrade" in result.out


def test_a_corrupt_record(filled: tuple[Store, list[Experiment]]) -> None:
    store, (_, gb, _) = filled
    store.record_path(gb.id).write_bytes(b"\x00\x01 not json")
    assert_user_error(nbexp_cli("show", "gb"), "corrupt", "nbexp fsck")
    assert nbexp_cli("list").code == 0


def test_text_anyone_wrote_reaches_the_terminal_escaped(project: Path) -> None:
    """A pulled record's name, params and output are anyone's text: `list` and `show`
    never send its terminal escapes or line breaks as they are (a name could clear the
    screen, retitle the terminal or forge table rows); the CSV keeps the exact data."""
    store_module._stores.clear()
    store = open_store()
    name = "evil\x1b]0;pwned\x07\nforged-row"
    hostile = make_experiment(store, name, params={"note": "a\x1b[2Jb"}, metrics={"f1": 0.5})
    make_experiment(store, "plain", params={"note": "ok"}, metrics={"f1": 0.6}, minutes=1)
    listed = nbexp_cli("list", cwd=project)
    assert listed.code == 0, listed.err
    assert "\x1b" not in listed.out and "\x07" not in listed.out
    assert "evil\\x1b]0;pwned\\x07\\nforged-row" in listed.out
    assert len(listed.out.strip().split("\n")) == 3  # header and two rows: no forged row
    shown = nbexp_cli("show", hostile.short_id, cwd=project)
    assert shown.code == 0, shown.err
    assert "\x1b" not in shown.out and "\x07" not in shown.out
    assert "a\\x1b[2Jb" in shown.out
    exact = nbexp_cli("list", "--format", "csv", cwd=project)
    assert [row["name"] for row in csv.DictReader(io.StringIO(exact.out))].count(name) == 1
