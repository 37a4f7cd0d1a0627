"""Restoring keeps the object graph: what variables shared when recorded, they share again.

Real IPython shells, real matplotlib (Agg), scikit-learn and scipy objects; a real kernel for
the fresh-kernel checks. Each test asserts what a user would notice after `%exp_restore`.
"""

from __future__ import annotations

import base64
import gc
import io
import json
import pickle
import sys
import textwrap
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

import nbexp
from nbexp import state as state_module
from nbexp.state import StateLoader
from nbexp.store import open_store
from tests.conftest import run, run_in_fresh_kernel


def record(ip, name: str, body: str):
    result = run(ip, f"%%experiment {name}\n" + textwrap.dedent(body).strip("\n") + "\n")
    assert result.success, result.error_in_exec
    experiment = nbexp.get("last")
    assert experiment.state is not None
    return experiment


def exp_restore(ip, capsys, args: str) -> str:
    capsys.readouterr()
    result = run(ip, f"%exp_restore {args}")
    assert result.success, result.error_in_exec
    return capsys.readouterr().out


def clobber(ip, *names: str) -> None:
    for name in names:
        ip.user_ns[name] = "clobbered"


_NOT_SHARED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    np.dtype,
    np.generic,
    str,
    bytes,
    int,
    float,
    complex,
    bool,
    type(None),
)


def _user_objects(value: Any, library: Mapping[int, Any], limit: int = 200_000) -> set[int]:
    """ids of the mutable user-level objects `value` reaches (gc referents, not pickle):
    an independent view of sharing, to check the snapshot's own."""
    seen: set[int] = set()
    found: set[int] = set()
    stack = [value]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (tuple, frozenset)):  # immutable, but may hold mutable objects
            stack.extend(obj)
            continue
        if isinstance(obj, _NOT_SHARED):
            continue
        if id(obj) in library and state_module._library_reference(obj, library) is not None:
            continue
        if isinstance(obj, np.ndarray):  # numpy arrays do not list their items to gc
            if obj.dtype == object:
                stack.extend(obj.ravel().tolist())
            if obj.base is not None:
                stack.append(obj.base)
        found.add(id(obj))
        stack.extend(gc.get_referents(obj))
    return found


def sharing(namespace: Mapping[str, Any], names: Iterable[str]) -> set[frozenset[str]]:
    """Pairs of variables that reach a common mutable object."""
    library = state_module._library_objects()
    reach = {name: _user_objects(namespace[name], library) for name in names}
    listed = sorted(reach)
    return {
        frozenset((a, b))
        for i, a in enumerate(listed)
        for b in listed[i + 1 :]
        if reach[a] & reach[b]
    }


SHARED_BODY = """
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
fig, axes = plt.subplots(ncols=2)
axes[0].plot([1, 2, 3])
other_fig, other_ax = plt.subplots()
scaler = StandardScaler()
p1 = make_pipeline(scaler, LogisticRegression())
p2 = make_pipeline(scaler, Ridge())
scaler = StandardScaler()
a = {"name": "a"}
b = {"name": "b", "a": a}
a["b"] = b
weights = np.arange(6.0)
holder = {"w": weights}
alone = [1, 2, 3]
"""
NAMES: tuple[str, ...] = ("fig", "axes", "other_fig", "other_ax", "p1", "p2", "scaler", "a", "b")
NAMES += ("weights", "holder", "alone")


def test_variables_share_after_restore_what_they_shared_before(ip, capsys):
    experiment = record(ip, "shared", SHARED_BODY)
    before = sharing(ip.user_ns, NAMES)
    assert {frozenset(("fig", "axes")), frozenset(("p1", "p2")), frozenset(("a", "b"))} <= before
    assert frozenset(("fig", "other_fig")) not in before
    variables = experiment.state["variables"]
    assert experiment.state["format"] == 2
    assert variables["axes"]["in_group"] == "fig" and variables["p2"]["in_group"] == "p1"
    assert "members" not in variables["other_fig"] or "fig" not in variables["other_fig"]["members"]
    assert "pickle" in variables["alone"] and "in_group" not in variables["alone"]

    clobber(ip, *NAMES)
    out = exp_restore(ip, capsys, "shared")
    assert "skipped" not in out, out
    ns = ip.user_ns
    assert sharing(ns, NAMES) == before

    # what a user notices: an edit through one name shows through the other
    assert ns["axes"][0] is ns["fig"].axes[0] and ns["axes"][1] is ns["fig"].axes[1]
    ns["axes"][0].set_title("edited")
    assert ns["fig"].axes[0].get_title() == "edited"
    assert ns["p1"][0] is ns["p2"][0] and ns["p1"][0] is not ns["scaler"]
    ns["p1"][0].fit(np.array([[1.0], [3.0]]))
    assert ns["p2"][0].mean_[0] == 2.0
    assert ns["a"]["b"] is ns["b"] and ns["b"]["a"] is ns["a"]
    assert ns["holder"]["w"] is ns["weights"]


