"""Write `05_scheduled_retrain.ipynb` next to this script (no outputs, kernel `python3`).

    python example_notebooks/make_scheduled.py

The story (SPEC §12): a DVC project whose model `rf-prod` was trained on January's data; a
scheduler runs the training notebook headless with papermill on this week's data; first we ask
how far the new data drifted from what `rf-prod` read (`nbexp drift`, no run recorded), then the
scheduled run: papermill injects the data path, `params.yaml` holds the model's params, and a
strict expectation fails the run (non-zero exit) when the model got worse. Finally the
experiment becomes a DVC stage that `dvc repro` reproduces. Edit the cells here, not in the
notebook. It needs `dvc` on the PATH (the test extra installs it).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "05_scheduled_retrain.ipynb"

TRAIN_NOTEBOOK = '''
import nbformat
from nbformat.v4 import new_code_cell, new_notebook

train = new_notebook(cells=[
    new_code_cell("%load_ext nbexp"),
    new_code_cell('data_path = "data/train.csv"', metadata={"tags": ["parameters"]}),
    new_code_cell(
        '%%experiment rf --expect "accuracy >= 0.8"\\n'
        "import joblib, os, pandas as pd, yaml\\n"
        "from sklearn.ensemble import RandomForestClassifier\\n"
        'cfg = yaml.safe_load(open("params.yaml"))\\n'
        "frame = pd.read_csv(data_path)\\n"
        'X, y = frame[["x1", "x2"]], frame["y"]\\n'
        "model = RandomForestClassifier(\\n"
        '    n_estimators=cfg["train"]["n_estimators"], max_depth=cfg["train"]["max_depth"],\\n'
        "    random_state=0,\\n"
        ").fit(X[:300], y[:300])\\n"
        "accuracy = float(model.score(X[300:], y[300:]))\\n"
        'os.makedirs("models", exist_ok=True)\\n'
        'joblib.dump(model, "models/rf.joblib")\\n'
    ),
])
train.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbformat.write(train, "train.ipynb")
'''

CELLS = [
    ("md", """\
# Retrain on a schedule, in a DVC project

The model went stale because its data drifted. The routine that catches it runs without
anyone at a notebook: a scheduler executes `train.ipynb` with papermill on new data, DVC
versions the data and the pipeline, and someone must be told when the new model is worse."""),
    ("code", """\
import os, subprocess, sys, tempfile
import numpy as np, pandas as pd

os.chdir(tempfile.mkdtemp(prefix="nbexp-scheduled-"))
BIN = os.path.dirname(sys.executable)
os.environ["PATH"] = BIN + os.pathsep + os.environ["PATH"]

def sh(command):
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    print(f"$ {command}  → exit {done.returncode}")
    return done

def month(path, shift=0.0, rows=600, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(shift, 1, rows), "x2": rng.normal(0, 1, rows)})
    frame["y"] = (frame.x1 + 0.5 * frame.x2 + rng.normal(0, noise, rows) > shift).astype(int)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame.to_csv(path, index=False)

for command in ("git init -q", "dvc init -q"):
    sh(command)
month("data/train.csv")
sh("dvc add -q data/train.csv")
open("params.yaml", "w").write("train:\\n  n_estimators: 30\\n  max_depth: 3\\n")"""),
    ("md", """\
The training notebook: a `parameters` cell (papermill overrides `data_path`), and one
`%%experiment` that reads `params.yaml` and expects an accuracy of at least 0.8."""),
    ("code", TRAIN_NOTEBOOK.strip()),
    ("md", """\
January's run, recorded as `rf-prod`. Its data entry holds DVC's md5 of `data/train.csv`
(from `data/train.csv.dvc`), and the params are the keys it read from `params.yaml`."""),
    ("code", """\
sh("papermill train.ipynb out.ipynb")
import nbexp
nbexp.tag("rf", "rf-prod")
prod = nbexp.get("rf-prod")
print(prod.params, prod.metrics, prod.code.notebook)
print([item.get("dvc") for item in prod.data])"""),
    ("md", """\
This week's data arrives. How far has it drifted from what `rf-prod` was trained on? No run is
needed: `nbexp drift` profiles the new file against the recorded profile (exit 3 past
`--fail-on`)."""),
    ("code", """\
month("data/week.csv", shift=1.5, seed=1, noise=2.0)  # moved, and noisier
print(sh("nbexp drift rf-prod data/week.csv --fail-on major").stdout)
nbexp.drift("rf-prod", "data/week.csv")"""),
    ("md", """\
The scheduled run on the new data, strict: the expectation fails, the record is saved, and
papermill exits non-zero so the scheduler alerts."""),
    ("code", """\
done = sh("NBEXP_STRICT=1 papermill train.ipynb out.ipynb -p data_path data/week.csv")
print(done.stderr.strip().splitlines()[-1])
week = nbexp.get("last")
print(week.status, week.params, week.metrics)"""),
    ("md", """\
`rf-prod` as a DVC stage: the script, and a stage in `dvc.yaml` with its deps, params, outs
and a metrics file. `dvc repro` reproduces the recorded accuracy."""),
    ("code", """\
print(sh("nbexp export rf-prod --format dvc").stdout)
print(open("dvc.yaml").read())
sh("rm -rf models && dvc repro rf")
print(open("metrics/rf.json").read(), prod.metrics)"""),
]


def build() -> None:
    cells = [
        new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in CELLS
    ]
    for number, cell in enumerate(cells):
        cell.id = f"scheduled-{number}"
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python",
    }  # fmt: skip
    nbformat.write(notebook, NOTEBOOK)


if __name__ == "__main__":
    build()
