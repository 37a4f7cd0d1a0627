"""`%%experiment` through a real IPython shell: running the body, failures, params, metrics,
expectations, the summary line, argument errors and the magic's help."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
from IPython.core.error import UsageError

import nbexp
from tests.conftest import run


def cell(line: str, body: str) -> str:
    """A `%%experiment` cell with `line` as its arguments and a dedented body."""
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


def assert_one_line_usage_error(result, captured, *needles: str) -> None:
    """The cell failed with a UsageError shown as one line, without a traceback."""
    assert result.success is False
    assert isinstance(result.error_in_exec, UsageError)
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err_lines) == 1, captured.err
    assert err_lines[0].startswith("UsageError: ")
    assert "Traceback" not in captured.err + captured.out
    assert "nbexp/" not in captured.err + captured.out
    for needle in needles:
        assert needle in err_lines[0]


# -- the body runs like an ordinary cell ------------------------------------------------------


def test_body_prints_returns_its_last_value_and_defines_variables(ip, capsys):
    body = """
        x = 20
        print("hello from the body")
        y = x + 1
        y * 2
    """
    result = run(ip, cell("", body))
    out = capsys.readouterr().out
    assert result.success, result.error_in_exec
    assert "hello from the body" in out
    assert result.result == 42
    assert ip.user_ns["x"] == 20 and ip.user_ns["y"] == 21
    # the record keeps the printed output too
    assert "hello from the body" in nbexp.get("last").outcome.stdout


def test_body_uses_names_defined_by_earlier_cells_and_ipython_syntax(ip):
    run(ip, "base = 5\ndef double(v):\n    return 2 * v")
    body = """
        %time doubled = double(base)
        doubled
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    assert result.result == 10
    assert ip.user_ns["doubled"] == 10


def test_body_without_trailing_expression_has_no_result(ip):
    result = run(ip, cell("", "z = 3"))
    assert result.success
    assert result.result is None
    assert ip.user_ns["z"] == 3


def test_trailing_semicolon_hides_the_value_like_an_ordinary_cell(ip, capsys):
    result = run(ip, cell("quiet", "v = 7\nv * 6;"))
    out = capsys.readouterr().out
    assert result.success
    assert result.result is None
    assert "Out[" not in out
    assert ip.user_ns["v"] == 7


# -- an exception fails the cell and is recorded -----------------------------------------------


def test_exception_fails_the_cell_and_is_recorded_as_failed(ip, capsys):
    body = """
        lr = 0.1
        before = 41 + 1
        raise ValueError("the data is bad")
        after = 1
    """
    result = run(ip, cell("broken", body))
    captured = capsys.readouterr()
    assert result.success is False
    assert isinstance(result.error_in_exec, ValueError)
    assert str(result.error_in_exec) == "the data is bad"
    # the user sees their traceback, pointing at their line in this cell
    shown = captured.out + captured.err
    assert "ValueError" in shown
    assert 'raise ValueError("the data is bad")' in shown
    cells_named = set(re.findall(r"Cell In\[(\d+)\]", shown))
    assert cells_named == {str(result.execution_count)}
    # variables assigned before the error are in the kernel; the rest never ran
    assert ip.user_ns["before"] == 42
    assert "after" not in ip.user_ns

    experiment = nbexp.get("last")
    assert experiment.name == "broken"
    assert experiment.status == "failed"
    error = experiment.outcome.error
    assert error["type"] == "ValueError"
    assert error["message"] == "the data is bad"
    assert "Traceback" in error["traceback"]
    assert 'raise ValueError("the data is bad")' in error["traceback"]
    assert error["traceback"].rstrip().endswith("ValueError: the data is bad")
    assert "nbexp/recorder.py" not in error["traceback"]  # the user's frames, not nbexp's
    assert experiment.params["lr"] == 0.1
    assert experiment.metrics == {"before": 42}
    listed = nbexp.experiments()
    assert list(listed["status"]) == ["failed"]