def test_restoring_part_of_a_group_binds_only_the_names_asked_and_says_so(ip, capsys):
    record(ip, "part", SHARED_BODY)
    clobber(ip, "p1", "p2")
    out = exp_restore(ip, capsys, "part p1")
    assert "restored 1 variable" in out
    assert ip.user_ns["p2"] == "clobbered"
    note = next(line for line in out.splitlines() if line.strip().startswith("note:"))
    assert "p1" in note and "p2" in note
    out = exp_restore(ip, capsys, "part p1 p2")
    assert "note:" not in out
    assert ip.user_ns["p1"][0] is ip.user_ns["p2"][0]
    lazy = nbexp.load("part")
    assert lazy.axes[0] is lazy.fig.axes[0]


def test_library_objects_come_back_as_the_library_s_own(ip, capsys):
    experiment = record(
        ip,
        "libs",
        """
        import numpy as np
        import pandas as pd
        from scipy.stats import loguniform
        space = {"C": loguniform(1e-3, 1e3), "dist": loguniform}
        frozen = loguniform(1e-2, 1e2)
        arr = np.linspace(0.0, 1.0, 300_000)
        ints = np.arange(5, dtype=np.int32)
        frame = pd.DataFrame({"x": np.arange(3.0), "k": np.arange(3)})
        """,
    )
    # the module-level generator is a reference: a few bytes, never a copy of its state
    assert experiment.state["variables"]["loguniform"]["size"] < 200
    clobber(ip, "space", "frozen", "arr", "ints", "frame", "loguniform")
    exp_restore(ip, capsys, "libs")
    import scipy.stats

    ns = ip.user_ns
    assert ns["loguniform"] is scipy.stats.loguniform
    assert ns["space"]["dist"] is scipy.stats.loguniform
    # a frozen distribution draws from numpy's global generator, as it did when recorded
    assert ns["frozen"].random_state is np.random.mtrand._rand
    assert ns["frozen"].rvs(random_state=0) == scipy.stats.loguniform(1e-2, 1e2).rvs(random_state=0)
    assert ns["arr"].dtype is np.dtype("float64") and ns["ints"].dtype is np.dtype("int32")
    assert ns["frame"]["x"].to_numpy().dtype is np.dtype("float64")
    np.testing.assert_array_equal(ns["arr"], np.linspace(0.0, 1.0, 300_000))


def test_unchanged_groups_cost_nothing_and_keep_per_variable_hashes(ip):
    first = record(
        ip,
        "g1",
        """
        import numpy as np
        big = np.random.default_rng(0).random(2_000_000)
        left = {"data": big, "side": "left"}
        right = {"data": big, "side": "right"}
        """,
    )
    assert first.state["variables"]["left"].get("in_group") == "big"
    second = record(ip, "g2", "unrelated = 1")
    assert second.state["new_bytes"] < 64 * 1024
    for name in ("big", "left", "right"):
        assert second.state["variables"][name] == first.state["variables"][name], name
    third = record(ip, "g3", 'right["side"] = "changed"')
    assert third.state["new_bytes"] < 64 * 1024  # the array's chunks are not stored again
    assert third.state["variables"]["right"]["hash"] != first.state["variables"]["right"]["hash"]
    assert third.state["variables"]["left"]["hash"] == first.state["variables"]["left"]["hash"]


