"""Bringing recorded state back: `%exp_restore` reporting, `nbexp.load`'s lazy namespace,
`%%experiment --cache`, `nbexp gc`, and a restore in a fresh Jupyter kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

import nbexp
from nbexp import hashing
from nbexp.state import StateLoader
from nbexp.store import open_store
from tests.conftest import run, run_in_fresh_kernel

NBEXP_CLI = str(Path(sys.executable).with_name("nbexp"))


def cell(line: str, body: str) -> str:
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


def record(ip, line: str, body: str):
    result = run(ip, cell(line, body))
    assert result.success, result.error_in_exec
    return nbexp.get("last")


def exp_restore(ip, capsys, args: str) -> str:
    capsys.readouterr()
    result = run(ip, f"%exp_restore {args}")
    assert result.success, result.error_in_exec
    return capsys.readouterr().out


def report_lines(out: str) -> dict[str, str]:
    """The report's lines keyed by their start: 'restored', 'overwrote', 'skipped NAME'."""
    lines: dict[str, str] = {}
    for text in out.splitlines():
        text = text.strip()
        if text.startswith("skipped "):
            lines[text.split(":")[0]] = text
        elif text:
            lines[text.split()[0]] = text
    return lines


def assert_one_line_usage_error(result, captured, *needles: str) -> None:
    assert result.success is False
    assert isinstance(result.error_in_exec, UsageError)
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err_lines) == 1, captured.err
    assert err_lines[0].startswith("UsageError: ")
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in err_lines[0]


def cli(*args: str) -> subprocess.CompletedProcess:
    """The `nbexp` command in another process, like a user in a terminal."""
    return subprocess.run(
        [NBEXP_CLI, *args], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )


# -- 6. restore reporting -------------------------------------------------------------------


def test_report_lists_restored_skipped_and_overwritten(ip, capsys):
    record(
        ip,
        "report",
        """
        x = [1, 2]
        y = {"k": 2}
        z = "zed"
        gen = (i for i in range(2))
    """,
    )
    ip.user_ns["x"] = "changed since"
    del ip.user_ns["y"]
    out = exp_restore(ip, capsys, "report")
    lines = report_lines(out)
    restored = lines["restored"]
    assert "restored 3 variables from report" in restored
    assert restored.split(": ", 1)[1].split(", ") == ["x", "y", "z"]
    assert "x" in lines["overwrote"].split(": ", 1)[1].split(", ")
    assert "y" not in lines["overwrote"].split(": ", 1)[1].split(", ")
    assert "generator" in lines["skipped gen"]
    assert ip.user_ns["x"] == [1, 2] and ip.user_ns["y"] == {"k": 2}


def test_restore_only_the_named_variables(ip, capsys):
    record(ip, "named", "x = [1]\ny = [2]\nz = [3]")
    for name in ("x", "y", "z"):
        ip.user_ns[name] = "live"
    out = exp_restore(ip, capsys, "named x y")
    assert "restored 2 variables" in out
    assert ip.user_ns["x"] == [1] and ip.user_ns["y"] == [2] and ip.user_ns["z"] == "live"
    out = exp_restore(ip, capsys, "named nope")
    assert "skipped nope: not a variable of named" in out and ip.user_ns["z"] == "live"
    # the same through the Python API
    ip.user_ns["z"] = "live"
    report = nbexp.restore("named", ["z"])
    assert report.restored == ["z"] and ip.user_ns["z"] == [3]


def test_code_flag_puts_the_cell_into_the_next_input(ip, capsys, monkeypatch):
    experiment = record(ip, "with-code", "alpha = 0.5\nbeta = alpha * 2")
    captured: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        ip, "set_next_input", lambda text, replace=False: captured.append((text, replace))
    )
    ip.user_ns["beta"] = None
    exp_restore(ip, capsys, "with-code --code")
    assert len(captured) == 1
    text, replace = captured[0]
    assert text == experiment.code.cell
    assert text.startswith("%%experiment with-code") and "beta = alpha * 2" in text
    assert replace is False
    assert ip.user_ns["beta"] == 1.0


def test_no_state_experiment_cannot_be_restored(ip, capsys):
    record(ip, "stateless --no-state", "q = 1")
    capsys.readouterr()
    result = run(ip, "%exp_restore stateless")
    assert_one_line_usage_error(result, capsys.readouterr(), "stateless", "--no-state")
    with pytest.raises(nbexp.NbexpError, match="no-state"):
        nbexp.restore("stateless")
    with pytest.raises(nbexp.NbexpError, match="no-state"):
        nbexp.load("stateless")
    result = run(ip, "%exp_restore no-such-experiment")
    assert_one_line_usage_error(result, capsys.readouterr(), "no-such-experiment")


