"""A figure the body showed with `plt.show()` is recorded, though the inline backend closed it.

Jupyter's inline backend displays every open figure on `plt.show()` and then closes them all,
so a body ending in `plt.show()` (imbalanced-learn's gallery, plot_sampling_strategy_usage's
last cell) left nothing open and its record had no figure. Real kernel, real inline backend.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_in_fresh_kernel

CODE = r"""
%load_ext nbexp
%matplotlib inline
import json
import matplotlib.pyplot as plt
import nbexp
from nbexp.store import open_store

def experiment(name, body):
    get_ipython().run_cell_magic("experiment", name, body)
    figures = nbexp.get("last").outcome.figures
    return [open_store().read_object(digest)[:8].hex() for digest in figures]

counts = {}
counts["shown"] = experiment("shown", "fig, ax = plt.subplots()\nax.plot([1, 3, 2])\nplt.show()\n")
counts["open after"] = len(plt.get_fignums())
counts["two shown"] = experiment(
    "two", "for k in (1, 2):\n    plt.figure()\n    plt.plot([0, k])\nplt.show()\n"
)
counts["nothing drawn"] = experiment("nothing", "score = 2\nplt.show()\n")
get_ipython().run_line_magic("config", "InlineBackend.close_figures = False")
counts["shown, left open"] = experiment("kept", "plt.figure()\nplt.plot([2, 1])\nplt.show()\n")
counts["left alone"] = experiment("alone", "score = 3\n")
print("COUNTS", json.dumps(counts))
"""


def test_figures_shown_and_closed_by_the_inline_backend_are_recorded(tmp_path: Path) -> None:
    output = run_in_fresh_kernel(CODE, tmp_path / ".nbexp", tmp_path)
    line = next(ln for ln in output.splitlines() if ln.startswith("COUNTS "))
    counts = json.loads(line.removeprefix("COUNTS "))
    png = b"\x89PNG\r\n\x1a\n".hex()
    assert counts["shown"] == [png]
    assert counts["open after"] == 0  # the inline backend did close it
    assert counts["two shown"] == [png, png]
    assert counts["nothing drawn"] == []
    assert counts["shown, left open"] == [png]  # once, though shown and still open
    assert counts["left alone"] == []