def test_a_failed_import_shows_only_the_users_code(ip, capsys):
    result = run(ip, cell("", "import pandas\nimport no_such_module_xyz"))
    captured = capsys.readouterr()
    assert isinstance(result.error_in_exec, ModuleNotFoundError)
    shown = captured.out + captured.err
    assert "no_such_module_xyz" in shown
    assert "nbexp/watcher.py" not in shown and "nbexp/recorder.py" not in shown
    recorded = nbexp.get("last").outcome.error["traceback"]
    assert "import no_such_module_xyz" in recorded
    assert "nbexp/" not in recorded


def test_syntax_error_in_the_body_fails_the_cell(ip):
    result = run(ip, cell("", "x = (1,\ny = 2"))
    assert result.success is False
    assert isinstance(result.error_in_exec, SyntaxError)
    assert "y" not in ip.user_ns
    assert nbexp.get("last").status == "failed"


# -- params ------------------------------------------------------------------------------------


def test_params_are_top_level_literal_assignments(ip):
    body = """
        lr = -0.5
        scale = -3
        layers = [64, 32]
        options = {"criterion": "gini", "weights": [1, 2]}
        loss = "l2"
        init = None
        depth: int = 5
        enabled = True
        n_layers = len(layers)
        doubled = lr * 2
        name_upper = loss.upper()
        if depth > 1:
            nested = 0.25
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    params = nbexp.get("last").params
    assert params == {
        "lr": -0.5,
        "scale": -3,
        "layers": [64, 32],
        "options": {"criterion": "gini", "weights": [1, 2]},
        "loss": "l2",
        "init": None,
        "depth": 5,
        "enabled": True,
    }
    assert nbexp.experiments()["params.lr"].tolist() == [-0.5]


def test_p_overrides_the_assignment_so_the_body_runs_with_it(ip):
    body = """
        lr = 0.1
        step = lr * 2
        print("training with", lr)
        lr
    """
    result = run(ip, cell("tuned -p lr=0.5", body))
    assert result.success, result.error_in_exec
    assert result.result == 0.5
    assert ip.user_ns["lr"] == 0.5
    assert ip.user_ns["step"] == 1.0
    experiment = nbexp.get("tuned")
    assert experiment.params == {"lr": 0.5}
    assert experiment.metrics == {"step": 1.0}
    assert "training with 0.5" in experiment.outcome.stdout
    # what ran has the override; the cell as typed is kept too
    assert "lr = 0.5" in experiment.code.source
    assert "lr = 0.1" not in experiment.code.source
    assert "lr = 0.1" in experiment.code.cell
    assert "-p lr=0.5" in experiment.code.cell


def test_p_overrides_multiline_literals_strings_and_several_keys(ip):
    body = """
        layers = [
            64,
            32,
        ]
        loss = "l2"
        depth = 3
        summary = f"{layers}-{loss}-{depth}"
    """
    result = run(ip, cell("""-p "layers=[8, 4]" -p "loss='l1'" -p depth=None""", body))
    assert result.success, result.error_in_exec
    assert ip.user_ns["summary"] == "[8, 4]-l1-None"
    assert nbexp.get("last").params == {"layers": [8, 4], "loss": "l1", "depth": None}


def test_p_overrides_an_annotated_assignment(ip):
    result = run(ip, cell("-p depth=7", "depth: int = 5\nleaves = 2 ** depth"))
    assert result.success, result.error_in_exec
    assert ip.user_ns["leaves"] == 128
    assert nbexp.get("last").params == {"depth": 7}


def test_p_injects_a_param_the_body_does_not_assign(ip):
    result = run(ip, cell("-p new=3", "total = new + 1"))
    assert result.success, result.error_in_exec
    assert ip.user_ns["new"] == 3
    assert ip.user_ns["total"] == 4
    experiment = nbexp.get("last")
    assert experiment.params == {"new": 3}
    assert experiment.metrics == {"total": 4}


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ("-p lr=foo", ["-p lr=foo", "not a Python literal"]),
        ("-p lr", ["-p lr", "KEY=VALUE"]),
        ("-p 1x=2", ["KEY=VALUE"]),
        ('--expect "acc >="', ["--expect", "acc >="]),
        ("-d no/such/folder", ["no/such/folder"]),
        ("--bogus", ["--bogus"]),
        ('"unclosed', ["cannot parse"]),
    ],
)
def test_a_mistake_on_the_line_is_one_line_and_the_body_does_not_run(ip, capsys, line, needles):
    result = run(ip, cell(line, "lr = 0.1\nbody_ran = True"))
    captured = capsys.readouterr()
    assert_one_line_usage_error(result, captured, *needles)
    assert "body_ran" not in ip.user_ns
    assert "lr" not in ip.user_ns
    assert nbexp.experiments().empty


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_are_numbers_assigned_at_top_level_that_are_not_params(ip):
    body = """
        import numpy as np
        epochs = 3
        acc = np.float64(0.875)
        n_rows = np.int64(1200)
        f1 = 2 * 0.4 * 0.5 / (0.4 + 0.5)
        for epoch in range(epochs):
            running = epoch * 0.5
        converged = acc > 0.5
        flag = np.bool_(True)
        label = "done"
        scores = [0.1, 0.2]
        def helper():
            inside = 1.5
            return inside
        helper()
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    experiment = nbexp.get("last")
    assert experiment.params == {"epochs": 3, "label": "done", "scores": [0.1, 0.2]}
    metrics = experiment.metrics
    assert metrics == {
        "acc": 0.875,
        "n_rows": 1200,
        "f1": pytest.approx(2 * 0.4 * 0.5 / 0.9),
        "running": 1.0,
    }
    assert type(metrics["acc"]) is float and type(metrics["n_rows"]) is int
    row = nbexp.experiments().iloc[0]
    assert row["metrics.acc"] == 0.875


