"""`%exp_export` / `nbexp.export` / `nbexp export` (SPEC §7): recorded sessions → scripts.

Each session below is recorded in the real IPython shell (cells go into its history), then
exported; the export is compared with a golden ("mirror") file under tests/golden/export/
after the volatile header lines (ids, times, paths, Python version) are normalised, and the
script is run in a fresh interpreter, where it must print the recorded metrics.

Regenerate the golden files after an intended change with

    NBEXP_UPDATE_GOLDEN=1 pytest tests/test_export.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import exporter
from nbexp.record import Experiment
from nbexp.rerun import agree, parse_metrics
from tests.conftest import run
from tests.test_cli import assert_user_error, nbexp_cli

GOLDEN = Path(__file__).parent / "golden" / "export"
UPDATE = os.environ.get("NBEXP_UPDATE_GOLDEN") == "1"

SESSIONS: dict[str, list[str]] = {
    # cells that define nothing the experiment uses are dropped, displays too
    "unused": [
        "import math",
        "unused = [1, 2, 3]\nprint(unused)",
        "base = 10",
        "def helper(x):\n    return math.sqrt(x) + base",
        "len(unused)",
        "%%experiment unused-dropped\nfactor = 2\nscore = helper(factor * base)",
    ],
    # a cell that changes a used object in place is kept; one that changes an unused one is not
    "mutation": [
        'data = {"a": 1}',
        'data["b"] = 2',
        "items = [1, 2]",
        "items.append(3)",
        "items",
        "other = []\nother.append(1)",
        "import random",
        "random.seed(0)",
        '%%experiment mutation\nscale = 3\ntotal = (sum(items) + data["b"]) * scale\n'
        "noise = random.random()",
    ],
    # history holds every execution: the latest binding before the experiment wins, and
    # re-executions that build on earlier ones are all kept
    "reexecuted": [
        "x = 1",
        "x = 2",
        "y = x * 10",
        "x = 5",
        "counter = 0",
        "counter += 1",
        "counter += 1",
        "print(x, y)",
        "%%experiment reexecuted\nweight = 0.5\nresult = (x + y + counter) * weight",
    ],
    # magics: translated where Python has an equivalent, else commented out
    "magics": [
        "%matplotlib inline\nimport math",
        "!echo setup",
        "%time base = math.pi",
        "%%time\nvalues = [base * i for i in range(4)]",
        "%load_ext nbexp\n%precision 3\nimport statistics",
        "%who",
        "%%experiment magics\ndigits = 4\n%time mean = statistics.mean(values)\n"
        "%timeit -n 1 -r 1 sum(values)\n!echo body\nscore = round(mean, digits)",
    ],
    # a param an earlier kept cell also binds is set again from the params block; nbexp.log
    # series, -m metrics from earlier cells and display() work in the script
    "rebound": [
        "import nbexp",
        "depth = 2; rows = [depth] * 3",
        "extra = 41",
        "%%experiment rebound -m extra\ndepth = 3\nfor step in range(3):\n"
        "    nbexp.log('loss', 1.0 / (step + 1))\ndisplay(rows)\nscore = sum(rows) * depth",
    ],
    # params of every literal type, -p overrides and injections
    "params": [
        "%%experiment params -p n=5 -p injected=7\n"
        "n = 3\n"
        "rate = 0.25\n"
        "label = 'it\\'s \"quoted\"'\n"
        "flag = True\n"
        "nothing = None\n"
        "big = 1e999\n"
        "small = -1e999\n"
        "layers = [64, 32, [1.5, -2]]\n"
        'config = {"depth": 4, "nested": {"on": False, "list": [1, "two", None]}}\n'
        "pair = (1, 'a')\n"
        "score = n * rate + len(layers) + config['depth'] + (injected if flag else 0)\n"
        "n_chars = len(label) + (nothing or 0) + (1 if big > small else 0) + len(pair)",
    ],
}


@pytest.fixture
def fresh(ip: Any) -> Any:
    """The shell with an empty history: only the session's cells are in it."""
    ip.history_manager.reset(new_session=True)
    ip.execution_count = 1
    return ip


def record_session(shell: Any, cells: list[str]) -> Experiment:
    for cell in cells:
        result = run(shell, cell)
        assert result.success, (cell, result.error_in_exec or result.error_before_exec)
    return nbexp.get("last")


