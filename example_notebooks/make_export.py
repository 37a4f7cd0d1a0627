"""Write `04_export_and_rerun.ipynb` next to this script (no outputs, kernel `python3`).

    python example_notebooks/make_export.py

The story: a notebook grows cells, one of them becomes an experiment, and `%exp_export` turns
the experiment into a script that runs anywhere with `python run.py` — only the cells it
needs, its params as command-line options, its data checked. `nbexp rerun` then proves the
result reproduces. Edit the cells here, not in the notebook.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "04_export_and_rerun.ipynb"

CELLS = [
    ("intro", "md", """\
# From a notebook run to a script anyone can rerun

A notebook's state is the sum of every cell you ran, in the order you ran them — which is
why "it worked in my notebook" is so hard to hand over. nbexp records that order with each
experiment. `%exp_export` reads it back and writes a standalone script holding just the
cells the experiment depends on (found by which names each cell defines and uses), its
params as command-line options, and a check that the input data are unchanged."""),
    ("load", "code", "%load_ext nbexp"),
    ("data-md", "md", "Some data, written to a CSV file as a real project would have it:"),
    ("data", "code", """\
from pathlib import Path

from sklearn.datasets import load_wine

Path("data").mkdir(exist_ok=True)
load_wine(as_frame=True).frame.to_csv("data/wine.csv", index=False)"""),
    ("helper", "code", '''\
import pandas as pd


def load(path):
    """The wine table as features and target."""
    frame = pd.read_csv(path)
    return frame.drop(columns="target"), frame["target"]'''),
    ("explore-md", "md", "Some exploring the experiment does not depend on:"),
    ("explore", "code", """\
summary = pd.read_csv("data/wine.csv").describe()
summary.loc[["mean", "std"], ["alcohol", "proline"]]"""),
    ("experiment-md", "md", "The experiment: a decision tree, with its depth as a param."),
    ("experiment", "code", """\
%%experiment wine-tree
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

max_depth = 5
test_size = 0.3
random_state = 0

X, y = load("data/wine.csv")
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=test_size, random_state=random_state, stratify=y
)
model = DecisionTreeClassifier(max_depth=max_depth, random_state=random_state)
model.fit(X_train, y_train)
accuracy = model.score(X_test, y_test)
print(f"accuracy {accuracy:.3f}")"""),
    ("export-md", "md", """\
## Export

`%exp_export last -o run.py` writes the script. It keeps the cell defining `load` (with its
`import pandas as pd`) and leaves out the data-writing and exploring cells: the experiment
uses nothing they define (the CSV itself is checked by its hash instead)."""),
    ("export", "code", "%exp_export last -o run.py"),
    ("show-md", "md", "The script, with nbexp's small helper functions left out here:"),
    ("show", "code", """\
import re

script = Path("run.py").read_text()
print(re.sub(r"# %% nbexp: command-line.*?(?=# %% an earlier)", "...\\n\\n", script, flags=re.S))"""),
    ("run-md", "md", """\
## Run it elsewhere, with other params

The params are command-line options (`python run.py --help` lists them). The last line is
the metrics as JSON."""),
    ("run", "code", "!python run.py --max_depth 3"),
    ("rerun-md", "md", """\
## Prove it reproduces

`nbexp rerun` runs the export in a fresh process, compares each metric with the recorded one
and records the rerun as a new experiment linked to the original. It exits non-zero when a
metric differs, so it can guard a CI job."""),
    ("rerun", "code", "!nbexp rerun last"),
]


def build() -> nbformat.NotebookNode:
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    for cell_id, kind, source in CELLS:
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = cell_id
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def main() -> None:
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