def test_nbexp_log_records_series_and_the_last_value_as_a_metric(ip):
    body = """
        import nbexp
        for epoch in range(4):
            nbexp.log("loss", 1.0 / (epoch + 1))
            nbexp.log("val_acc", 0.5 + epoch / 10, step=10 * epoch)
    """
    result = run(ip, cell("", body))
    assert result.success, result.error_in_exec
    experiment = nbexp.get("last")
    assert experiment.series["loss"] == [[0, 1.0], [1, 0.5], [2, pytest.approx(1 / 3)], [3, 0.25]]
    assert [step for step, _ in experiment.series["val_acc"]] == [0, 10, 20, 30]
    assert experiment.metrics["loss"] == 0.25
    assert experiment.metrics["val_acc"] == pytest.approx(0.8)


def test_nbexp_log_outside_an_experiment_is_a_clear_error(ip):
    with pytest.raises(nbexp.NbexpError, match="%%experiment"):
        nbexp.log("loss", 0.1)
    result = run(ip, "import nbexp\nnbexp.log('loss', 0.1)")
    assert result.success is False
    assert isinstance(result.error_in_exec, nbexp.NbexpError)
    assert "%%experiment" in str(result.error_in_exec)


def test_nbexp_log_rejects_a_non_number_and_fails_the_cell(ip):
    result = run(ip, cell("", "import nbexp\nnbexp.log('loss', 'high')"))
    assert result.success is False
    assert isinstance(result.error_in_exec, nbexp.NbexpError)
    assert nbexp.get("last").status == "failed"


def test_m_names_extra_metrics_of_any_json_able_value(ip):
    body = """
        import numpy as np
        report = dict(f1=0.8, classes=["a", "b"])
        best_label = "cat".upper()
        matrix = np.eye(2)
    """
    result = run(ip, cell("-m report -m best_label -m matrix", body))
    assert result.success, result.error_in_exec
    metrics = nbexp.get("last").metrics
    assert metrics["report"] == {"f1": 0.8, "classes": ["a", "b"]}
    assert metrics["best_label"] == "CAT"
    assert metrics["matrix"] == [[1.0, 0.0], [0.0, 1.0]]


def test_non_finite_metrics_survive_the_round_trip(ip):
    result = run(ip, cell("", "import math\nloss = math.inf\ngap = float('nan')"))
    assert result.success
    metrics = nbexp.get("last").metrics
    assert metrics["loss"] == float("inf")
    assert np.isnan(metrics["gap"])


# -- expectations ------------------------------------------------------------------------------


