"""What recording caches between runs never goes stale: a package installed or upgraded
between cells shows its new version, a commit between cells its new commit, a kernel value
changed between two sweeps its new content; a reused pickle never names an object the store
lacks."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import state
from nbexp.store import open_store
from tests.conftest import run
from tests.test_git import git, repo  # noqa: F401  (the fixture)


def record(ip: Any, name: str, body: str, line: str = "") -> Any:
    result = run(ip, f"%%experiment {name} {line}\n{textwrap.dedent(body)}")
    assert result.success, result.error_in_exec
    return nbexp.get(name)


def _install(site: Path, version: str) -> None:
    """A distribution as pip leaves it: the package and its `.dist-info` folder."""
    for old in site.glob("nbexpdemo-*.dist-info"):
        shutil.rmtree(old)
    (site / "nbexpdemo").mkdir(exist_ok=True)
    (site / "nbexpdemo" / "__init__.py").write_text(f"VERSION = {version!r}\n")
    info = site / f"nbexpdemo-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nbexpdemo\nVersion: {version}\n")
    (info / "top_level.txt").write_text("nbexpdemo\n")


def test_a_package_installed_then_upgraded_between_cells_shows_each_version(
    ip: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "nbexpdemo", raising=False)
    before = record(ip, "before", "a = 1\n", "--no-state")  # the lookups are cached now
    assert "nbexpdemo" not in before.env["packages"]

    _install(site, "1.0")
    first = record(ip, "first", "import nbexpdemo\nb = 2\n", "--no-state")
    assert first.env["packages"]["nbexpdemo"] == "1.0"

    _install(site, "2.0")  # `pip install -U` in a terminal, then the module reloaded
    run(ip, "import importlib, nbexpdemo\nimportlib.reload(nbexpdemo)\n")
    assert ip.user_ns["nbexpdemo"].VERSION == "2.0"
    second = record(ip, "second", "c = nbexpdemo.VERSION\n", "--no-state")
    assert second.env["packages"]["nbexpdemo"] == "2.0"
    sys.modules.pop("nbexpdemo", None)


def _age(folder: Path) -> None:
    """Make the repository's files look written a minute ago, so git answers may be reused."""
    past = time.time() - 60
    for path in [folder / ".git" / "index", *folder.rglob("*")]:
        if ".nbexp" not in path.parts:
            os.utime(path, (past, past))


def test_a_commit_or_an_edit_between_cells_is_recorded_not_the_cached_answer(
    ip: Any,
    repo: Path,  # noqa: F811
) -> None:
    _age(repo)
    one = record(ip, "one", "x = 1\n", "--no-state")
    again = record(ip, "again", "x = 2\n", "--no-state")
    assert one.git["commit"] == again.git["commit"] == git(repo, "rev-parse", "HEAD")
    assert not again.git["dirty"]

    (repo / "train.py").write_text("depth = 4\nlr = 0.1\n")  # same size, new bytes
    edited = record(ip, "edited", "x = 3\n", "--no-state")
    assert edited.git["dirty"] and "+depth = 4" in edited.git["diff"]

    git(repo, "commit", "-q", "-am", "deeper")
    _age(repo)
    committed = record(ip, "committed", "x = 4\n", "--no-state")
    assert committed.git["commit"] == git(repo, "rev-parse", "HEAD") != one.git["commit"]
    assert not committed.git["dirty"]


def test_a_reused_pickle_still_writes_what_another_store_lacks(tmp_path: Path) -> None:
    import numpy as np

    values = {"weights": np.arange(300_000, dtype="float64"), "config": {"depth": 3}}
    cache = state.PickleCache()
    entries = []
    for name in ("a", "b"):
        store = open_store(tmp_path / name)
        with store.writing(), store.object_batch():
            entries.append(state.snapshot(store, values, reuse=cache).to_record())
    assert entries[0]["variables"] == entries[1]["variables"]
    loader = state.StateLoader(open_store(tmp_path / "b"), entries[1])
    assert np.array_equal(loader.load("weights"), values["weights"])
    assert loader.load("config") == {"depth": 3}


