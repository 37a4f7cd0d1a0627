"""The Jupyter server extension (SPEC §10): the store over REST, against a real jupyter_server
started by pytest-jupyter, with its real token authentication, on real stores."""

from __future__ import annotations

# pytest-jupyter's server fixtures, imported into this module only: as a plugin (root
# conftest) its autouse fixtures would create an event loop and a ServerApp around every
# test of the suite. Its async-test hook is not active here, so tests call `fetch` below.
from pytest_jupyter.jupyter_server import *  # noqa: F403  # isort: skip

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

from nbexp import store as store_module
from nbexp.record import Experiment
from nbexp.server_extension import record_json, row_json
from nbexp.show import format_value
from nbexp.store import Store, open_store
from tests.conftest import run
from tests.test_store import _ambiguous_pair, make_experiment

Fetch = Callable[..., HTTPResponse]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nbexp": True}}}


@pytest.fixture(autouse=True)
def _clean_environment(project: Path) -> None:
    """No NBEXP_STORE from the outside; a working directory outside the server root."""


@pytest.fixture
def fetch(jp_fetch: Any, jp_asyncio_loop: Any) -> Fetch:
    """GET an nbexp API URL (parts after `nbexp/api/experiments`) with the server's token;
    returns the response whatever its status."""

    def get(*parts: str, params: dict[str, str] | None = None, **kwargs: Any) -> HTTPResponse:
        call = jp_fetch(
            "nbexp", "api", "experiments", *parts, params=params, raise_error=False, **kwargs
        )
        response: HTTPResponse = jp_asyncio_loop.run_until_complete(call)
        return response

    return get


def body(response: HTTPResponse, status: int = 200) -> Any:
    assert response.code == status, (response.code, response.body)
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


def refusal(response: HTTPResponse, status: int, *fragments: str) -> str:
    """An error answer: JSON with a one-line message naming `fragments`, no traceback."""
    message = body(response, status)["message"]
    assert "\n" not in message and "Traceback" not in response.body.decode()
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return str(message)


@pytest.fixture
def filled(jp_root_dir: Path) -> tuple[Store, list[Experiment]]:
    """A store at the server root with four experiments, oldest first."""
    store = Store(jp_root_dir / ".nbexp")
    experiments = [
        make_experiment(store, "rf", params={"depth": 3}, metrics={"acc": 0.71}, minutes=0),
        make_experiment(
            store,
            "gb",
            params={"depth": 12},
            metrics={"acc": 0.93, "auc": 0.97},
            minutes=1,
            tags=("best",),
        ),
        make_experiment(
            store, "rf", params={"depth": 8}, metrics={"acc": 0.85}, minutes=2, status="failed"
        ),
        make_experiment(store, "lin", params={"c": 1.0}, metrics={"loss": 0.4}, minutes=3),
    ]
    return store, experiments


def ids(listing: dict[str, Any]) -> list[str]:
    return [row["id"] for row in listing["experiments"]]


def test_the_listing_is_newest_first_with_the_total_and_pages(
    fetch: Fetch, filled: tuple[Store, list[Experiment]], jp_root_dir: Path
) -> None:
    _, experiments = filled
    newest_first = [e.id for e in reversed(experiments)]
    (jp_root_dir / "analysis").mkdir()
    listing = body(fetch(params={"path": "analysis/train.ipynb"}))
    assert ids(listing) == newest_first
    assert listing["total"] == 4 and listing["store"] == ".nbexp"
    assert listing["metric_names"] == ["acc", "auc", "loss"]  # the most common first
    row = listing["experiments"][1]
    gb_failed = experiments[2]
    assert row["short_id"] == gb_failed.id[:8] and row["name"] == "rf"
    assert row["status"] == "failed" and row["params"] == {"depth": 8}
    assert row["metrics"] == {"acc": 0.85} and row["created"] == gb_failed.created
    assert {"duration", "note", "tags", "notebook", "origin"} <= set(row)
    assert row["text"] == {"params": {"depth": "8"}, "metrics": {"acc": "0.85"}}

    page = body(fetch(params={"path": "analysis/train.ipynb", "offset": "1", "limit": "2"}))
    assert ids(page) == newest_first[1:3] and page["total"] == 4
    assert (page["offset"], page["limit"]) == (1, 2)
    assert body(fetch(params={"path": "", "offset": "10"}))["experiments"] == []