def normalise(text: str, experiment: Experiment) -> str:
    """The export with what differs from run to run replaced by placeholders."""
    text = text.replace(experiment.id, "<id>").replace(experiment.short_id, "<short-id>")
    text = re.sub(
        r"(recorded:\s+)\S+ \S+ UTC, status (\S+), [\d.]+ s", r"\1<time>, status \2", text
    )
    cwd = experiment.env.get("cwd") or "<none>"
    text = text.replace(cwd, "<cwd>")
    text = re.sub(r"Python \d+\.\d+\.\d+\w*", "Python <version>", text)
    return re.sub(r" \d[\w.+-]* \(as recorded\)", " <version> (as recorded)", text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote the missing golden file {path}; review it and rerun")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from its golden file; NBEXP_UPDATE_GOLDEN=1 updates"


def run_script(path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


def assert_same_metrics(new: dict[str, Any] | None, recorded: dict[str, Any]) -> None:
    assert new is not None
    assert new.keys() == recorded.keys()
    assert all(agree(recorded[k], new[k]) for k in recorded), (recorded, new)


@pytest.mark.parametrize("session", sorted(SESSIONS))
def test_export_matches_golden_and_reproduces_the_metrics(
    fresh: Any, project: Path, session: str
) -> None:
    experiment = record_session(fresh, SESSIONS[session])
    if session == "params":  # nan cannot be typed as a literal; records from elsewhere hold it
        experiment = dataclasses.replace(
            experiment, params={**experiment.params, "tolerance": float("nan")}
        )
    script = exporter.to_script(experiment)
    check_golden(f"{session}.py", normalise(script, experiment))
    path = project / "run.py"
    path.write_text(script)
    completed = run_script(path, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)


def test_notebook_export_matches_golden(fresh: Any, project: Path) -> None:
    experiment = record_session(fresh, SESSIONS["magics"])
    text = exporter.render(experiment, "notebook")
    check_golden("magics.ipynb", normalise(text, experiment))
    notebook = json.loads(text)
    tagged = [
        cell for cell in notebook["cells"] if "parameters" in cell["metadata"].get("tags", [])
    ]
    assert len(tagged) == 1 and "digits = 4" in "".join(tagged[0]["source"])
    assert notebook["nbformat"] == 4


def test_params_are_overridable_on_the_command_line(fresh: Any, project: Path) -> None:
    experiment = record_session(fresh, SESSIONS["params"])
    path = nbexp.export("last", project / "run.py")
    assert path == project / "run.py"
    helped = run_script(path, "--help", cwd=project)
    assert helped.returncode == 0
    for name in ("--n", "--rate", "--label", "--flag", "--layers", "--config", "--injected"):
        assert name in helped.stdout
    completed = run_script(
        path, "--n", "10", "--flag", "false", "--layers", "[1]", "--config", '{"depth": 1}',
        cwd=project,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    metrics = parse_metrics(completed.stdout)
    assert metrics is not None
    assert metrics["score"] == 10 * 0.25 + 1 + 1 + 0
    assert experiment.metrics["score"] == 5 * 0.25 + 3 + 4 + 7
    bad = run_script(path, "--n", "ten", cwd=project)
    assert bad.returncode == 2 and "invalid int value: 'ten'" in bad.stderr


def test_the_data_check_stops_on_a_changed_file(fresh: Any, project: Path) -> None:
    (project / "data.txt").write_text("1\n2\n3\n")
    experiment = record_session(
        fresh,
        ["%%experiment reads\nwith open('data.txt') as handle:\n"
         "    total = sum(int(line) for line in handle)"],
    )  # fmt: skip
    recorded_hash = experiment.data[0]["hash"]
    script = exporter.write(experiment, project / "run.py")
    text = script.read_text()
    assert f"('data.txt', '{recorded_hash}')" in text
    assert "import xxhash" in text and "import nbexp" not in text
    assert_same_metrics(parse_metrics(run_script(script, cwd=project).stdout), {"total": 6})

    (project / "data.txt").write_text("1\n2\n4\n")
    from nbexp.hashing import hash_file

    stopped = run_script(script, cwd=project)
    assert stopped.returncode == 2
    assert stopped.stderr.count("\n") == 1
    assert recorded_hash in stopped.stderr and hash_file(project / "data.txt")[0] in stopped.stderr
    assert "data.txt" in stopped.stderr and "--no-check-data" in stopped.stderr
    anyway = run_script(script, "--no-check-data", cwd=project)
    assert_same_metrics(parse_metrics(anyway.stdout), {"total": 7})


def test_exp_export_magic_and_cli(fresh: Any, project: Path) -> None:
    record_session(fresh, SESSIONS["unused"])
    assert run(fresh, "%exp_export last -o run.py").success
    assert (project / "run.py").is_file()
    assert run(fresh, "%exp_export unused-dropped --format notebook").success
    assert (project / "unused-dropped.ipynb").is_file()

    written = nbexp_cli("export", "last", "-o", "cli.ipynb", cwd=project)
    assert written.code == 0, written.err
    assert json.loads((project / "cli.ipynb").read_text())["nbformat"] == 4
    printed = nbexp_cli("export", "last", cwd=project)
    assert printed.code == 0 and printed.out == (project / "run.py").read_text()


def test_bad_input_is_one_line(
    fresh: Any, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record_session(fresh, SESSIONS["unused"])
    (project / "run.py").write_text("mine\n")
    assert_user_error(nbexp_cli("export", "nosuchthing", cwd=project), "nosuchthing")
    exists = assert_user_error(nbexp_cli("export", "last", "-o", "run.py", cwd=project), "--force")
    assert "run.py" in exists
    assert (project / "run.py").read_text() == "mine\n"
    assert nbexp_cli("export", "last", "-o", "run.py", "--force", cwd=project).code == 0

    result = run(fresh, "%exp_export last -o run.py")
    assert not result.success
    assert "--force" in str(result.error_in_exec)
    with pytest.raises(nbexp.NbexpError, match="format notebook"):
        nbexp.export("last", project / "x.ipynb")


def test_an_experiment_without_history_says_what_cannot_be_exported(
    fresh: Any, project: Path
) -> None:
    fresh.user_ns["frame"] = [1, 2, 3]  # defined without a trace, as with history off
    experiment = record_session(fresh, ["%%experiment orphan\nsize = len(frame)"])
    assert experiment.code.history == ()
    message = assert_user_error(nbexp_cli("export", "orphan", cwd=project), "frame")
    assert "no earlier cells" in message

    self_contained = record_session(fresh, ["%%experiment alone\nk = 2\nsquare = k * k"])
    script = exporter.to_script(self_contained)
    assert "none of the 1 earlier cells defines anything" in script


def test_body_with_only_transformed_source_still_exports(project: Path) -> None:
    """A record whose cell does not translate: the transformed source is used instead."""
    from nbexp.record import Code, Outcome

    experiment = Experiment(
        id="0" * 32,
        name="transformed",
        created="2024-01-01T00:00:00+00:00",
        code=Code(
            cell="%%experiment transformed\nk = 3\n/print k\n",  # autocall: not plain Python
            source="k = 3\nget_ipython().run_line_magic('time', 'square = k * k')\nprint(k)\n",
        ),
        outcome=Outcome(status="ok", started="2024-01-01T00:00:00+00:00", duration=0.1),
        params={"k": 3},
        metrics={"square": 9},
    )
    script = exporter.to_script(experiment)
    assert "get_ipython" not in script and "\nsquare = k * k\n" in script
    path = project / "run.py"
    path.write_text(script)
    assert_same_metrics(parse_metrics(run_script(path, cwd=project).stdout), {"square": 9})


@pytest.mark.kernel
@pytest.mark.timeout(120)
def test_papermill_runs_the_notebook_with_a_parameter_override(fresh: Any, project: Path) -> None:
    papermill = pytest.importorskip("papermill")
    from tests.test_notebooks import _load_runner

    experiment = record_session(fresh, SESSIONS["magics"])
    source = exporter.write(experiment, project / "run.ipynb", "notebook")
    output = project / "out.ipynb"
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters={"digits": 1},
        km=_load_runner().kernel_manager(),
        kernel_name="python3",
        cwd=str(project),
        progress_bar=False,
    )
    cells = json.loads(output.read_text())["cells"]
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "digits = 1" in "".join(injected[0]["source"])
    printed = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    metrics = parse_metrics(printed)
    assert metrics == {"score": round(experiment.metrics["score"], 1)}
    assert experiment.metrics["score"] == round(experiment.metrics["score"], 4)


def test_params_json_cannot_keep_are_exported_as_the_body_wrote_them(
    fresh: Any, project: Path
) -> None:
    """Int dict keys, sets and tuples: the record's JSON turns them into strings and lists,
    but the script starts from the body's own literal (found on a public notebook)."""
    experiment = record_session(
        fresh,
        [
            "%%experiment keys\n"
            "weights = {0: 10, 1: 15}\nseeds = {1, 3}\npair = (2, 4)\n"
            "total = weights[0] + weights[1] + len(seeds) + pair[1]\n"
        ],
    )
    path = nbexp.export("last", project / "keys.py")
    completed = run_script(path, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)
    changed = run_script(path, "--weights", "{0: 1, 1: 1}", cwd=project)
    assert parse_metrics(changed.stdout) == {"total": 1 + 1 + 2 + 4}


def test_a_function_may_read_a_name_a_later_cell_binds(fresh: Any, project: Path) -> None:
    """Python looks a function's globals up when it is called: a cell defining a function
    before the cell that imports what it uses still exports (found on a public notebook)."""
    experiment = record_session(
        fresh,
        [
            "def total(values):\n    return float(np.sum(values))\n",
            "import numpy as np\n",
            "def a():\n    return b() + 1\ndef b():\n    return 1\n",
            "%%experiment late\ns = total(np.arange(4)) + a()\n",
        ],
    )
    path = nbexp.export("last", project / "late.py")
    completed = run_script(path, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)


def test_a_name_the_body_binds_to_two_literals_is_not_a_param(
    fresh: Any, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`strategy = {0: 10, ...}` for one sampler, then `strategy = {0: 25, ...}` for the next
    (a public gallery notebook): the export ran both samplers with the last dict, which the
    first could not take. Such a name is neither a param nor a metric, and -p refuses it."""
    experiment = record_session(
        fresh,
        [
            "%%experiment rebound\n"
            "strategy = {0: 10, 1: 20}\nfirst = strategy[0] + strategy[1]\n"
            "strategy = {0: 25, 1: 35}\nsecond = strategy[0] + strategy[1]\n"
            "n = 3\nn = 4\nsame = 1\nsame = 1\nscore = first * 100 + second + n + same\n"
        ],
    )
    assert "strategy" not in experiment.params and "n" not in experiment.params
    assert "n" not in experiment.metrics and experiment.params["same"] == 1
    assert experiment.metrics["score"] == 30 * 100 + 60 + 4 + 1
    path = nbexp.export("last", project / "rebound.py")
    completed = run_script(path, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)
    capsys.readouterr()
    run(fresh, "%%experiment -p n=7 rebound-again\nn = 3\nn = 4\nscore = n\n")
    captured = capsys.readouterr()
    assert "-p n: the body assigns n more than one value" in captured.out + captured.err
    assert nbexp.get("last").name == "rebound"


def test_a_logged_metric_is_not_an_earlier_variable_of_the_same_name(
    fresh: Any, project: Path
) -> None:
    """`loss` logged by the body is the metric; a `loss` an earlier cell left in the kernel
    (here from a failed experiment) is neither kept by the slice nor printed as the metric."""
    for cell in [
        "import nbexp",
        "loss = 0.5",
        "%%experiment logged\nfor step in range(3):\n    nbexp.log('loss', 1.0 / (step + 3))\n",
    ]:
        assert run(fresh, cell).success
    experiment = nbexp.get("last")
    assert experiment.metrics == {"loss": 0.2}
    script = exporter.write(experiment, project / "run.py")
    assert "loss = 0.5" not in script.read_text()
    completed = run_script(script, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), {"loss": 0.2})


def test_a_session_with_postponed_annotations_exports_a_script_that_runs(
    fresh: Any, project: Path
) -> None:
    """`from __future__ import annotations` in a notebook's first cell: later cells may
    annotate with names never defined; the script must turn it on at its top (a future
    import anywhere else is a SyntaxError) and not look for those names in the history."""
    experiment = record_session(
        fresh,
        [
            "from __future__ import annotations\nimport math",
            "def scale(x: Tensor) -> Tensor:\n    return x * math.pi",
            "%%experiment future\nscore = scale(2)",
        ],
    )
    path = nbexp.export("last", project / "future.py")
    assert path.read_text().count("\nfrom __future__ import annotations") == 1
    completed = run_script(path, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)
    notebook = nbexp.export("last", project / "future.ipynb", format="notebook")
    setup = json.loads(notebook.read_text())["cells"][2]["source"]
    assert "".join(setup).startswith("from __future__ import annotations")


def test_a_cell_that_awaits_at_its_top_level_exports_a_script_that_runs(
    fresh: Any, project: Path
) -> None:
    """IPython runs `x = await fetch()` in a cell; a script cannot: the cell becomes a
    coroutine on one event loop, binding the same globals (a multi-line string unchanged)."""
    experiment = record_session(
        fresh,
        [
            "import asyncio\nasync def fetch(n):\n    await asyncio.sleep(0)\n    return n",
            'rows = await fetch(4)\nquery = """select\n  *"""',
            "%%experiment awaited\nsize = rows * 10 + len(query)",
        ],
    )
    assert experiment.metrics == {"size": 50}
    path = nbexp.export("last", project / "awaited.py")
    completed = run_script(path, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)