def test_a_reused_pickle_is_only_for_the_very_same_objects_and_secrets(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    cache = state.PickleCache()
    values: dict[str, Any] = {"rows": [1, 2, 3]}
    with store.writing(), store.object_batch():
        first = state.snapshot(store, values, reuse=cache).to_record()
        values["rows"] = [1, 2, 3, 4]  # rebound: another object
        second = state.snapshot(store, values, reuse=cache).to_record()
        values["rows"] = ["hunter2-secret-value"]
        state.snapshot(store, values, reuse=cache)
        third = state.snapshot(
            store, values, reuse=cache, secret_values=["hunter2-secret-value"]
        ).to_record()
    assert first["variables"]["rows"]["hash"] != second["variables"]["rows"]["hash"]
    assert state.StateLoader(store, second).load("rows") == [1, 2, 3, 4]
    assert "rows" in third["unstored"]  # the secret is refused though the pickle was cached


class Model:
    """A trial's fitted model stand-in: a plain user object that weak references can watch."""

    def __init__(self, depth: int) -> None:
        self.depth = depth


def test_a_sweep_cache_never_keeps_the_trials_own_values_alive(tmp_path: Path) -> None:
    import gc
    import weakref

    store = open_store(tmp_path)
    cache = state.PickleCache()
    kernel = {"data": [1, 2, 3]}
    watched = []
    for depth in range(3):
        model = Model(depth)
        watched.append(weakref.ref(model))
        with store.writing(), store.object_batch():
            state.snapshot(store, {**kernel, "model": model}, reuse=cache, fresh={"model"})
        del model
    gc.collect()
    assert [ref() for ref in watched] == [None, None, None]  # 1,000 trials, 1,000 models: no


def test_small_arrays_travel_inside_their_pickle_and_restore_writable(tmp_path: Path) -> None:
    import numpy as np

    small = {f"w{i}": np.full((3, 3), float(i)) for i in range(200)}  # a figure's transforms
    frozen = np.arange(10.0)
    frozen.flags.writeable = False
    values = {"small": small, "big": np.arange(100_000.0), "frozen": frozen}
    store = open_store(tmp_path)
    with store.writing(), store.object_batch():
        entry = state.snapshot(store, values).to_record()
    assert len(entry["variables"]["small"].get("buffers", ())) == 0  # one pickle, no chunks
    assert len(entry["variables"]["big"]["buffers"]) == 1
    loader = state.StateLoader(store, entry)
    restored = loader.load("small")
    assert all(np.array_equal(restored[k], small[k]) for k in small)
    restored["w1"][0, 0] = 5.0  # writable, as it was
    assert not loader.load("frozen").flags.writeable  # read-only, as it was
    assert np.array_equal(loader.load("big"), values["big"])


distributed = pytest.importorskip("distributed")
from tests.test_dask_trials import cluster  # noqa: E402, F401  (the fixture)


def sweep(ip: Any, line: str, body: str) -> None:
    result = run(ip, f"%%experiment {line}\n{body}")
    assert result.success, result.error_in_exec


def _stored(experiment: Any, name: str) -> Any:
    return state.StateLoader(open_store(), experiment.state).load(name)


def test_kernel_values_changed_between_sweeps_or_by_an_expectation_are_stored_anew(
    ip: Any,
    cluster: str,  # noqa: F811
) -> None:
    run(ip, "history = [1, 2]\n")
    body = "k = 0\nscore = k * 2\n"
    sweep(ip, f"s1 --sweep k=1,2,3 --cluster {cluster}", body)
    first = [nbexp.get(f"s1-{i}") for i in (1, 2, 3)]
    assert {e.state["variables"]["history"]["hash"] for e in first} == {
        first[0].state["variables"]["history"]["hash"]
    }
    assert all(_stored(e, "history") == [1, 2] for e in first)

    run(ip, "history.append(3)\n")  # in place: same object, new content
    sweep(ip, f"s2 --sweep k=1,2 --cluster {cluster}", body)
    assert [_stored(nbexp.get(f"s2-{i}"), "history") for i in (1, 2)] == [[1, 2, 3]] * 2

    # an expectation is user code run on the driver between trials: it may change a value
    run(ip, "history.clear()\n")
    expect = '--expect "history.append(0) is None"'
    sweep(ip, f"s3 --sweep k=1,2,3 --cluster {cluster} {expect}", body)
    stored = sorted(len(_stored(nbexp.get(f"s3-{i}"), "history")) for i in (1, 2, 3))
    assert stored == [1, 2, 3]


def test_an_environment_secret_set_or_changed_between_cells_is_scrubbed(
    ip: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment's secrets are read again after any change to `os.environ`: a token
    exported (or replaced) after a first record never reaches a later one."""
    monkeypatch.delenv("NBEXP_DEMO_TOKEN", raising=False)
    record(ip, "before", "x = 1\n")
    for value in ("first-token-4821", "second-token-9377"):
        os.environ["NBEXP_DEMO_TOKEN"] = value
        shown = record(ip, f"with-{value[:5]}", f"print('{value}')\nx = 2\n")
        assert value not in shown.outcome.stdout
        data = open_store().record_path(shown.id).read_bytes()
        assert value.encode() not in data
    monkeypatch.delenv("NBEXP_DEMO_TOKEN")
    gone = record(ip, "after", "print('second-token-9377')\n")  # no longer a secret
    assert "second-token-9377" in gone.outcome.stdout


def test_a_credential_named_variable_taints_what_later_cells_derive_from_it(ip: Any) -> None:
    """History cells are followed only once a credential exists; from then on a value
    derived from it in any earlier cell is scrubbed like the credential itself."""
    record(ip, "plain", "x = 1\n")  # no credential yet: the history is not read
    run(ip, "db_password = 'sw0rdfish-2024'\n")
    run(ip, "header = 'Basic ' + db_password.upper()\n")
    shown = record(ip, "derived", "print(header)\ny = 2\n")
    assert "SW0RDFISH-2024" not in shown.outcome.stdout
    assert b"SW0RDFISH" not in open_store().record_path(shown.id).read_bytes()


def test_a_value_derived_from_a_credential_inside_an_earlier_experiment_is_scrubbed(
    ip: Any,
) -> None:
    """An earlier `%%experiment` body is history the kernel ran like any cell (IPython
    keeps it as a `run_cell_magic` call with the body as a string): what it derives from a
    credential is as secret in later records as what a plain cell derives."""
    run(ip, "api_token = 'tok-77c1e9b4d2'\n")
    record(ip, "auth", "header = 'Bearer ' + api_token.upper()\n")
    shown = record(ip, "uses", "print(header)\ny = 2\n")
    assert "TOK-77C1E9B4D2" not in shown.outcome.stdout
    assert b"TOK-77C1E9B4D2" not in open_store().record_path(shown.id).read_bytes()


def test_a_secret_with_quotes_non_ascii_and_tabs_is_scrubbed_from_the_record_bytes(
    ip: Any,
) -> None:
    """The record is proved clean on its own bytes (UTF-8 JSON, non-ASCII characters as
    themselves): a credential whose JSON form has escapes (a quote, a backslash, a tab)
    and non-ASCII letters is still found there, and scrubbed wherever it was printed."""
    run(ip, "api_secret = 'pä\"ss\\\\wö\\trd-€42'\n")
    shown = record(ip, "escaped", "print(api_secret)\nprint(len(api_secret))\nz = 3\n")
    secret = ip.user_ns["api_secret"]
    assert secret not in shown.outcome.stdout and "***" in shown.outcome.stdout
    data = open_store().record_path(shown.id).read_bytes()
    for form in (secret.encode(), "pä".encode() + b'\\"ss', "wö".encode()):
        assert form not in data
    clean = record(ip, "clean", "print('plain wörds \\\\ \"quoted\"')\nz = 4\n")
    assert 'plain wörds \\ "quoted"' in clean.outcome.stdout
