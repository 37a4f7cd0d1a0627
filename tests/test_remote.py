"""Remotes (SPEC §9) over file:// and fsspec's generic path: two "machines" (two project
folders with their own stores) exchanging experiments both ways through one remote folder."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import api
from nbexp import remote as remote_module
from nbexp import store as store_module
from nbexp.cli import main
from nbexp.errors import RemoteError, TransferError, UntrustedRemoteError
from nbexp.hashing import hash_array, hash_file, hash_frame
from nbexp.record import Code, Experiment, Outcome
from nbexp.remote import add_remote, gc_remote, pull, push, set_trusted
from nbexp.store import Store, open_store
from nbexp.transfer import RemoteFiles
from tests.conftest import run

_BASE = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)


# -- helpers shared with test_remote_s3.py ---------------------------------------------


def machine(folder: Path) -> Store:
    """A second project folder with its own store (another machine, as far as nbexp knows)."""
    (folder / ".nbexp").mkdir(parents=True, exist_ok=True)
    return open_store(folder / ".nbexp")


def fake(
    store: Store, name: str, blobs: list[bytes], *, minutes: int = 0, tags: tuple[str, ...] = ()
) -> Experiment:
    """A record whose artifacts are `blobs` (each one object), saved into `store`."""
    created = (_BASE + dt.timedelta(minutes=minutes)).isoformat(timespec="microseconds")
    artifacts = [
        {"path": f"{name}-{i}.bin", "hash": store.put_bytes(blob), "size": len(blob)}
        for i, blob in enumerate(blobs)
    ]
    draft = Experiment(
        id="",
        name=name,
        created=created,
        code=Code(cell=f"%%experiment {name}\nn = {len(blobs)}\n", source=f"n = {len(blobs)}\n"),
        outcome=Outcome(status="ok", started=created, duration=1.0),
        params={"n": len(blobs)},
        metrics={"score": 0.5 + minutes / 1000},
        env={"python": "3", "platform": "test", "packages": {}},
        artifacts=artifacts,
        tags=tags,
    )
    experiment = replace(draft, id=Store.make_id(draft.to_dict()))
    store.save(experiment)
    return experiment


def blobs_for(seed: str, count: int, size: int = 50_000) -> list[bytes]:
    return [(f"{seed}:{i}:".encode() * (size // 8 + 1))[:size] for i in range(count)]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (same code path as the console script)."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith(("push ", "pull "))]
    assert len(lines) == 1, err
    assert lines[0].startswith("nbexp: ") and "Traceback" not in err
    return lines[0]


def fresh_copy(tmp_path: Path, name: str, remote: str, url: str, **options: Any) -> Store:
    """A third store that pulls everything from the remote and must then pass fsck."""
    third = machine(tmp_path / name)
    add_remote(third, remote, url, options)
    pull(third, remote, progress=False)
    assert third.fsck() == []
    return third


def file_remote_problems(root: Path) -> list[str]:
    """Records on a file:// remote whose content or objects are not all there and intact."""
    problems = []
    for path in sorted((root / "records").glob("*/*.json")):
        body = json.loads(path.read_bytes())
        if Store.make_id(body) != path.stem:
            problems.append(f"record {path.stem[:8]} does not match its id")
        for digest in Experiment.from_dict(body).object_hashes():
            target = root / "objects" / digest[:2] / digest[2:]
            if not target.exists():
                problems.append(f"record {path.stem[:8]} misses object {digest[:12]}")
            elif hash_file(target)[0] != digest:
                problems.append(f"object {digest[:12]} is corrupt")
    return problems


@pytest.fixture
def two(tmp_path: Path, project: Path) -> Iterator[tuple[Store, Store, Path]]:
    """Machine A (the project, cwd), machine B, and a remote folder named `team` on both."""
    store_module._stores.clear()
    a = open_store(project)
    b = machine(tmp_path / "machine-b")
    shared = tmp_path / "remote"
    add_remote(a, "team", str(shared))
    add_remote(b, "team", f"file://{shared}")
    yield a, b, shared
    store_module._stores.clear()


# -- configuration ---------------------------------------------------------------------


