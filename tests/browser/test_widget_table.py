"""The experiment table in a real JupyterLab, driven in headless Chromium (SPEC §6).

One notebook records five experiments and shows `%experiments`; the tests then use the table
as a person would: read it, sort by a header, filter, select two rows and compare them, plot,
and watch an experiment saved by another process appear. They run in file order on one page.
Screenshots go to tests/browser/artifacts/; the table's also to docs/widget-table.png (the
README's) when that is missing or NBEXP_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbexp.store import Store
from tests.browser import lab as lab_module
from tests.test_store import make_experiment

pytestmark = pytest.mark.browser

NOTEBOOK = "table.ipynb"
RUNS = [  # name, model, depth, lr
    ("rf-shallow", "rf", 3, 0.1),
    ("rf-deep", "rf", 8, 0.1),
    ("gbm-slow", "gbm", 5, 0.05),
    ("gbm-fast", "gbm", 5, 0.2),
    ("rf-mid", "rf", 5, 0.1),
]
BODY = """model = {model!r}
depth = {depth}
lr = {lr}
acc = round(0.70 + depth * 0.02 - abs(lr - 0.1) + (0.03 if model == "gbm" else 0), 4)
f1 = round(acc - 0.04, 4)
loss = round(1 - acc, 4)"""
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "widget-table.png"


def cells() -> list[str]:
    runs = [
        f"%%experiment {name}\n" + BODY.format(model=model, depth=depth, lr=lr)
        for name, model, depth, lr in RUNS
    ]
    return ["%load_ext nbexp", *runs, "%experiments"]


@pytest.fixture(scope="module")
def table(lab: lab_module.Lab, chromium: Any) -> Iterator[tuple[Any, Any]]:
    """The notebook run to the end: (page, the table's locator)."""
    lab.put_notebook(NOTEBOOK, cells())
    page, panel = lab_module.open_notebook(chromium, lab, NOTEBOOK)
    lab_module.run_all(page, panel)
    lab_module.wait_cells_done(page, panel, len(cells()))
    browser = panel.locator(".nbexp-browser")
    browser.locator(".nbexp-grid tr.nbexp-row").first.wait_for()
    yield page, browser
    page.close()


def column(browser: Any, key: str) -> list[str]:
    return [text.strip() for text in browser.locator(f"td[data-col='{key}']").all_inner_texts()]


def wait_until(check: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)


def test_the_table_shows_every_experiment(table: tuple[Any, Any]) -> None:
    _, browser = table
    assert column(browser, "name") == [name for name, *_ in reversed(RUNS)]  # newest first
    heads = [text.strip() for text in browser.locator(".nbexp-head").all_inner_texts()]
    base = ["id", "name", "time ▼", "status", "tags"]
    assert heads == [*base, "model", "depth", "lr", "acc", "f1", "loss"]
    assert column(browser, "params.depth") == ["5", "5", "5", "8", "3"]
    assert browser.locator(".nbexp-pager").inner_text() == "rows 1–5 of 5"
    best = browser.locator("td.nbexp-best[data-col='metrics.acc']")
    assert best.count() == 1 and best.inner_text() == "0.86"  # rf-deep (see BODY)
    assert browser.locator(".nbexp-row-check input:visible").count() == 5


def test_clicking_a_header_sorts(table: tuple[Any, Any]) -> None:
    _, browser = table
    before = column(browser, "name")
    browser.locator(".nbexp-head", has_text="lr").click()
    wait_until(lambda: column(browser, "params.lr") == ["0.05", "0.1", "0.1", "0.1", "0.2"], "sort")
    assert column(browser, "name") != before
    browser.locator(".nbexp-head", has_text="lr").click()
    wait_until(lambda: column(browser, "params.lr")[0] == "0.2", "reverse sort")
    assert browser.locator(".nbexp-head", has_text="lr").inner_text().strip() == "lr ▼"


def test_typing_a_query_filters(table: tuple[Any, Any]) -> None:
    _, browser = table
    query = browser.locator(".nbexp-query input")
    query.fill('params.model == "rf" and params.depth >= 5')
    query.press("Enter")
    wait_until(lambda: sorted(column(browser, "name")) == ["rf-deep", "rf-mid"], "filter")
    assert browser.locator(".nbexp-pager").inner_text() == "rows 1–2 of 2"
    query.fill("params.depth >")
    query.press("Enter")
    wait_until(lambda: "bad filter" in browser.locator(".nbexp-message").inner_text(), "error")
    assert len(column(browser, "name")) == 2  # the last good filter still applies
    query.fill("")
    query.press("Enter")
    wait_until(lambda: len(column(browser, "name")) == 5, "filter cleared")
    assert browser.locator(".nbexp-message").inner_text().strip() == ""


def test_select_two_rows_and_compare(table: tuple[Any, Any], artifacts: Path) -> None:
    _, browser = table
    names = column(browser, "name")
    checks = browser.locator(".nbexp-row-check input")
    first, second = names.index("rf-mid"), names.index("gbm-fast")
    checks.nth(first).click()
    checks.nth(second).click()
    wait_until(lambda: "2 selected" in browser.locator(".nbexp-selection").inner_text(), "select")
    differing = browser.locator("tr.nbexp-row", has_text="gbm-fast").locator("td.nbexp-diff")
    wait_until(lambda: differing.count() == 2, "differing params marked")  # model and lr
    browser.screenshot(path=str(artifacts / "table.png"))
    if not DOCS_SCREENSHOT.exists() or os.environ.get("NBEXP_UPDATE_SCREENSHOTS"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(artifacts / "table.png", DOCS_SCREENSHOT)
    browser.locator(".nbexp-compare").click()
    result = browser.locator(".nbexp-result")
    wait_until(lambda: "gbm-fast" in result.inner_text(), "diff shown")
    text = result.inner_text()
    assert "rf-mid" in text and "lr" in text and "model" in text
    result.screenshot(path=str(artifacts / "diff.png"))


def test_plot_a_metric_against_a_param(table: tuple[Any, Any], artifacts: Path) -> None:
    _, browser = table
    browser.locator(".nbexp-clear").click()
    wait_until(lambda: "nothing selected" in browser.locator(".nbexp-selection").inner_text(), "")
    browser.locator("select").nth(1).select_option(label="against depth")
    browser.locator(".nbexp-plot").click()
    image = browser.locator(".nbexp-result img")
    image.wait_for()
    assert "plotted the 5 filtered experiments" in browser.locator(".nbexp-message").inner_text()
    browser.locator(".nbexp-result").screenshot(path=str(artifacts / "plot.png"))


def test_an_experiment_saved_by_another_process_appears(
    table: tuple[Any, Any], lab: lab_module.Lab
) -> None:
    _, browser = table
    other = Store(lab.root / ".nbexp")  # this test process stands in for another kernel
    try:
        make_experiment(other, "from-elsewhere", params={"depth": 11}, minutes=10**6)
    finally:
        other.close()
    pager = browser.locator(".nbexp-pager")
    wait_until(lambda: pager.inner_text() == "rows 1–6 of 6", "refresh from the store", 15)
    assert "from-elsewhere" in column(browser, "name")
