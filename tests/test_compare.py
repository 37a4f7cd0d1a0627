"""`nbexp.comparison`: drift statistics on known distributions, and the diff of two records."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbexp
from nbexp.comparison import (
    Diff,
    column_drift,
    diff,
    ks_statistic,
    numeric_psi,
    quantile_cdf,
    total_variation,
)
from nbexp.profiles import profile_frame, profile_series
from nbexp.record import Code
from nbexp.store import open_store
from tests.conftest import run
from tests.test_cli import nbexp_cli
from tests.test_store import make_experiment


def normal_profile(mean: float, seed: int, size: int = 200_000) -> dict[str, Any]:
    values = np.random.default_rng(seed).normal(mean, 1.0, size)
    return profile_series(pd.Series(values))


def shares(counts: dict[str, int], seed: int = 0) -> pd.Series:
    values = [key for key, count in counts.items() for _ in range(count)]
    return pd.Series(np.random.default_rng(seed).permutation(np.array(values, dtype=object)))


def true_ks_shifted_normal(shift: float) -> float:
    """sup |Φ(x) − Φ(x − δ)| = 2Φ(δ/2) − 1."""
    return math.erf(shift / 2 / math.sqrt(2))


# -- statistics ----------------------------------------------------------------------------


def test_identical_distributions_have_no_drift() -> None:
    profile = normal_profile(0.0, seed=1)
    same = column_drift("x", profile, profile)
    assert same.psi == pytest.approx(0.0, abs=1e-12)
    assert same.ks == pytest.approx(0.0, abs=1e-12)
    assert same.level == "stable"
    resampled = column_drift("x", profile, normal_profile(0.0, seed=2))
    assert resampled.psi < 0.01
    assert resampled.ks < 0.02
    assert resampled.level == "stable"


@pytest.mark.parametrize("shift", [0.25, 0.5, 1.0])
def test_a_shifted_normal_gives_the_true_ks_statistic(shift: float) -> None:
    drift = column_drift("x", normal_profile(0.0, seed=3), normal_profile(shift, seed=4))
    assert drift.ks == pytest.approx(true_ks_shifted_normal(shift), abs=0.02)
    assert drift.psi > 0.05
    assert drift.mean[1] - drift.mean[0] == pytest.approx(shift, abs=0.02)
    if shift >= 0.5:
        assert drift.level == "major"


def test_quantile_cdf_handles_ties_and_the_tails() -> None:
    quantiles = [0.0, 0.0, 0.0, 1.0, 2.0]  # 50 % of the mass at exactly 0
    assert quantile_cdf(quantiles, -1) == 0.0
    assert quantile_cdf(quantiles, 0.0) == 0.5
    assert quantile_cdf(quantiles, 0.0, left=True) == 0.0
    assert quantile_cdf(quantiles, 0.5) == pytest.approx(0.625)
    assert quantile_cdf(quantiles, 2.0) == 1.0
    assert ks_statistic(quantiles, [1.0, 1.0, 1.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert numeric_psi(quantiles, quantiles) == pytest.approx(0.0)


def test_a_categorical_share_change_gives_its_total_variation() -> None:
    before = profile_series(shares({"web": 500, "store": 300, "phone": 200}))
    after = profile_series(shares({"web": 700, "store": 200, "phone": 100}, seed=1))
    drift = column_drift("channel", before, after)
    assert drift.kind == "categorical"
    assert drift.tvd == pytest.approx(0.2, abs=1e-9)
    assert drift.psi > 0.1
    assert drift.top_moves[0] == ("web", 0.5, 0.7)
    assert column_drift("channel", before, before).tvd == 0.0
    # values beyond the top N count as one "rest" value on each side
    assert total_variation({"a": 0.5}, {"a": 0.3}) == pytest.approx(0.2)


def test_values_beyond_the_top_values_do_not_look_like_drift() -> None:
    """40 equally common values: each side lists a different top 20 of them."""
    rng = np.random.default_rng(0)
    values = [f"c{i}" for i in range(40)]
    before = profile_series(pd.Series(rng.choice(values, 50_000)))
    after = profile_series(pd.Series(rng.choice(values, 50_000)))
    assert set(before["top"]) != set(after["top"])
    drift = column_drift("country", before, after)
    assert drift.tvd < 0.03 and drift.level == "stable"
    # a new value is a real change when both sides list all their values
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.4, "c": 0.2}) == (
        pytest.approx(0.2)
    )


def test_kind_changes_and_missing_quantiles_are_reported_not_computed() -> None:
    numeric = profile_series(pd.Series([1.0, 2.0, 3.0]))
    text = profile_series(pd.Series(["1", "2", "x"]))
    changed = column_drift("c", numeric, text)
    assert changed.psi is None and "kind changed" in (changed.note or "")
    broken = column_drift("c", numeric, {**numeric, "quantiles": [None] * 21})
    assert broken.ks is None and broken.note == "no quantiles"


# -- the diff ------------------------------------------------------------------------------


def _frame(n: int, shift: float, web: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(50 + shift, 10, n),
            "channel": np.where(rng.random(n) < web, "web", "store"),
            "age": rng.integers(18, 80, n),
        }
    )


def _file_entry(frame: pd.DataFrame, path: str, digest: str) -> dict[str, Any]:
    return {
        "kind": "file",
        "path": path,
        "abspath": f"/project/{path}",
        "hash": digest,
        "size": 1000,
        "format": "csv",
        "rows": len(frame),
        "columns": list(frame.columns),
        "dtypes": {str(c): str(t) for c, t in frame.dtypes.items()},
        "profile": profile_frame(frame),
    }


@pytest.fixture
def pair(project: Path) -> tuple[Any, Any]:
    """Two records: B has other params, metrics, code, a drifted input, env, git and state."""
    store = open_store()
    a = make_experiment(store, "rf-jan", params={"max_depth": 4, "lr": 0.1}, save=False)
    b = make_experiment(store, "rf-feb", params={"max_depth": 8, "lr": 0.1}, minutes=5, save=False)
    jan = _frame(20_000, 0.0, 0.5, seed=1)
    feb = _frame(20_000, 5.0, 0.7, seed=2).drop(columns="age").assign(region="north")
    feb["amount"] = feb["amount"].astype("float32")
    lookup = {"kind": "file", "path": "lookup.json", "abspath": "/p/lookup.json", "hash": "c" * 32}
    a = replace(
        a,
        metrics={"auc": 0.90, "loss": 0.30, "only_a": 1},
        code=Code(cell="", source="max_depth = 4\nlr = 0.1\nfit()\n"),
        data=[_file_entry(jan, "data/train.csv", "a" * 32), lookup],
        env={
            "python": "3.11.1",
            "platform": "linux",
            "packages": {"scikit-learn": "1.4.0", "pandas": "2.2.0", "lightgbm": "4.0"},
        },
        git={"commit": "1" * 40, "branch": "main", "dirty": False, "diff": ""},
        state={
            "variables": {
                "model": {"type": "RF", "hash": "m1"},
                "X": {"type": "DataFrame", "hash": "x1"},
                "old": {"type": "int", "hash": "o1"},
            }
        },
    )
    b = replace(
        b,
        metrics={"auc": 0.85, "loss": 0.30},
        code=Code(cell="", source="max_depth = 8\nlr = 0.1\nfit()\n"),
        data=[_file_entry(feb, "data/train.csv", "b" * 32), lookup],
        env={
            "python": "3.11.2",
            "platform": "linux",
            "packages": {"scikit-learn": "1.5.0", "pandas": "2.2.0", "xgboost": "2.0"},
        },
        git={"commit": "2" * 40, "branch": "main", "dirty": True, "diff": "+x\n"},
        state={
            "variables": {
                "model": {"type": "RF", "hash": "m2"},
                "X": {"type": "DataFrame", "hash": "x1"},
                "new": {"type": "int", "hash": "n1"},
            }
        },
    )
    return a, b


def test_params_and_metrics_side_by_side_with_deltas(pair) -> None:
    result = diff(*pair)
    params = {c.key: c for c in result.params}
    assert params["max_depth"].changed and not params["lr"].changed
    assert result.changed_params == {"max_depth": (4, 8)}
    metrics = {c.key: c for c in result.metrics}
    assert metrics["auc"].delta == pytest.approx(-0.05)
    assert metrics["auc"].relative == pytest.approx(-0.05 / 0.9)
    assert not metrics["loss"].changed
    assert metrics["only_a"].changed and metrics["only_a"].delta is None


def test_code_environment_git_and_state(pair) -> None:
    result = diff(*pair)
    assert "-max_depth = 4\n" in result.code and "+max_depth = 8\n" in result.code
    assert result.code.startswith("--- rf-jan (")
    assert diff(pair[0], pair[0]).code == ""
    packages = {c.key: (c.a, c.b) for c in result.packages}
    assert packages["scikit-learn"] == ("1.4.0", "1.5.0")
    assert "pandas" not in packages
    assert packages["xgboost"][1] == "2.0" and not packages["xgboost"][0]
    assert not packages["lightgbm"][1]
    assert {c.key for c in result.env} == {"python"}
    assert {c.key for c in result.git} == {"commit", "uncommitted"}
    assert result.state.changed == ("model",)
    assert result.state.added == ("new",) and result.state.removed == ("old",)
    assert result.state.unchanged == 1


def test_data_schema_and_drift_from_the_profiles(pair) -> None:
    result = diff(*pair)
    assert result.data_unchanged == ("file lookup.json",)
    (change,) = result.data
    assert change.label == "file data/train.csv" and change.status == "changed"
    assert change.schema is not None
    assert change.schema.added == ("region",) and change.schema.removed == ("age",)
    assert change.schema.retyped == (("amount", "float64", "float32"),)
    columns = {c.column: c for c in change.columns}
    assert set(columns) == {"amount", "channel"}
    # amount: N(50, 10) → N(55, 10), a half-sd shift
    assert columns["amount"].ks == pytest.approx(true_ks_shifted_normal(0.5), abs=0.03)
    assert columns["amount"].level == "major"
    assert columns["channel"].tvd == pytest.approx(0.2, abs=0.02)
    assert {c.column for c in change.drifted} == {"amount", "channel"}


def test_a_single_renamed_input_is_compared_as_a_new_version(pair) -> None:
    a, b = pair
    moved = [{**b.data[0], "path": "data/2024-02.csv", "abspath": "/x/2024-02.csv"}, b.data[1]]
    (change,) = diff(a, replace(b, data=moved)).data
    assert change.label == "file data/train.csv → data/2024-02.csv"
    assert change.columns
    extra = {"kind": "variable", "name": "df", "hash": "d" * 32, "shape": [3, 1]}
    statuses = {c.label: c.status for c in diff(a, replace(b, data=[*b.data, extra])).data}
    assert statuses["variable df"] == "added"


def test_text_and_html_renderings_carry_the_key_facts(pair) -> None:
    result = diff(*pair)
    text = str(result)
    for fact in (
        "rf-jan",
        "rf-feb",
        "max_depth",
        "4",
        "8",
        "auc",
        "-0.05",
        "-max_depth = 4",
        "file data/train.csv",
        "PSI",
        "amount",
        "major",
        "TVD 0.",
        "web: 50% → 70%",
        "added region",
        "removed age",
        "amount float64 → float32",
        "scikit-learn 1.4.0 → 1.5.0",
        "python  3.11.1 → 3.11.2",
        "changed: model",
    ):
        assert fact in text, fact
    page = result._repr_html_()
    for fact in ("rf-jan", "max_depth", "auc", "amount", "channel", "PSI", "major", "region",
                 "scikit-learn", "model", "class='add'"):  # fmt: skip
        assert fact in page, fact
    assert "<script" not in page

    class Printer:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def text(self, value: str) -> None:
            self.parts.append(value)

    printer = Printer()
    result._repr_pretty_(printer, False)
    assert printer.parts == [text]


# -- through the shell, the API and the CLI -----------------------------------------------


TRAIN = """\
import pandas as pd