def test_array_views_stay_windows_on_their_base_after_restore(ip, capsys):
    # the gallery shapes: a column of a data matrix, rows of kneighbors' index array taken by
    # a loop, a reversed slice of a Fortran-ordered array, a read-only view
    experiment = record(
        ip,
        "views",
        """
        import numpy as np
        X = np.arange(24.0).reshape(6, 4)
        x = X[:, 0]
        ind = np.arange(6).reshape(2, 3)
        for neighbors in ind:
            pass
        F = np.asfortranarray(X)
        window = F[::-1, 1:3]
        frozen = X[2:4]
        frozen.flags.writeable = False
        alone = np.arange(1_000_000.0)[10:20]
        """,
    )
    variables = experiment.state["variables"]
    assert variables["x"]["in_group"] == "X" and variables["neighbors"]["in_group"] == "ind"
    assert variables["window"]["in_group"] == "F"
    # a view whose base no other variable reaches is stored alone, its ten elements only
    assert "in_group" not in variables["alone"] and variables["alone"]["size"] < 1000

    clobber(ip, "X", "x", "ind", "neighbors", "F", "window", "frozen", "alone")
    exp_restore(ip, capsys, "views")
    ns = ip.user_ns
    np.testing.assert_array_equal(ns["x"], np.arange(0.0, 24.0, 4.0))
    np.testing.assert_array_equal(ns["neighbors"], [3, 4, 5])
    np.testing.assert_array_equal(ns["window"], np.arange(24.0).reshape(6, 4)[::-1, 1:3])
    np.testing.assert_array_equal(ns["alone"], np.arange(10.0, 20.0))
    # what a user notices: an edit through the view shows in the base, and back
    ns["x"][1] = -1.0
    assert ns["X"][1, 0] == -1.0
    ns["ind"][1, 0] = 42
    assert ns["neighbors"][0] == 42
    ns["F"][5, 1] = 7.5
    assert ns["window"][0, 0] == 7.5
    assert np.shares_memory(ns["frozen"], ns["X"]) and not ns["frozen"].flags.writeable
    assert ns["x"].dtype is np.dtype("float64")


def test_figures_sharing_only_library_tables_are_stored_apart(ip, capsys):
    # every colormap copy holds the rows of matplotlib's module-level viridis table (plain
    # lists, which pickle never hands to a reducer), and scatter markers of every figure hold
    # one cached read-only codes array: two unrelated figures were glued into one group by
    # them and came back sharing copies (gallery notebooks)
    experiment = record(
        ip,
        "tables",
        """
        import matplotlib.pyplot as plt
        import numpy as np
        first, left = plt.subplots()
        left.imshow(np.arange(6.0).reshape(2, 3))
        left.scatter([1, 2], [3, 4])  # marker paths share matplotlib's read-only codes array
        second, right = plt.subplots()
        right.scatter([1, 2], [3, 4], c=[0.5, 1.0])
        """,
    )
    variables = experiment.state["variables"]
    assert variables["left"].get("in_group") == "first"
    assert variables["right"].get("in_group") == "second"
    clobber(ip, "first", "left", "second", "right")
    exp_restore(ip, capsys, "tables")
    ns = ip.user_ns
    assert ns["left"] in ns["first"].axes and ns["right"] in ns["second"].axes
    assert sharing(ns, ["first", "left", "second", "right"]) == {
        frozenset(("first", "left")),
        frozenset(("second", "right")),
    }


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz9secret"


