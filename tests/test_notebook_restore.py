"""`02_restore.ipynb` runs in a real kernel: a broken run is undone by restoring the good one."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from nbexp.store import open_store

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parent.parent


def _outputs(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(str(output.get("data", {}).get("text/plain", "")))
        if output.get("output_type") == "error":
            parts.append(f"ERROR {output['ename']}: {output['evalue']}")
    return "".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("runner", ROOT / "scripts" / "run_quickstart.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    workdir = tmp_path_factory.mktemp("restore")
    notebook, _, error = runner.execute(
        workdir, source=ROOT / "example_notebooks" / "02_restore.ipynb", timeout=120
    )
    assert error is None, error
    cells = {cell.get("id"): _outputs(cell) for cell in notebook.cells if cell.cell_type == "code"}
    return {"cells": cells, "store": open_store(workdir / ".nbexp")}


def test_the_old_model_is_compared_beside_the_live_one_without_touching_it(executed):
    text = executed["cells"]["compare"]
    assert "good model on the test set: 1.0" in text
    assert "live alcohol column all zero: True" in text
    assert "good alcohol column all zero: False" in text


def test_restore_undoes_the_broken_run_and_reports_what_it_overwrote(executed):
    report = executed["cells"]["restore"]
    assert "restored 14 variables from wine-good" in report
    assert "overwrote live values of:" in report and "model" in report and "wine" in report
    assert "ERROR" not in executed["cells"]["check"]
    assert executed["cells"]["check"].strip().endswith("1.0")


def test_unstorable_generator_is_listed_then_recomputed_on_request(executed):
    assert "not stored: batches" in executed["cells"]["unstorable"]
    assert "recomputed by replaying their code: batches" in executed["cells"]["partial"]
    assert "(6, 'LogisticRegression')" in executed["cells"]["next"]
    record = executed["store"].get("batches")
    assert "generator" in record.state["unstored"]["batches"]


def test_cache_reuses_the_identical_good_run(executed):
    text = executed["cells"]["cache"]
    assert "reused wine-good" in text and "body not run" in text
    assert len(executed["store"].rows()) == 3  # the cached run added no record
