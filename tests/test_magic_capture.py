"""`%%experiment` through a real IPython shell: what the record captures (data, artifacts,
code, environment, secrets), recording failures, and the line magics that read records."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import nbexp
from nbexp.store import Store
from tests.conftest import run


def cell(line: str, body: str) -> str:
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


def write_csv(path: Path) -> None:
    path.write_text("a,b,label\n1,2.5,x\n2,3.5,y\n3,,x\n")


def data_by_path(experiment) -> dict[str, dict]:
    return {item["path"]: item for item in experiment.data if item["kind"] == "file"}


def data_by_name(experiment) -> dict[str, dict]:
    return {item["name"]: item for item in experiment.data if item["kind"] == "variable"}


# -- data ------------------------------------------------------------------------------------


def test_files_read_by_the_body_are_recorded_with_hash_size_and_table_shape(ip, project):
    write_csv(project / "train.csv")
    (project / "notes.txt").write_text("some words\n")
    body = """
        import pandas as pd
        frame = pd.read_csv("train.csv")
        with open("notes.txt") as handle:
            words = handle.read().split()
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    files = data_by_path(nbexp.get("last"))
    assert set(files) == {"train.csv", "notes.txt"}
    csv = files["train.csv"]
    assert csv["size"] == (project / "train.csv").stat().st_size
    assert csv["rows"] == 3
    assert csv["columns"] == ["a", "b", "label"]
    assert csv["dtypes"]["a"] == "int64" and csv["dtypes"]["b"] == "float64"
    assert csv["dtypes"]["label"] in ("object", "str", "string")
    assert csv["profile"]["b"]["nulls"] == 1
    text = files["notes.txt"]
    assert text["size"] == len("some words\n")
    assert len(text["hash"]) == 32 and text["hash"] != csv["hash"]


def test_a_changed_input_file_gets_a_different_hash(ip, project):
    (project / "in.txt").write_text("version one")
    run(ip, cell("", "text = open('in.txt').read()"))
    first = data_by_path(nbexp.get("last"))["in.txt"]["hash"]
    (project / "in.txt").write_text("version two")
    run(ip, cell("", "text = open('in.txt').read()"))
    second = data_by_path(nbexp.get("last"))["in.txt"]["hash"]
    assert first != second
    run(ip, cell("", "text = open('in.txt').read()"))
    assert data_by_path(nbexp.get("last"))["in.txt"]["hash"] == second


def test_a_parquet_file_read_with_pandas_is_recorded(ip, project):
    import pandas as pd

    pd.DataFrame({"x": [1, 2, 3, 4], "y": ["a", "b", "c", "d"]}).to_parquet(project / "t.parquet")
    body = """
        import pandas as pd
        table = pd.read_parquet("t.parquet")
        n = len(table)
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    files = data_by_path(nbexp.get("last"))
    assert "t.parquet" in files
    assert files["t.parquet"]["rows"] == 4
    assert files["t.parquet"]["columns"] == ["x", "y"]
    assert files["t.parquet"]["size"] == (project / "t.parquet").stat().st_size


FRESH_KERNEL = """
import json, sys
from IPython.testing.globalipapp import start_ipython
assert "pandas" not in sys.modules, "the scenario needs pandas imported by the cell itself"
ip = start_ipython()
ip.run_line_magic("load_ext", "nbexp")
result = ip.run_cell('''%%experiment
import pandas as pd
table = pd.read_parquet("in.parquet")
table.to_parquet("out.parquet")
''', store_history=True)
assert result.success, result.error_in_exec
import nbexp
experiment = nbexp.get("last")
print(json.dumps({"data": [d.get("path") for d in experiment.data],
                  "artifacts": [a["path"] for a in experiment.artifacts]}))
"""


def test_parquet_io_is_seen_when_the_cell_itself_first_imports_pandas(tmp_path):
    import pandas as pd

    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(tmp_path / "in.parquet")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("NBEXP_STORE", None)
    done = subprocess.run(
        [sys.executable, "-c", FRESH_KERNEL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"data": ["in.parquet"], "artifacts": ["out.parquet"]}


def test_frames_read_from_the_namespace_are_recorded_with_content_hash_and_profile(ip):
    setup = """