def test_a_group_never_carries_a_credential(ip, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    experiment = record(
        ip,
        "secret-group",
        """
        import os
        shared = {"rows": [1, 2]}
        client = {"key": os.environ["AWS_SECRET_ACCESS_KEY"], "cache": shared}
        report = {"cache": shared}
        """,
    )
    state = experiment.state
    assert "client" in state["unstored"] and "credential" in state["unstored"]["client"]
    assert "report" in state["variables"] and "shared" in state["variables"]
    for path in open_store().root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    clobber(ip, "report", "shared")
    exp_restore(ip, capsys, "secret-group")
    assert ip.user_ns["report"]["cache"] is ip.user_ns["shared"]


def _format1_state(store, values: dict[str, Any]) -> dict[str, Any]:
    """A state section as nbexp wrote it before groups: one pickle per variable, another
    variable's value written as a persistent reference to its name."""
    import cloudpickle

    named = {id(value): name for name, value in values.items()}
    variables: dict[str, Any] = {}
    for name, value in values.items():
        if named[id(value)] != name:
            variables[name] = {"type": type(value).__name__, "alias_of": named[id(value)]}
            continue
        sink = io.BytesIO()
        pickler = cloudpickle.CloudPickler(sink, protocol=5)
        refs: list[str] = []

        def persistent_id(obj: Any, own: str = name, refs: list[str] = refs) -> str | None:
            other = named.get(id(obj))
            if other is None or other == own:
                return None
            refs.append(other)
            return other

        pickler.persistent_id = persistent_id
        pickler.dump(value)
        payload = sink.getvalue()
        digest = xxhash.xxh3_128_hexdigest(payload)
        variables[name] = {
            "type": type(value).__name__,
            "size": len(payload),
            "hash": xxhash.xxh3_128_hexdigest(digest.encode()),
            "pickle": digest,
            "inline": base64.b64encode(payload).decode(),
            **({"refs": sorted(set(refs))} if refs else {}),
        }
    return {"format": 1, "variables": variables, "unstored": {}, "imports": {}, "secrets": []}


def test_format_1_records_still_restore_with_their_references(ip):
    shared = [1, 2]
    values = {"shared": shared, "holder": {"s": shared}, "same": shared}
    loader = StateLoader(open_store(), _format1_state(open_store(), values))
    assert loader.load("holder")["s"] is loader.load("shared") is loader.load("same")
    assert loader.group_of("holder") == ["holder"]


KERNEL_CHECK = """
import json
import nbexp
report = nbexp.restore("kernel-share")
print(json.dumps({
    "skipped": report.skipped,
    "axes_in_fig": axes[0] is fig.axes[0] and axes[1] is fig.axes[1],
    "scaler_shared": p1[0] is p2[0],
    "cycle": a["b"] is b and b["a"] is a,
    "dtype": weights.dtype is __import__("numpy").dtype("float64"),
}))
axes[0].set_title("from the kernel")
p1[0].fit([[1.0], [3.0]])
print(json.dumps({"title": fig.axes[0].get_title(), "mean": float(p2[0].mean_[0])}))
"""


@pytest.mark.kernel
def test_sharing_survives_a_fresh_kernel(ip, project: Path):
    record(ip, "kernel-share", SHARED_BODY)
    output = run_in_fresh_kernel(KERNEL_CHECK, open_store().root, project)
    first, second = (json.loads(line) for line in output.strip().splitlines()[-2:])
    assert first == {
        "skipped": {},
        "axes_in_fig": True,
        "scaler_shared": True,
        "cycle": True,
        "dtype": True,
    }
    assert second == {"title": "from the kernel", "mean": 2.0}
    assert sys.executable  # the kernel is the venv's python3 kernelspec, as in test_restore


def test_pickle_of_a_group_is_one_tuple_of_its_members(ip):
    experiment = record(ip, "tuple", "x = [1]\ny = {'x': x}")
    entry = experiment.state["variables"]["x"]
    assert entry["members"] == ["x", "y"]
    payload = base64.b64decode(entry["inline"])
    x, y = pickle.loads(payload)
    assert y["x"] is x


def test_a_variable_inside_an_earlier_one_is_pickled_once_and_restores_shared(ip, capsys):
    # `holder` is pickled first and holds the other two: they join its group without being
    # pickled again, alone or as a group (each pickling ran the object's __reduce__ again)
    experiment = record(
        ip,
        "once",
        """
        class Costly:
            reductions = 0

            def __reduce__(self):
                type(self).reductions += 1
                return (type(self), ())

        holder = {"items": []}
        items = holder["items"]
        items.append(Costly())
        costly = items[0]
        """,
    )
    assert ip.user_ns["Costly"].reductions == 1
    variables = experiment.state["variables"]
    owner = variables["holder"].get("in_group", "holder")  # (the class may join them)
    assert {"holder", "items", "costly"} <= set(variables[owner]["members"])
    clobber(ip, "holder", "items", "costly")
    exp_restore(ip, capsys, "once")
    ns = ip.user_ns
    assert ns["holder"]["items"] is ns["items"] and ns["items"][0] is ns["costly"]
    ns["items"].append(2)
    assert ns["holder"]["items"][-1] == 2


@pytest.mark.parametrize("order", ["root first", "view first"])
def test_views_inside_one_variable_stay_windows_when_their_group_reuses_its_pickle(
    ip, capsys, order
):
    first, second = (
        ('"X": X', '"x": X[:, 0]') if order == "root first" else ('"x": X[:, 0]', '"X": X')
    )
    record(
        ip,
        "windows",
        f"""
        import numpy as np
        X = np.arange(12.0).reshape(4, 3)
        data = {{{first}, {second}}}
        x = data["x"]
        """,
    )
    clobber(ip, "X", "data", "x")
    exp_restore(ip, capsys, "windows")
    ns = ip.user_ns
    assert ns["data"]["X"] is ns["X"] and ns["data"]["x"] is ns["x"]
    ns["x"][1] = -1.0  # an edit through the view shows in the array it is a window on
    assert ns["X"][1, 0] == -1.0
    np.testing.assert_array_equal(ns["x"], [0.0, -1.0, 6.0, 9.0])


def test_an_unchanged_figure_is_not_stored_again_by_the_next_record(ip):
    # pickling a figure drew a new callback id from its registries (matplotlib's
    # __getstate__): every record stored every open figure again
    first = record(
        ip,
        "fig1",
        """
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
        fig, ax = plt.subplots()
        for k in range(40):
            ax.plot(np.arange(50.0) * k, label=str(k))
        ax.legend()
        """,
    )
    second = record(ip, "fig2", "unrelated = 1")
    assert first.state["variables"]["fig"]["size"] > 64 * 1024
    assert second.state["variables"]["fig"] == first.state["variables"]["fig"]
    assert second.state["new_bytes"] < 4 * 1024
    ip.user_ns["ax"].set_title("changed")
    third = record(ip, "fig3", "other = 2")
    assert third.state["variables"]["fig"]["hash"] != first.state["variables"]["fig"]["hash"]
    # the figure's callbacks still get ids of their own after all that pickling
    registry = ip.user_ns["fig"].canvas.callbacks
    taken = {cid for by_id in registry.callbacks.values() for cid in by_id}
    assert taken
    assert registry.connect("draw_event", lambda event: None) not in taken


def test_a_group_is_built_on_its_members_pickles_not_pickled_again_whole(ip, capsys):
    # `other` holds something new besides `big`, so it is pickled alone too; the group's
    # pickle continues `base`'s with what `other` adds, instead of pickling both again
    experiment = record(
        ip,
        "continued",
        """
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        class Costly:
            reductions = 0

            def __reduce__(self):
                type(self).reductions += 1
                return (type(self), ())

        base = {"big": Costly(), "log": []}
        other = {"big": base["big"], "own": []}
        fig, axs = plt.subplots(2, 2)
        axs[0, 0].plot([1, 2, 3])
        row = axs[0]
        """,
    )
    assert ip.user_ns["Costly"].reductions == 2  # alone in each pickle, never for the group
    variables = experiment.state["variables"]
    assert variables["axs"]["in_group"] == "fig" and variables["row"]["in_group"] == "fig"
    clobber(ip, "base", "other", "fig", "axs", "row")
    exp_restore(ip, capsys, "continued")
    ns = ip.user_ns
    assert ns["other"]["big"] is ns["base"]["big"]
    assert ns["axs"][0, 0] is ns["fig"].axes[0] and ns["row"][1] is ns["axs"][0, 1]
    ns["row"][0].set_title("edited")
    assert ns["fig"].axes[0].get_title() == "edited"


def test_a_figure_whose_own_pickle_copies_views_is_pickled_once_for_its_group(ip, capsys):
    # an undrawn line keeps views of arrays its figure also holds, and its figure's pickle
    # copies them: the group (the figure first, its axes after) was then pickled whole
    # again as one tuple, the figure a second time. A figure made without pyplot is never
    # drawn by the record. Its restore is the tuple's: views as they were, sharing kept.
    experiment = record(
        ip,
        "undrawn",
        """
        import matplotlib.figure
        import numpy as np

        figure_getstate = matplotlib.figure.Figure.__getstate__
        pickles = []

        def counting(self):
            pickles.append(1)
            return figure_getstate(self)

        matplotlib.figure.Figure.__getstate__ = counting
        fig = matplotlib.figure.Figure()
        axs = fig.subplots(ncols=2)
        axs[0].plot(np.arange(5.0), np.arange(5.0) ** 2)
        """,
    )
    ns = ip.user_ns
    ns["matplotlib"].figure.Figure.__getstate__ = ns["figure_getstate"]
    assert len(ns["pickles"]) == 1
    variables = experiment.state["variables"]
    assert variables["axs"]["in_group"] == "fig"
    clobber(ip, "fig", "axs")
    exp_restore(ip, capsys, "undrawn")
    assert ns["axs"][0] is ns["fig"].axes[0] and ns["axs"][1] is ns["fig"].axes[1]
    np.testing.assert_array_equal(ns["axs"][0].lines[0].get_ydata(), np.arange(5.0) ** 2)
    ns["axs"][1].set_title("edited")
    assert ns["fig"].axes[1].get_title() == "edited"
