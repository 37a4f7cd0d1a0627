"""Write `01_quickstart.ipynb` next to this script (no outputs, kernel `python3`).

    python example_notebooks/make_quickstart.py

Edit the cells here, not in the notebook, so the notebook stays easy to regenerate and review.
Cell ids are fixed so that regenerating an unchanged notebook produces no diff.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "01_quickstart.ipynb"

# The body shared by the three experiments: only the `%%experiment` line changes.
TRAIN = """\
import joblib
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

n_estimators = 100
max_depth = 4
random_state = 0

df = pd.read_csv("data/train.csv")
X, y = df.drop(columns="target"), df["target"]
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=random_state, stratify=y
)

model = RandomForestClassifier(
    n_estimators=n_estimators, max_depth=max_depth, random_state=random_state
)
model.fit(X_train, y_train)
predictions = model.predict(X_test)

accuracy = accuracy_score(y_test, predictions)
f1 = f1_score(y_test, predictions)
joblib.dump(model, "models/rf.joblib")
print(f"accuracy {accuracy:.3f} · f1 {f1:.3f}")"""

CELLS = [
    (
        "intro",
        "md",
        """\
# nbexp quickstart

`nbexp` records your experiments where they run: in the notebook. Put `%%experiment` on top
of a cell and the cell runs exactly as before, but afterwards nbexp has written down

* the **params** — every top-level literal assignment (`max_depth = 4`),
* the **metrics** — every number the cell computes at top level (`accuracy = ...`),
* the **data** it read (files with their hash, rows and columns) and the **artifacts** it wrote,
* the code, the notebook, the environment, git, and the kernel's variables.

Everything goes into a `.nbexp/` folder next to your project. Nothing to configure, no server.""",
    ),
    ("load-ext-md", "md", "First, load the extension:"),
    ("load-ext", "code", "%load_ext nbexp"),
    (
        "data-md",
        "md",
        """\
## Some data

We use the breast-cancer data set that ships with scikit-learn and write it to
`data/train.csv`, so that the experiments below *read a file*, as a real project would.
This is an ordinary cell: nothing is recorded yet.""",
    ),
    (
        "data",
        "code",
        """\
from pathlib import Path

from sklearn.datasets import load_breast_cancer

Path("data").mkdir(exist_ok=True)
Path("models").mkdir(exist_ok=True)

frame = load_breast_cancer(as_frame=True).frame
frame.to_csv("data/train.csv", index=False)
frame.shape""",
    ),
    (
        "baseline-md",
        "md",
        """\
## A first experiment

A small random forest. The only new thing is the first line: a name (`rf-baseline`) and a tag.
Watch the summary line under the output: nbexp found 3 params (`n_estimators`, `max_depth`,
`random_state`), 2 metrics (`accuracy`, `f1`), the CSV it read and the model it saved.""",
    ),
    ("baseline", "code", "%%experiment rf-baseline -t baseline\n" + TRAIN),
    (
        "deeper-md",
        "md",
        """\
## Change a param without editing the code

`-p max_depth=8` replaces the cell's `max_depth = 4` for this run only. The record keeps
`max_depth = 8`, so the two runs can be compared later.""",
    ),
    ("deeper", "code", "%%experiment rf-deep -p max_depth=8\n" + TRAIN),
    (
        "expect-md",
        "md",
        """\
## Say what you expect

`--expect` is checked after the cell has run. A smaller forest is faster, but is it good enough?
We ask for an F1 of at least 0.99. It is not reached: nbexp says so loudly and marks the record
`expectation-failed`, but this is not an error, so the rest of the notebook keeps running.""",
    ),
    (
        "expect",
        "code",
        '%%experiment rf-small -p n_estimators=20 --expect "f1 >= 0.99"\n' + TRAIN,
    ),
    (
        "table-md",
        "md",
        """\
## Compare

`nbexp.experiments()` is a pandas DataFrame with one row per run, newest first, with a column
per param and per metric. Filter it like any frame, or pass a query such as
`nbexp.experiments("metrics.f1 > 0.95")`.""",
    ),
    ("table", "code", "import nbexp\n\nnbexp.experiments()"),
    (
        "show-md",
        "md",
        """\
## Look at one run

`%exp_show` shows everything one run recorded. An experiment can be named by its name (its
latest run), its id (or a prefix of at least 4 characters), a tag, or `last` / `last~1` / ….""",
    ),
    ("show", "code", "%exp_show last"),
    (
        "get-md",
        "md",
        "The same record from Python, e.g. to use the baseline's metrics in your own code:",
    ),
    ("get", "code", 'nbexp.get("rf-baseline").metrics'),
    (
        "next-md",
        "md",
        """\
## Next

* `%experiments metrics.f1 > 0.95` — the comparison table, filtered
* `%exp_tag rf-deep best` — tag a run, then refer to it as `best`
* `nbexp list` and `nbexp show rf-baseline` in a terminal — the same records outside Jupyter""",
    ),
]


def build() -> nbformat.NotebookNode:
    cells = []
    for cell_id, kind, source in CELLS:
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = cell_id
        cells.append(cell)
    notebook = new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        },
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    return notebook


def main() -> None:
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