import numpy as np
import pandas as pd
df = pd.DataFrame({"age": [20.0, 30.0, None, 50.0], "city": ["a", "b", "a", "c"]})
arr = np.arange(6).reshape(2, 3)
unused = pd.DataFrame({"q": [1]})
"""
    run(ip, setup)
    body = "mean_age = df['age'].mean()\ntotal = int(arr.sum())"
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    first = data_by_name(nbexp.get("last"))
    assert set(first) == {"df", "arr"}  # `unused` was not read
    frame = first["df"]
    assert frame["type"] == "pandas.DataFrame"
    assert frame["shape"] == [4, 2]
    assert frame["dtypes"]["age"] == "float64"
    age = frame["profile"]["age"]
    assert age["count"] == 3 and age["nulls"] == 1
    assert age["mean"] == pytest.approx(100 / 3)
    assert age["min"] == 20.0 and age["max"] == 50.0
    city = frame["profile"]["city"]
    assert city["count"] == 4 and city["distinct"] == 3
    assert first["arr"]["shape"] == [2, 3] and first["arr"]["type"] == "numpy.ndarray"

    # the same content hashes the same; one changed value changes the hash
    run(ip, cell("", body))
    assert data_by_name(nbexp.get("last"))["df"]["hash"] == frame["hash"]
    run(ip, "df.loc[3, 'age'] = 51.0")
    run(ip, cell("", body))
    changed = data_by_name(nbexp.get("last"))["df"]
    assert changed["hash"] != frame["hash"]
    assert changed["profile"]["age"]["max"] == 51.0


def test_d_adds_every_file_of_a_folder_and_single_files(ip, project):
    folder = project / "raw"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.bin").write_bytes(b"\x00\x01")
    (folder / "sub" / "two.txt").write_text("two")
    write_csv(project / "extra.csv")
    result = run(ip, cell("-d raw -d extra.csv", "x = 1 + 1"))
    assert result.success, result.error_in_exec
    files = data_by_path(nbexp.get("last"))
    assert set(files) == {
        os.path.join("raw", "one.bin"),
        os.path.join("raw", "sub", "two.txt"),
        "extra.csv",
    }
    assert files[os.path.join("raw", "one.bin")]["size"] == 2
    assert files["extra.csv"]["rows"] == 3


# -- artifacts -------------------------------------------------------------------------------


def test_files_written_by_the_body_are_stored_byte_for_byte(ip, project):
    body = """
        import numpy as np
        import pandas as pd
        with open("model.txt", "w") as handle:
            handle.write("weights: 1 2 3\\n")
        np.save("weights.npy", np.arange(10))
        pd.DataFrame({"p": [0.1, 0.9]}).to_parquet("preds.parquet")
        with open("log.bin", "wb") as handle:
            handle.write(bytes(range(256)))
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    experiment = nbexp.get("last")
    store = nbexp.open_store()
    artifacts = {item["path"]: item for item in experiment.artifacts}
    assert set(artifacts) == {"model.txt", "weights.npy", "preds.parquet", "log.bin"}
    for name, item in artifacts.items():
        original = (project / name).read_bytes()
        assert item["size"] == len(original)
        assert store.object_path(item["hash"]).read_bytes() == original, name
    # written files are outputs, not input data
    assert data_by_path(experiment) == {}

    # the artifact survives the file being overwritten afterwards
    (project / "model.txt").write_text("something else")
    stored = store.object_path(artifacts["model.txt"]["hash"]).read_bytes()
    assert stored == b"weights: 1 2 3\n"


def test_a_file_read_and_then_rewritten_is_an_artifact(ip, project):
    (project / "counter.txt").write_text("1")
    body = """
        count = int(open("counter.txt").read())
        open("counter.txt", "w").write(str(count + 1))
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    experiment = nbexp.get("last")
    assert [a["path"] for a in experiment.artifacts] == ["counter.txt"]
    assert nbexp.open_store().object_path(experiment.artifacts[0]["hash"]).read_bytes() == b"2"


# -- code ------------------------------------------------------------------------------------


def test_code_keeps_the_body_the_cell_as_typed_and_the_earlier_cells_in_order(ip):
    run(ip, "first_cell = 1")
    run(ip, "second_cell = first_cell + 1")
    run(ip, "third_cell = 3")
    typed = cell("coded -p k=2", "k = 1\nproduct = k * second_cell")
    result = run(ip, typed)
    assert result.success, result.error_in_exec
    code = nbexp.get("coded").code
    assert code.cell.rstrip() == typed.rstrip()
    assert code.source.strip() == "k = 2\nproduct = k * second_cell"
    history = list(code.history)
    assert history[-3:] == ["first_cell = 1", "second_cell = first_cell + 1", "third_cell = 3"]
    assert not any("product = k * second_cell" in earlier for earlier in history)

    # the next experiment sees the first one among its earlier cells
    run(ip, cell("next", "other = 5 * 1"))
    later = [text.rstrip("\n") for text in nbexp.get("next").code.history]
    assert later[-4:] == [*history[-3:], typed.rstrip("\n")]


# -- environment -----------------------------------------------------------------------------


def test_environment_has_python_imported_packages_and_seeds(ip):
    body = """
        import numpy as np
        import pandas as pd
        np.random.seed(42)
        draw = float(np.random.rand())
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    env = nbexp.get("last").env
    assert env["python"] == platform.python_version()
    import numpy
    import pandas

    assert env["packages"]["pandas"] == pandas.__version__
    assert env["packages"]["numpy"] == numpy.__version__
    assert env["seeds"] == {"np.random.seed": 42}


