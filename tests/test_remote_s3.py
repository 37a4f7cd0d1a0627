"""Remotes over a real S3 API: moto's standalone server, reached through s3fs exactly as a
bucket would be (endpoint_url option, credentials from AWS_* environment variables)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbexp import api, transfer
from nbexp import remote as remote_module
from nbexp import store as store_module
from nbexp.errors import TransferError, UntrustedRemoteError
from nbexp.hashing import hash_bytes
from nbexp.record import Experiment
from nbexp.remote import add_remote, gc_remote, get_remote, pull, push
from nbexp.store import Store, open_store
from nbexp.transfer import RemoteFiles
from tests.conftest import run
from tests.test_remote import (
    RECORD,
    blobs_for,
    check_restored,
    cli,
    fake,
    machine,
    one_error_line,
)

pytest.importorskip("s3fs")
pytest.importorskip("moto")

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server in its own process, for the whole session."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **DUMMY_CREDENTIALS},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.1)
    yield endpoint
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> str:
    """A fresh bucket; the dummy credentials come from the environment, as s3fs expects."""
    import s3fs

    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    name = f"nbexp-{request.node.name[:30].replace('_', '-').lower()}-{time.monotonic_ns() % 10**9}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_endpoint}, skip_instance_cache=True)
    fs.mkdir(name)
    return name


@pytest.fixture
def s3_two(
    tmp_path: Path, project: Path, bucket: str, moto_endpoint: str, capsys
) -> Iterator[tuple[Store, Store, str]]:
    """Machines A (the project) and B, both with remote `lake` = s3://BUCKET/team."""
    store_module._stores.clear()
    url = f"s3://{bucket}/team"
    for folder in (project, tmp_path / "machine-b"):
        folder.mkdir(exist_ok=True)
        code, _, err = cli(
            capsys,
            *("--store", str(folder / ".nbexp"), "remote", "add", "lake", url),
            *("--option", f"endpoint_url={moto_endpoint}"),
        )
        assert code == 0, err
    yield open_store(project), machine(tmp_path / "machine-b"), url
    store_module._stores.clear()


def s3_problems(store: Store, name: str = "lake") -> list[str]:
    """Records on the remote whose content or objects are not all there and intact."""
    files = remote_module.open_remote(get_remote(store, name))
    objects = files.listing("objects/")
    problems = []
    for key in files.listing("records/"):
        body = json.loads(files.read(key))
        experiment_id = key.rsplit("/", 1)[-1][:-5]
        if Store.make_id(body) != experiment_id:
            problems.append(f"record {experiment_id[:8]} does not match its id")
        for digest in Experiment.from_dict(body).object_hashes():
            object_key = f"objects/{digest[:2]}/{digest[2:]}"
            if object_key not in objects:
                problems.append(f"record {experiment_id[:8]} misses object {digest[:12]}")
            elif hash_bytes(files.read(object_key)) != digest:
                problems.append(f"object {digest[:12]} is corrupt")
    return problems


def fresh_s3_copy(tmp_path: Path, name: str, url: str, endpoint: str) -> Store:
    third = machine(tmp_path / name)
    add_remote(third, "lake", url, {"endpoint_url": endpoint})
    pull(third, progress=False)
    assert third.fsck() == []
    return third


class RequestCounter:
    """Counts the HTTP requests s3fs's botocore client sends (every S3 API call, each page
    of a listing)."""

    def __init__(self, store: Store) -> None:
        self.fs = remote_module.open_remote(get_remote(store, "lake")).fs
        self.fs.connect()
        self.sent: list[str] = []
        self.fs.s3.meta.events.register("before-send.s3", self._count)

    def _count(self, **kwargs: Any) -> None:
        self.sent.append(str(kwargs.get("event_name", "")).rsplit(".", 1)[-1])

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