def test_false_expectation_marks_the_record_and_is_shown_loudly(ip, capsys):
    result = run(ip, cell('--expect "acc >= 0.9" --expect "acc > 0.1"', "acc = 0.5 + 0.25"))
    captured = capsys.readouterr()
    assert result.success  # the body itself ran fine
    experiment = nbexp.get("last")
    assert experiment.status == "expectation-failed"
    loud = [line for line in captured.err.splitlines() if "EXPECTATION FAILED" in line]
    assert len(loud) == 1
    assert "acc >= 0.9" in loud[0]
    assert "0.75" in loud[0]
    assert "acc > 0.1" not in captured.err
    passed = {item["expr"]: item["passed"] for item in experiment.expectations}
    assert passed == {"acc >= 0.9": False, "acc > 0.1": True}


def test_true_expectation_leaves_the_run_ok(ip, capsys):
    result = run(ip, cell('--expect "acc >= 0.9"', "acc = 0.5 + 0.45"))
    captured = capsys.readouterr()
    assert result.success
    assert nbexp.get("last").status == "ok"
    assert "EXPECTATION" not in captured.err


def test_expectation_that_cannot_be_evaluated_fails_loudly(ip, capsys):
    result = run(ip, cell('--expect "f1 >= 0.9"', "acc = 0.95 + 0.0"))
    captured = capsys.readouterr()
    assert result.success
    assert nbexp.get("last").status == "expectation-failed"
    assert "f1 >= 0.9" in captured.err and "NameError" in captured.err


# -- the summary line, the name, tags and note ---------------------------------------------


def test_one_summary_line_names_the_experiment_and_its_short_id(ip, capsys):
    body = """
        depth = 4
        acc = 0.5 + 0.4
    """
    result = run(ip, cell("rf-baseline -t baseline --note 'first try'", body))
    out = capsys.readouterr().out
    assert result.success
    experiment = nbexp.get("last")
    assert len(experiment.short_id) == 8 and experiment.id.startswith(experiment.short_id)
    summary = [line for line in out.splitlines() if "rf-baseline" in line]
    assert len(summary) == 1
    assert f"rf-baseline ({experiment.short_id})" in summary[0]
    assert "1 param" in summary[0] and "1 metric" in summary[0]
    assert experiment.tags == ("baseline",)
    assert experiment.note == "first try"


def test_unnamed_runs_get_distinct_generated_names(ip, capsys):
    run(ip, cell("", "a = 1 + 1"))
    run(ip, cell("", "a = 2 + 2"))
    names = nbexp.experiments()["name"].tolist()
    assert len(set(names)) == 2
    out = capsys.readouterr().out
    for name in names:
        assert sum(f"recorded {name} (" in line for line in out.splitlines()) == 1


def test_a_failed_run_still_says_it_was_recorded_and_as_failed(ip, capsys):
    run(ip, cell("oops", "raise KeyError('k')"))
    captured = capsys.readouterr()
    experiment = nbexp.get("oops")
    assert experiment.status == "failed"
    assert "KeyError" in captured.out + captured.err
    tag = f"oops ({experiment.short_id})"
    summary = [line for line in captured.out.splitlines() if tag in line]
    assert len(summary) == 1 and "failed" in summary[0]


def test_no_state_skips_the_variables_but_keeps_the_rest(ip):
    result = run(ip, cell("--no-state", "lr = 0.1\nacc = lr * 9"))
    assert result.success
    experiment = nbexp.get("last")
    assert experiment.variables == {}
    assert experiment.params == {"lr": 0.1}
    assert experiment.metrics == {"acc": pytest.approx(0.9)}
    run(ip, cell("", "lr = 0.1\nacc = lr * 9"))
    assert {"lr", "acc"} <= set(nbexp.get("last").variables)


# -- help ------------------------------------------------------------------------------------


def test_the_magic_help_mentions_its_flags(ip):
    doc = ip.find_cell_magic("experiment").__doc__
    for flag in ("-p", "KEY=VALUE", "-d", "-m", "-t", "--note", "--expect", "--no-state", "name"):
        assert flag in doc, flag


