"""`nbexp.plots`: every kind returns a labelled Figure; PNGs are written to the test's tmp dir."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

from matplotlib.figure import Figure

import nbexp
from nbexp.plots import (
    PlotError,
    metric_over_runs,
    metric_vs_param,
    parallel_coordinates,
    plot,
    series_overlay,
)
from nbexp.store import Store, open_store
from tests.conftest import run
from tests.test_store import make_experiment


@pytest.fixture
def runs(project: Path) -> list[Any]:
    """Twelve saved records: a depth × lr grid with an auc, a logged loss, one failure."""
    store = open_store()
    made = []
    minute = 0
    for depth in (2, 4, 8):
        for lr in (0.3, 0.1, 0.03, 0.01):
            minute += 1
            auc = 0.7 + 0.02 * depth - abs(lr - 0.1)
            status = "failed" if (depth, lr) == (8, 0.01) else "ok"
            experiment = make_experiment(
                store,
                f"gbm-{minute}",
                params={"depth": depth, "lr": lr, "loss": "log" if depth < 8 else "exp"},
                metrics={"auc": auc},
                minutes=minute,
                status=status,
                save=False,
            )
            series = {"loss": [[step, 1.0 / (step + 1) + lr] for step in range(10)]}
            experiment = replace(experiment, series=series)
            experiment = replace(experiment, id=Store.make_id(experiment.to_dict()))
            store.save(experiment)
            made.append(experiment)
    return made


def _check(figure: Figure, tmp_path: Path, name: str, *, legend: bool = True) -> None:
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert axes.get_xlabel() and axes.get_ylabel() and axes.get_title()
    if legend:
        assert axes.get_legend() is not None
        assert [t.get_text() for t in axes.get_legend().get_texts()]
    target = tmp_path / f"{name}.png"
    figure.savefig(target, dpi=60)
    assert target.stat().st_size > 5000


def test_metric_across_experiments_in_time_order(runs, tmp_path: Path) -> None:
    figure = metric_over_runs(reversed(runs), "metrics.auc")
    _check(figure, tmp_path, "runs")
    axes = figure.axes[0]
    assert axes.get_ylabel() == "auc"
    labels = [t.get_text() for t in axes.get_xticklabels()]
    assert labels == [r.name for r in runs]  # oldest first, whatever order they came in
    assert {t.get_text() for t in axes.get_legend().get_texts()} == {"ok", "failed"}


def test_metric_against_a_param_one_line_per_value_of_another(runs, tmp_path: Path) -> None:
    figure = metric_vs_param(runs, "auc", "params.lr", color="depth")
    _check(figure, tmp_path, "by-param")
    axes = figure.axes[0]
    assert axes.get_xlabel() == "lr" and axes.get_ylabel() == "auc"
    assert axes.get_xscale() == "linear"  # 0.01..0.3 spans less than 100×
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == ["2", "4", "8"]
    assert axes.get_legend().get_title().get_text() == "depth"
    categorical = metric_vs_param(runs, "auc", "loss")
    assert [t.get_text() for t in categorical.axes[0].get_xticklabels()] == ["exp", "log"]
    _check(categorical, tmp_path, "by-categorical")


def test_logged_series_overlaid(runs, tmp_path: Path) -> None:
    figure = series_overlay(runs[:3], "loss")
    _check(figure, tmp_path, "series")
    axes = figure.axes[0]
    assert axes.get_xlabel() == "step" and axes.get_ylabel() == "loss"
    assert len(axes.get_lines()) == 3
    assert next(t.get_text() for t in axes.get_legend().get_texts()).startswith("gbm-1 (")


def test_parallel_coordinates_of_params_against_a_metric(runs, tmp_path: Path) -> None:
    figure = parallel_coordinates(runs, "auc")
    _check(figure, tmp_path, "parallel", legend=False)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["depth", "lr", "loss", "auc"]
    assert len(figure.axes) == 2  # the colorbar, labelled with the metric
    assert figure.axes[1].get_ylabel() == "auc"
    assert len(axes.get_lines()) == len(runs) + 4  # one line per experiment, one vline per axis


def test_dispatch_and_errors(runs) -> None:
    assert plot(runs, "auc").axes[0].get_title().startswith("auc across")
    assert plot(runs, "auc", by="depth").axes[0].get_xlabel() == "depth"
    assert plot(runs, "loss", step=True).axes[0].get_xlabel() == "step"
    assert plot(runs, "auc", kind="parallel").axes[0].get_title().startswith("params against")
    with pytest.raises(PlotError, match="pick one of: auc"):
        plot(runs, "f1")
    with pytest.raises(PlotError, match="logged series: loss"):
        plot(runs, "acc", step=True)
    with pytest.raises(PlotError, match="has the param 'width'"):
        plot(runs, "auc", by="width")
    with pytest.raises(PlotError, match="unknown plot kind"):
        plot(runs, "auc", kind="pie")


def test_api_reads_the_store_and_filters(runs) -> None:
    figure = nbexp.plot("auc", query="params.depth == 2")
    assert len(figure.axes[0].get_xticklabels()) == 4
    chosen = nbexp.plot("loss", [runs[0].id[:8], "gbm-2"], step=True)
    assert len(chosen.axes[0].get_lines()) == 2
    overlay = nbexp.plot("loss", step=True)  # the records are read for their series
    assert len(overlay.axes[0].get_lines()) == len(runs)


def test_exp_plot_magic_returns_the_figure(ip, capfd) -> None:
    body = "import nbexp\nfor step in range(5):\n    nbexp.log('loss', 1 / (step + 1), step=step)\n"
    assert run(ip, f"%%experiment a --sweep depth=1,2,3\ndepth = 0\nauc = 0.5 + depth / 10\n{body}")
    shown = run(ip, "%exp_plot auc --by depth --sweep last")
    assert isinstance(shown.result, Figure)
    assert shown.result.axes[0].get_xlabel() == "depth"
    assert isinstance(run(ip, "%exp_plot loss --step").result, Figure)
    assert isinstance(run(ip, "%exp_plot auc a-1 a-3 --parallel").result, Figure)
    capfd.readouterr()
    failed = run(ip, "%exp_plot nothing")
    assert failed.success is False
    assert "no experiment has a numeric metric 'nothing'" in capfd.readouterr().err


def test_values_on_a_plot_read_as_the_cli_shows_them(project: Path) -> None:
    """A tick, a legend entry or an axis mark writes a value as `nbexp list` does
    (`show.format_value`): true, not True; 1000000, not 1e+06; 0.3, not 0.30000000000000004;
    a value an experiment does not have as a dash, not None."""
    rows = [
        {
            "id": f"{i:032x}",
            "name": f"run-{i}",
            "created": f"2026-12-01T00:00:0{i}+00:00",
            "status": "ok",
            "params": params,
            "metrics": {"auc": 0.5 + i / 10},
        }
        for i, params in enumerate(
            [
                {"steps": 1000000, "lr": 0.1 + 0.2, "early": True},
                {"steps": 2000000, "lr": 0.1, "early": False},
                {"steps": 1000000, "lr": 0.1 + 0.2},
            ]
        )
    ]
    legend = metric_vs_param(rows, "auc", "steps", color="early").axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["false", "true", "—"]
    coloured = metric_vs_param(rows, "auc", "steps", color="lr").axes[0].get_legend()
    assert [t.get_text() for t in coloured.get_texts()] == ["0.1", "0.3"]
    marks = [
        text.get_text()
        for text in parallel_coordinates(rows, "auc", ["steps", "early"]).axes[0].texts
    ]
    assert "1000000" in marks and "2000000" in marks and "1e+06" not in marks
    assert {"true", "false", "—"} <= set(marks) and "None" not in marks
