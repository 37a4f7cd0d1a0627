"""The kernel-state snapshot of `%%experiment`, as a user sees it through `%exp_restore`.

Round trips of numpy, pandas, scikit-learn and notebook-defined code; change detection by
content (in-place mutations included); incremental storage of large arrays and frames;
identity between variables; values that cannot be stored; corrupt objects; secrets.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbexp
from nbexp import hashing
from nbexp.store import open_store
from tests.conftest import run

# -- helpers -------------------------------------------------------------------------------


def cell(line: str, body: str) -> str:
    """A `%%experiment` cell with `line` as its arguments and a dedented body."""
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


def record(ip, line: str, body: str):
    """Run an experiment cell; it must succeed. Returns the recorded Experiment."""
    result = run(ip, cell(line, body))
    assert result.success, result.error_in_exec
    experiment = nbexp.get("last")
    assert experiment.state is not None
    return experiment


def exp_restore(ip, capsys, args: str) -> str:
    """`%exp_restore ARGS` as a notebook cell; returns what it printed."""
    capsys.readouterr()
    result = run(ip, f"%exp_restore {args}")
    assert result.success, result.error_in_exec
    return capsys.readouterr().out


def clobber(ip, *names: str) -> None:
    for name in names:
        ip.user_ns[name] = "clobbered"


def content_hash(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return hashing.hash_array(value)
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return hashing.hash_frame(value)
    raise TypeError(type(value))


def var_hash(experiment, name: str) -> str:
    return experiment.state["variables"][name]["hash"]


def objects_size(root: Path) -> int:
    """Bytes of stored objects, loose (objects/) and packed (packs/)."""
    folders = (root / "objects", root / "packs")
    return sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file())


def assert_same(restored: Any, original: Any) -> None:
    """Deep equality over containers of arrays, frames and plain values."""
    assert type(restored) is type(original)
    if isinstance(original, np.ndarray):
        assert restored.dtype == original.dtype and restored.shape == original.shape
        np.testing.assert_array_equal(restored, original)
        assert content_hash(restored) == content_hash(original)
    elif isinstance(original, pd.DataFrame):
        pd.testing.assert_frame_equal(restored, original)
        assert content_hash(restored) == content_hash(original)
    elif isinstance(original, pd.Series):
        pd.testing.assert_series_equal(restored, original)
        assert content_hash(restored) == content_hash(original)
    elif isinstance(original, dict):
        assert list(restored) == list(original)
        for key in original:
            assert_same(restored[key], original[key])
    elif isinstance(original, (list, tuple)):
        assert len(restored) == len(original)
        for left, right in zip(restored, original, strict=True):
            assert_same(left, right)
    else:
        assert restored == original


# -- 1. round trips ---------------------------------------------------------------------------

NUMPY_NAMES = [
    "base",
    "view",
    "strided",
    "transposed",
    "fortran",
    "objects",
    "scalar0d",
    "structured",
    "every_third",
    "bools",
    "dates",
    "texts",
]


def test_numpy_arrays_round_trip_with_equal_content_and_are_writable(ip, capsys):
    record(
        ip,
        "np-round-trip",
        """
        import numpy as np
        base = np.arange(48, dtype=np.float64).reshape(6, 8)
        view = base[1:4]
        strided = base[:, ::2]
        transposed = base.T
        fortran = np.asfortranarray(base * 2)
        objects = np.empty(5, dtype=object)
        objects[:] = [1, "two", None, {"k": [3]}, (4, 5)]
        scalar0d = np.array(3.25)
        structured = np.array([(1, 2.5, b"ab"), (2, -1.0, b"cd")],
                              dtype=[("id", "<i4"), ("x", "<f8"), ("tag", "S2")])
        every_third = np.arange(10, dtype=np.int16)[::3]
        bools = np.array([[True, False], [False, True]])
        dates = np.array(["2024-01-01", "2024-06-30"], dtype="datetime64[D]")
        texts = np.array(["α", "beta"])
    """,
    )
    originals = {name: ip.user_ns[name] for name in NUMPY_NAMES}
    hashes = {
        name: content_hash(value) for name, value in originals.items() if not value.dtype.hasobject
    }
    clobber(ip, *NUMPY_NAMES)
    out = exp_restore(ip, capsys, "np-round-trip")
    for name in NUMPY_NAMES:
        assert name in out
        restored, original = ip.user_ns[name], originals[name]
        assert isinstance(restored, np.ndarray), name
        assert restored is not original
        assert restored.dtype == original.dtype and restored.shape == original.shape, name
        if original.dtype.hasobject:
            assert restored.tolist() == original.tolist()
        else:
            np.testing.assert_array_equal(restored, original)
            assert content_hash(restored) == hashes[name], name
        assert restored.flags.writeable, name
    # writable in fact, not only by flag: the user can keep working on them
    ip.user_ns["strided"][0, 0] = -1.0
    ip.user_ns["scalar0d"][()] = 1.5
    ip.user_ns["structured"]["x"][0] = 9.0
    ip.user_ns["objects"][0] = "changed"
    assert ip.user_ns["strided"][0, 0] == -1.0 and float(ip.user_ns["scalar0d"]) == 1.5
    assert ip.user_ns["transposed"].shape == (8, 6)
    assert ip.user_ns["structured"].dtype.names == ("id", "x", "tag")


def test_pandas_objects_round_trip_with_dtypes_and_hashes(ip, capsys):
    record(
        ip,
        "pd-round-trip",
        """
        import numpy as np
        import pandas as pd
        frame = pd.DataFrame({
            "cat": pd.Categorical(["a", "b", "a", "c"], categories=["c", "b", "a"], ordered=True),
            "when": pd.date_range("2024-03-31 00:00", periods=4, freq="h", tz="Europe/Berlin"),
            "obj": pd.Series([{"k": 1}, [1, 2], None, "s"], dtype=object),
            "text": pd.Series(["x", None, "zz", "ü"], dtype="string"),
            "plain": ["p", "q", "r", "s"],
            "nullable": pd.array([1, None, 3, 4], dtype="Int64"),
            "flt": [0.5, np.nan, 2.0, -1.0],
        })
        multi = pd.DataFrame(
            np.arange(12.0).reshape(6, 2),
            index=pd.MultiIndex.from_product([["a", "b"], [1, 2, 3]], names=["letter", "num"]),
            columns=["u", "v"],
        )
        series = pd.Series([1.5, 2.5], index=pd.Index(["x", "y"], name="key"), name="vals")
        tz_series = pd.Series(range(3), index=pd.date_range("2024-01-01", periods=3, tz="UTC"))
    """,
    )
    names = ["frame", "multi", "series", "tz_series"]
    originals = {name: ip.user_ns[name] for name in names}
    hashes = {name: content_hash(value) for name, value in originals.items()}
    clobber(ip, *names)
    exp_restore(ip, capsys, "pd-round-trip")
    for name in names:
        restored = ip.user_ns[name]
        assert restored is not originals[name]
        assert_same(restored, originals[name])
        assert content_hash(restored) == hashes[name]
    frame = ip.user_ns["frame"]
    assert frame["cat"].cat.ordered and list(frame["cat"].cat.categories) == ["c", "b", "a"]
    assert str(frame["when"].dt.tz) == "Europe/Berlin"
    assert frame["nullable"].dtype == "Int64" and frame["nullable"].isna().tolist()[1]
    assert frame["obj"][0] == {"k": 1}
    assert ip.user_ns["multi"].index.names == ["letter", "num"]
    # a restored frame is an ordinary frame: it can be changed
    frame.loc[0, "flt"] = 42.0
    assert frame.loc[0, "flt"] == 42.0


def test_fitted_sklearn_estimators_predict_the_same_after_restore(ip, capsys):
    record(
        ip,
        "sk-round-trip",
        """
        from sklearn.datasets import make_classification
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        X, y = make_classification(n_samples=200, n_features=6, random_state=0)
        forest = RandomForestClassifier(n_estimators=15, random_state=0).fit(X, y)
        pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    """,
    )
    from sklearn.ensemble import RandomForestClassifier

    X = ip.user_ns["X"]
    forest, pipe = ip.user_ns["forest"], ip.user_ns["pipe"]
    expected = forest.predict_proba(X), pipe.predict(X)
    clobber(ip, "forest", "pipe")
    exp_restore(ip, capsys, "sk-round-trip")
    restored_forest, restored_pipe = ip.user_ns["forest"], ip.user_ns["pipe"]
    assert restored_forest is not forest
    assert isinstance(restored_forest, RandomForestClassifier)
    assert len(restored_forest.estimators_) == 15
    assert restored_forest.get_params() == forest.get_params()
    np.testing.assert_array_equal(restored_forest.predict_proba(X), expected[0])
    np.testing.assert_array_equal(restored_forest.predict(X), forest.predict(X))
    np.testing.assert_array_equal(restored_pipe.predict(X), expected[1])


def test_nested_containers_of_arrays_and_frames_round_trip(ip, capsys):
    record(
        ip,
        "nested",
        """
        import numpy as np
        import pandas as pd
        nested = {
            "arrays": [np.arange(5), np.ones((2, 3))[:, ::2]],
            "frames": (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), {"s": pd.Series([3.0])}),
            "meta": {"n": 3, "tags": ("x", "y"), "empty": []},
        }
    """,
    )
    original = ip.user_ns["nested"]
    clobber(ip, "nested")
    exp_restore(ip, capsys, "nested")
    restored = ip.user_ns["nested"]
    assert restored is not original
    assert_same(restored, original)
    assert restored["arrays"][1].flags.writeable


def test_notebook_functions_lambdas_closures_and_classes_round_trip(ip, capsys):
    run(ip, "offset = 10")
    record(
        ip,
        "code-objects",
        """
        def shifted(x):
            return x + offset
        square = lambda v: v * v
        def make_adder(n):
            def add(x):
                return x + n
            return add
        add3 = make_adder(3)
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def norm2(self):
                return self.x ** 2 + self.y ** 2
        p = Point(3, 4)
        points = [Point(1, 1), Point(0, 2)]
    """,
    )
    names = ["offset", "shifted", "square", "make_adder", "add3", "Point", "p", "points"]
    clobber(ip, *names)
    # the user redefines the class before restoring: the instances must still belong to the
    # restored class, not to the new one nor to a third copy
    run(ip, "class Point:\n    def norm2(self):\n        return -1")
    out = exp_restore(ip, capsys, "code-objects")
    ns = ip.user_ns
    for name in names:
        assert name in out
    assert ns["shifted"](1) == 11
    assert ns["square"](7) == 49
    assert ns["add3"](4) == 7
    assert ns["make_adder"](5)(1) == 6
    assert isinstance(ns["p"], ns["Point"])
    assert all(isinstance(point, ns["Point"]) for point in ns["points"])
    assert ns["p"].norm2() == 25
    assert [point.norm2() for point in ns["points"]] == [2, 4]
    assert ns["Point"](1, 2).norm2() == 5
    assert type(ns["p"]) is ns["Point"] is type(ns["points"][0])


# -- 2. change detection by content ---------------------------------------------------------

BASELINE = """
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression
    df = pd.DataFrame({"a": np.arange(5.0), "b": np.arange(5.0) * 2})
    arr = np.zeros((3, 3))
    X = np.random.default_rng(0).random((10, 2))
    target = X @ np.array([1.0, 2.0])
    model = LinearRegression().fit(X, target)
    lst = [1, 2]
    a = [10]
    b = a
    holder = {"items": [1]}
    steady = np.arange(1000)
    def grow(container):
        container["items"].append(len(container["items"]) + 1)
