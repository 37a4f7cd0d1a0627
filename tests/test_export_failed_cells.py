"""Exports of sessions where earlier cells raised (issue item 1).

The kernel ran a failed cell up to the statement that raised and went on; the export must
run what the kernel ran, not the whole cell, or the script dies where the notebook did not.
Sessions are recorded in the real IPython shell and the export is run as `python run.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import exporter
from nbexp.record import Experiment
from nbexp.rerun import parse_metrics
from tests.conftest import run
from tests.test_cli import nbexp_cli
from tests.test_export import assert_same_metrics, run_script
from tests.test_store import schema_errors


@pytest.fixture
def fresh(ip: Any) -> Any:
    """The shell with an empty history: only the session's cells are in it."""
    ip.history_manager.reset(new_session=True)
    ip.execution_count = 1
    return ip


FAILING_SESSION = [
    "import math",
    # a missing optional package: `base` was bound before it, `extra` never was
    "import json\nbase = 2\nimport nbexp_no_such_graphviz\nextra = 99",
    # a download that failed half-way through a loop: what the loop appended stays
    "data = [1, 2, 3]\nfor i in range(5):\n    data.append(i)\n    if i == 2:\n"
    "        raise ConnectionError('download of part 3 failed')\ndata.append(100)",
    # a syntax error: nothing of it ran
    "data = (",
    # an API that changed: the statement binds nothing the experiment uses
    "lookup = {'a': 1}\nold = lookup['renamed_key']\nlookup['b'] = 2",
    "%%experiment failed-cells\nscore = sum(data) * base + math.floor(1.5) + len(lookup)",
]


def record(shell: Any, cells: list[str]) -> tuple[Experiment, list[bool]]:
    outcomes = [run(shell, cell).success for cell in cells]
    return nbexp.get("last"), outcomes


def test_the_script_runs_what_the_kernel_ran(fresh: Any, project: Path) -> None:
    experiment, outcomes = record(fresh, FAILING_SESSION)
    assert outcomes == [True, False, False, False, False, True]
    assert experiment.metrics == {"score": 9 * 2 + 1 + 1}
    failed = experiment.code.failed
    assert failed["2"] == {
        "type": "ModuleNotFoundError",
        "error": "ModuleNotFoundError: No module named 'nbexp_no_such_graphviz'",
        "line": 3,
        "ran": True,
    }
    assert failed["3"]["type"] == "ConnectionError" and failed["3"]["line"] == 5
    assert failed["4"]["ran"] is False and failed["4"]["type"] == "SyntaxError"
    assert failed["5"]["type"] == "KeyError" and failed["5"]["line"] == 2
    assert "1" not in failed and "6" not in failed

    script = exporter.write(experiment, project / "run.py")
    text = script.read_text()
    assert "extra = 99" not in text and "data.append(100)" not in text
    assert "data = (" not in text
    assert "except ConnectionError:  # nbexp: in the notebook this raised" in text
    assert "# import nbexp_no_such_graphviz" in text  # binds nothing used later: commented out
    assert "# old = lookup['renamed_key']" in text
    assert "failed:      In [3] raised ConnectionError: download of part 3 failed" in text
    completed = run_script(script, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)


def test_a_failed_statement_whose_binding_is_used_is_guarded(fresh: Any, project: Path) -> None:
    """`cache = load()` raised, but a later `cache = cache or {}` reads the earlier value:
    the statement stays, inside a try that reproduces the kernel's state."""
    experiment, outcomes = record(
        fresh,
        [
            "cache = None",
            "def load():\n    raise FileNotFoundError('cache.pkl')\n\ncache = load()\nprint('x')",
            "cache = cache or {'hits': 3}",
            "%%experiment guarded\nhits = cache['hits']",
        ],
    )
    assert outcomes == [True, False, True, True]
    text = exporter.to_script(experiment)
    assert "try:\n    cache = load()\nexcept FileNotFoundError:" in text
    assert "print('x')" not in text
    path = project / "run.py"
    path.write_text(text)
    completed = run_script(path, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), {"hits": 3})


def test_the_record_keeps_the_failures_for_another_process(fresh: Any, project: Path) -> None:
    experiment, _ = record(fresh, FAILING_SESSION)
    body = json.loads(
        next((project / ".nbexp" / "records").glob(f"*/{experiment.id}.json")).read_text()
    )
    assert [error for error in schema_errors(body) if error.startswith("['code'")] == []
    assert body["code"]["failed"]["2"]["line"] == 3
    exported = nbexp_cli("export", experiment.short_id, "-o", "cli.py", cwd=project)
    assert exported.code == 0, exported.err
    completed = run_script(project / "cli.py", cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), experiment.metrics)


def test_records_without_failures_are_unchanged(fresh: Any, project: Path) -> None:
    experiment, _ = record(fresh, ["k = 2", "%%experiment clean\nsquare = k * k"])
    assert experiment.code.failed == {}
    assert "failed" not in experiment.to_dict()["code"]  # old records, same bytes
    old = experiment.to_dict()
    assert Experiment.from_dict(old).code.failed == {}


def test_error_messages_are_redacted(fresh: Any, project: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    experiment, _ = record(
        fresh,
        [
            f"api_token = {secret!r}",
            "raise PermissionError('rejected ' + api_token)",
            "%%experiment redacted\nsize = len(api_token)",
        ],
    )
    assert "2" in experiment.code.failed
    assert secret not in json.dumps(experiment.to_dict())


def test_a_cell_edited_after_failing_is_not_mistaken_for_it(fresh: Any, project: Path) -> None:
    """History reset: numbers restart; a failure noted for an older cell text is ignored."""
    run(fresh, "import nbexp_no_such_module_either")
    fresh.history_manager.reset(new_session=True)
    fresh.execution_count = 1
    experiment, outcomes = record(fresh, ["value = 4", "%%experiment edited\ntwice = value * 2"])
    assert outcomes == [True, True]
    assert experiment.code.failed == {}


def test_a_failed_experiment_cell_exports_what_its_body_ran(fresh: Any, project: Path) -> None:
    """An `%%experiment` cell whose body raised: the body's statements before the error ran
    (and a later experiment reads what they bound); the one that raised and the rest did not."""
    experiment, outcomes = record(
        fresh,
        [
            "%%experiment broken\nloss = 0.25 * 2\nraise ValueError('boom')\nloss = 7.0\n",
            "%%experiment after\nscore = loss + 1\n",
        ],
    )
    assert outcomes == [False, True]
    assert experiment.code.failed["1"] == {
        "type": "ValueError",
        "error": "ValueError: boom",
        "line": 3,  # the cell's line, the magic's own line counted
        "ran": True,
    }
    script = exporter.write(experiment, project / "run.py")
    assert "loss = 7.0" not in script.read_text()
    completed = run_script(script, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), {"score": 1.5})


def test_a_failed_cell_ending_in_a_newline_is_known(fresh: Any, project: Path) -> None:
    """IPython keeps a cell without its final newlines; the failure must still be found."""
    experiment, outcomes = record(
        fresh,
        [
            "part = 3\nimport nbexp_no_such_module_at_all\npart = 4\n\n",
            "%%experiment newline\ntotal = part * 2\n",
        ],
    )
    assert outcomes == [False, True]
    assert experiment.code.failed["1"]["line"] == 2
    completed = run_script(exporter.write(experiment, project / "run.py"), cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), {"total": 6})
