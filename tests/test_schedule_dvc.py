"""SPEC §12: the stale-model routine on a schedule, in a DVC project.

Real things throughout: IPython shells, papermill and `jupyter execute` running real kernels,
a real DVC 3 project (`dvc init`, `dvc add`, `dvc repro`, `dvc exp run -S`). DVC commands cost
about 1.5 s each, so the DVC checks share one project.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbexp import cli
from nbexp.errors import ExpectationFailed

from .conftest import run

BIN = Path(sys.executable).parent
BODY = """import yaml
cfg = yaml.safe_load(open("params.yaml"))
max_depth = cfg["train"]["max_depth"]
seed = cfg["seed"]
score = 0.5 + max_depth / 100
"""


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the cells printed before
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _frame(path: Path, shift: float = 0.0, rows: int = 400, extra: bool = False) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(shift, 1, rows),
            "x2": rng.normal(0, 1, rows),
            "cat": rng.choice(
                ["a", "b", "c"], rows, p=[0.5, 0.3, 0.2] if not shift else [0.2, 0.3, 0.5]
            ),
        }
    )
    noise = rng.normal(0, 0.5, rows)  # a depth-1 tree cannot fit it all
    frame["y"] = (frame.x1 + 0.8 * frame.x2 + noise > shift).astype(int)
    if extra:
        frame["new_feature"] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def test_params_file_keys_are_params_and_p_overrides_them(ip, project, capsys):
    import nbexp

    (project / "params.yaml").write_text("train:\n  max_depth: 4\n  n_estimators: 20\nseed: 42\n")
    run(ip, "%%experiment base\n" + BODY)
    record = nbexp.get("base")
    assert record.params == {"train.max_depth": 4, "seed": 42}
    assert record.metrics == {"score": 0.54}  # max_depth and seed came from the file
    run(ip, "%%experiment deeper -p train.max_depth=6\n" + BODY)
    assert nbexp.get("deeper").params["train.max_depth"] == 6
    assert ip.user_ns["max_depth"] == 6 and nbexp.get("deeper").metrics == {"score": 0.56}
    assert "max_depth: 4" in (project / "params.yaml").read_text()  # the file is untouched
    run(ip, "%%experiment by-name -p max_depth=7\n" + BODY)  # the name bound from the key
    assert nbexp.get("by-name").params["train.max_depth"] == 7
    # a chain used whole reads every key under it, and -p merges into it
    run(
        ip,
        "%%experiment whole -p train.n_estimators=9\nimport yaml\n"
        'kw = dict(**yaml.safe_load(open("params.yaml"))["train"])\ntotal = sum(kw.values())\n',
    )
    assert nbexp.get("whole").params == {"train.max_depth": 4, "train.n_estimators": 9}
    assert nbexp.get("whole").metrics == {"total": 13}
    code, out, _ = _cli(capsys, "list", "params.train.max_depth < 6", "--format", "json")
    assert code == 0 and sorted(r["name"] for r in json.loads(out)) == ["base", "whole"]

    # bad input: one line each, nothing recorded, nothing lost
    count = len(nbexp.experiments())
    result = run(ip, "%%experiment -p train.depth=1\n" + BODY)
    assert "params.yaml has no key train.depth" in str(result.error_in_exec)
    result = run(ip, "%%experiment -p other.key=1\nx = 1\n")
    assert "-p other.key" in str(result.error_in_exec)
    (project / "conf.json").write_text('{"lr": 0.1,')
    result = run(ip, "%%experiment --params-file conf.json\nx = 1\n")
    assert "conf.json does not parse" in str(result.error_in_exec)
    assert len(nbexp.experiments()) == count
    (project / "conf.json").write_text('{"lr": 0.1, "layers": [64, 32]}')
    run(
        ip,
        '%%experiment js --params-file conf.json\nimport json\nlr = json.load(open("conf.json"))["lr"]\n',
    )
    assert nbexp.get("js").params == {"lr": 0.1} and nbexp.get("js").metrics == {}


def test_strict_expectation_raises_after_saving(ip, project, monkeypatch):
    import nbexp

    result = run(ip, '%%experiment gate --strict --expect "f1 >= 0.99"\nf1 = 0.8\n')
    assert isinstance(result.error_in_exec, ExpectationFailed)
    assert "f1 >= 0.99" in str(result.error_in_exec)
    assert nbexp.get("gate").status == "expectation-failed"  # saved before raising
    monkeypatch.setenv("NBEXP_STRICT", "1")
    result = run(ip, '%%experiment gate2 --expect "f1 >= 0.99"\nf1 = 0.8\n')
    assert isinstance(result.error_in_exec, ExpectationFailed)
    result = run(ip, '%%experiment ok --expect "f1 >= 0.5"\nf1 = 0.8\n')
    assert result.error_in_exec is None


def test_drift_of_new_data_without_recording(ip, project, capsys):
    import pandas as pd

    import nbexp

    _frame(project / "data" / "train.csv")
    run(
        ip,
        '%%experiment rf-prod\nimport pandas as pd\ndf = pd.read_csv("data/train.csv")\nn = len(df)\n',
    )
    _frame(project / "new" / "week.csv", shift=1.5, extra=True)
    before = len(nbexp.experiments())
    code, out, _ = _cli(capsys, "drift", "rf-prod", "new/week.csv")
    assert code == 0 and "x1" in out and "major" in out and "new columns" in out
    code, out, _ = _cli(
        capsys, "drift", "rf-prod", "new/week.csv", "--format", "json", "--fail-on", "major"
    )
    assert code == 3
    table = {row["column"]: row for row in json.loads(out)["columns"]}
    assert table["x1"]["level"] == "major" and table["x2"]["level"] == "stable"
    assert json.loads(out)["inputs"][0]["extra_columns"] == ["new_feature"]
    code, _, _ = _cli(capsys, "drift", "rf-prod", "data/train.csv", "--fail-on", "moderate")
    assert code == 0  # the same data has not drifted
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_csv(project / "other.csv", index=False)
    code, _, err = _cli(capsys, "drift", "rf-prod", "other.csv")
    assert code == 1 and err.count("\n") == 1 and "none of the columns" in err
    frame = nbexp.drift("rf-prod", pd.read_csv(project / "new" / "week.csv"))
    assert set(frame["column"]) == {"x1", "x2", "cat", "y"}
    assert frame.set_index("column").loc["cat", "tvd"] > 0.2
    assert len(nbexp.experiments()) == before  # nothing recorded
    (project / "data" / "train.csv").write_bytes((project / "new" / "week.csv").read_bytes())
    run(
        ip,
        '%%experiment rf-new\nimport pandas as pd\ndf = pd.read_csv("data/train.csv")\nn = len(df)\n',
    )
    code, out, _ = _cli(capsys, "diff", "rf-prod", "rf-new", "--format", "json")
    data = json.loads(out)["data"]
    assert code == 0 and "x1" in data[0]["drifted"]


# -- a real DVC project --------------------------------------------------------------------

dvc_missing = pytest.mark.skipif(
    not (BIN / "dvc").exists(), reason="dvc is not installed (pip install -e '.[test]')"
)


def _sh(*argv: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    if check and done.returncode:
        raise AssertionError(f"{argv} failed:\n{done.stdout}\n{done.stderr}")
    return done


TRAIN = """import pandas as pd, yaml, joblib, os
from sklearn.tree import DecisionTreeClassifier
cfg = yaml.safe_load(open("params.yaml"))
df = pd.read_csv("data/train.csv")
model = DecisionTreeClassifier(max_depth=cfg["train"]["max_depth"], random_state=0)
model.fit(df[["x1", "x2"]], df["y"])
acc = float(model.score(df[["x1", "x2"]], df["y"]))
os.makedirs("models", exist_ok=True)
joblib.dump(model, "models/tree.joblib")
"""


@dvc_missing
def test_dvc_project_md5s_stage_repro_and_exp_run(ip, project, capsys):
    import nbexp

    _sh("git", "init", "-q", cwd=project)
    _sh("dvc", "init", "-q", cwd=project)
    _frame(project / "data" / "train.csv")
    _sh("dvc", "add", "-q", "data/train.csv", cwd=project)
    (project / "params.yaml").write_text("train:\n  max_depth: 1\nseed: 0\n")
    md5 = (project / "data" / "train.csv.dvc").read_text().split("md5: ")[1].split()[0]

    run(ip, "%%experiment tree\n" + TRAIN)
    record = nbexp.get("tree")
    entry = next(item for item in record.data if item["path"] == "data/train.csv")
    assert entry["dvc"] == {"md5": md5, "source": "data/train.csv.dvc", "path": "data/train.csv"}
    import importlib.resources

    import jsonschema

    schema = json.loads(
        (importlib.resources.files("nbexp") / "schema" / "record-v1.json").read_text()
    )
    jsonschema.validate(record.to_dict(), schema)
    assert record.params == {"train.max_depth": 1}
    code, out, _ = _cli(capsys, "show", "tree")
    assert f"dvc md5 {md5[:12]} (data/train.csv.dvc)" in out

    # the export as a DVC stage: dvc repro gives the recorded metric, exp run -S varies it
    (project / "dvc.yaml").write_text("stages:\n  other:\n    cmd: echo hi\n")
    code, out, err = _cli(capsys, "export", "tree", "--format", "dvc")
    assert code == 0, err
    stage = __import__("yaml").safe_load((project / "dvc.yaml").read_text())["stages"]
    assert stage["other"] == {"cmd": "echo hi"}  # other stages kept
    assert stage["tree"]["deps"] == ["tree.py", "data/train.csv"]
    assert stage["tree"]["params"] == ["train.max_depth"]
    assert stage["tree"]["outs"] == ["models/tree.joblib"]
    shutil.rmtree(project / "models")  # DVC refuses to overwrite an untracked out
    _sh("dvc", "repro", "tree", cwd=project)
    assert json.loads((project / "metrics" / "tree.json").read_text()) == {
        "acc": record.metrics["acc"]
    }
    _sh("git", "add", "-A", cwd=project)
    _sh("git", "commit", "-qm", "stage", cwd=project)
    done = _sh("dvc", "exp", "run", "-S", "train.max_depth=4", cwd=project)
    deeper = json.loads((project / "metrics" / "tree.json").read_text())["acc"]
    assert deeper > record.metrics["acc"], done.stdout
    # a stage of that name nbexp did not write is refused in one line
    (project / "dvc.yaml").write_text("stages:\n  tree:\n    cmd: make tree\n")
    code, _, err = _cli(capsys, "export", "tree", "--format", "dvc", "-o", "t2.py")
    assert code == 1 and err.count("\n") == 1 and "nbexp did not write" in err

    # new data: status names DVC's md5 change; rerun names the checkout
    _sh("git", "checkout", "-q", "--", "params.yaml", cwd=project)
    _frame(project / "data" / "train.csv", shift=1.0)
    _sh("dvc", "add", "-q", "data/train.csv", cwd=project)
    code, out, _ = _cli(capsys, "status", "tree")
    assert code == 1 and f"dvc md5 {md5[:12]} recorded, now" in out
    code, out, _ = _cli(capsys, "rerun", "tree")
    assert code == 2 and "dvc checkout data/train.csv.dvc" in out

    # damaged DVC files: the run is recorded, one line says why no md5
    (project / "data" / "train.csv.dvc").write_text("outs: [\n")
    result = run(ip, "%%experiment broken\n" + TRAIN)
    assert result.error_in_exec is None
    assert "train.csv.dvc" in nbexp.get("broken").links["dvc_problems"]["data/train.csv"]
    assert "dvc" not in next(i for i in nbexp.get("broken").data if i["path"] == "data/train.csv")
    (project / "data" / "train.csv.dvc").write_text("outs:\n- md5: abc\n  path: other.csv\n")
    run(ip, "%%experiment elsewhere\n" + TRAIN)
    why = nbexp.get("elsewhere").links["dvc_problems"]["data/train.csv"]
    assert "tracks data/other.csv, not data/train.csv" in why


# -- headless runs: papermill and jupyter execute ------------------------------------------


def _notebook(path: Path) -> None:
    cells = [
        nbformat.v4.new_code_cell("%load_ext nbexp"),
        nbformat.v4.new_code_cell(
            "n_estimators = 10\nthreshold = 0.5", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(
            '%%experiment scheduled --expect "score >= threshold"\nscore = n_estimators / 100\n'
        ),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, path)


@pytest.mark.kernel
def test_papermill_and_jupyter_execute_record_headless_runs(project, capsys):
    from nbexp.store import open_store

    _sh("git", "init", "-q", cwd=project)
    _notebook(project / "nb.ipynb")
    _sh("papermill", "nb.ipynb", "out.ipynb", "-p", "n_estimators", "80", "--cwd", ".", cwd=project)
    store = open_store(str(project / ".nbexp"))
    record = store.get("scheduled")
    assert record.params == {"n_estimators": 80}  # threshold: only --expect reads it
    assert record.metrics == {"score": 0.8}
    assert record.code.notebook == str(project / "nb.ipynb")  # the input, not out.ipynb
    code, out, _ = _cli(capsys, "--store", str(project / ".nbexp"), "status", "scheduled")
    assert code == 0 and out.startswith("fresh")
    # the scheduled run whose model got worse fails the run when strict
    env_strict = {"NBEXP_STRICT": "1"}
    os.environ.update(env_strict)
    try:
        done = _sh(
            "papermill",
            "nb.ipynb",
            "out.ipynb",
            "-p",
            "n_estimators",
            "20",
            cwd=project,
            check=False,
        )
        assert done.returncode != 0 and "ExpectationFailed" in done.stderr + done.stdout
        done = _sh("jupyter", "execute", "nb.ipynb", cwd=project, check=False)
        assert done.returncode != 0 and "ExpectationFailed" in done.stderr + done.stdout
    finally:
        os.environ.pop("NBEXP_STRICT")
    store = open_store(str(project / ".nbexp"))
    runs = store.rows("name = 'scheduled'")
    assert len(runs) == 3 and {r["status"] for r in runs} == {"ok", "expectation-failed"}
    latest = store.get("last")
    assert latest.code.notebook == str(project / "nb.ipynb")  # jupyter execute's notebook
    assert latest.params["n_estimators"] == 10
    # the notebook changed: status says so
    _notebook(project / "nb.ipynb")
    text = (project / "nb.ipynb").read_text().replace("score = n_estimators / 100", "score = 1")
    (project / "nb.ipynb").write_text(text)
    code, out, _ = _cli(capsys, "--store", str(project / ".nbexp"), "status", "scheduled")
    assert code == 1 and "notebook" in out
