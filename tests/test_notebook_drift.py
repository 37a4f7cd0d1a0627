"""`03_drift_and_retrain.ipynb` runs in a real kernel: the diff finds the drift that was put
into the data, the sweep records one run per combination, the best is tagged, plots render."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from nbexp import api
from nbexp.store import open_store

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "example_notebooks" / "03_drift_and_retrain.ipynb"


def _runner() -> Any:
    spec = importlib.util.spec_from_file_location(
        "run_quickstart", ROOT / "scripts" / "run_quickstart.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("drift")
    notebook, _, error = _runner().execute(workdir, source=NOTEBOOK, timeout=120)
    if error is not None:
        pytest.fail(f"the drift notebook failed:\n{error}")
    return {"notebook": notebook, "store": open_store(workdir / ".nbexp")}


def _cell(notebook: Any, cell_id: str) -> Any:
    return next(cell for cell in notebook.cells if cell.get("id") == cell_id)


def _plain(cell: Any) -> str:
    return "".join(
        output.get("data", {}).get("text/plain", "") + output.get("text", "")
        for output in cell.outputs
    )


def test_runs_without_errors_and_records_the_story(drift: dict[str, Any]) -> None:
    notebook, store = drift["notebook"], drift["store"]
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    rows = sorted(store.rows(), key=lambda row: row["created"])
    names = [row["name"] for row in rows]
    assert names == ["jan-model", "jan-model-on-feb", *(f"retrain-{k}" for k in range(1, 7))]
    sweep = [row for row in rows if row["name"].startswith("retrain-")]
    assert len({row["sweep"] for row in sweep}) == 1 and sweep[0]["sweep"]
    grid = {(row["params"]["max_depth"], row["params"]["learning_rate"]) for row in sweep}
    assert grid == {(d, lr) for d in (1, 2, 3) for lr in (0.05, 0.2)}
    assert all(row["params"]["data_path"] == "data/2024-02.csv" for row in sweep)
    assert {row["status"] for row in sweep} <= {"ok", "expectation-failed"}
    on_feb = next(row for row in rows if row["name"] == "jan-model-on-feb")
    assert on_feb["metrics"]["auc"] < rows[0]["metrics"]["auc"] - 0.03  # the drift hurt
    best = max(sweep, key=lambda row: row["metrics"]["auc"])
    assert store.get("production").name == best["name"]
    assert len(store.get(best["id"]).series["val_auc"]) == 60


def test_the_diff_shows_the_known_shift(drift: dict[str, Any]) -> None:
    shown = _plain(_cell(drift["notebook"], "diff"))
    for fact in ("data/2024-01.csv → data/2024-02.csv", "amount", "major", "channel", "TVD", "auc"):
        assert fact in shown, fact
    result = api.diff("jan-model", "jan-model-on-feb", store=drift["store"])
    (change,) = result.data
    columns = {c.column: c for c in change.columns}
    assert columns["amount"].ks == pytest.approx(0.311, abs=0.03)  # 2Φ(0.4) − 1
    assert columns["channel"].tvd == pytest.approx(0.2, abs=0.03)
    assert columns["tenure"].level == "stable"


def test_sweep_progress_table_and_plots(drift: dict[str, Any]) -> None:
    notebook = drift["notebook"]
    sweep = _cell(notebook, "sweep")
    out = _plain(sweep)
    assert out.count("▶ sweep ") == 6 and "[6/6] retrain-6" in out
    table = [o for o in sweep.outputs if o.output_type == "execute_result"]
    assert (
        table and "text/html" in table[0]["data"] and "retrain-6" in table[0]["data"]["text/html"]
    )
    for cell_id in ("plot-runs", "plot-by", "plot-step"):
        images = [o for o in _cell(notebook, cell_id).outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, cell_id
    assert "best: retrain-" in _plain(_cell(notebook, "best"))
