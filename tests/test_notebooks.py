"""The example notebooks run top to bottom in a real kernel and record what they promise.

The notebook is executed once per module by `scripts/run_quickstart.py`'s `execute` (the same
code CI users run by hand), in a temporary folder, on ipykernel's native `python3` kernel: the
interpreter running the tests. The assertions read the store the run produced.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from nbexp import api
from nbexp.store import open_store

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["rf-small", "rf-deep", "rf-baseline"]  # newest first


def _load_runner() -> Any:
    spec = importlib.util.spec_from_file_location(
        "run_quickstart", ROOT / "scripts" / "run_quickstart.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the quickstart once; the executed notebook, its path and its store."""
    workdir = tmp_path_factory.mktemp("quickstart")
    notebook, notebook_path, error = _load_runner().execute(workdir, timeout=90)
    if error is not None:
        pytest.fail(f"the quickstart notebook failed:\n{error}")
    return {
        "notebook": notebook,
        "path": notebook_path,
        "workdir": workdir,
        "store": open_store(workdir / ".nbexp"),
    }


def _experiment_cells(notebook: Any) -> dict[str, Any]:
    """name → code cell, for the `%%experiment NAME ...` cells."""
    cells = {}
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith("%%experiment "):
            cells[cell.source.split()[1]] = cell
    return cells


def _stream(cell: Any, name: str) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def test_no_cell_errored(quickstart: dict[str, Any]) -> None:
    notebook = quickstart["notebook"]
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.execution_count for cell in code_cells)
    errors = [
        (cell.source.splitlines()[0], output.get("ename"), output.get("evalue"))
        for cell in code_cells
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
    assert (quickstart["workdir"] / "01_quickstart.executed.ipynb").is_file()


def test_outputs_show_summaries_and_the_failed_expectation(quickstart: dict[str, Any]) -> None:
    cells = _experiment_cells(quickstart["notebook"])
    assert sorted(cells) == sorted(NAMES)
    for name, cell in cells.items():
        stdout = _stream(cell, "stdout")
        assert "accuracy" in stdout  # the body's own print still shows
        assert f"recorded {name} (" in stdout
    assert "EXPECTATION FAILED: f1 >= 0.99" in _stream(cells["rf-small"], "stderr")
    assert "EXPECTATION FAILED" not in _stream(cells["rf-baseline"], "stderr")

    results = {
        cell.source.splitlines()[-1]: cell.outputs
        for cell in quickstart["notebook"].cells
        if cell.cell_type == "code"
    }
    table = results["nbexp.experiments()"]
    assert any(o.output_type == "execute_result" and "text/html" in o.data for o in table)
    shown = "".join(o.data.get("text/plain", "") for o in results["%exp_show last"] if "data" in o)
    assert shown.startswith("rf-small") and "expectation-failed" in shown
    metrics = "".join(
        o.data.get("text/plain", "") for o in results['nbexp.get("rf-baseline").metrics']
    )
    assert "'accuracy'" in metrics and "'f1'" in metrics


def test_three_experiments_with_params_and_metrics(quickstart: dict[str, Any]) -> None:
    frame = api.experiments(store=quickstart["store"])
    assert list(frame["name"]) == NAMES
    assert list(frame["status"]) == ["expectation-failed", "ok", "ok"]

    store = quickstart["store"]
    baseline, deep, small = (store.get(name) for name in reversed(NAMES))
    assert baseline.params == {"n_estimators": 100, "max_depth": 4, "random_state": 0}
    assert deep.params == {"n_estimators": 100, "max_depth": 8, "random_state": 0}
    assert small.params == {"n_estimators": 20, "max_depth": 4, "random_state": 0}
    assert baseline.tags == ("baseline",)
    for experiment in (baseline, deep, small):
        assert set(experiment.metrics) == {"accuracy", "f1"}
        assert all(0.0 <= value <= 1.0 for value in experiment.metrics.values())
        assert experiment.outcome.error is None


def test_expectation_marks_the_third_run(quickstart: dict[str, Any]) -> None:
    small = quickstart["store"].get("rf-small")
    assert small.status == "expectation-failed"
    [expectation] = small.expectations
    assert expectation["expr"] == "f1 >= 0.99"
    assert expectation["passed"] is False
    assert expectation["values"]["f1"] == small.metrics["f1"] < 0.99
    assert quickstart["store"].get("rf-baseline").expectations == []


def test_data_file_and_model_artifact(quickstart: dict[str, Any]) -> None:
    store = quickstart["store"]
    workdir: Path = quickstart["workdir"]
    for name in NAMES:
        experiment = store.get(name)
        [csv] = [item for item in experiment.data if item.get("kind") == "file"]
        assert csv["path"] == "data/train.csv"
        assert csv["rows"] == 569  # load_breast_cancer: 569 samples, 30 features + target
        assert len(csv["columns"]) == 31 and "target" in csv["columns"]
        assert csv["size"] == (workdir / "data" / "train.csv").stat().st_size

        [model] = experiment.artifacts
        assert model["path"] == "models/rf.joblib"
        assert model["size"] > 0
        assert len(store.read_object(model["hash"])) == model["size"]
    # The last run wrote the model that is on disk now.
    [last_model] = store.get("rf-small").artifacts
    assert store.read_object(last_model["hash"]) == (workdir / "models" / "rf.joblib").read_bytes()


def test_code_records_notebook_and_history(quickstart: dict[str, Any]) -> None:
    baseline = quickstart["store"].get("rf-baseline")
    assert baseline.code.notebook == str(quickstart["path"])
    assert baseline.code.notebook_hash
    assert baseline.code.cell.startswith("%%experiment rf-baseline -t baseline\n")
    history = baseline.code.history
    assert history, "the cells run before the experiment are recorded"
    assert any("load_ext nbexp" in cell for cell in history)
    assert any('to_csv("data/train.csv"' in cell for cell in history)
    deep = quickstart["store"].get("rf-deep")
    assert "max_depth = 8" in deep.code.source and "max_depth = 4" in deep.code.cell