def test_remote_add_list_remove_and_refusals(project: Path, capsys) -> None:
    code, out, _ = cli(
        capsys,
        *("remote", "add", "lake", "s3://bucket/team"),
        *("--option", "endpoint_url=http://127.0.0.1:9000", "--option", "anon=false", "--default"),
    )
    assert code == 0 and "added remote lake: s3://bucket/team (default)" in out
    code, out, _ = cli(capsys, "remote", "add", "here", "../shared", "--trusted")
    assert code == 0 and f"file://{project.parent / 'shared'}" in out and "trusted" in out
    code, out, _ = cli(capsys, "remote", "list")
    assert 'lake s3://bucket/team default anon=false endpoint_url="http://127.0.0.1:9000"' in out
    assert f"here file://{project.parent / 'shared'} trusted" in out

    store = open_store()
    lake = remote_module.get_remote(store)  # the default
    assert lake.name == "lake" and lake.options == {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": False,
    }
    # s3fs takes the endpoint in the botocore client's arguments
    assert lake.storage_options() == {
        "anon": False,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"},
    }
    config = json.loads((store.root / "config.json").read_text())
    assert set(config["remotes"]) == {"lake", "here"} and config["default_remote"] == "lake"

    for option in (
        "key=AKIA1234",
        "secret=abc",
        "aws_secret_access_key=x",
        "token=t",
        'client_kwargs={"aws_session_token": "t"}',
        "password=p",
    ):
        code, _, err = cli(capsys, "remote", "add", "leaky", "s3://b/p", "--option", option)
        line = one_error_line(err)
        assert code == 1 and "looks like a credential" in line and "AWS_SECRET_ACCESS_KEY" in line
    code, _, err = cli(capsys, "remote", "add", "leaky", "https://me:hunter2@example.com/x")
    assert code == 1 and "password" in one_error_line(err)
    assert "hunter2" not in (store.root / "config.json").read_text()
    assert "leaky" not in (store.root / "config.json").read_text()

    code, _, err = cli(capsys, "remote", "add", "lake", "s3://other/x")
    assert code == 1 and "nbexp remote remove lake" in one_error_line(err)
    code, _, err = cli(capsys, "remote", "add", "odd", "nosuchproto://x")
    assert code == 1 and "back end" in one_error_line(err)
    code, _, err = cli(capsys, "remote", "add", "bad name", "/tmp/x")
    assert code == 1 and "remote name" in one_error_line(err)
    code, _, err = cli(capsys, "remote", "add", "opt", "/tmp/x", "--option", "novalue")
    assert code == 1 and "KEY=VALUE" in one_error_line(err)

    code, out, _ = cli(capsys, "remote", "remove", "lake")
    assert code == 0 and "removed remote lake" in out
    code, _, err = cli(capsys, "push", "nowhere")
    assert code == 1
    code, _, err = cli(capsys, "remote", "remove", "lake")
    assert code == 1 and "nbexp remote add lake URL" in one_error_line(err)
    assert "default_remote" not in json.loads((store.root / "config.json").read_text())


def _packs(store: Store) -> list[str]:
    return sorted(p.name for p in (store.root / "packs").glob("pack-*"))


def _loose(store: Store) -> list[str]:
    return sorted(p.name for p in store.objects_dir.glob("*/*"))


def test_a_large_pull_arrives_as_one_pack_and_a_small_one_loose(
    two: tuple[Store, Store, Path], tmp_path: Path
) -> None:
    a, b, _ = two
    many = fake(a, "many", blobs_for("many", 40, size=3_000), minutes=1)
    few = fake(a, "few", blobs_for("few", 3, size=3_000), minutes=2)
    assert not push(a, "team", progress=False).failed
    assert _packs(a) == [] and len(_loose(a)) == 43  # put_bytes outside a batch: loose

    assert pull(b, "team", ["few"], progress=False).experiments == [few.id]
    assert _packs(b) == [] and len(_loose(b)) == 3  # a few objects stay loose files
    report = pull(b, "team", progress=False)
    assert report.experiments == [many.id] and report.objects == 40
    packs = _packs(b)
    assert len(packs) == 2 and {Path(n).suffix for n in packs} == {".pack", ".idx"}
    assert len(_loose(b)) == 3  # the 40 are in the pack, none loose
    assert list((b.root / "tmp").glob("*.tmp")) == []  # no download left behind
    for item, blob in zip(many.artifacts, blobs_for("many", 40, size=3_000), strict=True):
        assert b.object_location(item["hash"]) is not None
        assert b.read_object(item["hash"]) == blob
    assert b.fsck() == []
    # laid out as the record names them: the pack holds them in the artifacts' order
    offsets = [b.object_location(item["hash"])[1] for item in many.artifacts]  # type: ignore[index]
    assert offsets == sorted(offsets)
    # and a third machine pulling everything at once gets one pack of all 43
    third = fresh_copy(tmp_path, "machine-c", "team", str(tmp_path / "remote"))
    assert len(_packs(third)) == 2 and _loose(third) == []