def test_query_and_sort(fetch: Fetch, filled: tuple[Store, list[Experiment]]) -> None:
    _, (rf3, gb, rf8, _lin) = filled
    good = body(fetch(params={"path": "nb.ipynb", "query": "metrics.acc > 0.8"}))
    assert ids(good) == [rf8.id, gb.id] and good["total"] == 2
    assert good["metric_names"] == ["acc", "auc"]
    best = body(fetch(params={"path": "nb.ipynb", "sort": "metrics.acc", "desc": "1"}))
    assert ids(best)[:3] == [gb.id, rf8.id, rf3.id]
    by_name = body(fetch(params={"path": "nb.ipynb", "query": 'name == "rf"', "sort": "created"}))
    assert ids(by_name) == [rf3.id, rf8.id]


def test_one_experiment_by_prefix_name_tag_or_last(
    fetch: Fetch, filled: tuple[Store, list[Experiment]]
) -> None:
    store, (_rf3, gb, rf8, lin) = filled
    record = body(fetch(gb.id[:6], params={"path": "nb.ipynb"}))
    on_disk = json.loads(store.record_path(gb.id).read_bytes())
    texts = record.pop("text")
    assert record == {**on_disk, "short_id": gb.id[:8], "origin": None, "store": ".nbexp"}
    assert texts == {  # as `nbexp show` prints them
        section: {key: format_value(value) for key, value in on_disk[section].items()}
        for section in ("params", "metrics")
    }
    assert body(fetch("rf", params={"path": "nb.ipynb"}))["id"] == rf8.id  # the newest rf
    assert body(fetch("best", params={"path": "nb.ipynb"}))["id"] == gb.id
    assert body(fetch("last", params={"path": "nb.ipynb"}))["id"] == lin.id
    refusal(fetch("nosuch", params={"path": "nb.ipynb"}), 404, "no experiment matches `nosuch`")
    refusal(fetch("last~9", params={"path": "nb.ipynb"}), 404, "holds 4 experiments")


@pytest.mark.parametrize(
    "sort",
    [
        "params.a')--",
        "params.depth' || (SELECT CASE WHEN (SELECT count(*) FROM experiments) > 1 "
        "THEN abs(-9223372036854775807-1) END) || '",
        'metrics.acc") DESC; DROP TABLE experiments; --',
    ],
)
def test_a_sort_key_is_data_never_sql(
    fetch: Fetch, filled: tuple[Store, list[Experiment]], sort: str
) -> None:
    refusal(fetch(params={"path": "nb.ipynb", "sort": sort}), 400, "cannot sort by")
    assert body(fetch(params={"path": "nb.ipynb"}))["total"] == 4  # the table is still there