# -- 7. nbexp.load: a lazy namespace ----------------------------------------------------------


def test_load_is_lazy_and_leaves_the_kernel_alone(ip, monkeypatch):
    record(
        ip,
        "lazy",
        """
        import numpy as np
        import pandas as pd
        arr = np.arange(5.0)
        df = pd.DataFrame({"a": [1, 2, 3]})
        cfg = {"lr": 0.1}
        alias = cfg
    """,
    )
    for name in ("arr", "df", "cfg", "alias"):
        ip.user_ns[name] = f"live {name}"
    calls: list[str] = []
    original = StateLoader._unpickle

    def counting(self, name, entry):
        calls.append(name)
        return original(self, name, entry)

    monkeypatch.setattr(StateLoader, "_unpickle", counting)
    old = nbexp.load("lazy")
    assert sorted(old) == ["alias", "arr", "cfg", "df"] and len(old) == 4
    assert "arr" in old and "nope" not in old
    assert "arr" in dir(old) and "lazy" in repr(old)
    assert calls == []

    np.testing.assert_array_equal(old.arr, np.arange(5.0))
    assert calls == ["arr"]
    assert old["arr"] is old.arr  # loaded once
    assert calls == ["arr"]
    pd.testing.assert_frame_equal(old["df"], pd.DataFrame({"a": [1, 2, 3]}))
    assert old.alias is old.cfg and old.cfg == {"lr": 0.1}
    assert sorted(calls) == ["arr", "cfg", "df"]
    assert dict(old.items())["cfg"] == {"lr": 0.1}
    for name in ("arr", "df", "cfg", "alias"):
        assert ip.user_ns[name] == f"live {name}"

    with pytest.raises(AttributeError, match=r"has no stored variable 'nope'.*arr"):
        _ = old.nope
    with pytest.raises(KeyError):
        old["nope"]
    with pytest.raises(nbexp.NbexpError, match=r"'nope'.*it has: .*arr"):
        nbexp.load("lazy", ["nope"])
    only = nbexp.load("lazy", ["cfg"])
    assert list(only) == ["cfg"] and only.cfg == {"lr": 0.1}
    with pytest.raises(AttributeError):
        _ = only.arr

    # inside the kernel, as a user would write it
    calls.clear()
    result = run(ip, "import nbexp\nold = nbexp.load('lazy')\nold_lr = old.cfg['lr']")
    assert result.success, result.error_in_exec
    assert ip.user_ns["old_lr"] == 0.1 and calls == ["cfg"]
    assert ip.user_ns["cfg"] == "live cfg"


# -- 10. --cache ----------------------------------------------------------------------------

CACHED = """
    import nbexp_cache_counter
    nbexp_cache_counter.runs += 1
    print("body ran", nbexp_cache_counter.runs)
    C = 0.5
    rows = pd.read_csv("input.csv")
    model = LogisticRegression(C=C)
    model.fit(X, y)
    accuracy = float(model.score(X, y)) + len(rows)
"""


@pytest.fixture
def counter(monkeypatch):
    module = types.ModuleType("nbexp_cache_counter")
    module.runs = 0
    monkeypatch.setitem(sys.modules, "nbexp_cache_counter", module)
    return module


@pytest.fixture
def cache_inputs(ip):
    Path("input.csv").write_text("a,b\n1,2\n3,4\n")
    result = run(
        ip,
        textwrap.dedent("""
        import numpy as np
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        X = np.random.default_rng(0).random((40, 3))
        y = (X[:, 0] > 0.5).astype(int)
    """),
    )
    assert result.success


def cached_run(ip, capsys, line: str = "cached --cache", body: str = CACHED) -> str:
    capsys.readouterr()
    result = run(ip, cell(line, body))
    assert result.success, result.error_in_exec
    return capsys.readouterr().out


def test_cache_reuses_an_identical_run_without_running_the_body(ip, capsys, counter, cache_inputs):
    first = cached_run(ip, capsys)
    assert counter.runs == 1 and "reused" not in first
    accuracy = ip.user_ns["accuracy"]
    coef = ip.user_ns["model"].coef_.copy()
    count = nbexp.open_store().count()

    ip.user_ns["accuracy"] = None
    ip.user_ns["rows"] = None
    second = cached_run(ip, capsys)
    assert "reused" in second, second
    assert counter.runs == 1  # the body did not run
    assert nbexp.open_store().count() == count  # and nothing new was recorded
    assert ip.user_ns["accuracy"] == accuracy
    np.testing.assert_array_equal(ip.user_ns["model"].coef_, coef)
    pd.testing.assert_frame_equal(ip.user_ns["rows"], pd.read_csv("input.csv"))

    # a third identical run is reused as well
    assert "reused" in cached_run(ip, capsys) and counter.runs == 1


