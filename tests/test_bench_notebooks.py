"""Smoke test of bench/notebooks.py on one tiny generated `# %%` script (no download).

It checks the runner's plumbing (plain and nbexp runs, restore with sharing, export rerun),
not nbexp's figures: those are the benchmark's to print.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

SCRIPT = """\
# %%
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
shared = [1, 2, 3]
holder = {"items": shared}

# %%
import matplotlib.pyplot as plt
model = LogisticRegression(max_iter=200).fit(X, y)
accuracy = model.score(X, y)
plt.plot(model.coef_[0])
plt.show()
"""


@pytest.mark.timeout(300)
def test_runner_on_a_tiny_script(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import notebooks
    finally:
        sys.path.remove(str(BENCH))
    source = tmp_path / "src" / "tiny.py"
    source.parent.mkdir()
    source.write_text(SCRIPT)
    result = notebooks.run_notebook("tiny", source, tmp_path / "work", timeout=60)
    assert result.status == "ran", result
    assert result.new_errors == []
    assert [e.cell for e in result.experiments] == [1]
    experiment = result.experiments[0]
    assert experiment.variables >= 5
    assert experiment.equal == experiment.variables, experiment.notes
    assert experiment.pairs >= 1  # shared / holder
    assert experiment.pairs_kept == experiment.pairs, experiment.notes
    assert experiment.export_ok, experiment.notes
    assert experiment.figures_shown == experiment.figures_recorded == 1, experiment.notes
    assert result.plain_s > 0 and result.nbexp_s > 0
