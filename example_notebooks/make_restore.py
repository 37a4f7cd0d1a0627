"""Write `02_restore.ipynb` next to this script (no outputs, kernel `python3`).

    python example_notebooks/make_restore.py

The story: train a model, keep going, break things, then get the good run back — its model,
its data and its code — and compare an old model with the current one side by side.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "02_restore.ipynb"

CELLS = [
    ("intro", "md", """\
# Getting a past run back

Trackers record numbers; nbexp also records the kernel's variables, so any experiment can be put
back into the live kernel — the exact model, frames and helper functions it ended with. Storage is
content-addressed and chunked: a variable that did not change costs nothing new, and adding one
column to a big frame stores about one column."""),
    ("load", "code", "%load_ext nbexp"),
    ("data", "code", """\
import numpy as np
import pandas as pd
from sklearn.datasets import load_wine

wine = load_wine(as_frame=True).frame
wine.shape"""),
    ("good-md", "md", "A good run. The helper function and the fitted model are recorded by value."),
    ("good", "code", """\
%%experiment wine-good -t good
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

C = 1.0
features = [c for c in wine.columns if c != "target"]

def standardise(frame):
    return (frame - frame.mean()) / frame.std()

X = standardise(wine[features])
X_train, X_test, y_train, y_test = train_test_split(X, wine["target"], random_state=0)
model = LogisticRegression(C=C, max_iter=500).fit(X_train, y_train)
accuracy = model.score(X_test, y_test)
print(f"accuracy {accuracy:.3f}")"""),
    ("break-md", "md", """\
Now we keep working — and break things: a column is overwritten in place, the model is refit
on garbage, the helper is redefined. This run is recorded too (nothing is ever lost)."""),
    ("break", "code", """\
%%experiment wine-broken
wine["alcohol"] = 0.0
X = standardise(wine[features]).fillna(0)
def standardise(frame):
    return frame
model.fit(X.iloc[: len(y_train)], y_train.sample(frac=1, random_state=1).values)
accuracy = model.score(X_test, y_test)
print(f"accuracy {accuracy:.3f}")"""),
    ("compare-md", "md", """\
Before restoring anything, load the good run's variables **beside** the live ones:
`nbexp.load` returns a lazy namespace; nothing in the kernel changes."""),
    ("compare", "code", """\
import nbexp

good = nbexp.load("wine-good")
print("live model on the test set:", round(model.score(X_test, y_test), 3))
print("good model on the test set:", round(good.model.score(good.X_test, good.y_test), 3))
print("live alcohol column all zero:", bool((wine["alcohol"] == 0).all()))
print("good alcohol column all zero:", bool((good.wine["alcohol"] == 0).all()))"""),
    ("restore-md", "md", """\
Now put the good run back. Each variable is verified against its recorded hash; the report says
what was restored and which live values were overwritten."""),
    ("restore", "code", "%exp_restore wine-good"),
    ("check", "code", """\
assert (wine["alcohol"] != 0).any()
assert standardise(wine[features]).std().round(6).eq(1).all()
round(model.score(X_test, y_test), 3)"""),
    ("partial-md", "md", """\
Only some variables, or things that cannot be pickled: a generator is listed as not stored (with
the reason), and `--recompute` rebuilds it by replaying the statement that made it."""),
    ("unstorable", "code", """\
%%experiment batches
batch_size = 32
batches = (X.iloc[i : i + batch_size] for i in range(0, len(X), batch_size))"""),
    ("partial", "code", """\
del batches, model
%exp_restore batches model batches --recompute"""),
    ("next", "code", "sum(1 for _ in batches), type(model).__name__"),
    ("cache-md", "md", """\
`--cache` skips a run that already happened with the same code, params, data and inputs, and
restores its results instead."""),
    ("cache", "code", """\
%%experiment wine-good --cache
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

C = 1.0
features = [c for c in wine.columns if c != "target"]

def standardise(frame):
    return (frame - frame.mean()) / frame.std()

X = standardise(wine[features])
X_train, X_test, y_train, y_test = train_test_split(X, wine["target"], random_state=0)
model = LogisticRegression(C=C, max_iter=500).fit(X_train, y_train)
accuracy = model.score(X_test, y_test)
print(f"accuracy {accuracy:.3f}")"""),
    ("table", "code", 'nbexp.experiments()[["id", "name", "status", "params.C", "metrics.accuracy"]]'),
]


def build() -> nbformat.NotebookNode:
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
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