@pytest.mark.parametrize("change", ["param", "variable", "file"])
def test_cache_reruns_when_an_input_changes(ip, capsys, counter, cache_inputs, change):
    cached_run(ip, capsys)
    assert counter.runs == 1
    line = "cached --cache"
    if change == "param":
        line += " -p C=0.1"
    elif change == "variable":
        ip.user_ns["X"][0, 0] += 1.0  # in place: same object, new content
    else:
        Path("input.csv").write_text("a,b\n1,2\n3,5\n")
    out = cached_run(ip, capsys, line)
    assert "reused" not in out
    assert counter.runs == 2
    if change == "param":
        assert nbexp.get("last").params["C"] == 0.1
    # the changed run is now the one reused
    assert "reused" in cached_run(ip, capsys, line) and counter.runs == 2


def test_cache_miss_leaves_live_variables_alone_and_unrelated_unstorables_do_not_block(
    ip, capsys, counter, cache_inputs
):
    run(ip, "import sqlite3\nconn = sqlite3.connect(':memory:')\nnotes = ['v1']")
    try:
        cached_run(ip, capsys)
        assert counter.runs == 1
        run(ip, "notes.append('v2')")  # not read by the body
        out = cached_run(ip, capsys)
        assert "reused" in out and counter.runs == 1
        # an unrelated variable changed since is not part of the cached run's inputs
        run(ip, "notes = ['v3']")
        Path("input.csv").write_text("a,b\n9,9\n")
        out = cached_run(ip, capsys)
        assert "reused" not in out and counter.runs == 2
        assert ip.user_ns["notes"] == ["v3"]
    finally:
        ip.user_ns["conn"].close()


def test_cache_that_cannot_restore_what_the_body_binds_reruns_without_touching_the_kernel(
    ip, capsys, counter, cache_inputs
):
    body = CACHED + "    batches = (row for row in range(3))\n"
    run(ip, "notes = ['v1']")
    cached_run(ip, capsys, body=body)
    assert counter.runs == 1
    assert "batches" in nbexp.get("last").state["unstored"]
    run(ip, "notes = ['v2']\nmodel = 'live model'")
    out = cached_run(ip, capsys, body=body)
    # the generator the body makes cannot come back, so the body really runs ...
    assert "reused" not in out and counter.runs == 2
    assert list(ip.user_ns["batches"]) == [0, 1, 2]
    # ... and the attempt did not put the earlier run's values over the live ones
    assert ip.user_ns["notes"] == ["v2"]


# -- 11. gc -----------------------------------------------------------------------------------