"""

CHANGES = {
    "column-add": (
        "df",
        'df["c"] = df["a"] + df["b"]',
        lambda v: list(v.columns) == ["a", "b", "c"],
    ),
    "item-set": ("arr", "arr[0, 0] = 5", lambda v: v[0, 0] == 5 and v.sum() == 5),
    "refit": ("model", "model.fit(X, target * 3)", lambda v: np.allclose(v.coef_, [3.0, 6.0])),
    "append": ("lst", "lst.append(3)", lambda v: v == [1, 2, 3]),
    "alias": ("a", "b.append(1)", lambda v: v == [10, 1]),
    "in-function": ("holder", "grow(holder)", lambda v: v["items"] == [1, 2]),
}


@pytest.mark.parametrize("case", list(CHANGES))
def test_in_place_change_is_detected_by_content_and_restored(ip, capsys, case):
    name, statement, check = CHANGES[case]
    baseline = record(ip, "baseline", BASELINE)
    changed = record(ip, "changed", statement)
    assert var_hash(changed, name) != var_hash(baseline, name)
    for unchanged in ("steady", "X") if name != "model" else ("steady", "df"):
        assert var_hash(changed, unchanged) == var_hash(baseline, unchanged)
    assert var_hash(changed, "steady") == var_hash(baseline, "steady")

    clobber(ip, name)
    exp_restore(ip, capsys, "changed")
    assert check(ip.user_ns[name]), ip.user_ns[name]
    if name == "a":
        assert ip.user_ns["b"] is ip.user_ns["a"]

    # the baseline still has the value from before the change (copy-on-write frames included)
    clobber(ip, name)
    exp_restore(ip, capsys, "baseline")
    assert not check(ip.user_ns[name])


def test_unchanged_variables_keep_their_hash_and_cost_nothing(ip):
    first = record(ip, "first", BASELINE)
    second = record(ip, "second", "unrelated = 1")
    for name, entry in first.state["variables"].items():
        assert second.state["variables"][name] == entry, name
    assert second.state["new_bytes"] < 2048


# -- 3. storage -----------------------------------------------------------------------------


def test_unchanged_large_array_costs_no_new_bytes(ip):
    store = open_store()
    first = record(
        ip,
        "big-1",
        """
        import numpy as np
        big = np.random.default_rng(0).random(3_000_000)
    """,
    )
    big_bytes = ip.user_ns["big"].nbytes
    assert big_bytes >= 20e6
    assert first.state["new_bytes"] >= big_bytes
    size_before = objects_size(store.root)
    second = record(ip, "big-2", "small = 1")
    assert var_hash(second, "big") == var_hash(first, "big")
    assert second.state["new_bytes"] < 64 * 1024
    assert objects_size(store.root) - size_before < 0.01 * size_before


def test_one_column_add_stores_one_column_and_a_copy_stores_nothing(ip):
    store = open_store()
    record(
        ip,
        "frame-1",
        """
        import numpy as np
        import pandas as pd
        rng = np.random.default_rng(1)
        frame = pd.DataFrame({f"c{i}": rng.random(1_000_000) for i in range(5)})
    """,
    )
    frame_bytes = int(ip.user_ns["frame"].memory_usage(index=False).sum())
    assert frame_bytes >= 40e6

    size_before = objects_size(store.root)
    fresh_copy = record(ip, "frame-copy", "frame0 = frame.copy()")
    assert fresh_copy.state["new_bytes"] < 0.001 * frame_bytes
    assert objects_size(store.root) - size_before < 0.001 * frame_bytes

    added = record(ip, "frame-2", 'frame["extra"] = np.arange(1_000_000, dtype=np.float64)')
    column = ip.user_ns["frame"]["extra"].to_numpy().nbytes
    assert 0.9 * column <= added.state["new_bytes"] <= 1.3 * column
    assert var_hash(added, "frame") != var_hash(fresh_copy, "frame")
    assert var_hash(added, "frame0") == var_hash(fresh_copy, "frame0")

    # copy() consolidates the new column into the frame's block: the same columns at new
    # offsets must still be recognised
    size_before = objects_size(store.root)
    copied = record(ip, "frame-3", "frame2 = frame.copy()")
    assert copied.state["new_bytes"] < 0.01 * column
    assert objects_size(store.root) - size_before < 0.01 * column
    assert "frame2" in copied.state["variables"]
    assert var_hash(copied, "frame") == var_hash(added, "frame")
    ip.user_ns["frame2"] = None
    lazy = nbexp.load("frame-3")
    pd.testing.assert_frame_equal(lazy.frame2, ip.user_ns["frame"])


# -- 4. identity ----------------------------------------------------------------------------


def test_aliases_and_shared_references_keep_their_identity(ip, capsys):
    experiment = record(
        ip,
        "ident",
        """
        import pandas as pd
        a = [1, 2, 3]
        b = a
        df = pd.DataFrame({"x": [1, 2]})
        d = {"f": df, "other": 1}
        pair = (a, df)
    """,
    )
    assert experiment.state["variables"]["b"]["alias_of"] == "a"
    clobber(ip, "a", "b", "df", "d", "pair")
    exp_restore(ip, capsys, "ident")
    ns = ip.user_ns
    assert ns["b"] is ns["a"] and ns["a"] == [1, 2, 3]
    assert ns["d"]["f"] is ns["df"]
    assert ns["pair"][0] is ns["a"] and ns["pair"][1] is ns["df"]
    ns["b"].append(4)
    assert ns["a"] == [1, 2, 3, 4]


def test_variables_sharing_only_library_objects_are_not_grouped(ip, capsys):
    first = record(
        ip,
        "libs",
        """
        import numpy as np
        dt = np.dtype("float32")
        x = np.zeros(3, dtype=np.float32)
        y = np.ones(4, dtype=np.float32)
        cfg_x = {"mod": np, "dtype": np.dtype("float32"), "fn": np.mean, "cls": np.ndarray, "k": 1}
        cfg_y = {"mod": np, "dtype": np.dtype("float32"), "fn": np.mean, "cls": np.ndarray, "k": 2}
    """,
    )
    variables = first.state["variables"]
    for name in ("x", "y", "cfg_x", "cfg_y"):
        entry = variables[name]
        assert "alias_of" not in entry and "pickle" in entry, entry
        assert not set(entry.get("refs", ())) & {"x", "y", "cfg_x", "cfg_y"}, (name, entry)
    assert variables["x"]["pickle"] != variables["y"]["pickle"]

    # changing y does not re-store (or change the hash of) x
    second = record(ip, "libs-2", "y[0] = 5")
    assert var_hash(second, "y") != var_hash(first, "y")
    for name in ("x", "cfg_x", "cfg_y", "dt"):
        assert var_hash(second, name) == var_hash(first, name)

    clobber(ip, "x", "y", "dt", "cfg_x")
    out = exp_restore(ip, capsys, "libs x")
    assert "restored 1 variable" in out
    np.testing.assert_array_equal(ip.user_ns["x"], np.zeros(3, dtype=np.float32))
    assert ip.user_ns["x"].dtype == np.float32
    assert ip.user_ns["y"] == "clobbered" and ip.user_ns["dt"] == "clobbered"
    out = exp_restore(ip, capsys, "libs cfg_x")
    assert ip.user_ns["cfg_x"]["mod"] is np and ip.user_ns["cfg_x"]["fn"] is np.mean


# -- 5. values that cannot be stored ----------------------------------------------------------


def test_unstorable_values_are_listed_skipped_and_leave_files_alone(ip, capsys, tmp_path):
    run(
        ip,
        textwrap.dedent("""
        class BadReduce:
            def __reduce__(self):
                raise RuntimeError("refuses to be pickled")
    """),
    )
    capsys.readouterr()
    result = run(
        ip,
        cell(
            "unstorable",
            """
        import socket, sqlite3, sys, threading
        keep = {"numbers": [1, 2, 3]}
        gen = (i * 2 for i in range(3))
        fh = open("precious.txt", "w")
        fh.write("precious content\\n")
        fh.flush()
        sock = socket.socket()
        lock = threading.Lock()
        conn = sqlite3.connect(":memory:")
        frame = sys._getframe()
        bad = BadReduce()
        bundle = {"lock": lock}
    """,
        ),
    )
    summary = capsys.readouterr().out
    try:
        assert result.success, result.error_in_exec
        state = nbexp.get("unstorable").state
        unstored = state["unstored"]
        expected = {"gen", "fh", "sock", "lock", "conn", "frame", "bad", "bundle"}
        assert expected <= set(unstored), unstored
        assert all(unstored[name].strip() for name in expected)
        assert "generator" in unstored["gen"]
        assert "open file" in unstored["fh"]
        assert "frame" in unstored["frame"]
        assert "refuses to be pickled" in unstored["bad"]
        assert "lock" in unstored["bundle"]
        assert "keep" in state["variables"] and "BadReduce" in state["variables"]
        assert "8 not stored" in summary, summary

        live = {name: ip.user_ns[name] for name in expected}
        clobber(ip, "keep")
        out = exp_restore(ip, capsys, "unstorable")
        assert ip.user_ns["keep"] == {"numbers": [1, 2, 3]}
        assert "keep" in out.splitlines()[0]
        for name in expected:
            line = next(
                (text for text in out.splitlines() if text.strip().startswith(f"skipped {name}:")),
                None,
            )
            assert line is not None, (name, out)
            assert unstored[name] in line
            assert ip.user_ns[name] is live[name]  # live value untouched
        assert Path("precious.txt").read_text() == "precious content\n"

        out = exp_restore(ip, capsys, "unstorable gen")
        assert "skipped gen: was not stored" in out and "restored 0 variables" in out
    finally:
        for name in ("fh", "sock", "conn"):
            value = ip.user_ns.get(name)
            if hasattr(value, "close"):
                value.close()
    assert Path("precious.txt").read_text() == "precious content\n"


def test_recompute_rebuilds_a_generator_from_its_recorded_statement(ip, capsys):
    run(ip, "squares = (i * i for i in range(4))")
    record(
        ip,
        "gen-exp",
        """
        numbers = [1, 2, 3]
        gen = (n * 10 for n in numbers)
    """,
    )
    clobber(ip, "gen", "squares", "numbers")
    out = exp_restore(ip, capsys, "gen-exp")
    assert "skipped gen" in out and ip.user_ns["gen"] == "clobbered"
    out = exp_restore(ip, capsys, "gen-exp --recompute")
    assert "recomputed" in out and "gen" in out and "squares" in out
    assert "skipped gen" not in out
    assert list(ip.user_ns["gen"]) == [10, 20, 30]
    assert list(ip.user_ns["squares"]) == [0, 1, 4, 9]


def test_recompute_never_replays_a_write_that_would_truncate_a_file(ip, capsys):
    Path("results.csv").write_text("a,b\n1,2\n")
    record(
        ip,
        "writer",
        """
        log = open("results.csv", "a")
        rows = open("results.csv").read().splitlines()
        gen = (row for row in rows)
    """,
    )
    ip.user_ns["log"].close()
    Path("results.csv").write_text("the user's later results\n")
    clobber(ip, "log", "gen")
    out = exp_restore(ip, capsys, "writer --recompute")
    assert Path("results.csv").read_text() == "the user's later results\n"
    assert "recomputing `log = open" in out and "never writes files" in out, out
    assert ip.user_ns["log"] == "clobbered"
    # statements that write nothing are still replayed, over the restored values
    assert "recomputed by replaying their code: gen" in out, out
    assert list(ip.user_ns["gen"]) == ["a,b", "1,2"]


# -- 8. corruption --------------------------------------------------------------------------

CORRUPT_BODY = """
    import numpy as np
    good = [1, 2, 3]
    victim = {"payload": "v" * 2000}
    arr_victim = np.arange(300_000.0)
    other = np.arange(10)
