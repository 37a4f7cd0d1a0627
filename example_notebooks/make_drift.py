"""Write `03_drift_and_retrain.ipynb` next to this script (no outputs, kernel `python3`).

    python example_notebooks/make_drift.py

The story: a churn model trained on January; February's data has drifted (a known shift: the
mean of `amount` moved by 0.8 standard deviations, the web channel's share went from 50 % to
70 %, and web customers now churn more); the diff shows the drift from the recorded profiles;
a sweep retrains on February with an expectation on the AUC; the table picks the best run;
plots show the metric across runs. Edit the cells here, not in the notebook.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "03_drift_and_retrain.ipynb"

# The training body: the sweep below runs it unchanged, with other params.
TRAIN = """\
import nbexp
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

data_path = "data/2024-01.csv"
max_depth = 2
learning_rate = 0.1
n_estimators = 60

frame = pd.read_csv(data_path)
X = pd.get_dummies(frame.drop(columns="churned"), columns=["channel"], dtype=float)
y = frame["churned"]
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0, stratify=y
)
model = GradientBoostingClassifier(
    max_depth=max_depth, learning_rate=learning_rate, n_estimators=n_estimators, random_state=0
)
model.fit(X_train, y_train)
for step, proba in enumerate(model.staged_predict_proba(X_test)):
    nbexp.log("val_auc", roc_auc_score(y_test, proba[:, 1]), step=step)
auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
print(f"AUC {auc:.3f} on {data_path}")"""

CELLS = [
    (
        "intro",
        "md",
        """\
# Drift and retraining

A model is trained on one month of data. The next month's data has drifted. nbexp records a
profile of every input it sees (quantiles of each numeric column, shares of each category), so
comparing two experiments shows *how* their data differ — without reading the data again.
Then we retrain with a sweep, let the table pick the best run, and plot the metric.""",
    ),
    ("load", "code", "%load_ext nbexp\n%matplotlib inline"),
    (
        "data-md",
        "md",
        """\
## Two months of data, with a known shift

January and February churn data. February differs in three ways we control, so we can check
what nbexp reports:

* `amount`: the mean moved from 50 to 58 (0.8 standard deviations), so the true KS statistic
  between the months is 2Φ(0.4) − 1 ≈ 0.31;
* `channel`: the web share went from 50 % to 70 % (store 30 → 20 %, phone 20 → 10 %), a total
  variation distance of 0.2;
* web customers now churn *more* (they churned less in January): the old model's ranking is
  wrong for them.""",
    ),
    (
        "data",
        "code",
        """\
from pathlib import Path

import numpy as np
import pandas as pd


def make_period(n, seed, amount_mean, channel_shares, web_effect):
    rng = np.random.default_rng(seed)
    amount = rng.normal(amount_mean, 10.0, n).round(2)
    tenure = rng.integers(1, 61, n)
    channel = rng.choice(["web", "store", "phone"], size=n, p=channel_shares)
    logit = (
        0.12 * (amount - 50)
        - 0.08 * (tenure - 30)
        + np.where(channel == "web", web_effect, 0.0)
        + np.where(channel == "phone", 0.5, 0.0)
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {"amount": amount, "tenure": tenure, "channel": channel, "churned": churned}
    )


Path("data").mkdir(exist_ok=True)
january = make_period(4000, 1, 50.0, [0.5, 0.3, 0.2], web_effect=-1.5)
february = make_period(4000, 2, 58.0, [0.7, 0.2, 0.1], web_effect=2.0)
january.to_csv("data/2024-01.csv", index=False)
february.to_csv("data/2024-02.csv", index=False)
pd.DataFrame(
    {
        "mean amount": [january.amount.mean(), february.amount.mean()],
        "web share": [(january.channel == "web").mean(), (february.channel == "web").mean()],
        "churn rate": [january.churned.mean(), february.churned.mean()],
    },
    index=["2024-01", "2024-02"],
).round(3)""",
    ),
    (
        "train-md",
        "md",
        "## The production model, trained on January\n\nA gradient-boosted classifier; "
        "`nbexp.log` records the validation AUC after each boosting stage.",
    ),
    ("train", "code", "%%experiment jan-model -t production\n" + TRAIN),
    (
        "score-md",
        "md",
        """\