# -- secrets ---------------------------------------------------------------------------------


SECRETS = ("sk-live-123456789", "tok-abcdef123456", "hunter2hunter2")


def test_secrets_never_reach_any_file_of_the_store(ip, monkeypatch, project, capsys):
    monkeypatch.setenv("MY_TOKEN", "placeholder")  # restored after the test
    run(ip, 'import os\napi_key = "sk-live-123456789"\nos.environ["MY_TOKEN"] = "tok-abcdef123456"')
    body = """
        print("using", api_key, os.environ["MY_TOKEN"])
        password = "hunter2hunter2"
        headers = {"Authorization": "Bearer " + api_key}
        token_length = len(os.environ["MY_TOKEN"])
        harmless = 12.5
        raise RuntimeError("login failed for " + password)
    """
    result = run(ip, cell("leaky --expect \"password != ''\"", body))
    assert result.success is False  # the body raised, so there is a traceback to scrub too
    out = capsys.readouterr().out
    assert "sk-live-123456789" in out  # the user still sees their own output

    experiment = nbexp.get("leaky")
    assert "api_key" not in experiment.variables
    assert "password" not in experiment.variables
    assert "api_key" not in experiment.params and "password" not in experiment.params
    assert "harmless" in experiment.variables  # state was recorded, just not the secrets
    assert "using" in experiment.outcome.stdout

    leaks = []
    files = [path for path in (project / ".nbexp").rglob("*") if path.is_file()]
    assert files
    for path in files:
        content = path.read_bytes()
        leaks.extend(
            f"{path.relative_to(project)}: {secret}"
            for secret in SECRETS
            if secret.encode() in content
        )
    assert leaks == []


def test_credential_named_variables_are_not_in_state_or_params(ip):
    run(ip, 'github_token = "ghp_abcdefghijkl"')
    result = run(ip, cell("", 'db_password = "pw-not-a-param"\nepochs = 2'))
    assert result.success
    experiment = nbexp.get("last")
    assert experiment.params == {"epochs": 2}
    assert "github_token" not in experiment.variables
    assert "db_password" not in experiment.variables
    assert "epochs" in experiment.variables
    assert "pw-not-a-param" not in experiment.code.source


# -- recording failures ------------------------------------------------------------------------


def test_when_saving_fails_the_cell_still_succeeds_and_says_it_was_not_recorded(
    ip, monkeypatch, capsys
):
    def refuse(self, experiment, **_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "save", refuse)
    result = run(ip, cell("lost", "trained = 40 + 2\nprint('done training')\ntrained"))
    captured = capsys.readouterr()
    assert result.success, result.error_in_exec
    assert result.result == 42
    assert ip.user_ns["trained"] == 42
    assert "done training" in captured.out
    assert "NOT recorded" in captured.err
    assert "No space left on device" in captured.err
    assert "recorded lost" not in captured.out
    monkeypatch.undo()
    assert nbexp.experiments().empty


def test_an_unusable_store_does_not_cost_the_user_their_run(ip, project, capsys):
    (project / ".nbexp").write_text("not a folder")  # so the store cannot be created
    result = run(ip, cell("", "value = 6 * 7\nvalue"))
    captured = capsys.readouterr()
    assert result.success, result.error_in_exec
    assert result.result == 42 and ip.user_ns["value"] == 42
    not_recorded = [line for line in captured.err.splitlines() if "NOT recorded" in line]
    assert len(not_recorded) == 1
    assert ".nbexp" in not_recorded[0]
    assert "Traceback" not in captured.err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores chmod")