def test_a_read_only_store_is_served_and_left_untouched(
    fetch: Fetch, filled: tuple[Store, list[Experiment]]
) -> None:
    from tests.faults.stores import read_only

    store, made = filled
    store.close()
    (store.root / "index.sqlite").unlink()  # and its index is gone: listed from the records
    for suffix in ("-wal", "-shm"):
        (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*"))
    try:
        with read_only(store.root):
            listing = body(fetch(params={"path": "nb.ipynb"}))
            assert listing["total"] == 4 and ids(listing)[0] == made[-1].id
            assert body(fetch("best", params={"path": "nb.ipynb"}))["id"] == made[1].id
    except OSError as error:
        pytest.skip(f"cannot make a folder read-only here: {error}")
    assert sorted(p.relative_to(store.root) for p in store.root.rglob("*")) == before


def test_a_read_only_store_with_its_index_is_served_from_the_index_and_polled(
    fetch: Fetch, filled: tuple[Store, list[Experiment]], capfd: pytest.CaptureFixture[str]
) -> None:
    """No folder may be written (chattr +i / chmod a-w), so SQLite cannot make the WAL index's
    -shm file: the index is still read as it is, not rebuilt from the records, and the ETag
    still answers 304 while nothing changed."""
    from tests.faults.stores import read_only

    store, made = filled
    store.close()
    store_module._stores.clear()
    before = {p.relative_to(store.root): p.stat().st_mtime_ns for p in store.root.rglob("*")}
    try:
        with read_only(store.root):
            first = fetch(params={"path": "nb.ipynb", "query": "metrics.acc > 0.8"})
            again = fetch(
                params={"path": "nb.ipynb", "query": "metrics.acc > 0.8"},
                headers={"If-None-Match": first.headers["Etag"]},
            )
            record = body(fetch(made[1].id[:8], params={"path": "nb.ipynb"}))
    except OSError as error:
        pytest.skip(f"cannot make a folder read-only here: {error}")
    listing = body(first)
    assert ids(listing) == [made[2].id, made[1].id] and listing["total"] == 2
    assert listing["metric_names"] == ["acc", "auc"]
    assert again.code == 304
    assert record["id"] == made[1].id and record["tags"] == ["best"]
    assert "read 4 records instead" not in capfd.readouterr().err  # the index itself answered
    after = {p.relative_to(store.root): p.stat().st_mtime_ns for p in store.root.rglob("*")}
    assert after == before


def test_a_huge_last_n_is_not_found(fetch: Fetch, filled: tuple[Store, list[Experiment]]) -> None:
    refusal(fetch("last~99999999999999999999", params={"path": "nb.ipynb"}), 404, "does not exist")


def test_an_ambiguous_prefix_is_a_bad_request(fetch: Fetch, jp_root_dir: Path) -> None:
    store = Store(jp_root_dir / ".nbexp")
    first, second, prefix = _ambiguous_pair(store)
    store.save(first)
    store.save(second)
    message = refusal(fetch(prefix, params={"path": "nb.ipynb"}), 400, "ambiguous")
    assert first.id[:8] in message and second.id[:8] in message


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "missing `path`"),
        ({"path": "nb.ipynb", "query": "metrics.acc >"}, "query"),
        ({"path": "nb.ipynb", "query": "bogus == 1"}, "bogus"),
        ({"path": "nb.ipynb", "limit": "ten"}, "limit must be a whole number"),
        ({"path": "nb.ipynb", "limit": "-1"}, "limit must be a whole number"),
        ({"path": "nb.ipynb", "limit": "5000"}, "at most 1000"),
        ({"path": "nb.ipynb", "limit": "1_0"}, "limit must be a whole number"),
        ({"path": "nb.ipynb", "offset": "-3"}, "offset must be a whole number"),
        ({"path": "nb.ipynb", "sort": "bogus"}, "cannot sort by `bogus`"),
        ({"path": "nb.ipynb", "sort": "metrics."}, "cannot sort by"),
        ({"path": "nb.ipynb", "desc": "maybe"}, "desc must be"),
    ],
)
@pytest.mark.parametrize("store_exists", [True, False])
def test_malformed_requests_are_refused_with_one_line(
    fetch: Fetch, jp_root_dir: Path, params: dict[str, str], fragment: str, store_exists: bool
) -> None:
    if store_exists:
        make_experiment(Store(jp_root_dir / ".nbexp"), "rf", metrics={"acc": 0.5})
    refusal(fetch(params=params), 400, fragment)


def test_paths_outside_the_root_are_forbidden(
    fetch: Fetch, filled: tuple[Store, list[Experiment]], jp_root_dir: Path
) -> None:
    outside = jp_root_dir.parent / "outside"
    make_experiment(Store(outside / ".nbexp"), "secret")
    (jp_root_dir / "escape").symlink_to(outside)
    for path in (
        "../outside/nb.ipynb",
        "sub/../../outside",
        str(outside / "nb.ipynb"),
        "/nb.ipynb",
        "escape/nb.ipynb",
        "escape",
    ):
        refusal(fetch(params={"path": path}), 403, "path")
        refusal(fetch("secret", params={"path": path}), 403, "path")
    # a link that stays inside the root is fine
    (jp_root_dir / "inner").mkdir()
    (jp_root_dir / "alias").symlink_to(jp_root_dir / "inner")
    assert body(fetch(params={"path": "alias/nb.ipynb"}))["total"] == 4