def test_a_failed_run_does_not_report_metrics_it_never_computed(ip):
    run(ip, "score = 0.9")
    result = run(
        ip, "%%experiment broken\nloss = 0.25 * 2\nraise ValueError('boom')\nscore = 0.1\n"
    )
    assert not result.success
    metrics = nbexp.get("broken").metrics
    assert metrics == {"loss": 0.5}  # `score` kept its old 0.9: that is not this run's metric


def test_a_loop_variable_is_not_an_input_of_the_cell(ip):
    run(ip, "import numpy as np\nrow = np.zeros(3)\nrows = np.ones((2, 3))")
    assert run(ip, "%%experiment loop\nfor row in rows:\n    total = float(row.sum())\n").success
    inputs = {item["name"] for item in nbexp.get("loop").data if item["kind"] == "variable"}
    assert inputs == {"rows"}


def test_a_misspelled_metric_name_is_reported(ip, capsys):
    assert run(ip, "%%experiment -m acuracy\naccuracy = 0.5 + 0.4").success
    assert "no variable 'acuracy'" in capsys.readouterr().err
    assert "acuracy" not in nbexp.get("last").metrics


@pytest.mark.parametrize(
    "cell",
    [
        "lr = 0.01\nacc = 0.9\n",  # plain Python: left as it is, without IPython's tokenizer
        "lr = 0.01\nacc = 0.9",  # no final newline
        "x = 1\r\ny = 2\r\n",
        "ls\n",  # one line: IPython may make it a magic or an autocall
        "x = 1\nfiles = !ls\n",
        "x = 1\n%time y = 2\n",
        "x = 1\nlen?\n",
        "x = 1\n,print a b\n",
        "x = 1\n/print 2\n",
        ">>> x = 1\n>>> y = 2\n",
        "In [1]: x = 1\n   ...: y = 2\n",
        "  x = 1\n  y = 2\n",
        "\n\nx = 1\ny = 2\n",
        "if x:\n    y = 1\n  z = 2\n",  # IPython's tokenizer refuses it: so must we
        "def f(:\n    pass\n",
    ],
)
def test_the_body_is_the_python_ipython_makes_of_it(ip, cell) -> None:
    """The body runs as IPython transforms it; plain Python skips the transformation only
    where IPython would leave the cell as it is."""
    from nbexp.recorder import _transformed

    try:
        expected = ip.transform_cell(cell)
    except Exception as error:  # any refusal: the same one
        with pytest.raises(type(error)):
            _transformed(ip, cell)
        return
    assert _transformed(ip, cell) == expected


def test_an_unnamed_experiment_is_numbered_after_the_names_with_its_stem(ip):
    """Without a name a run is `exp-N` (the notebook's stem outside a plain shell), N one
    more than the names that start with `exp-`; names that only look alike (another case,
    another separator, a longer word) do not count."""
    for name in ("exp-1", "EXP-7", "exp_z", "expert"):
        assert run(ip, cell(name, "x = 1")).success
    assert run(ip, cell("", "x = 2")).success
    assert nbexp.get("last").name == "exp-2"
    assert run(ip, cell("", "x = 3")).success
    assert nbexp.get("last").name == "exp-3"


def test_a_body_that_awaits_at_its_top_level_is_refused_in_one_line(ip, capsys):
    """IPython awaits in a plain cell, not inside a cell magic's call (nor in %%time):
    the body must not half-run into a SyntaxError traceback; it says what to do instead."""
    run(ip, "import asyncio\nasync def fetch():\n    return 3")
    capsys.readouterr()
    result = run(ip, cell("awaiting", "before = 1\nrows = await fetch()\n"))
    assert_one_line_usage_error(
        result, capsys.readouterr(), "awaits at its top level (its line 2)", "a cell before it"
    )
    assert "before" not in ip.user_ns and "rows" not in ip.user_ns
    assert len(nbexp.experiments()) == 0
    assert run(ip, "rows = await fetch()").success  # the way the message says works
    assert run(ip, cell("awaited", "total = rows * 2\n")).success
    assert nbexp.get("awaited").metrics == {"total": 6}