def test_a_read_only_records_folder_is_reported_and_the_run_kept(ip, project, capsys):
    run(ip, cell("first", "a = 1 + 1"))
    records = nbexp.open_store().records_dir
    records.chmod(0o555)
    for folder in records.iterdir():
        folder.chmod(0o555)
    try:
        result = run(ip, cell("second", "kept = 6 * 7\nkept"))
        captured = capsys.readouterr()
    finally:
        for folder in records.iterdir():
            folder.chmod(0o755)
        records.chmod(0o755)
    assert result.success and result.result == 42 and ip.user_ns["kept"] == 42
    assert "NOT recorded" in captured.err
    assert nbexp.experiments()["name"].tolist() == ["first"]


def test_a_failing_body_with_a_failing_recorder_still_raises_the_users_error(
    ip, monkeypatch, capsys
):
    def refuse(self, experiment, **_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Store, "save", refuse)
    result = run(ip, cell("", "partial = 1\nraise ZeroDivisionError('user bug')"))
    captured = capsys.readouterr()
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert ip.user_ns["partial"] == 1
    assert "NOT recorded" in captured.err and "Permission denied" in captured.err


# -- references and the line magics ----------------------------------------------------------


def _three_runs(ip) -> list:
    run(ip, cell("alpha -t keeper", "score = 1 + 0.5"))
    run(ip, cell("beta", "score = 2 + 0.5"))
    run(ip, cell("beta", "score = 3 + 0.5"))
    listed = nbexp.experiments()
    assert listed["name"].tolist() == ["beta", "beta", "alpha"]
    return [nbexp.get(f"last~{n}") for n in range(3)]


def test_exp_show_accepts_every_kind_of_reference(ip, capsys):
    newest, middle, oldest = _three_runs(ip)
    assert newest.metrics["score"] == 3.5 and oldest.metrics["score"] == 1.5
    assert run(ip, "%exp_show last").result.id == newest.id
    assert run(ip, "%exp_show last~1").result.id == middle.id
    assert run(ip, "%exp_show beta").result.id == newest.id  # a name means its latest run
    assert run(ip, "%exp_show alpha").result.id == oldest.id
    assert run(ip, "%exp_show keeper").result.id == oldest.id  # a tag
    ids = [newest.id, middle.id, oldest.id]
    for experiment in (newest, middle, oldest):
        prefix = experiment.id[:4]
        if sum(other.startswith(prefix) for other in ids) == 1:
            assert run(ip, f"%exp_show {prefix}").result.id == experiment.id
        assert run(ip, f"%exp_show {experiment.short_id}").result.id == experiment.id
    shown = run(ip, "%exp_show alpha")
    assert shown.success
    out = capsys.readouterr().out
    assert "alpha" in out and "score" in out


@pytest.mark.parametrize("ref", ["nosuchthing", "last~9", "abc", "ffffffff"])
def test_unknown_reference_is_a_one_line_usage_error(ip, capsys, ref):
    _three_runs(ip)
    capsys.readouterr()
    result = run(ip, f"%exp_show {ref}")
    captured = capsys.readouterr()
    assert isinstance(result.error_in_exec, UsageError)
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: ")
    assert ref in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_exp_tag_and_exp_rm(ip, capsys):
    newest, middle, _ = _three_runs(ip)
    result = run(ip, "%exp_tag last best")
    assert result.success, result.error_in_exec
    assert "best" in capsys.readouterr().out
    assert nbexp.get("best").id == newest.id
    assert nbexp.get("last").tags == ("best",)
    assert nbexp.experiments().iloc[0]["tags"] == ["best"]

    result = run(ip, "%exp_rm last")
    assert result.success, result.error_in_exec
    assert newest.short_id in capsys.readouterr().out
    listed = nbexp.experiments()
    assert len(listed) == 2
    assert newest.id[:8] not in listed["id"].tolist()
    assert nbexp.get("last").id == middle.id
    with pytest.raises(nbexp.NbexpError):
        nbexp.get("best")
    with pytest.raises(nbexp.NbexpError):
        nbexp.get(newest.id)

    bad = run(ip, "%exp_tag last")
    assert isinstance(bad.error_in_exec, UsageError)
    bad = run(ip, "%exp_rm")
    assert isinstance(bad.error_in_exec, UsageError)


def test_an_augmented_assignment_reads_its_target_from_the_kernel(ip) -> None:
    """`arr += 1` reads the kernel's arr before rebinding it: arr is an input of the run."""
    assert run(ip, "import numpy as np\narr = np.zeros(3)").success
    assert run(ip, "%%experiment aug\narr += 1\ntotal = float(arr.sum())\n").success
    experiment = nbexp.get("aug")
    inputs = {item["name"] for item in experiment.data if item.get("kind") == "variable"}
    assert "arr" in inputs and experiment.metrics["total"] == 3.0
