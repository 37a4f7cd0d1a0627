"""`%%experiment --sweep`: one record per grid point, linked by a sweep id, through a real shell."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from IPython.core.error import UsageError

from nbexp.store import open_store
from nbexp.sweep import combination_line, combinations, parse_grid
from tests.conftest import run
from tests.test_magic_run import assert_one_line_usage_error


def cell(line: str, body: str) -> str:
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


def records(names_prefix: str) -> list:
    store = open_store()
    rows = sorted(store.rows(), key=lambda row: row["created"])
    return [store.load(row["id"]) for row in rows if row["name"].startswith(names_prefix)]


def test_grid_product_one_record_each_linked_by_a_sweep_id(ip, capfd) -> None:
    result = run(
        ip,
        cell(
            "grid --sweep depth=1,2,3 --sweep lr=0.1,0.01 -t swept",
            """
            depth = 5
            lr = 1.0
            score = depth * lr
            """,
        ),
    )
    assert result.success, result.error_in_exec
    out = capfd.readouterr().out
    experiments = records("grid-")
    assert [e.name for e in experiments] == [f"grid-{k}" for k in range(1, 7)]
    expected = [(d, lr) for d in (1, 2, 3) for lr in (0.1, 0.01)]
    assert [(e.params["depth"], e.params["lr"]) for e in experiments] == expected
    assert [e.metrics["score"] for e in experiments] == pytest.approx(
        [d * lr for d, lr in expected]
    )
    sweep_ids = {e.links["sweep"] for e in experiments}
    assert len(sweep_ids) == 1
    assert all(e.tags == ("swept",) for e in experiments)
    sweep_id = sweep_ids.pop()
    assert {row["sweep"] for row in open_store().rows()} == {sweep_id}
    # the recorded cell re-runs exactly its own combination
    assert experiments[3].code.cell.splitlines()[0] == (
        "%%experiment grid-4 -t swept -p depth=2 -p lr=0.01"
    )
    # progress: a line per combination, then the summary line of each run
    assert out.count(f"▶ sweep {sweep_id} [") == 6
    assert "[6/6] grid-6: depth=3, lr=0.01" in out
    assert out.count("✓ recorded grid-") == 6
    # the cell's value is the sweep's table, in the order the runs were made
    table = result.result
    assert isinstance(table, pd.DataFrame)
    assert list(table["name"]) == [f"grid-{k}" for k in range(1, 7)]
    assert list(table["params.depth"]) == [d for d, _ in expected]


def test_a_failing_combination_is_recorded_as_failed_and_the_sweep_goes_on(ip, capfd) -> None:
    result = run(
        ip,
        cell(
            "fragile --sweep depth=1,2,3",
            """
            depth = 0
            if depth == 2:
                raise ValueError("depth 2 is cursed")
            score = depth * 10
            """,
        ),
    )
    assert result.success  # the sweep as a whole ran: two of three combinations finished
    err = capfd.readouterr().err
    assert "fragile-2 failed: ValueError: depth 2 is cursed" in err
    experiments = records("fragile-")
    assert [e.status for e in experiments] == ["ok", "failed", "ok"]
    assert experiments[1].outcome.error["type"] == "ValueError"
    assert [e.metrics.get("score") for e in experiments] == [10, None, 30]
    assert len({e.links["sweep"] for e in experiments}) == 1


def test_when_every_combination_fails_the_cell_fails(ip, capfd) -> None:
    result = run(ip, cell("doomed --sweep n=1,2", "raise RuntimeError(f'no {n}')"))
    assert isinstance(result.error_in_exec, RuntimeError)
    assert [e.status for e in records("doomed-")] == ["failed", "failed"]


def test_unnamed_sweeps_and_strings_and_expectations(ip, capfd) -> None:
    result = run(
        ip,
        cell(
            "--sweep loss=gini,'log loss' --expect \"acc > 0.5\"",
            """
            loss = "l2"
            acc = 0.9 if loss == "gini" else 0.1
            """,
        ),
    )
    assert result.success
    store = open_store()
    rows = sorted(store.rows(), key=lambda row: row["created"])
    assert [row["params"]["loss"] for row in rows] == ["gini", "log loss"]
    assert [row["status"] for row in rows] == ["ok", "expectation-failed"]
    sweep_id = rows[0]["sweep"]
    assert [row["name"] for row in rows] == [f"sweep-{sweep_id}-1", f"sweep-{sweep_id}-2"]
    assert "EXPECTATION FAILED" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("--sweep depth", "expected KEY=V1,V2"),
        ("--sweep depth=", "no values"),
        ("--sweep 2x=1,2", "expected KEY=V1,V2"),
        ("--sweep depth=1,2 --sweep depth=3", "given twice"),
        ("--sweep depth=1,1", "repeated"),
        ("-p depth=3 --sweep depth=1,2", "both swept and set with -p"),
    ],
)
def test_bad_sweep_syntax_is_a_one_line_usage_error(ip, capfd, line: str, needle: str) -> None:
    capfd.readouterr()
    result = run(ip, cell(line, "depth = 1\nscore = depth"))
    assert isinstance(result.error_in_exec, UsageError)
    assert_one_line_usage_error(result, capfd.readouterr(), needle)
    assert open_store().rows() == []  # nothing ran


def test_grid_parsing_and_lines() -> None:
    grid = parse_grid(["a=1,2.5,-3", "b=gini,'log loss',None", "c=[1, 2],[3]", "d=rf-v1,rf-v2"])
    assert grid == {
        "a": [1, 2.5, -3],
        "b": ["gini", "log loss", None],
        "c": [[1, 2], [3]],
        "d": ["rf-v1", "rf-v2"],
    }
    assert len(combinations(grid)) == 3 * 3 * 2 * 2
    assert combinations({"x": [1, 2], "y": ["a"]}) == [{"x": 1, "y": "a"}, {"x": 2, "y": "a"}]
    assert (
        combination_line('rf --sweep a=1,2 -t t --expect "f1 > 0.9" --sweep=b=3', "rf-2", ["a=2"])
        == "rf-2 -t t --expect 'f1 > 0.9' -p a=2"
    )
    assert combination_line("--cache --sweep a=1", "sweep-ab-1", ["a=1"]) == (
        "sweep-ab-1 --cache -p a=1"
    )
