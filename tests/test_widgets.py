"""The experiment table widget (SPEC §6) without a browser: real widgets against a real store,
buttons pressed with `.click()`, the page read back from the HTML the widget would show."""

from __future__ import annotations

import html
import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import store as store_module
from nbexp import widgets as widgets_package
from nbexp.store import Store, open_store
from nbexp.widgets import render, watch
from nbexp.widgets.browser import ExperimentBrowser
from tests.conftest import run
from tests.test_store import make_experiment

# -- helpers -------------------------------------------------------------------------------


class _Cells(HTMLParser):
    """The page's table as rows of {column: (text, classes)}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, tuple[str, set[str]]]] = []
        self.row_classes: list[set[str]] = []
        self._column: str | None = None
        self._classes: set[str] = set()
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr":
            self.rows.append({})
            self.row_classes.append(set((found.get("class") or "").split()))
        elif tag == "td":
            self._column = found.get("data-col")
            self._classes = set((found.get("class") or "").split())
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._column is not None:
            self.rows[-1][self._column] = ("".join(self._text).strip(), self._classes)
            self._column = None

    def handle_data(self, data: str) -> None:
        if self._column is not None:
            self._text.append(data)


def page(browser: ExperimentBrowser) -> _Cells:
    parser = _Cells()
    parser.feed(browser.grid.table.value)
    return parser


def column(browser: ExperimentBrowser, key: str) -> list[str]:
    return [row[key][0] for row in page(browser).rows]


def classes(browser: ExperimentBrowser, key: str) -> list[set[str]]:
    return [row[key][1] for row in page(browser).rows]


def head(browser: ExperimentBrowser, key: str) -> Any:
    return browser.grid.heads[key]


def message(browser: ExperimentBrowser) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", browser.message.value))


def output(browser: ExperimentBrowser) -> dict[str, Any]:
    outputs = browser.bar.result.outputs
    assert len(outputs) == 1, outputs
    data: dict[str, Any] = outputs[0]["data"]
    return data


def check_row(browser: ExperimentBrowser, name: str, on: bool = True) -> None:
    index = [row["name"] for row in browser.rows].index(name)
    browser.grid.checks[index].value = on


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the table to refresh")
        time.sleep(0.02)


@pytest.fixture
def store(project: Path) -> Store:
    store_module._stores.clear()
    return open_store()


@pytest.fixture
def make(store: Store) -> Iterator[Callable[..., ExperimentBrowser]]:
    """Build tables on the test store (no polling unless asked); all closed afterwards."""
    made: list[ExperimentBrowser] = []

    def build(query: str | None = None, **options: Any) -> ExperimentBrowser:
        options.setdefault("poll_interval", None)
        browser = ExperimentBrowser(query, store=options.pop("store", store), **options)
        made.append(browser)
        return browser

    yield build
    for browser in made:
        browser.close()
    assert not watch._watchers, "a closed table left its store watched"


@pytest.fixture
def five(store: Store) -> list[Any]:
    """Five runs, oldest first: depth 2..6, acc rising, loss falling (run-4 is the best)."""
    return [
        make_experiment(
            store,
            f"run-{i}",
            params={"depth": i + 2, "lr": 0.1, "model": "rf" if i % 2 else "gbm"},
            metrics={"acc": 0.5 + i / 10, "loss": 1.0 - i / 10},
            minutes=i,
        )
        for i in range(5)
    ]


def cell(line: str, body: str) -> str:
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


# -- the table -----------------------------------------------------------------------------


def test_one_row_per_experiment_with_id_name_time_status_params_and_metrics(make, five):
    browser = make()
    assert browser.columns == [
        "id",
        "name",
        "created",
        "status",
        "tags",
        "params.depth",
        "params.lr",
        "params.model",
        "metrics.acc",
        "metrics.loss",
    ]
    labels = [button.description for button in browser.grid.header.children[1:]]
    assert labels == [
        "id",
        "name",
        "time ▼",
        "status",
        "tags",
        "depth",
        "lr",
        "model",
        "acc",
        "loss",
    ]
    assert column(browser, "name") == ["run-4", "run-3", "run-2", "run-1", "run-0"]  # newest first
    assert column(browser, "id") == [e.short_id for e in reversed(five)]
    assert column(browser, "params.depth") == ["6", "5", "4", "3", "2"]
    assert column(browser, "metrics.acc")[0] == "0.9"
    assert column(browser, "created")[0] == "2024-01-01 00:04:00"
    assert all(text == "✓ ok" for text in column(browser, "status"))
    assert browser.grid.pager.value == "rows 1–5 of 5"
    assert len(browser.grid.checks) == 5  # a checkbox per row on the page, not per page_size


def test_every_param_and_metric_is_a_column_even_the_oldest_experiments(make, store):
    make_experiment(store, "oldest", params={"rare": 1}, metrics={"old_metric": 0.5}, minutes=0)
    for i in range(1, 60):
        make_experiment(store, f"new-{i}", params={"common": i}, minutes=i)
    browser = make()
    assert browser.columns[5:] == ["params.rare", "params.common", "metrics.old_metric"]
    assert "oldest" not in column(browser, "name")  # on page 2, yet its columns are there


def test_an_empty_store_says_so(make):
    browser = make()
    assert browser.total == 0
    assert browser.grid.pager.value == "no experiments yet"
    assert browser.columns == ["id", "name", "created", "status", "tags"]


def test_clicking_a_header_sorts_in_the_store_both_ways(make, five):
    browser = make()
    head(browser, "params.depth").click()
    assert column(browser, "params.depth") == ["2", "3", "4", "5", "6"]
    assert head(browser, "params.depth").description == "depth ▲"
    assert head(browser, "created").description == "time"
    head(browser, "params.depth").click()
    assert column(browser, "params.depth") == ["6", "5", "4", "3", "2"]
    assert head(browser, "params.depth").description == "depth ▼"
    head(browser, "metrics.loss").click()
    assert column(browser, "name") == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    head(browser, "name").click()
    assert column(browser, "name") == sorted(column(browser, "name"))
    head(browser, "created").click()  # time starts newest first, as the table opened
    assert column(browser, "name") == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    head(browser, "created").click()
    assert column(browser, "name") == ["run-0", "run-1", "run-2", "run-3", "run-4"]
    assert head(browser, "tags").disabled  # the store cannot sort by tags


def test_typing_a_query_filters(make, five):
    browser = make()
    browser.query.value = "params.depth >= 4 and params.model == 'gbm'"
    assert column(browser, "name") == ["run-4", "run-2"]
    assert browser.grid.pager.value == "rows 1–2 of 2"
    assert message(browser) == ""
    browser.query.value = ""
    assert browser.total == 5


def test_a_bad_query_is_one_line_in_the_widget_and_the_rows_stay(make, five):
    browser = make()
    browser.query.value = "metrics.acc > 0.7"
    browser.query.value = "metrics.acc >"
    text = message(browser)
    assert text.startswith("bad filter: ") and "\n" not in text
    assert "nbexp-message-error" in browser.message.value
    assert column(browser, "name") == ["run-4", "run-3"]  # the last good filter still applies
    browser.query.value = "metrics.acc > 0.8"
    assert message(browser) == "" and column(browser, "name") == ["run-4"]


def test_a_bad_query_given_at_creation_shows_the_message(make, five):
    browser = make("params.depth ===")
    assert message(browser).startswith("bad filter: ")
    assert browser.query.value == "params.depth ==="
    assert browser.total == 5


def test_pages_of_fifty_with_prev_and_next(make, store):
    for i in range(120):
        make_experiment(store, f"e{i:03d}", params={"i": i}, metrics={"m": i}, minutes=i)
    browser = make()
    assert browser.grid.pager.value == "rows 1–50 of 120"
    assert browser.grid.prev_button.disabled and not browser.grid.next_button.disabled
    assert len(page(browser).rows) == 50 and column(browser, "name")[0] == "e119"
    browser.grid.next_button.click()
    browser.grid.next_button.click()
    assert browser.grid.pager.value == "rows 101–120 of 120"
    assert browser.grid.next_button.disabled
    assert column(browser, "name")[-1] == "e000"
    assert sum(check.layout.display != "none" for check in browser.grid.checks) == 20
    head(browser, "params.i").click()  # sorting goes back to the first page
    assert browser.grid.pager.value == "rows 1–50 of 120"
    assert column(browser, "params.i")[:3] == ["0", "1", "2"]
    browser.query.value = "metrics.m >= 100"
    assert browser.grid.pager.value == "rows 1–20 of 20"


def test_selection_is_kept_across_pages_and_sorts(make, store):
    for i in range(60):
        make_experiment(store, f"e{i:02d}", params={"i": i}, minutes=i)
    browser = make()
    check_row(browser, "e59")
    browser.grid.next_button.click()
    check_row(browser, "e05")
    assert [store.load(i).name for i in browser.selected] == ["e59", "e05"]
    head(browser, "params.i").click()
    checked = [c.value for c in browser.grid.checks]
    assert checked[5] and sum(checked) == 1  # e05 is 6th when sorted by i; e59 is on page 2
    assert "nbexp-selected" in page(browser).row_classes[5]
    assert "2 selected" in browser.bar.selection.value


def test_the_page_checkbox_selects_and_clears_the_page(make, five):
    browser = make()
    browser.grid.check_page.value = True
    assert len(browser.selected) == 5 and all(c.value for c in browser.grid.checks[:5])
    browser.grid.check_page.value = False
    assert browser.selected == [] and browser.bar.selection.value.startswith("nothing selected")


def test_the_column_chooser_hides_and_shows_columns(make, five):
    browser = make()
    assert browser.chooser.children == ()  # made when first opened
    browser.columns_toggle.value = True
    assert browser.chooser.layout.display == "flex"
    boxes = {box.description: box for box in browser.chooser.children}
    assert set(boxes) == {c.key for c in browser.model.columns()}
    assert not boxes["duration"].value  # hidden by default
    boxes["params.lr"].value = False
    assert "params.lr" not in browser.columns and "params.lr" not in page(browser).rows[0]
    assert "params.lr" not in browser.grid.heads or head(browser, "params.lr") not in (
        browser.grid.header.children
    )
    boxes["duration"].value = True
    assert "duration" in browser.columns and column(browser, "duration")[0] == "4.50 s"
    browser.show_columns(["name", "metrics.acc"])
    assert browser.columns == ["name", "metrics.acc"]
    assert boxes["params.depth"].value is False
    browser.columns_toggle.value = False
    assert browser.chooser.layout.display == "none"


def test_the_best_value_of_each_metric_is_highlighted(make, five, store):
    browser = make()
    best_acc = ["nbexp-best" in c for c in classes(browser, "metrics.acc")]
    best_loss = ["nbexp-best" in c for c in classes(browser, "metrics.loss")]
    assert best_acc == [True, False, False, False, False]  # run-4: highest acc
    assert best_loss == [True, False, False, False, False]  # run-4: lowest loss
    browser.query.value = "params.depth <= 3"  # best among the filtered ones
    assert ["nbexp-best" in c for c in classes(browser, "metrics.acc")] == [True, False]
    assert column(browser, "name") == ["run-1", "run-0"]


def test_lower_or_higher_is_better_can_be_overridden(make, five):
    browser = make(lower_is_better=["acc"], higher_is_better=["metrics.loss"])
    assert ["nbexp-best" in c for c in classes(browser, "metrics.acc")][-1]  # run-0: lowest acc
    assert ["nbexp-best" in c for c in classes(browser, "metrics.loss")][-1]  # highest loss


@pytest.mark.parametrize(
    ("name", "lower"),
    [
        ("loss", True),
        ("val_loss", True),
        ("trainLoss", True),
        ("test-error", True),
        ("RMSE", True),
        ("mae@5", True),
        ("mse", True),
        ("fit_time", True),
        ("perplexity", True),
        ("acc", False),
        ("f1", False),
        ("roc_auc", False),
        ("r2", False),
        ("precision", False),
    ],
)
def test_metric_direction_from_the_name(name: str, lower: bool):
    assert render.lower_is_better(name) is lower
    assert render.lower_is_better(name, lower=[name] if not lower else [], higher=()) is True
    assert render.lower_is_better(name, higher=[f"metrics.{name}"]) is False


def test_params_that_differ_from_the_first_selected_row_are_marked(make, five):
    browser = make()
    assert not any("nbexp-diff" in c for c in classes(browser, "params.depth"))
    check_row(browser, "run-2")  # depth 4, lr 0.1, model gbm
    check_row(browser, "run-3")
    marked = {
        row["name"][0]: {k for k, (_, css) in row.items() if "nbexp-diff" in css}
        for row in page(browser).rows
    }
    assert marked["run-2"] == set()  # the reference row
    assert marked["run-3"] == {"params.depth", "params.model"}
    assert marked["run-4"] == {"params.depth"}
    assert "nbexp-reference" in page(browser).row_classes[2]


def test_stale_experiments_are_marked(ip, project, make):
    (project / "data.csv").write_text("a\n1\n2\n")
    body = 'import pandas as pd\nrows = len(pd.read_csv("data.csv"))\nscore = 0.5\n'
    assert run(ip, cell("reads", body)).success
    assert run(ip, cell("plain", "x = 1\nscore = 0.7\n")).success
    browser = make()
    assert "stale" not in " ".join(column(browser, "status"))
    (project / "data.csv").write_text("a\n1\n2\n3\n")
    browser.refresh()
    status = dict(zip(column(browser, "name"), column(browser, "status"), strict=True))
    assert "stale" in status["reads"] and "stale" not in status["plain"]
    assert "data.csv modified" in browser.grid.table.value


# -- actions -------------------------------------------------------------------------------


def test_compare_two_selected_shows_their_diff(make, five):
    browser = make()
    assert browser.bar.compare_button.disabled
    check_row(browser, "run-1")
    browser.bar.compare_button.click()
    assert "exactly two" in message(browser) and browser.bar.result.outputs == ()
    check_row(browser, "run-3")
    assert not browser.bar.compare_button.disabled
    browser.bar.compare_button.click()
    shown = output(browser)
    assert "run-1" in shown["text/plain"] and "run-3" in shown["text/plain"]
    assert "depth" in shown["text/html"]


def test_plot_a_metric_against_a_param_and_across_experiments(make, five):
    browser = make()
    assert browser.bar.plot_y.value == "acc"
    browser.bar.plot_button.click()  # nothing selected: every filtered experiment
    assert output(browser)["image/png"]
    assert "plotted the 5 filtered experiments" in message(browser)
    check_row(browser, "run-1")
    check_row(browser, "run-2")
    browser.bar.plot_x.value = "params.depth"
    browser.bar.plot_y.value = "loss"
    browser.bar.plot_button.click()
    assert output(browser)["image/png"] and message(browser) == ""
    browser.bar.plot_x.value = "series"
    assert browser.bar.plot_y.options == ()  # these runs logged no series
    browser.bar.plot_button.click()
    assert "nothing to plot" in message(browser)


def test_plot_logged_series(ip, make):
    body = "import nbexp\nfor step in range(3):\n    nbexp.log('curve', step * 0.5)\nscore = 1\n"
    assert run(ip, cell("logged", body)).success
    browser = make()
    browser.bar.plot_x.value = "series"
    assert browser.bar.plot_y.options == ("curve",)
    browser.bar.plot_button.click()
    assert output(browser)["image/png"]


def test_restore_puts_the_variables_into_the_kernel(ip, make):
    assert run(ip, cell("first", "numbers = [1, 2, 3]\nscore = 0.9\n")).success
    ip.user_ns["numbers"] = "clobbered"
    browser = make()
    assert browser.bar.restore_button.disabled
    check_row(browser, "first")
    browser.bar.restore_button.click()
    assert ip.user_ns["numbers"] == [1, 2, 3]
    assert "restored" in output(browser)["text/plain"]
    assert "numbers" in output(browser)["text/html"]


def test_restore_outside_a_kernel_says_so(make, five, monkeypatch):
    monkeypatch.setattr("IPython.get_ipython", lambda: None)
    browser = make()
    check_row(browser, "run-0")
    browser.bar.restore_button.click()
    assert "needs a running IPython kernel" in message(browser)


def test_export_writes_a_script_per_selected_experiment(ip, project, make):
    assert run(ip, cell("exported", "alpha = 0.5\nscore = alpha * 2\n")).success
    browser = make()
    check_row(browser, "exported")
    browser.bar.export_button.click()
    short = nbexp.get("exported").short_id
    script = project / f"exported-{short}.py"
    assert script.exists() and "alpha" in script.read_text()
    assert str(script.name) in output(browser)["text/plain"]
    browser.bar.export_button.click()  # the file exists now: said, not overwritten
    assert "not exported" in output(browser)["text/plain"]


def test_tag_the_selection(make, five, store):
    browser = make()
    check_row(browser, "run-0")
    check_row(browser, "run-1")
    browser.bar.tag_text.value = "two words"
    browser.bar.tag_button.click()
    assert "one word" in message(browser)
    browser.bar.tag_text.value = "baseline"
    browser.bar.tag_button.click()
    assert message(browser) == "tagged 2 experiments baseline"
    assert column(browser, "tags") == ["", "", "", "baseline", "baseline"]
    assert store.get("baseline").name == "run-1"
    browser.query.value = 'tags == "baseline"'
    assert browser.total == 2


def test_delete_asks_first(make, five, store):
    browser = make()
    check_row(browser, "run-0")
    check_row(browser, "run-4")
    browser.bar.delete_button.click()
    assert browser.bar.confirm.layout.display == "flex"
    assert "Delete 2 experiments" in browser.bar.confirm_text.value and store.count() == 5
    browser.bar.confirm.children[2].click()  # Cancel
    assert browser.bar.confirm.layout.display == "none" and store.count() == 5
    browser.bar.delete_button.click()
    browser.bar.confirm.children[1].click()  # Delete
    assert store.count() == 3 and browser.total == 3 and browser.selected == []
    assert column(browser, "name") == ["run-3", "run-2", "run-1"]
    assert "deleted run-0" in message(browser)


def test_changing_the_selection_withdraws_a_pending_delete(make, five, store):
    browser = make()
    check_row(browser, "run-0")
    browser.bar.delete_button.click()
    check_row(browser, "run-1")
    assert browser.bar.confirm.layout.display == "none"


# -- refreshing ----------------------------------------------------------------------------


def test_experiments_saved_by_another_process_appear(make, five, store):
    browser = make(poll_interval=0.05)
    assert [t.name for t in threading.enumerate() if t.name.startswith("nbexp-watch")]
    other = Store(store.root)  # its own SQLite connection, as another kernel would have
    make_experiment(other, "from-elsewhere", params={"depth": 9, "extra": 1}, minutes=99)
    wait_for(lambda: browser.grid.pager.value == "rows 1–6 of 6")
    assert column(browser, "name")[0] == "from-elsewhere"
    assert "params.extra" in browser.columns  # new params become columns
    other.delete(five[0].id)
    wait_for(lambda: browser.grid.pager.value == "rows 1–5 of 5")
    assert "run-0" not in column(browser, "name")
    other.close()


def test_closing_the_table_stops_its_polling_and_frees_its_widgets(make, five):
    from ipywidgets.widgets.widget import _instances

    before = len(_instances)
    browser = make(poll_interval=0.05)
    browser.columns_toggle.value = True
    browser.close()
    assert len(_instances) == before
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name.startswith("nbexp-watch")]
    assert not watch._watchers


def test_a_cell_in_this_kernel_refreshes_at_once(ip, make):
    assert run(ip, cell("one", "a = 1\nscore = 0.1\n")).success
    browser = make()  # no polling thread: the post_run_cell hook checks synchronously
    assert browser.total == 1
    assert run(ip, cell("two", "b = 2\nscore = 0.2\nnew_param = 3\n")).success
    assert browser.total == 2 and column(browser, "name")[0] == "two"
    assert "params.new_param" in browser.columns
    browser.close()
    assert run(ip, cell("three", "c = 3\n")).success  # the closed table is left alone
    assert browser.total == 2


def test_only_the_newest_tables_keep_refreshing(store):
    class Listener:
        def __init__(self) -> None:
            self.changed = 0
            self.stopped = False

        def store_changed(self) -> None:
            self.changed += 1

        def watching_stopped(self) -> None:
            self.stopped = True

    listeners = [Listener() for _ in range(watch.MAX_LISTENERS + 2)]
    stops = [watch.watch(store, listener, None) for listener in listeners]
    assert [x.stopped for x in listeners] == [True, True] + [False] * watch.MAX_LISTENERS
    make_experiment(store, "new")
    watch.check_all()
    assert [x.changed for x in listeners] == [0, 0] + [1] * watch.MAX_LISTENERS
    for stop in stops:
        stop()
    assert not watch._watchers


# -- entry points --------------------------------------------------------------------------


def test_experiments_magic_prints_a_text_table_in_a_terminal(ip, capsys):
    assert run(ip, cell("alpha", "depth = 3\nscore = depth / 6\n")).success
    capsys.readouterr()
    result = run(ip, "%experiments metrics.score > 0.1")
    assert result.success and result.result is None
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["id", "name", "time", "status", "tags", "depth", "score"]
    assert "alpha" in out
    assert run(ip, "%experiments metrics.score > 0.9").success
    assert "no experiments match" in capsys.readouterr().out
    bad = run(ip, "%experiments metrics.score >")
    assert not bad.success and "query" in str(bad.error_in_exec)


def test_experiments_magic_shows_the_table_in_a_notebook_kernel(ip, monkeypatch):
    assert run(ip, cell("alpha", "depth = 3\nscore = depth / 6\n")).success
    monkeypatch.setattr(widgets_package, "has_widget_frontend", lambda shell: True)
    result = run(ip, "%experiments metrics.score > 0.1")
    table = result.result
    try:
        assert isinstance(table, ExperimentBrowser)
        assert table.total == 1 and table.query.value == "metrics.score > 0.1"
        bundle = table._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
    finally:
        table.close()
        ip.user_ns.pop("_", None)


def test_nbexp_compare_with_refs_shows_them_selected_and_their_diff(make, five):
    table = nbexp.compare(["run-1", "run-3"], poll_interval=None)
    try:
        assert table.total == 2 and column(table, "name") == ["run-3", "run-1"]
        assert [five[1].id, five[3].id] == table.selected
        assert "run-1" in output(table)["text/plain"]
        assert table.show_all_button.layout.display is None
        table.show_all_button.click()
        assert table.total == 5 and table.show_all_button.layout.display == "none"
    finally:
        table.close()


def test_nbexp_compare_with_an_unknown_ref_raises_and_leaves_no_widgets(five):
    from ipywidgets.widgets.widget import _instances

    before = len(_instances)
    with pytest.raises(nbexp.NbexpError, match="no experiment matches"):
        nbexp.compare(["run-1", "nope"], poll_interval=None)
    assert len(_instances) == before and not watch._watchers


def test_nbexp_compare_stays_the_table_function_after_the_diff_module_loads(five):
    from nbexp.comparison import diff  # the diff module must not shadow the function

    assert callable(diff)
    assert nbexp.compare.__module__ == "nbexp"


def test_text_repr_outside_a_widget_frontend(make, five):
    assert repr(make("params.depth > 4")) == (
        "<nbexp: 2 experiments matching 'params.depth > 4'; shown as a table in Jupyter>"
    )