def test_a_folder_without_a_store_lists_empty_and_stays_without_one(
    fetch: Fetch, jp_root_dir: Path
) -> None:
    (jp_root_dir / "fresh").mkdir()
    listing = body(fetch(params={"path": "fresh/nb.ipynb"}))
    assert listing["experiments"] == [] and listing["total"] == 0
    assert listing["store"] == "fresh/.nbexp"  # where its kernel will create it
    assert body(fetch(params={"path": "no/such/folder/nb.ipynb"}))["total"] == 0
    refusal(fetch("last", params={"path": "fresh/nb.ipynb"}), 404, "no store yet")
    assert not list(jp_root_dir.rglob(".nbexp"))


def test_the_nearest_store_above_the_notebook_serves_it(
    fetch: Fetch, filled: tuple[Store, list[Experiment]], jp_root_dir: Path
) -> None:
    deep = jp_root_dir / "a" / "b"
    deep.mkdir(parents=True)
    assert body(fetch(params={"path": "a/b/nb.ipynb"}))["total"] == 4
    make_experiment(Store(jp_root_dir / "a" / ".nbexp"), "own")
    nearer = body(fetch(params={"path": "a/b/nb.ipynb"}))
    assert nearer["store"] == "a/.nbexp" and [r["name"] for r in nearer["experiments"]] == ["own"]
    assert body(fetch(params={"path": "a"}))["store"] == "a/.nbexp"


def test_a_symlinked_folder_finds_the_store_its_kernel_would(
    fetch: Fetch, filled: tuple[Store, list[Experiment]], jp_root_dir: Path
) -> None:
    # a kernel started in b/link runs in a/sub (os.getcwd() is physical): it records into
    # a/.nbexp, so that is the store its notebook's panel lists
    (jp_root_dir / "a" / "sub").mkdir(parents=True)
    make_experiment(Store(jp_root_dir / "a" / ".nbexp"), "in-a")
    (jp_root_dir / "b").mkdir()
    (jp_root_dir / "b" / "link").symlink_to(jp_root_dir / "a" / "sub")
    listing = body(fetch(params={"path": "b/link/nb.ipynb"}))
    assert listing["store"] == "a/.nbexp" and listing["total"] == 1
    assert body(fetch(params={"path": "b/nb.ipynb"}))["store"] == ".nbexp"


def test_polling_gets_304_until_the_store_changes(
    fetch: Fetch, filled: tuple[Store, list[Experiment]]
) -> None:
    store, (_rf3, gb, *_) = filled
    params = {"path": "nb.ipynb", "limit": "2"}
    first = fetch(params=params)
    etag = first.headers["Etag"]
    assert first.code == 200 and "no-cache" in first.headers["Cache-Control"]
    again = fetch(params=params, headers={"If-None-Match": etag})
    assert again.code == 304 and again.body == b""
    other_page = fetch(params={**params, "offset": "1"}, headers={"If-None-Match": etag})
    assert other_page.code == 200 and other_page.headers["Etag"] != etag

    def changed(change: Callable[[], object]) -> str:
        nonlocal etag
        change()
        response = fetch(params=params, headers={"If-None-Match": etag})
        assert response.code == 200 and response.headers["Etag"] != etag
        etag = response.headers["Etag"]
        assert fetch(params=params, headers={"If-None-Match": etag}).code == 304
        return etag

    # another process's store (a kernel): its commits reach the server's open index
    kernel_store = Store(store.root)
    changed(lambda: make_experiment(kernel_store, "new", minutes=10))
    changed(lambda: kernel_store.add_tag(gb.id, "shipped"))  # off the first page
    changed(lambda: kernel_store.delete(gb.id))
    assert gb.id not in ids(body(fetch(params={"path": "nb.ipynb"})))


def test_deleting_the_whole_store_lists_empty(
    fetch: Fetch, filled: tuple[Store, list[Experiment]]
) -> None:
    import shutil

    store, _ = filled
    assert body(fetch(params={"path": "nb.ipynb"}))["total"] == 4
    shutil.rmtree(store.root)
    assert body(fetch(params={"path": "nb.ipynb"}))["total"] == 0
    assert not store.root.exists()
    make_experiment(Store(store.root), "again")
    assert [r["name"] for r in body(fetch(params={"path": "nb.ipynb"}))["experiments"]] == ["again"]


