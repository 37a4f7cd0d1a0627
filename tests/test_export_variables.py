"""The export checks the input variables its slice rebuilt (issue item 3).

The header lists each input variable's recorded content hash; after the kept cells run, the
script hashes each rebuilt frame, series or array the way nbexp does (without importing
nbexp) and stops in one line when one differs, naming the variable and the file the cells
read it from, unless `--no-check-data`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbexp
from nbexp import exporter, hashing
from nbexp.rerun import parse_metrics
from tests.conftest import run
from tests.test_export import assert_same_metrics, run_script

SESSION = [
    "import pandas as pd\nimport numpy as np",
    "source = 'data/x.csv'",
    "frame = pd.read_csv(source)",
    "weights = np.arange(3, dtype='float64')",
    "frame['w'] = weights",
    "%%experiment checked\nscale = 2\ntotal = float((frame['v'] * frame['w']).sum()) * scale",
]


@pytest.fixture
def fresh(ip: Any) -> Any:
    ip.history_manager.reset(new_session=True)
    ip.execution_count = 1
    return ip


def record(shell: Any, cells: list[str]) -> Any:
    for cell in cells:
        result = run(shell, cell)
        assert result.success, result.error_in_exec or result.error_before_exec
    return nbexp.get("last")


def test_a_changed_file_behind_a_rebuilt_variable_stops_the_script(
    fresh: Any, project: Path
) -> None:
    (project / "data").mkdir()
    (project / "data" / "x.csv").write_text("v\n1\n2\n3\n")
    experiment = record(fresh, SESSION)
    recorded = {item["name"]: item["hash"] for item in experiment.data}
    assert set(recorded) == {"frame"}
    script = exporter.write(experiment, project / "run.py")
    text = script.read_text()
    assert f"('frame', '{recorded['frame']}', ['data/x.csv'])" in text
    assert "import nbexp" not in text

    same = run_script(script, cwd=project)
    assert same.returncode == 0, same.stderr
    assert_same_metrics(parse_metrics(same.stdout), experiment.metrics)

    (project / "data" / "x.csv").write_text("v\n1\n2\n4\n")
    stopped = run_script(script, cwd=project)
    assert stopped.returncode == exporter.DATA_CHANGED_EXIT
    assert stopped.stdout == ""
    assert stopped.stderr == (
        "run.py: frame is not what the experiment read (it was rebuilt from data/x.csv, "
        "which changed); pass --no-check-data to run anyway\n"
    )
    anyway = run_script(script, "--no-check-data", cwd=project)
    assert anyway.returncode == 0, anyway.stderr
    assert_same_metrics(parse_metrics(anyway.stdout), {"total": (0 + 2 + 8) * 2.0})


def test_the_notebook_export_checks_them_too(fresh: Any, project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "x.csv").write_text("v\n1\n2\n3\n")
    experiment = record(fresh, SESSION)
    notebook = json.loads(exporter.render(experiment, "notebook"))
    sources = ["".join(cell["source"]) for cell in notebook["cells"]]
    assert any(s.startswith("if NBEXP_CHECK_DATA:\n    _nbexp_check_variables(") for s in sources)
    assert any("raise RuntimeError(problem" in s for s in sources)


def check(value: Any, recorded: str) -> int | None:
    """Run the script's check on `value` as a rebuilt variable; the exit code, if it stops."""
    plan = exporter.Plan(
        experiment=None,  # type: ignore[arg-type]
        params={},
        cells=[],
        body=exporter.Cell("", "", ""),
        files=[],
        metrics=[],
        history_total=0,
        variables=[("value", recorded, [])],
    )
    namespace: dict[str, Any] = {"value": value, "__name__": "checked"}
    exec(exporter._helpers(plan, notebook=False), namespace)  # the script's own helpers
    try:
        namespace["_nbexp_check_variables"](plan.variables)
    except SystemExit as stop:
        return int(stop.code or 0)
    return None


VALUES: list[Any] = [
    np.arange(12, dtype="int32").reshape(3, 4),
    np.arange(12, dtype="float64").reshape(3, 4).T,  # not contiguous
    np.array(["a", None, 3], dtype=object),
    np.array(["2024-01-01", "2024-02-01"], dtype="datetime64[ns]"),
    np.zeros((0, 3)),
    pd.Series([1.5, None, 3.0], name="s"),
    pd.Series(["x", "y", None]),
    pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.1, 0.2, None]}),
    pd.DataFrame({"cat": pd.Categorical(["u", "v", "u"]), "ts": pd.date_range("2024", periods=3)}),
    pd.DataFrame({"lists": [[1], [2, 3], []]}),
    pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])),
    pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")}, index=["r1", "r2", "r3"]),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_the_script_hashes_as_nbexp_does(value: Any) -> None:
    from nbexp import profiles

    entry = profiles.describe_variable("value", value)
    assert entry is not None
    expected = hashing.hash_array(value) if isinstance(value, np.ndarray) else None
    assert expected is None or entry["hash"] == expected
    assert check(value, entry["hash"]) is None
    assert check(value, "0" * 32) == exporter.DATA_CHANGED_EXIT


def test_a_variable_the_cells_did_not_rebuild_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert check(None, "0" * 32) == exporter.DATA_CHANGED_EXIT
    line = capsys.readouterr().err
    assert line.startswith(f"{Path(sys.argv[0]).name}: value is not what the experiment read")