"""


def _flip(path: Path, offset: int = 0) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    position = min(offset, len(data) - 1)
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target", ["pickle", "chunk", "missing"])
def test_a_corrupt_object_skips_only_its_variable(ip, capsys, target):
    experiment = record(ip, "corrupt", CORRUPT_BODY)
    store = open_store()
    variables = experiment.state["variables"]
    victim = "victim" if target == "pickle" else "arr_victim"
    if target == "pickle":
        _flip(store.object_path(variables["victim"]["pickle"]), offset=20)
    elif target == "chunk":
        chunks = variables["arr_victim"]["buffers"][0]
        assert len(chunks) == 3
        _flip(store.object_path(chunks[1]), offset=1000)
    else:
        store.object_path(variables["arr_victim"]["buffers"][0][2]).unlink()

    clobber(ip, "good", "victim", "arr_victim", "other")
    out = exp_restore(ip, capsys, "corrupt")
    line = next(text for text in out.splitlines() if text.strip().startswith(f"skipped {victim}"))
    if target == "missing":
        assert "missing" in line
    else:
        assert "corrupt" in line or "does not match" in line
    assert ip.user_ns[victim] == "clobbered"
    assert ip.user_ns["good"] == [1, 2, 3]
    np.testing.assert_array_equal(ip.user_ns["other"], np.arange(10))
    if victim == "victim":
        np.testing.assert_array_equal(ip.user_ns["arr_victim"], np.arange(300_000.0))
    else:
        assert ip.user_ns["victim"] == {"payload": "v" * 2000}
    assert "Traceback" not in out

    # the lazy namespace refuses it with an nbexp error, and still serves the others
    lazy = nbexp.load("corrupt")
    with pytest.raises(nbexp.NbexpError):
        lazy[victim]
    assert lazy.good == [1, 2, 3]


# -- 9. secrets ----------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz9secret"


def _store_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(path, path.read_bytes()) for path in root.rglob("*") if path.is_file()]


def test_credentials_are_never_snapshotted(ip, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    run(ip, "db_password = 'hunter2-correct-horse'")
    experiment = record(
        ip,
        "secrets",
        """
        import os
        creds = {"key": os.environ["AWS_SECRET_ACCESS_KEY"]}
        nested = [["x", {"deep": os.environ["AWS_SECRET_ACCESS_KEY"]}]]
        harmless = {"key": "nothing to hide"}
    """,
    )
    state = experiment.state
    assert "db_password" not in state["variables"] and "db_password" not in state["unstored"]
    assert "db_password" in state["secrets"]
    for name in ("creds", "nested"):
        assert name not in state["variables"]
        assert "credential" in state["unstored"][name]
    root = open_store().root
    for path, data in _store_bytes(root):
        assert SECRET.encode() not in data, path
        assert b"hunter2-correct-horse" not in data, path

    clobber(ip, "harmless", "creds")
    out = exp_restore(ip, capsys, "secrets")
    assert ip.user_ns["harmless"] == {"key": "nothing to hide"}
    assert ip.user_ns["db_password"] == "hunter2-correct-horse"  # live value untouched
    assert "skipped creds" in out and SECRET not in out
    out = exp_restore(ip, capsys, "secrets db_password")
    assert "skipped db_password" in out and "credential" in out


def test_credentials_inside_arrays_and_frames_are_not_written(ip, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    experiment = record(
        ip,
        "secrets-in-buffers",
        """
        import os
        import numpy as np
        import pandas as pd
        key_frame = pd.DataFrame({"user": ["ann"], "key": [os.environ["AWS_SECRET_ACCESS_KEY"]]})
        key_array = np.array([os.environ["AWS_SECRET_ACCESS_KEY"]])
        key_bytes = np.frombuffer(os.environ["AWS_SECRET_ACCESS_KEY"].encode(), dtype=np.uint8)
        fine = np.arange(5)
    """,
    )
    state = experiment.state
    for name in ("key_frame", "key_array", "key_bytes"):
        assert name in state["unstored"], (name, state["variables"].get(name))
    assert "fine" in state["variables"]
    encodings = (SECRET.encode(), SECRET.encode("utf-32-le"))
    for path, data in _store_bytes(open_store().root):
        for needle in encodings:
            assert needle not in data, path


def test_small_values_live_in_the_record_and_cost_no_object_file(ip, capsys):
    before = set(open_store().iter_objects())
    experiment = record(ip, "small", "lr = 0.1\nname = 'rf'\nsteps = [1, 2, 3]")
    entry = experiment.state["variables"]["steps"]
    assert "inline" in entry
    assert not open_store().object_path(entry["pickle"]).exists()
    assert set(open_store().iter_objects()) == before
    clobber(ip, "lr", "name", "steps")
    exp_restore(ip, capsys, "small")
    assert (ip.user_ns["lr"], ip.user_ns["name"], ip.user_ns["steps"]) == (0.1, "rf", [1, 2, 3])