## February arrives

Score the January model on February's data. The AUC drops.""",
    ),
    (
        "score",
        "code",
        """\
%%experiment jan-model-on-feb
data_path = "data/2024-02.csv"
new = pd.read_csv(data_path)
X_new = pd.get_dummies(new.drop(columns="churned"), columns=["channel"], dtype=float)
auc = roc_auc_score(new["churned"], model.predict_proba(X_new[model.feature_names_in_])[:, 1])
print(f"AUC {auc:.3f} on {data_path}")""",
    ),
    (
        "diff-md",
        "md",
        """\
## What changed?

`%exp_diff A B` compares two experiments: params, metrics with their deltas, the code, and for
every input whose content changed, the schema and per-column drift statistics — PSI and the KS
statistic for numbers, PSI and the total variation distance (TVD) for categories. The input
file has a different name in each run; being the only one on each side, it is compared as two
versions of the same input. Expect `amount` with KS ≈ 0.31 and `channel` with TVD ≈ 0.2.""",
    ),
    ("diff", "code", "%exp_diff jan-model jan-model-on-feb"),
    (
        "sweep-md",
        "md",
        """\
## Retrain on February: a sweep

`--sweep KEY=V1,V2,...` runs the same cell once per combination (here 3 × 2 = 6 runs), each
recorded on its own and linked by a sweep id. `--expect` marks the runs that miss the bar; they
are kept and shown, not errors. The sweep ends with its table.""",
    ),
    (
        "sweep",
        "code",
        "%%experiment retrain -p \"data_path='data/2024-02.csv'\" "
        '--sweep max_depth=1,2,3 --sweep learning_rate=0.05,0.2 --expect "auc >= 0.855"\n'
        + TRAIN,
    ),
    (
        "best-md",
        "md",
        "## Pick the best\n\n`nbexp.experiments()` is a DataFrame: sort the retraining runs by "
        "AUC and tag the winner as the new production model.",
    ),
    (
        "best",
        "code",
        """\
table = nbexp.experiments()
retrained = table[table["name"].str.startswith("retrain-")]
best = retrained.sort_values("metrics.auc", ascending=False).iloc[0]
best_name = best["name"]
print(
    f"best: {best_name} (max_depth={best['params.max_depth']}, "
    f"learning_rate={best['params.learning_rate']}) AUC {best['metrics.auc']:.3f}"
)
retrained[["name", "status", "params.max_depth", "params.learning_rate", "metrics.auc"]]""",
    ),
    ("tag", "code", "%exp_tag {best_name} production"),
    (
        "plot-md",
        "md",
        """\
## Plots

The AUC of every experiment in the order they ran; then, for the sweep, the AUC against the
learning rate with one line per depth; and the validation AUC per boosting stage.""",
    ),
    ("plot-runs", "code", "%exp_plot auc"),
    ("plot-by", "code", "%exp_plot auc --by learning_rate --color max_depth --sweep last"),
    ("plot-step", "code", "%exp_plot val_auc --step --sweep last"),
    (
        "final-md",
        "md",
        """\
## The new model against the old

The data are the same file now, so only the params, the metric and the model differ.""",
    ),
    ("final", "code", "%exp_diff jan-model-on-feb {best_name}"),
    (
        "next-md",
        "md",
        """\
## Next

* `nbexp status` in a terminal lists experiments whose input files (or cells) changed since
  they ran, and exits 1 when there are any — a gate for a retraining pipeline.
* `nbexp diff jan-model production` prints the same comparison in a terminal.""",
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
