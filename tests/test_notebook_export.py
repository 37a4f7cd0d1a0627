"""`04_export_and_rerun.ipynb` runs in a real kernel: export, run with an override, rerun."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from nbexp.store import open_store
from tests.test_notebook_restore import _outputs
from tests.test_notebooks import _load_runner

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("export")
    # `!python` and `!nbexp` in the notebook are this interpreter's, as in an activated venv
    saved = os.environ["PATH"]
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + saved
    try:
        notebook, _, error = _load_runner().execute(
            workdir, source=ROOT / "example_notebooks" / "04_export_and_rerun.ipynb", timeout=120
        )
    finally:
        os.environ["PATH"] = saved
    assert error is None, error
    cells = {cell.get("id"): _outputs(cell) for cell in notebook.cells if cell.cell_type == "code"}
    return {"cells": cells, "workdir": workdir, "store": open_store(workdir / ".nbexp")}


def test_the_export_keeps_only_the_cells_the_experiment_needs(executed: dict[str, Any]) -> None:
    script = (executed["workdir"] / "run.py").read_text()
    assert "def load(path):" in script and "import pandas as pd" in script
    assert "load_wine" not in script and "describe()" not in script
    assert "max_depth = 5\n" in script and "data/wine.csv" in script
    assert "wrote run.py" in executed["cells"]["export"]
    assert "usage: python run.py [--max_depth 5]" in executed["cells"]["show"]


def test_the_script_runs_with_an_override_and_the_rerun_agrees(executed: dict[str, Any]) -> None:
    assert 'NBEXP_METRICS {"accuracy": ' in executed["cells"]["run"]
    rerun = executed["cells"]["rerun"]
    assert "✓ all 1 metrics agree" in rerun, rerun
    store = executed["store"]
    source, again = store.get("wine-tree"), store.get("last")
    assert again.links == {"rerun_of": source.id}
    assert again.metrics == source.metrics