def test_s3_two_machines_exchange_state_both_ways(
    ip, s3_two, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    a, b, _ = s3_two
    assert run(ip, "import numpy as np\nimport pandas as pd").success
    assert run(ip, RECORD.format(name="on-a", depth=2)).success
    recorded_a = {name: ip.user_ns[name] for name in ("X", "frame", "score", "depth", "scale")}
    code, out, err = cli(capsys, "push", "-q")
    assert code == 0 and "pushed 1 experiment to lake" in out, err
    assert s3_problems(a) == []

    code, out, err = cli(capsys, "--store", str(b.root), "pull", "lake", "-q")
    assert code == 0 and "pulled 1 experiment from lake" in out, err
    assert b.get("on-a").params["depth"] == 2
    with pytest.raises(UntrustedRemoteError, match="nbexp remote trust lake"):
        api.restore("on-a", namespace={}, store=b)
    code, out, _ = cli(capsys, "--store", str(b.root), "remote", "trust", "lake")
    assert code == 0
    namespace: dict[str, Any] = {}
    report = api.restore("on-a", namespace=namespace, store=b)
    assert not report.skipped, report
    check_restored(namespace, recorded_a)

    monkeypatch.chdir(b.root.parent)
    store_module._stores.clear()
    assert run(ip, RECORD.format(name="on-b", depth=7)).success
    recorded_b = {name: ip.user_ns[name] for name in ("X", "frame", "score", "depth", "scale")}
    b = open_store(b.root)
    assert len(push(b, progress=False).experiments) == 1
    a = open_store(a.root)
    assert len(pull(a, progress=False).experiments) == 1
    with pytest.raises(UntrustedRemoteError):
        api.load("on-b", store=a)
    remote_module.set_trusted(a, "lake")
    assert api.load("on-b", store=a).depth == 7
    namespace = {}
    api.restore("on-b", namespace=namespace, store=a)
    check_restored(namespace, recorded_b)
    assert a.fsck() == [] and b.fsck() == [] and s3_problems(a) == []


def test_s3_requests_grow_with_what_is_new(s3_two, tmp_path: Path) -> None:
    a, b, _ = s3_two
    for i in range(60):
        fake(a, f"run{i}", blobs_for(f"run{i}", 2, size=4_000), minutes=i)
    counter = RequestCounter(a)
    first = push(a, progress=False)
    assert len(first.experiments) == 60
    sent = counter.take()
    assert sent.count("PutObject") == 180  # 120 objects + 60 records, nothing twice

    assert "nothing to push" in str(push(a, progress=False))
    assert counter.take() == ["ListObjectsV2"]  # one page listing records/

    fake(a, "one-more", blobs_for("one-more", 2, size=4_000), minutes=500)
    assert len(push(a, progress=False).experiments) == 1
    sent = counter.take()
    assert sent.count("PutObject") == 3 and len(sent) <= 3 + 6, sent

    pulled = pull(b, progress=False)
    assert len(pulled.experiments) == 61 and b.fsck() == []
    assert counter.take().count("GetObject") == 61 + 122
    assert pull(b, progress=False).experiments == []
    assert counter.take() == ["ListObjectsV2"] * 2  # records/ and tags/ listings


def test_s3_corrupt_object_is_refused_on_pull(s3_two, moto_endpoint: str) -> None:
    a, b, _ = s3_two
    good = fake(a, "good", blobs_for("good", 2))
    bad = fake(a, "bad", blobs_for("bad", 2), minutes=1)
    push(a, progress=False)
    files = remote_module.open_remote(get_remote(a, "lake"))
    victim = sorted(bad.object_hashes())[0]
    key = f"objects/{victim[:2]}/{victim[2:]}"
    damaged = bytearray(files.read(key))
    damaged[10] ^= 0xFF
    files.write(key, bytes(damaged))

    with pytest.raises(TransferError) as failed:
        pull(b, progress=False)
    message = str(failed.value)
    assert "corrupt" in message and victim[:12] in message and "\n" not in message
    assert failed.value.report.experiments == [good.id]
    assert not b.record_path(bad.id).exists() and not b.object_path(victim).exists()
    assert b.fsck() == [] and list(b.tmp_dir.iterdir()) == []
    assert [row["name"] for row in b.rows()] == ["good"]


def test_s3_interrupted_push_resumes(
    s3_two, tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, url = s3_two
    for i in range(8):
        fake(a, f"run{i}", blobs_for(f"run{i}", 3), minutes=i)
    real_write = RemoteFiles.write
    count = {"objects": 0}

    def dying(self: RemoteFiles, key: str, data: bytes) -> None:
        if key.startswith("objects/"):
            count["objects"] += 1
            if count["objects"] > 10:
                raise KeyboardInterrupt
        real_write(self, key, data)

    monkeypatch.setattr(RemoteFiles, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        push(a, workers=3, progress=False)
    monkeypatch.setattr(RemoteFiles, "write", real_write)
    files = remote_module.open_remote(get_remote(a, "lake"))
    landed = len(files.listing("objects/"))
    assert 10 <= landed < 24 and files.listing("records/") == {}
    report = push(a, progress=False)
    assert len(report.experiments) == 8 and report.objects == 24 - landed
    assert s3_problems(a) == []
    assert len(fresh_s3_copy(tmp_path, "machine-c", url, moto_endpoint).rows()) == 8


def test_s3_concurrent_pushes_from_two_processes(
    s3_two, tmp_path: Path, moto_endpoint: str
) -> None:
    a, b, url = s3_two
    common = blobs_for("common", 3)
    for i in range(12):
        fake(a, f"a{i}", [*common, *blobs_for(f"a{i}", 2)], minutes=i)
        fake(b, f"b{i}", [*common, *blobs_for(f"b{i}", 2)], minutes=i)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "nbexp.cli", "--store", str(store.root), "push", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for store in (a, b)
    ]
    for process in processes:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
        assert "pushed 12 experiments to lake" in out
    assert s3_problems(a) == []
    assert len(fresh_s3_copy(tmp_path, "machine-c", url, moto_endpoint).rows()) == 24


def test_s3_gc_removes_only_unreferenced_objects(s3_two, monkeypatch, capsys) -> None:
    a, _, _ = s3_two
    kept = fake(a, "kept", blobs_for("kept", 2))
    push(a, progress=False)
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

    code, out, _ = cli(capsys, "gc", "--remote", "lake")  # just written: kept, a push may be on
    assert code == 0 and "kept 2 unreferenced objects" in out
    found = gc_remote(a, "lake", grace=0)
    assert sorted(found.objects) == sorted(orphan.object_hashes()) and not found.deleted
    gc_remote(a, "lake", grace=0, delete=True)
    objects = remote_module.open_remote(get_remote(a, "lake")).listing("objects/")
    assert {k.replace("/", "")[7:] for k in objects} == kept.object_hashes()
    assert s3_problems(a) == []


def test_s3_credentials_come_from_the_environment(s3_two, tmp_path: Path) -> None:
    a, _, _ = s3_two
    fake(a, "e", blobs_for("e", 1))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    command = [sys.executable, "-m", "nbexp.cli", "--store", str(a.root), "push", "-q"]
    missing = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
    line = one_error_line(missing.stderr)
    assert missing.returncode == 1 and "AWS_ACCESS_KEY_ID" in line
    config = (a.root / "config.json").read_text()
    assert "testing" not in config  # the credentials never touch nbexp's files
    ok = subprocess.run(
        command, env=environment | DUMMY_CREDENTIALS, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "pushed 1 experiment" in ok.stdout, ok.stderr


def test_s3_a_large_object_arrives_in_pieces_and_a_small_one_in_one_request(
    s3_two, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = s3_two
    monkeypatch.setattr(transfer, "PIECE", 64 * 1024)
    large = (b"0123456789abcdef" * 12_500)[:200_000]  # 4 pieces: the last one short
    small = b"s" * 1_000
    both = fake(a, "both", [large, small])
    assert not push(a, progress=False).failed
    counter = RequestCounter(b)
    report = pull(b, progress=False)
    assert report.experiments == [both.id] and report.bytes == 201_000
    sent = counter.take()
    # the record and the small object: one GET each; the large one: a GET of its first
    # piece, then its size (HEAD), then a ranged GET per further piece
    assert sent.count("GetObject") == 2 + 4 and sent.count("HeadObject") == 1, sent
    assert [b.read_object(item["hash"]) for item in both.artifacts] == [large, small]
    assert b.fsck() == [] and list(b.tmp_dir.iterdir()) == []