def test_a_corrupt_object_is_kept_out_of_the_pulled_pack_and_its_record_out_of_the_store(
    two: tuple[Store, Store, Path],
) -> None:
    a, b, shared = two
    good = fake(a, "good", blobs_for("good", 20, size=2_000), minutes=1)
    bad = fake(a, "bad", blobs_for("bad", 20, size=2_000), minutes=2)
    assert not push(a, "team", progress=False).failed
    victim = bad.artifacts[7]["hash"]
    (shared / "objects" / victim[:2] / victim[2:]).write_bytes(b"flipped")
    with pytest.raises(TransferError) as raised:
        pull(b, "team", progress=False)
    report = raised.value.report
    assert isinstance(report, remote_module.TransferReport)
    assert report.experiments == [good.id] and set(report.failed) == {bad.id}
    assert not b.has_record(bad.id) and len(_packs(b)) == 2
    assert "corrupt" in report.failed[bad.id]
    assert not b.has_object(victim) and b.fsck() == []
    assert all(b.has_object(item["hash"]) for item in good.artifacts)
    assert list((b.root / "tmp").glob("*.tmp")) == []


def test_push_and_pull_need_a_remote(project: Path, capsys) -> None:
    code, _, err = cli(capsys, "push")
    assert code == 1 and "nbexp remote add NAME URL" in one_error_line(err)
    add_remote(open_store(), "one", str(project.parent / "r1"))
    add_remote(open_store(), "two", str(project.parent / "r2"))
    code, _, err = cli(capsys, "pull")
    assert code == 1 and "--default" in one_error_line(err)