max_depth = 4
frame = pd.read_csv("data/train.csv")
mean_amount = float(frame["amount"].mean())
"""


def test_diff_of_two_recorded_runs_via_magic_api_and_cli(ip, project: Path, capfd) -> None:
    (project / "data").mkdir()
    _frame(5000, 0.0, 0.5, seed=1).to_csv(project / "data/train.csv", index=False)
    assert run(ip, "%%experiment jan\n" + TRAIN).success
    _frame(5000, 10.0, 0.8, seed=2).to_csv(project / "data/train.csv", index=False)
    assert run(ip, "%%experiment feb -p max_depth=6\n" + TRAIN).success
    capfd.readouterr()

    result = nbexp.diff("jan", "feb")
    assert isinstance(result, Diff)
    assert result.changed_params == {"max_depth": (4, 6)}
    (change,) = [c for c in result.data if c.label == "file data/train.csv"]
    drift = {c.column: c for c in change.columns}
    assert drift["amount"].level == "major"
    assert drift["channel"].tvd == pytest.approx(0.3, abs=0.03)

    shown = run(ip, "%exp_diff jan feb")
    assert isinstance(shown.result, Diff) and shown.result.b.name == "feb"
    assert isinstance(run(ip, "%exp_diff jan").result, Diff)  # against last
    assert run(ip, "%exp_diff a b c").success is False

    cli = nbexp_cli("diff", "jan", "feb", cwd=project)
    assert cli.code == 0, cli
    assert "file data/train.csv" in cli.out and "amount" in cli.out and "TVD" in cli.out
    assert nbexp_cli("diff", "jan", "nope", cwd=project).code == 1