def test_nbexp_store_in_the_servers_environment_wins(
    fetch: Fetch,
    filled: tuple[Store, list[Experiment]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = tmp_path / "shared-store"
    make_experiment(Store(shared), "shared-run")
    monkeypatch.setenv("NBEXP_STORE", str(shared))
    listing = body(fetch(params={"path": "nb.ipynb"}))
    assert [r["name"] for r in listing["experiments"]] == ["shared-run"]
    assert listing["store"] == str(shared)
    assert body(fetch("shared-run", params={"path": "nb.ipynb"}))["name"] == "shared-run"
    refusal(fetch(params={"path": "../nb.ipynb"}), 403)  # still confined to the root


def test_requests_without_the_token_are_refused(
    fetch: Fetch, filled: tuple[Store, list[Experiment]]
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "token not-the-token"}):
        assert fetch(params={"path": "nb.ipynb"}, headers=headers).code == 403
        assert fetch("rf", params={"path": "nb.ipynb"}, headers=headers).code == 403


def test_an_experiment_recorded_in_a_real_shell(
    ip: Any, fetch: Fetch, jp_root_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebooks = jp_root_dir / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)  # where the notebook's kernel runs
    store_module._stores.clear()
    cell = (
        "%%experiment train -p alpha=0.5\n"
        "alpha = 0.1\n"
        "acc = 0.5 + alpha\n"
        "bad = float('nan')\n"
        "api_token = 'sk-live-abcdef1234567890'\n"
    )
    assert run(ip, cell).success
    listing = body(fetch(params={"path": "notebooks/nb.ipynb"}))
    assert listing["store"] == "notebooks/.nbexp"
    (row,) = listing["experiments"]
    assert row["name"] == "train" and row["params"]["alpha"] == 0.5
    assert row["metrics"]["acc"] == 1.0 and row["metrics"]["bad"] == {"$float": "nan"}
    record = fetch(row["short_id"], params={"path": "notebooks/nb.ipynb"})
    assert b"sk-live-abcdef1234567890" not in record.body
    assert body(record)["id"] == row["id"] == open_store().resolve("train")


def test_json_shapes_are_strict_json() -> None:
    row = {"id": "ab" * 16, "params": {"lr": math.inf}, "metrics": {"m": -math.inf, "n": math.nan}}
    shaped = row_json(row)
    assert shaped["short_id"] == "abababab"
    assert shaped["metrics"] == {"m": {"$float": "-inf"}, "n": {"$float": "nan"}}
    assert shaped["text"] == {"params": {"lr": "inf"}, "metrics": {"m": "-inf", "n": "nan"}}
    # the panel shows what `nbexp list` prints: 4 significant digits, ints whole, JSON else
    values = {"a": 123456.789, "b": 10**20, "c": 1e20, "d": True, "e": None, "f": [1, 2]}
    assert row_json({"id": "ab" * 16, "params": values, "metrics": {}})["text"]["params"] == {
        "a": "1.235e+05", "b": "100000000000000000000", "c": "1e+20", "d": "true", "e": "",
        "f": "[1,2]",
    }  # fmt: skip
    json.dumps(shaped, allow_nan=False)
    experiment = make_experiment(Store(Path("store")), metrics={"x": math.nan}, save=False)
    record = record_json(experiment, "origin-remote", ".nbexp")
    json.dumps(record, allow_nan=False)
    assert record["origin"] == "origin-remote" and record["id"] == experiment.id


def test_the_installed_server_lists_the_extension_enabled() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"^\s*nbexp enabled\s*$", output, re.MULTILINE), output
    assert re.search(r"^\s*nbexp \S+ OK\s*$", output, re.MULTILINE), output


def test_metric_names_count_only_the_matching_experiments(tmp_path: Path) -> None:
    store = Store(tmp_path / ".nbexp")
    make_experiment(store, "a", metrics={"loss": 0.5, "curve": [1, 2]}, params={"x": 1})
    make_experiment(store, "b", metrics={"acc": 0.9, "loss": 0.2, "curve": [3]}, minutes=1)
    make_experiment(store, "c", metrics={"acc": 0.8}, minutes=2)
    assert store.keys("metrics") == ["loss", "curve", "acc"]  # ties: first indexed first
    assert store.keys("metrics", 'name != "a"') == ["acc", "loss", "curve"]
    assert store.keys("metrics", "metrics.acc > 0.85") == ["loss", "curve", "acc"]
    assert store.keys("params") == ["x"] and store.keys("metrics", 'name == "z"') == []