def test_gc_frees_only_objects_of_deleted_experiments(ip, capsys):
    keep = record(
        ip,
        "keep-me",
        """
        import numpy as np
        shared = np.arange(500_000.0)
        kept_only = np.ones(1000)
    """,
    )
    drop = record(ip, "drop-me", "dropped_only = np.full(300_000, 7.0)")
    store = open_store()
    garbage = drop.object_hashes() - keep.object_hashes()
    assert len(garbage) >= 2  # dropped_only's chunks (its small pickle lives in the record)
    garbage_size = sum(store.object_path(digest).stat().st_size for digest in garbage)
    capsys.readouterr()
    run(ip, "%exp_rm drop-me")
    assert "deleted drop-me" in capsys.readouterr().out

    dry = cli("gc")
    assert dry.returncode == 0, dry.stderr
    from nbexp.show import human_bytes

    assert f"{len(garbage)} unreferenced objects ({human_bytes(garbage_size)})" in dry.stdout
    assert "--yes" in dry.stdout
    assert all(store.object_path(digest).exists() for digest in garbage)

    done = cli("gc", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"deleted {len(garbage)} unreferenced objects" in done.stdout
    assert not any(store.object_path(digest).exists() for digest in garbage)
    assert all(store.object_path(digest).exists() for digest in keep.object_hashes())
    assert "nothing to collect" in cli("gc").stdout

    fsck = cli("fsck")
    assert fsck.returncode == 0 and fsck.stdout.startswith("ok"), fsck.stdout + fsck.stderr

    for name in ("shared", "kept_only"):
        ip.user_ns[name] = None
    out = exp_restore(ip, capsys, "keep-me")
    assert "skipped" not in out
    np.testing.assert_array_equal(ip.user_ns["shared"], np.arange(500_000.0))

    # this kernel still holds `dropped_only`, whose objects gc deleted from under it:
    # recording it again must write them again, not trust a stale "already stored"
    again = record(ip, "again", "more = 1")
    assert again.state["variables"]["dropped_only"] == drop.state["variables"]["dropped_only"]
    assert cli("fsck").returncode == 0
    ip.user_ns["dropped_only"] = None
    out = exp_restore(ip, capsys, "again dropped_only")
    assert "skipped" not in out
    np.testing.assert_array_equal(ip.user_ns["dropped_only"], np.full(300_000, 7.0))


# -- 12. a fresh kernel -------------------------------------------------------------------------

KERNEL_CHECK = """
import json, sys
import nbexp
from nbexp import hashing
report = nbexp.restore("for-kernel")
print(json.dumps({
    "exe": sys.executable,
    "restored": report.restored,
    "skipped": report.skipped,
    "arr": hashing.hash_array(arr),
    "frame": hashing.hash_frame(frame),
    "series": hashing.hash_frame(series),
    "scaled": scale(2),
    "is_box": isinstance(box, Box),
    "box_holds_arr": box.value is arr,
    "alias": alias is frame,
    "writable": bool(arr.flags.writeable),
    "tz": str(frame["when"].dt.tz),
}))
"""


@pytest.mark.kernel
def test_restore_in_a_fresh_kernel_gives_the_recorded_content(ip, project):
    experiment = record(
        ip,
        "for-kernel",
        """
        import numpy as np
        import pandas as pd
        arr = np.arange(24.0).reshape(4, 6)[:, ::2]
        frame = pd.DataFrame({
            "a": [1, 2, 3],
            "cat": pd.Categorical(["x", "y", "x"]),
            "when": pd.date_range("2024-01-01", periods=3, tz="Europe/Paris"),
            "n": pd.array([1, None, 3], dtype="Int64"),
        })
        series = pd.Series([0.5, 1.5], name="s")
        def scale(v):
            return v * 3
        class Box:
            def __init__(self, value):
                self.value = value
        box = Box(arr)
        alias = frame
    """,
    )
    expected = {
        "arr": hashing.hash_array(ip.user_ns["arr"]),
        "frame": hashing.hash_frame(ip.user_ns["frame"]),
        "series": hashing.hash_frame(ip.user_ns["series"]),
    }
    output = run_in_fresh_kernel(KERNEL_CHECK, open_store().root, project, timeout=60)
    seen = json.loads(output.strip().splitlines()[-1])
    assert os.path.realpath(seen["exe"]) == os.path.realpath(sys.executable)
    assert seen["skipped"] == {}
    assert sorted(seen["restored"]) == sorted(experiment.state["variables"])
    for name, digest in expected.items():
        assert seen[name] == digest, name
    assert seen["scaled"] == 6 and seen["is_box"] and seen["box_holds_arr"] and seen["alias"]
    assert seen["writable"] and seen["tz"] == "Europe/Paris"


def test_a_mapped_array_verified_by_threads_refuses_a_damaged_chunk_and_takes_a_loose_copy(
    ip, monkeypatch
):
    """A large packed buffer comes back mapped from its pack and verified chunk by chunk by
    several threads (from 64 MiB; every size here). A byte flipped in one chunk: the variable
    is refused, naming fsck, and the others restore. The same chunk also lying loose and whole
    (as a store written before packs, or a pull, leaves it) is taken instead."""
    from nbexp.restorer import restore_into
    from nbexp.store import objects

    monkeypatch.setattr(objects, "VERIFY_IN_PARALLEL_FROM", 0)
    experiment = record(
        ip, "mapped", "import numpy as np\nbig = np.arange(3_000_000.0)\nsmall = [1, 2]"
    )
    store = open_store()
    chunks = experiment.state["variables"]["big"]["buffers"][0]
    assert len(chunks) > objects.FEW_OBJECTS  # one pack
    places = [store.object_location(digest) for digest in chunks]
    assert all(place is not None for place in places)
    pack, offset, length = places[7]  # type: ignore[misc]
    start = sum(place[2] for place in places[:7])  # type: ignore[index]
    whole = np.arange(3_000_000.0)
    namespace: dict = {}
    assert restore_into(namespace, store, experiment).skipped == {}
    assert np.array_equal(namespace["big"], whole)
    namespace["big"][0] = -1.0  # writable, and private: the pack is untouched
    assert restore_into({}, store, experiment).skipped == {}

    with open(pack, "r+b") as handle:
        handle.seek(offset + length // 2)
        byte = handle.read(1)
        handle.seek(offset + length // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    namespace = {}
    report = restore_into(namespace, store, experiment)
    assert set(report.skipped) == {"big"} and namespace["small"] == [1, 2]
    assert "corrupt" in report.skipped["big"] and "nbexp fsck" in report.skipped["big"]

    loose = store.object_path(chunks[7])
    loose.parent.mkdir(parents=True, exist_ok=True)
    loose.write_bytes(whole.tobytes()[start : start + length])
    namespace = {}
    assert restore_into(namespace, store, experiment).skipped == {}
    assert np.array_equal(namespace["big"], whole)
