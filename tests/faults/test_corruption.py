"""Corruption (SPEC §2, §8, §11): bytes flipped, truncated or deleted in objects (chunks of a
large array, a variable's pickle, an inline variable, a written file), in records and in the
index. `nbexp fsck` names every damaged item — the object and every experiment using it, the
record — and nothing healthy; restore and load refuse only the damaged variables (and those
built on them) and restore the rest intact; `nbexp reindex` rebuilds any damaged index with
the same listing and query results; a damaged record leaves the rest of the store usable."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nbexp
from nbexp import store as store_module
from nbexp.errors import NbexpError, RecordError
from nbexp.restorer import restore_into
from nbexp.store import Store, open_store
from nbexp.store.packs import decode_index
from tests.conftest import run
from tests.faults import figures
from tests.faults.stores import (
    cli,
    flip,
    fsck_lines,
    one_line_error,
    overwrite,
    truncate,
    users_named,
)
from tests.test_store import make_experiment

_TOTALS = {"restored": 0, "refused": 0}


def cell(line: str, body: str) -> str:
    return f"%%experiment {line}\n" + textwrap.dedent(body).strip("\n") + "\n"


def record(ip: Any, line: str, body: str) -> Any:
    result = run(ip, cell(line, body))
    assert result.success, result.error_in_exec
    return nbexp.get("last")


def tamper_inline(store: Store, experiment: Any, name: str) -> None:
    """Change one base64 character of an inline variable inside the record file (the JSON
    stays valid: only the record's content no longer matches its id)."""
    payload = experiment.state["variables"][name]["inline"]
    index = len(payload) // 2
    changed = payload[:index] + ("A" if payload[index] != "A" else "B") + payload[index + 1 :]
    path = store.record_path(experiment.id)
    text = path.read_text()
    assert text.count(payload) == 1
    path.write_text(text.replace(payload, changed))


# -- fsck names every damaged item, and nothing healthy ------------------------------------


ALPHA = """
    import numpy as np
    arr_a = np.arange(300_000.0)
    model_a = {"weights": "a" * 4000}
    small_a = [1, 2, 3]
    with open("model_a.bin", "wb") as handle:
        handle.write(bytes(range(256)) * 64)
    score = 0.5
"""
BETA = """
    arr_b = np.arange(300_000.0) * 2
    score = 0.6
"""
GAMMA = """
    g = np.ones(200_000)
    model_g = {"weights": "g" * 4000}
    score = 0.7
"""


def test_fsck_names_every_damaged_object_record_and_user_and_nothing_healthy(ip: Any) -> None:
    alpha = record(ip, "alpha", ALPHA)
    beta = record(ip, "beta", BETA)  # its state still holds alpha's unchanged variables
    run(ip, "del arr_a, arr_b, model_a, small_a, handle")
    gamma = record(ip, "gamma", GAMMA)
    delta = record(ip, "delta", "x_d = 1.5")
    epsilon = record(ip, "epsilon", "x_e = 2.5")
    zeta = record(ip, "zeta", "x_z = 3.5")
    theta = record(ip, "theta", "small_t = [7, 8, 9]")
    store = open_store()
    assert cli("fsck").code == 0

    va, vb = alpha.variables, beta.variables
    chunk_a = va["arr_a"]["buffers"][0][1]
    pickle_a = va["model_a"]["pickle"]
    artifact = alpha.artifacts[0]["hash"]
    chunk_b = vb["arr_b"]["buffers"][0][2]
    assert vb["arr_a"]["buffers"][0][1] == chunk_a and vb["model_a"]["pickle"] == pickle_a
    flip(store.object_path(chunk_a), 1000)  # shared by alpha and beta
    truncate(store.object_path(pickle_a), 100)  # shared by alpha and beta
    store.object_path(artifact).unlink()  # alpha's written file
    overwrite(store.object_path(chunk_b), 0, bytes(4096))  # beta's own chunk
    store.record_path(delta.id).write_bytes(b"\x00\xff not a record")
    path = store.record_path(epsilon.id)
    path.write_text(path.read_text().replace('"x_e":2.5', '"x_e":9.5'))
    path = store.record_path(zeta.id)
    path.write_text(path.read_text().replace(f'"id":"{zeta.id}"', f'"id":"{gamma.id}"'))
    tamper_inline(store, theta, "small_t")

    s = lambda e: e.short_id  # noqa: E731
    expected = {
        ("object", chunk_a[:12]): ("corrupt", {s(alpha), s(beta)}),
        ("object", pickle_a[:12]): ("corrupt", {s(alpha), s(beta)}),
        ("object", artifact[:12]): ("missing", {s(alpha)}),
        ("object", chunk_b[:12]): ("corrupt", {s(beta)}),
        ("record", s(delta)): ("unreadable", set()),
        ("record", s(epsilon)): ("does not match its id", set()),
        ("record", s(zeta)): ("does not match its id", set()),
        ("record", s(theta)): ("does not match its id", set()),
    }
    result = cli("fsck")
    assert result.code == 1 and f"{len(expected)} problems" in result.err
    found = fsck_lines(result)
    assert set(found) == set(expected), result.out
    for key, (word, users) in expected.items():
        assert word in found[key], (key, found[key])
        if key[0] == "object":
            assert users_named(found[key]) == users, found[key]
        else:  # says what to do with it
            assert "delete records/" in found[key] and "nbexp pull" in found[key]
    assert s(gamma) not in result.out  # healthy: its objects and record are never named
    figures.report("corruption: items damaged (objects, records) for fsck", len(expected))
    figures.report(
        "corruption: damaged items fsck named / healthy items it named", f"{len(found)} / 0"
    )


# -- restore and load refuse only the damaged variables ------------------------------------

RESTORE_BODY = """
    import numpy as np
    arr = np.arange(300_000.0)
    alias = arr
    holder = {"arr": arr, "label": "h"}
    blob = {"payload": "b" * 3000}
    small = [1, 2, 3]
    other = np.arange(10)
    text = "fine"
"""
ORIGINAL = {
    "arr": np.arange(300_000.0),
    "alias": np.arange(300_000.0),
    "holder": {"arr": np.arange(300_000.0), "label": "h"},
    "blob": {"payload": "b" * 3000},
    "small": [1, 2, 3],
    "other": np.arange(10),
    "text": "fine",
}
ON_ARR = {"arr", "alias", "holder"}  # alias is arr; holder refers to it


def _damage(store: Store, experiment: Any, kind: str) -> set[str]:
    """Damage the experiment's state in one way; returns the variables that must be refused."""
    variables = experiment.variables
    chunks = variables["arr"]["buffers"][0]
    assert len(chunks) == 3 and "inline" in variables["small"] and "inline" not in variables["blob"]
    if kind == "flipped-chunk":
        flip(store.object_path(chunks[1]), 4321)
    elif kind == "missing-chunk":
        store.object_path(chunks[2]).unlink()
    elif kind == "truncated-chunk":
        truncate(store.object_path(chunks[0]), 100)
    elif kind == "flipped-pickle":
        flip(store.object_path(variables["blob"]["pickle"]), 50, 0x01)
        return {"blob"}
    elif kind == "tampered-inline":
        tamper_inline(store, experiment, "small")
        return {"small"}
    return ON_ARR


def _same(value: Any, original: Any) -> bool:
    if isinstance(original, np.ndarray):
        return isinstance(value, np.ndarray) and np.array_equal(value, original)
    if isinstance(original, dict):
        return value.keys() == original.keys() and all(
            _same(value[k], original[k]) for k in original
        )
    return bool(value == original)


@pytest.mark.parametrize(
    "kind",
    ["flipped-chunk", "missing-chunk", "truncated-chunk", "flipped-pickle", "tampered-inline"],
)
def test_restore_and_load_refuse_only_the_damaged_variables(
    ip: Any, capsys: Any, kind: str
) -> None:
    experiment = record(ip, "victim", RESTORE_BODY)
    refused = _damage(open_store(), experiment, kind)
    healthy = set(ORIGINAL) - refused

    # %exp_restore: one line per refused variable naming it and the fix; the rest correct
    for name in ORIGINAL:
        ip.user_ns[name] = "clobbered"
    capsys.readouterr()
    result = run(ip, "%exp_restore victim")
    captured = capsys.readouterr()
    assert result.success, result.error_in_exec
    assert "Traceback" not in captured.out + captured.err
    skipped = {
        line.split()[1].rstrip(":"): line
        for line in captured.out.splitlines()
        if line.strip().startswith("skipped ")
    }
    assert set(skipped) == refused, captured.out
    for line in skipped.values():
        assert "nbexp fsck" in line and any(
            word in line for word in ("corrupt", "missing", "does not match")
        ), line
    for name in refused:
        assert ip.user_ns[name] == "clobbered"  # the live value is left alone
    for name in healthy:
        assert _same(ip.user_ns[name], ORIGINAL[name]), name
    if "arr" in healthy:
        assert ip.user_ns["alias"] is ip.user_ns["arr"]
        assert ip.user_ns["holder"]["arr"] is ip.user_ns["arr"]

    # nbexp.restore (into the running shell): the same verdict in its report
    for name in ORIGINAL:
        ip.user_ns[name] = "clobbered"
    report = nbexp.restore("victim")
    assert set(report.skipped) == refused and set(report.restored) >= healthy
    for name in healthy:
        assert _same(ip.user_ns[name], ORIGINAL[name]), name

    # nbexp.load: a damaged variable raises one NbexpError line naming it; the rest load
    lazy = nbexp.load("victim")
    for name in refused:
        with pytest.raises(NbexpError) as caught:
            lazy[name]
        message = str(caught.value)
        assert "\n" not in message and repr(name) in message and "nbexp fsck" in message
    for name in healthy:
        assert _same(lazy[name], ORIGINAL[name]), name

    _TOTALS["restored"] += len(healthy)
    _TOTALS["refused"] += len(refused)
    figures.report(
        "corruption: variables restored / refused (5 kinds of damage)",
        f"{_TOTALS['restored']} / {_TOTALS['refused']}",
    )


# -- random bit flips anywhere: always caught, never a crash --------------------------------


def test_random_bit_flips_in_objects_and_records_are_each_named_by_fsck(ip: Any) -> None:
    body = (
        textwrap.dedent(RESTORE_BODY) + "with open('out.bin', 'wb') as f:\n    f.write(b'z' * 5000)"
    )
    record(ip, "one", body)
    run(ip, "del f")
    record(ip, "two", "arr2 = arr * 3\nnote = 'two'")
    store = open_store()
    experiments = [store.load(i) for i in store.iter_record_ids()]
    users: dict[str, tuple[str, str]] = {}  # object → (experiment id, a variable needing it)
    for experiment in experiments:
        for name, entry in experiment.variables.items():
            chunks = [digest for buffer in entry.get("buffers", []) for digest in buffer]
            for digest in [entry.get("pickle"), *chunks]:
                if digest and "inline" not in entry:
                    users.setdefault(digest, (experiment.id, name))
    objects = sorted(set().union(*(e.object_hashes() for e in experiments)))
    targets = [("object", d) for d in objects] + [("record", e.id) for e in experiments]
    rng = random.Random(20240601)
    flips = caught = 0
    for _ in range(60):
        kind, key = rng.choice(targets)
        path = store.object_path(key) if kind == "object" else store.record_path(key)
        size = path.stat().st_size
        before = flip(path, rng.randrange(size), 1 << rng.randrange(8))
        try:
            if kind == "record":
                # a flip may leave JSON with the same content (1e-05 vs 1E-05): no damage
                try:
                    same = json.loads(path.read_bytes()) == json.loads(before)
                except ValueError:
                    same = False
                expected = set() if same else {("record", key[:8])}
                with contextlib.suppress(RecordError):  # refused or read, never a crash
                    store.load(key)
                assert len(store.rows()) == len(experiments)  # listing is untouched
            else:
                expected = {("object", key[:12])}
                if key in users:
                    owner, name = users[key]
                    with pytest.raises(NbexpError, match=name):
                        nbexp.load(owner)[name]
            problems = store.fsck()
            if kind == "record":
                # a flip inside what the record says about an object (its hash, or whether a
                # value is inline) makes it name an object that is not there: fsck rightly
                # reports that too, as used by this record alone
                problems = [
                    p
                    for p in problems
                    if not (p.kind == "object" and p.detail == f"missing (used by {key[:8]})")
                ]
            named = {(p.kind, p.item) for p in problems}
            assert named == expected, (kind, key, [str(p) for p in problems])
            flips += 1
            caught += bool(expected)
        finally:
            path.write_bytes(before)
    assert store.fsck() == []
    figures.report(
        "corruption: random bit flips (objects + records) / named by fsck", f"{flips} / {caught}"
    )


# -- the index: deleted, truncated, overwritten; reindex restores the same answers ----------


QUERIES = [
    "metrics.f1 > 0.5 and params.depth < 30",
    'tags == "best"',
    'name in ["run-1", "run-2"] or status == "failed"',
]


def _answers() -> dict[str, Any]:
    """What the CLI and the API answer: the listing and each query's rows."""
    answers: dict[str, Any] = {}
    for query in [None, *QUERIES]:
        result = cli("list", *([query] if query else []), "--format", "json")
        assert result.code == 0, result
        answers[f"cli {query}"] = sorted(
            json.dumps(r, sort_keys=True) for r in json.loads(result.out)
        )
        frame = nbexp.experiments(query)
        answers[f"api {query}"] = sorted(frame["id"].tolist())
    return answers


INDEX_DAMAGE = [
    "deleted",
    "truncated-to-0",
    "truncated-to-half",
    "truncated-to-1-page",
    "garbage-header",
    "garbage-in-the-middle",
    "garbage-at-the-end",
    "garbage-wal",
    "another-store's-index",
]


def _damage_index(root: Path, kind: str, other: Path) -> None:
    index = root / "index.sqlite"
    size = index.stat().st_size
    rng = random.Random(kind)
    if kind == "deleted":
        index.unlink()
    elif kind.startswith("truncated"):
        truncate(index, {"truncated-to-0": 0, "truncated-to-half": size // 2}.get(kind, 4096))
    elif kind == "garbage-header":
        overwrite(index, 0, rng.randbytes(200))
    elif kind == "garbage-in-the-middle":
        overwrite(index, size // 2, rng.randbytes(8192))
    elif kind == "garbage-at-the-end":
        overwrite(index, size - 8192, rng.randbytes(8192))
    elif kind == "garbage-wal":
        Path(str(index) + "-wal").write_bytes(rng.randbytes(40_000))
    else:
        shutil.copyfile(other / "index.sqlite", index)


@pytest.mark.parametrize("kind", INDEX_DAMAGE)
def test_a_damaged_index_is_rebuilt_and_gives_the_same_answers(
    project: Path, tmp_path: Path, kind: str
) -> None:
    store_module._stores.clear()
    store = open_store()
    for i in range(40):
        make_experiment(
            store,
            f"run-{i % 7}",
            params={"depth": i, "loss": "l2" if i % 2 else "l1"},
            metrics={"f1": i / 40, "odd": float("nan") if i % 5 == 0 else i},
            minutes=i,
            status="failed" if i % 9 == 0 else "ok",
            tags=("best",) if i % 10 == 3 else (),
        )
    other_store = Store(tmp_path / "other" / ".nbexp")
    make_experiment(other_store, "stranger")
    other_store.close()
    before = _answers()
    for opened in list(store_module._stores.values()):
        opened.close()
    store_module._stores.clear()

    _damage_index(store.root, kind, other_store.root)

    listing = cli("list")
    assert listing.code == 0 and "Traceback" not in listing.out + listing.err, listing
    notes = [line for line in listing.err.splitlines() if line.strip()]
    if kind == "another-store's-index":  # a valid index of other records: fsck names it
        assert "stranger" in listing.out
    else:  # right answers: SQLite never read a damaged page, or it was rebuilt on the spot
        assert listing.out.count("run-") == 40, listing
        assert len(notes) <= 1 and all("rebuilt it from 40 records" in n for n in notes), notes
        if kind in ("deleted", "truncated-to-0", "truncated-to-half", "garbage-header"):
            assert notes, listing  # never an empty or silently partial answer
        for argv in (*(["list", q] for q in QUERIES), ["show", "last"]):
            answer = cli(*argv)
            assert answer.code == 0 and "Traceback" not in answer.out + answer.err, answer
    check = cli("fsck")
    assert "Traceback" not in check.out + check.err
    if kind == "another-store's-index":
        assert check.code == 1 and "reindex" in check.out + check.err

    rebuilt = cli("reindex")
    assert rebuilt.code == 0 and "indexed 40 experiments" in rebuilt.out, rebuilt
    store_module._stores.clear()
    assert _answers() == before
    assert cli("fsck").code == 0


@pytest.mark.parametrize("where", [0.4, 0.6, 0.9])
def test_recording_with_a_damaged_index_rebuilds_it_and_records_the_run(
    ip: Any, capsys: Any, where: float
) -> None:
    record(ip, "first", "a = 1.5")
    store = open_store()
    for i in range(60):  # enough pages that the damage may spare what opening the index reads
        make_experiment(store, f"filler-{i}", params={"i": i}, metrics={"m": i}, minutes=i)
    store.close()
    store_module._stores.clear()
    index = store.root / "index.sqlite"
    overwrite(index, int(index.stat().st_size * where), random.Random(3).randbytes(8192))

    capsys.readouterr()
    result = run(ip, cell("second", "kept = 6 * 7\nkept"))
    captured = capsys.readouterr()
    assert result.success and result.result == 42 and ip.user_ns["kept"] == 42  # run kept
    assert "Traceback" not in captured.err
    # the index is a cache of the records: rebuilt when it cannot be read, so the run is
    # recorded (with one line saying the index was rebuilt, if it was)
    assert "recorded second" in captured.out and "NOT recorded" not in captured.err, captured
    notes = [line for line in captured.err.splitlines() if line.strip()]
    assert all("rebuilt it from" in line for line in notes), notes
    listed = run(ip, "%experiments")
    assert listed.success
    store_module._stores.clear()
    names = nbexp.experiments()["name"].tolist()
    assert "first" in names and "second" in names and len(names) == 62
    assert cli("fsck").code == 0


# -- a damaged record: the rest of the store keeps working ----------------------------------


def test_a_damaged_record_is_one_line_and_the_rest_keep_working(
    ip: Any, capsys: Any, tmp_path: Path
) -> None:
    record(ip, "keep-1", "import numpy as np\nw1 = np.arange(200_000.0)\nscore = 0.25")
    bad = record(ip, "broken", "w2 = np.arange(200_000.0) + 1\nscore = 0.5")
    record(ip, "keep-2", "w3 = np.arange(10)\nscore = 0.75")
    store = open_store()
    store.record_path(bad.id).write_bytes(b'{"schema_version": 1, "id": "' + bad.id.encode())

    listing = cli("list", "--format", "json")
    assert listing.code == 0 and len(json.loads(listing.out)) == 3  # the index still lists it
    assert len(nbexp.experiments("params.score > 0.3")) == 2
    for argv in (["show", "broken"], ["export", "broken"], ["diff", "keep-1", "broken"]):
        one_line_error(cli(*argv), bad.short_id, "corrupt")
    one_line_error(cli("gc"), bad.short_id, "unreadable")  # its objects are not collected
    with pytest.raises(RecordError):
        nbexp.get("broken")
    for magic in ("%exp_show broken", "%exp_restore broken", "%exp_diff keep-1 broken"):
        capsys.readouterr()
        result = run(ip, magic)
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.strip()]
        assert not result.success and len(errors) == 1, (magic, captured.err)
        assert errors[0].startswith("UsageError: ") and "corrupt" in errors[0]
    ip.user_ns["w3"] = "clobbered"
    assert run(ip, "%exp_restore keep-2").success
    assert np.array_equal(ip.user_ns["w3"], np.arange(10))

    remote = tmp_path / "remote"
    assert cli("remote", "add", "backup", str(remote)).code == 0
    push = cli("push", "backup", "-q")
    one_line_error(push, "pushed 2 of 3", bad.short_id)
    assert len(list((remote / "records").rglob("*.json"))) == 2

    found = fsck_lines(cli("fsck"))
    assert list(found) == [("record", bad.short_id)]  # only it, and not again as an index row
    assert cli("reindex").code == 0
    assert [(k, i) for k, i in fsck_lines(cli("fsck"))] == [("record", bad.short_id)]
    store_module._stores.clear()
    assert sorted(nbexp.experiments()["name"]) == ["keep-1", "keep-2"]


# -- pack files: a flipped byte in a pack, a damaged pack index ------------------------------

PACKED = """
    import numpy as np
    pieces = [np.full(20_000, float(k)) for k in range(40)]
    others = [np.full(20_000, -1.0 - k) for k in range(40)]
    big = np.arange(1_000_000.0)
    score = 0.9
"""


def test_a_damaged_pack_names_its_users_and_refuses_only_the_damaged_variable(ip: Any) -> None:
    """A snapshot of many new objects is one pack. A byte flipped inside one object's bytes
    in it: fsck names that object and every experiment using it, and nothing else; restore
    refuses only the variable built on it. A damaged pack index: fsck says what to run, the
    objects are still found (by walking the pack), and `nbexp gc --yes` rewrites it."""
    alpha = record(ip, "alpha", PACKED)
    beta = record(ip, "beta", "note = 1")  # its state reuses alpha's packed objects
    store = open_store()
    victim = alpha.variables["pieces"]["buffers"][3][0]
    assert beta.variables["pieces"]["buffers"][3][0] == victim
    located = store.object_location(victim)
    assert located is not None and not store.object_path(victim).exists(), "not packed"
    pack, offset, length = located
    big_chunk = alpha.variables["big"]["buffers"][0][-1]  # restored by mapping the pack
    big_offset, big_length = store.object_location(big_chunk)[1:]  # type: ignore[index]
    assert cli("fsck").code == 0
    flip(pack, offset + length // 2)
    flip(pack, big_offset + big_length - 8)

    result = cli("fsck")
    assert result.code == 1 and "2 problems" in result.err, result.out + result.err
    found = fsck_lines(result)
    assert set(found) == {("object", victim[:12]), ("object", big_chunk[:12])}, result.out
    for digest in (victim, big_chunk):
        assert "corrupt" in found[("object", digest[:12])]
        assert users_named(found[("object", digest[:12])]) == {alpha.short_id, beta.short_id}

    for experiment in (alpha, beta):
        namespace: dict[str, Any] = {}
        report = restore_into(namespace, store, experiment)
        assert set(report.skipped) == {"pieces", "big"}, report.skipped
        for name in ("pieces", "big"):
            assert "corrupt" in report.skipped[name] and "nbexp fsck" in report.skipped[name]
        assert all(
            np.array_equal(a, np.full(20_000, -1.0 - k)) for k, a in enumerate(namespace["others"])
        )
        assert namespace["score"] == 0.9
    _TOTALS["refused"] += 2

    # the index of the pack damaged too: fsck says what to run; reads still find objects
    index = pack.with_suffix(".idx")
    flip(index, 40)
    store_module._stores.clear()
    result = cli("fsck")
    found = fsck_lines(result)
    assert set(found) == {
        ("object", victim[:12]),
        ("object", big_chunk[:12]),
        ("pack", pack.stem),
    }, result.out
    assert "nbexp gc --yes" in found[("pack", pack.stem)]
    namespace = {}
    report = restore_into(namespace, open_store(), alpha)
    assert set(report.skipped) == {"pieces", "big"} and len(namespace["others"]) == 40
    assert cli("gc", "--yes").code == 0
    indexes = list(pack.parent.glob("*.idx"))  # rewritten: the same pack, its index whole
    assert len(indexes) == 1 and all(decode_index(i.read_bytes()) for i in indexes)
    store_module._stores.clear()
    found = fsck_lines(cli("fsck"))
    assert set(found) == {("object", victim[:12]), ("object", big_chunk[:12])}, found
    # cut short: the mapped variable's range is past the end; refused, never a crash (SIGBUS)
    store_module._stores.clear()
    pack = next(pack.parent.glob("*.pack"))
    truncate(pack, pack.stat().st_size // 2)
    namespace = {}
    report = restore_into(namespace, open_store(), alpha)
    assert "big" in report.skipped and "score" in namespace
    figures.report("corruption: damaged packs (a flipped object, a flipped index) named by fsck", 2)
