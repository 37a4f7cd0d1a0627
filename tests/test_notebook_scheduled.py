"""example_notebooks/05_scheduled_retrain.ipynb runs end to end and tells its story (SPEC §12):
papermill runs recorded with DVC md5s, the drift check, the strict run failing, the DVC stage."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest

HERE = Path(__file__).resolve().parent.parent / "example_notebooks"
BIN = Path(sys.executable).parent


@pytest.mark.kernel
@pytest.mark.skipif(
    not (BIN / "dvc").exists(), reason="dvc is not installed (pip install -e '.[test]')"
)
def test_scheduled_retrain_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.delenv("NBEXP_STORE", raising=False)
    monkeypatch.setenv("PATH", f"{BIN}:{__import__('os').environ['PATH']}")
    shutil.copy(HERE / "05_scheduled_retrain.ipynb", tmp_path / "nb.ipynb")
    notebook = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    text = "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "'train.n_estimators': 30" in text and "'data_path': 'data/train.csv'" in text
    assert "train.ipynb" in text  # the notebook path of a papermill run
    assert "'source': 'data/train.csv.dvc'" in text  # DVC's md5 in the record
    assert "nbexp drift rf-prod data/week.csv --fail-on major  → exit 3" in text
    assert "ExpectationFailed" in text and "expectation-failed" in text
    assert "NBEXP_STRICT=1 papermill" in text and "→ exit 1" in text
    assert "cmd: python rf.py --no-check-data" in text