def test_old_index_gains_the_origin_column(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "old" / ".nbexp"
    root.mkdir(parents=True)
    legacy = sqlite3.connect(root / "index.sqlite")
    legacy.execute(
        "CREATE TABLE experiments (id TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT "
        "NULL, status TEXT NOT NULL, duration REAL, note TEXT, tags TEXT NOT NULL, params TEXT "
        "NOT NULL, metrics TEXT NOT NULL, notebook TEXT, sweep TEXT)"
    )
    legacy.commit()
    legacy.close()
    store = Store(root)
    experiment = fake(store, "after-upgrade", blobs_for("u", 1))
    assert store.rows()[0]["id"] == experiment.id and store.rows()[0]["origin"] is None
    assert Store(root).reindex() == 1


# -- two machines ----------------------------------------------------------------------

RECORD = """%%experiment {name} -p depth={depth}
depth = 3
X = np.arange(90_000.0).reshape(-1, 3) * depth
frame = pd.DataFrame({{"a": np.arange(2_000), "b": [f"s{{i}}" for i in range(2_000)]}})
def scale(v):
    return v * depth
score = float(scale(X).sum()) / 1e9
"""


def check_restored(namespace: dict[str, Any], source: dict[str, Any]) -> None:
    """Every variable came back equal, by content hash."""
    assert hash_array(namespace["X"]) == hash_array(source["X"])
    assert hash_frame(namespace["frame"]) == hash_frame(source["frame"])
    assert namespace["score"] == source["score"] and namespace["depth"] == source["depth"]
    assert namespace["scale"](2) == source["scale"](2)


def test_two_machines_exchange_experiments_both_ways(
    ip, two, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    a, b, shared = two
    assert run(ip, "import numpy as np\nimport pandas as pd").success
    assert run(ip, RECORD.format(name="on-a", depth=4)).success
    recorded_a = {name: ip.user_ns[name] for name in ("X", "frame", "score", "depth", "scale")}
    first = push(a, progress=False)
    assert len(first.experiments) == 1 and first.objects >= 3
    assert file_remote_problems(shared) == []

    report = pull(b, progress=False)
    (pulled_id,) = report.experiments
    experiment = b.load(pulled_id)
    # params, metrics, data hashes and code are usable without trusting anyone
    assert experiment.params["depth"] == 4 and experiment.metrics["score"] == recorded_a["score"]
    assert "np.arange" in experiment.code.source
    assert b.origin(pulled_id)["remote"] == "team"
    _, out, _ = cli(capsys, "--store", str(b.root), "list")
    header, row = out.splitlines()[:2]
    assert header.split()[:7] == ["id", "name", "created", "status", "duration", "tags", "origin"]
    assert "team" in row.split()
    frame = api.experiments(store=b)
    assert list(frame["origin"]) == ["team"] and list(frame.columns[:7])[-1] == "origin"
    assert "origin" not in api.experiments(store=a).columns  # nothing pulled there

    # restoring pulled state is refused until the remote is trusted: unpickling runs code
    with pytest.raises(UntrustedRemoteError) as refused:
        api.restore("on-a", namespace={}, store=b)
    message = str(refused.value)
    assert "unpickl" in message and "nbexp remote trust team" in message and "\n" not in message
    with pytest.raises(UntrustedRemoteError):
        api.load("on-a", store=b)
    set_trusted(b, "team")
    namespace: dict[str, Any] = {}
    restored = api.restore("on-a", namespace=namespace, store=b)
    assert not restored.skipped, restored
    check_restored(namespace, recorded_a)
    assert api.load("on-a", store=b).score == recorded_a["score"]

    # the other way: B records (the same shell, now working in B's folder), A pulls
    monkeypatch.chdir(b.root.parent)
    store_module._stores.clear()
    assert run(ip, RECORD.format(name="on-b", depth=5)).success
    recorded_b = {name: ip.user_ns[name] for name in ("X", "frame", "score", "depth", "scale")}
    b = open_store(b.root)
    second = push(b, progress=False)
    assert len(second.experiments) == 1 and second.present == 1
    a = open_store(a.root)
    back = pull(a, progress=False)
    assert len(back.experiments) == 1 and back.present == 1
    with pytest.raises(UntrustedRemoteError):
        api.restore("on-b", namespace={}, store=a)
    set_trusted(a, "team")
    namespace = {}
    api.restore("on-b", namespace=namespace, store=a)
    check_restored(namespace, recorded_b)
    assert a.origin(a.resolve("on-a")) is None  # recorded here: no origin
    assert a.fsck() == [] and b.fsck() == [] and file_remote_problems(shared) == []
    # untrusting takes effect at once
    set_trusted(a, "team", False)
    with pytest.raises(UntrustedRemoteError):
        api.restore("on-b", namespace={}, store=a)


def test_a_remote_renamed_or_readded_elsewhere_is_not_trusted(two) -> None:
    a, b, shared = two
    fake(a, "e", blobs_for("e", 1))
    push(a, progress=False)
    pull(b, progress=False)
    experiment = b.get("e")
    remote_module.remove_remote(b, "team")
    add_remote(b, "team", str(shared.parent / "elsewhere"), trusted=True)  # same name, other URL
    with pytest.raises(UntrustedRemoteError, match="nbexp remote add team file://"):
        remote_module.require_trusted(b, experiment)
    add_remote(b, "mirror", str(shared), trusted=True)  # same URL, other name: trusted
    remote_module.require_trusted(b, experiment)


def test_only_missing_objects_travel_and_tags_follow(two, capsys) -> None:
    a, b, shared = two
    common = blobs_for("common", 2)
    first = fake(a, "first", [*common, *blobs_for("first", 1)])
    report = push(a, progress=False)
    assert report.objects == 3
    fake(a, "second", [*common, *blobs_for("second", 2)], minutes=1)
    report = push(a, progress=False)
    assert (len(report.experiments), report.objects, report.present) == (1, 2, 1)
    assert "nothing to push" in str(push(a, progress=False))

    a.add_tag(first.id, "baseline")
    report = push(a, progress=False)
    assert report.tags == 1 and report.experiments == []
    assert json.loads((shared / "tags" / f"{first.id}.json").read_text()) == ["baseline"]
    pull(b, progress=False)
    assert b.load(first.id).tags == ("baseline",)
    # B's own copy of the objects it pulled: pulling `second` fetched only what B lacked
    b.add_tag(first.id, "checked")
    push(b, progress=False)
    a_report = pull(a, progress=False)
    assert a_report.tags == 1 and a.load(first.id).tags == ("baseline", "checked")
    # tags travel once: nothing changed, nothing moves
    assert push(a, progress=False).tags == 0 and pull(b, progress=False).tags == 0
    code, out, _ = cli(
        capsys, "--store", str(a.root), "list", "tags = 'checked'", "--format", "json"
    )
    assert code == 0 and [row["name"] for row in json.loads(out)] == ["first"]


def test_a_tag_removed_on_one_machine_is_removed_on_the_other(two, capsys) -> None:
    a, b, shared = two
    run = fake(a, "run", blobs_for("run", 1), tags=("candidate",))
    a.add_tag(run.id, "best")
    push(a, progress=False)
    pull(b, progress=False)
    assert b.load(run.id).tags == ("candidate", "best")

    # B takes `best` off while A adds `checked`: after both sync, both have exactly that
    code, out, _ = cli(capsys, "--store", str(b.root), "tag", run.id[:8], "best", "--remove")
    assert code == 0 and "untagged best from run" in out and "candidate" in out
    push(b, progress=False)
    a.add_tag(run.id, "checked")
    push(a, progress=False)
    pull(b, progress=False)
    pull(a, progress=False)
    assert a.load(run.id).tags == b.load(run.id).tags == ("candidate", "checked")
    assert json.loads((shared / "tags" / f"{run.id}.json").read_text()) == ["candidate", "checked"]
    # and nothing moves once they agree
    assert push(a, progress=False).tags == 0 and pull(b, progress=False).tags == 0

    code, _, err = cli(capsys, "--store", str(a.root), "tag", "run", "nope", "--remove")
    assert code == 1 and one_error_line(err).endswith(
        "has no tag 'nope' (its tags: candidate, checked)"
    )


def test_a_removed_tag_stays_removed_after_the_index_is_rebuilt(two, capsys) -> None:
    """What was last exchanged with a remote lives in .nbexp/sync/, not in the index: a
    reindex (or a rebuilt index) between the two syncs must not bring a removed tag back."""
    a, b, _ = two
    run = fake(a, "run", blobs_for("run", 1), tags=("candidate",))
    a.add_tag(run.id, "best")
    push(a, progress=False)
    pull(b, progress=False)
    b.remove_tag(run.id, "best")
    for store in (a, b):  # both indexes rebuilt from scratch, their caches gone
        store.close()
        (store.root / "index.sqlite").unlink()
    store_module._stores.clear()
    a, b = open_store(a.root), open_store(b.root)
    push(b, progress=False)
    pull(a, progress=False)
    assert a.load(run.id).tags == b.load(run.id).tags == ("candidate",)
    assert list((b.root / "sync").glob("*.json"))


def test_push_and_pull_named_experiments(two, capsys) -> None:
    a, b, _ = two
    keep = fake(a, "keep", blobs_for("keep", 1))
    fake(a, "other", blobs_for("other", 1), minutes=1)
    code, out, _ = cli(capsys, "--store", str(a.root), "push", "team", "keep", "-q")
    assert code == 0 and "pushed 1 experiment to team" in out
    fake(a, "third", blobs_for("third", 1), minutes=2, tags=("best",))
    push(a, progress=False)  # everything: other and third now
    code, out, _ = cli(capsys, "--store", str(b.root), "pull", "best")  # a tag, on the remote
    assert code == 0 and "pulled 1 experiment" in out
    assert [row["name"] for row in b.rows()] == ["third"]
    report = pull(b, "team", [keep.id[:10]], progress=False)  # an id prefix
    assert [b.load(i).name for i in report.experiments] == ["keep"]
    code, _, err = cli(capsys, "--store", str(b.root), "pull", "team", "nosuch")
    assert code == 1 and "no experiment on remote `team` matches `nosuch`" in one_error_line(err)
    pull(b, progress=False)
    assert sorted(row["name"] for row in b.rows()) == ["keep", "other", "third"]


def test_corrupt_object_on_the_remote_is_refused_and_nothing_half_visible(two, capsys) -> None:
    a, b, shared = two
    good = fake(a, "good", blobs_for("good", 2))
    bad = fake(a, "bad", blobs_for("bad", 2), minutes=1)
    push(a, progress=False)
    victim = sorted(bad.object_hashes())[0]
    target = shared / "objects" / victim[:2] / victim[2:]
    damaged = bytearray(target.read_bytes())
    damaged[100] ^= 0xFF  # same size, one flipped byte: only the hash can tell
    target.write_bytes(bytes(damaged))

    code, _, err = cli(capsys, "--store", str(b.root), "pull", "-q")
    line = one_error_line(err)
    assert code == 1 and "corrupt" in line and victim[:12] in line and "bad" in line
    assert str(target) in line  # says which remote file to delete before pushing it again
    assert b.resolve("good") == good.id
    assert not b.record_path(bad.id).exists() and b.origin(bad.id) is None
    assert not b.object_path(victim).exists()
    assert b.fsck() == [] and list(b.tmp_dir.iterdir()) == []
    with pytest.raises(TransferError) as failed:
        pull(b, progress=False)
    assert failed.value.report.failed and bad.id in failed.value.report.failed

    # the fix the message names: delete the damaged copy, push the experiment again
    target.unlink()
    push(a, "team", ["bad"], progress=False)
    assert file_remote_problems(shared) == []
    assert pull(b, progress=False).experiments == [bad.id]
    assert b.fsck() == []


def test_corrupt_object_in_the_pushing_store_is_refused(two) -> None:
    a, _, shared = two
    bad = fake(a, "bad", blobs_for("bad", 1))
    fake(a, "fine", blobs_for("fine", 1), minutes=1)
    (digest,) = bad.object_hashes()
    a.object_path(digest).write_bytes(b"not what was stored")
    with pytest.raises(TransferError, match=f"object {digest[:12]} is corrupt in this store"):
        push(a, progress=False)
    assert not (shared / "objects" / digest[:2] / digest[2:]).exists()
    assert [p.stem for p in (shared / "records").glob("*/*.json")] == [a.resolve("fine")]
    assert file_remote_problems(shared) == []


def test_interrupted_push_resumes_and_never_shows_a_record_without_its_objects(
    two, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, shared = two
    for i in range(6):
        fake(a, f"run{i}", blobs_for(f"run{i}", 3), minutes=i)
    real_write = RemoteFiles.write
    calls = {"n": 0}

    def dying_write(self: RemoteFiles, key: str, data: bytes) -> None:
        if key.startswith("objects/"):
            calls["n"] += 1
            if calls["n"] > 7:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-push
        real_write(self, key, data)

    monkeypatch.setattr(RemoteFiles, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        push(a, workers=2, progress=False)
    monkeypatch.setattr(RemoteFiles, "write", real_write)
    landed = len(list((shared / "objects").glob("*/*")))
    assert 7 <= landed < 18
    assert list((shared / "records").glob("*/*")) == []  # records come last
    assert file_remote_problems(shared) == []

    report = push(a, progress=False)  # run again: resumes
    assert len(report.experiments) == 6 and report.objects == 18 - landed
    assert file_remote_problems(shared) == []
    third = fresh_copy(tmp_path, "machine-c", "team", str(shared))
    assert len(third.rows()) == 6


KILLABLE_PUSH = textwrap.dedent(
    """
    import sys, time
    from nbexp.transfer import RemoteFiles
    from nbexp.cli import main

    real = RemoteFiles.write
    def slow(self, key, data):
        time.sleep(0.05)
        real(self, key, data)
    RemoteFiles.write = slow
    sys.exit(main(["--store", sys.argv[1], "push", "-j", "2"]))
    """
)


def test_killed_push_process_resumes(two, tmp_path: Path) -> None:
    a, _, shared = two
    for i in range(20):
        fake(a, f"run{i}", blobs_for(f"run{i}", 2), minutes=i)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_PUSH, str(a.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(shared.glob("objects/*/*"))) < 8:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    landed = len(list(shared.glob("objects/*/*")))
    assert 8 <= landed < 40
    assert file_remote_problems(shared) == []  # no visible record misses an object
    report = push(a, progress=False)
    assert len(report.experiments) + report.present == 20 and report.objects <= 40 - landed
    assert file_remote_problems(shared) == []
    assert len(fresh_copy(tmp_path, "machine-c", "team", str(shared)).rows()) == 20


class CountingFilesystem:
    """An fsspec filesystem wrapped to count every call made on it (each is a request or
    more on a network back end). Not a LocalFileSystem, so nbexp takes its generic path."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if callable(value) and not name.startswith("_"):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return value(*args, **kwargs)

            return counted
        return value


def test_requests_grow_with_what_is_new_not_with_the_stores(
    two, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, shared = two
    for i in range(60):
        fake(a, f"run{i}", blobs_for(f"run{i}", 2, size=2_000), minutes=i)
    counters: list[CountingFilesystem] = []
    real_filesystem = remote_module._filesystem

    def counting(remote: Any) -> tuple[Any, str]:
        fs, root = real_filesystem(remote)
        counters.append(CountingFilesystem(fs))
        return counters[-1], root

    monkeypatch.setattr(remote_module, "_filesystem", counting)
    first = push(a, progress=False)  # generic path: temp key, then move
    assert len(first.experiments) == 60 and file_remote_problems(shared) == []
    assert list((shared / "tmp").iterdir()) == []
    calls = counters[-1].calls
    # per key (120 objects, 60 records): a write and a move, retried once each when its
    # folder had to be made first; plus 4 listings (records, objects, both again to verify)
    assert calls.count("mv") >= 180 and len(calls) <= 180 * 2 + 2 * calls.count("makedirs") + 4

    again = push(a, progress=False)
    assert "nothing to push" in str(again)
    assert len(counters[-1].calls) <= 2, counters[-1].calls  # one listing of records/

    fake(a, "one-more", blobs_for("one-more", 2, size=2_000), minutes=100)
    one = push(a, progress=False)
    assert len(one.experiments) == 1 and one.objects == 2
    # 3 keys travel (2 objects, 1 record) as temp + move (plus, at worst, making a new
    # folder); listings: records, the objects' prefixes before and after, the record's after
    assert len(counters[-1].calls) <= 3 * 5 + 6, counters[-1].calls

    pulled = pull(b, progress=False)
    assert len(pulled.experiments) == 61
    assert pull(b, progress=False).experiments == []
    assert len(counters[-1].calls) <= 2, counters[-1].calls  # records/ and tags/ listings


def test_concurrent_pushes_from_two_processes_leave_the_remote_consistent(
    two, tmp_path: Path
) -> None:
    a, b, shared = two
    common = blobs_for("shared-data", 3)
    for i in range(15):
        fake(a, f"a{i}", [*common, *blobs_for(f"a{i}", 2)], minutes=i)
        fake(b, f"b{i}", [*common, *blobs_for(f"b{i}", 2)], minutes=i)
    command = [sys.executable, "-m", "nbexp.cli"]
    processes = [
        subprocess.Popen(
            [*command, "--store", str(store.root), "push", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for store in (a, b)
    ]
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "pushed 15 experiments" in out
    assert file_remote_problems(shared) == []
    third = fresh_copy(tmp_path, "machine-c", "team", str(shared))
    assert len(third.rows()) == 30


def test_memory_remote_round_trip(two, tmp_path: Path) -> None:
    """A back end whose PUT is atomic (like S3): keys are written directly, no temp keys."""
    import fsspec

    a, b, _ = two
    url = f"memory://nbexp-test-{os.getpid()}-{time.monotonic_ns()}"
    add_remote(a, "mem", url)
    add_remote(b, "mem", url, trusted=True)
    experiment = fake(a, "m", blobs_for("m", 2))
    push(a, "mem", progress=False)
    assert not fsspec.filesystem("memory").exists(url + "/tmp")
    assert pull(b, "mem", progress=False).experiments == [experiment.id]
    assert b.fsck() == [] and b.origin(experiment.id)["url"] == url


def test_gc_on_a_remote_removes_only_old_unreferenced_objects(
    two, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    a, _, shared = two
    kept = fake(a, "kept", blobs_for("kept", 2))
    push(a, progress=False)
    # leftovers of a push that never finished: objects without a record
    orphan = fake(a, "orphan", blobs_for("orphan", 2), minutes=1)
    real_write = RemoteFiles.write

    def no_records(self: RemoteFiles, key: str, data: bytes) -> None:
        if key.startswith("records/"):
            raise KeyboardInterrupt
        real_write(self, key, data)

    monkeypatch.setattr(RemoteFiles, "write", no_records)
    with pytest.raises(KeyboardInterrupt):
        push(a, progress=False)
    monkeypatch.setattr(RemoteFiles, "write", real_write)
    (shared / "tmp" / "stale.tmp").write_bytes(b"half")
    orphans = sorted(orphan.object_hashes())
    assert all((shared / "objects" / d[:2] / d[2:]).exists() for d in orphans)

    code, out, _ = cli(capsys, "--store", str(a.root), "gc", "--remote", "team")
    assert code == 0 and "kept 2 unreferenced objects" in out and "a push may still" in out
    old = time.time() - 2 * remote_module.GC_GRACE_SECONDS
    for path in [*shared.glob("objects/*/*"), *shared.glob("tmp/*")]:
        os.utime(path, (old, old))
    code, out, _ = cli(capsys, "--store", str(a.root), "gc", "--remote", "team")
    assert code == 0 and "2 unreferenced objects" in out and "--yes" in out
    assert all(f"would delete object {d[:12]}" in out for d in orphans)
    assert all((shared / "objects" / d[:2] / d[2:]).exists() for d in orphans)  # dry run
    code, out, _ = cli(capsys, "--store", str(a.root), "gc", "--remote", "team", "--yes")
    assert code == 0 and "deleted 2 unreferenced objects" in out
    assert not any((shared / "objects" / d[:2] / d[2:]).exists() for d in orphans)
    assert not (shared / "tmp" / "stale.tmp").exists()
    assert all((shared / "objects" / d[:2] / d[2:]).exists() for d in kept.object_hashes())
    assert file_remote_problems(shared) == []
    assert gc_remote(a, "team", grace=0).objects == []
    # the local store still has both: locally, `orphan` is referenced by its record
    assert a.gc()[0] == []


def test_local_gc_keeps_pulled_objects_and_rm_forgets_the_origin(two) -> None:
    a, b, _ = two
    experiment = fake(a, "e", blobs_for("e", 2))
    push(a, progress=False)
    pull(b, progress=False)
    assert b.gc()[0] == []
    b.delete(experiment.id)
    assert b.origin(experiment.id) is None
    assert sorted(b.gc(delete=True)[0]) == sorted(experiment.object_hashes())


def test_unreachable_remote_is_one_line(project: Path, capsys) -> None:
    store = open_store()
    add_remote(store, "gone", "file:///proc/nbexp-cannot-exist")
    fake(store, "e", blobs_for("e", 1))
    code, _, err = cli(capsys, "push", "gone", "-q")
    assert code == 1 and "cannot use remote `gone`" in one_error_line(err)
    with pytest.raises(RemoteError):
        nbexp.pull("gone")


def test_progress_line_on_stderr() -> None:
    from nbexp.transfer import Progress, run_parallel

    stream = io.StringIO()
    meter = Progress("push team", 3, total_bytes=3_000_000, stream=stream)
    failures = run_parallel([1, 2, 3], lambda n: 1_000_000, progress=meter)
    assert failures == {}
    assert stream.getvalue().splitlines()[-1].startswith("push team: 3/3 objects, 3.0/3.0 MB")
    failures = run_parallel([1, 0], lambda n: 1 // n)
    assert list(failures) == [0] and isinstance(failures[0], ZeroDivisionError)


def test_progress_on_a_terminal_is_a_bar_then_the_summary_line() -> None:
    from nbexp.transfer import Progress, run_parallel

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    meter = Progress("pull team", 4, unit="files", stream=stream)
    assert run_parallel([1, 2, 3, 4], lambda n: 500_000, progress=meter) == {}
    text = stream.getvalue()
    assert "\r" in text and "pull team" in text.split("\n")[0]  # redrawn in place
    summary = text.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert summary.startswith("pull team: 4/4 files, 2.0 MB, ")
    assert summary.endswith(" MB/s")
