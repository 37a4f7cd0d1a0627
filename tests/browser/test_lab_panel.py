"""The Experiments sidebar panel in a real JupyterLab, driven in headless Chromium (SPEC §10).

The lab extension (labextension/, built into nbexp/labextension/) and the server extension
(nbexp/server_extension.py) are the ones installed in the venv the harness launches. A notebook
in its own folder (its own `.nbexp`, apart from the table tests' store) records four
experiments that read a CSV; the tests then use the panel as a person would, in file order on
one page: open it, read the list, see new runs appear (from the notebook and from another
process) without a reload, open details, restore a deleted variable into the kernel, search,
follow other notebooks (an empty store's hint; a store of more than a page, "Show more"), and
compare selected runs. Screenshots go to tests/browser/artifacts/; the details view also to
docs/lab-panel.png (the README's) when that is missing or NBEXP_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbexp.store import Store
from tests.browser import lab as lab_module
from tests.test_store import make_experiment

pytestmark = pytest.mark.browser

FOLDER = "panel"
NOTEBOOK = f"{FOLDER}/runs.ipynb"
OTHER = "elsewhere/other.ipynb"  # a notebook whose store is empty
MANY = "many"  # a folder whose store holds more than a page of experiments
PAGE = 50  # rows per page in the panel (labextension/src/panel.ts PAGE_SIZE)
RUNS = [  # name, depth, lr — recorded in this order, so listed in reverse
    ("rf-shallow", 3, 0.1),
    ("rf-deep", 8, 0.1),
    ("gbm-slow", 5, 0.05),
    ("gbm-fast", 5, 0.2),
]
LATE = ("late-run", 6, 0.3)
BODY = """%%experiment {name}
import pandas as pd
train = pd.read_csv("train.csv")
depth = {depth}
lr = {lr}
weights = [depth, depth * 10]
acc = round(0.70 + depth * 0.02, 4)
f1 = round(acc - 0.05 - abs(lr - 0.1), 4)
loss = round(1 - acc, 4)"""
TAB = ".jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id='nbexp-experiments']"
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "lab-panel.png"


def cell(name: str, depth: int, lr: float) -> str:
    return BODY.format(name=name, depth=depth, lr=lr)


def cells() -> list[str]:
    return [
        "%load_ext nbexp",
        *(cell(*run) for run in RUNS),
        cell(*LATE),
        "del weights",
        'print("weights =", weights)',
    ]


def wait_until(check: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)


class Page:
    """The notebook's page with the Experiments panel open."""

    def __init__(self, page: Any, notebook: Any) -> None:
        self.page = page
        self.notebook = notebook
        self.panel = page.locator(".nbexp-panel")

    def cell(self, text: str) -> Any:
        """The notebook cell whose source contains `text`."""
        return self.notebook.locator(".jp-Cell", has_text=text).first

    def names(self) -> list[str]:
        return [t.strip() for t in self.panel.locator(".nbexp-panel-name").all_inner_texts()]

    def row(self, name: str) -> Any:
        return self.panel.locator(".nbexp-panel-row").filter(
            has=self.page.locator(".nbexp-panel-name", has_text=re.compile(f"^{name}$"))
        )

    def show_panel(self) -> None:
        if not self.panel.is_visible():
            self.page.locator(TAB).click()
        self.panel.wait_for()

    def search(self, query: str) -> None:
        box = self.panel.locator("input.nbexp-panel-search")
        box.fill(query)
        box.press("Enter")


@pytest.fixture(scope="module")
def ui(lab: lab_module.Lab, chromium: Any) -> Iterator[Page]:
    """The notebook with its four experiments run, and the panel open beside it."""
    folder = lab.root / FOLDER
    (folder / ".nbexp").mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(50)))
    (lab.root / OTHER).parent.mkdir(parents=True, exist_ok=True)
    (lab.root / OTHER).parent.joinpath(".nbexp").mkdir(exist_ok=True)
    (lab.root / MANY / ".nbexp").mkdir(parents=True, exist_ok=True)
    lab.put_notebook(NOTEBOOK, cells())
    lab.put_notebook(OTHER, ["x = 1"])
    page, notebook = lab_module.open_notebook(chromium, lab, NOTEBOOK)
    ui = Page(page, notebook)
    ui.page.evaluate("() => { window.__sameDocument = true; }")  # gone after any reload
    tab = page.locator(TAB)
    try:
        tab.wait_for(timeout=30_000)
    except Exception:  # playwright's TimeoutError
        pytest.fail(
            "no Experiments tab in the left sidebar: the lab extension is not installed in "
            f"this venv (bash scripts/setup.sh builds and installs it); see {lab.log}"
        )
    for source in cells()[: 1 + len(RUNS)]:
        output = lab_module.run_cell(page, ui.cell(source.splitlines()[0]))
        assert "recorded" in output or source == "%load_ext nbexp", output
    yield ui
    page.close()


def test_the_panel_sits_in_the_left_sidebar(ui: Page) -> None:
    tab = ui.page.locator(TAB)
    assert tab.get_attribute("title") == "Experiments"
    assert tab.locator("svg").count() == 1  # the flask icon
    tab.click()
    ui.panel.wait_for()
    assert ui.panel.locator(".nbexp-panel-title").inner_text().lower() == "experiments"


def test_it_lists_the_notebook_experiments_newest_first(ui: Page) -> None:
    ui.panel.locator(".nbexp-panel-row").first.wait_for()
    assert ui.names() == [name for name, *_ in reversed(RUNS)]
    assert ui.panel.locator(".nbexp-panel-count").inner_text() == "4 experiments"
    assert ui.panel.locator(".nbexp-panel-store").inner_text() == f"{FOLDER}/.nbexp"
    deep = ui.row("rf-deep")
    assert deep.locator(".nbexp-panel-status").inner_text() == "ok"
    metrics = deep.locator(".nbexp-panel-row-metrics").inner_text()
    assert "acc 0.86" in metrics and "f1 0.81" in metrics  # see BODY
    assert re.search(r"(just now|\d+ s ago|\d+ min ago)", deep.inner_text())


def test_new_experiments_appear_without_a_reload(ui: Page, lab: lab_module.Lab) -> None:
    lab_module.run_cell(ui.page, ui.cell("%%experiment late-run"))
    wait_until(lambda: ui.names()[:1] == ["late-run"], "the notebook's new run listed")
    other = Store(lab.root / FOLDER / ".nbexp")  # this test process stands in for a CLI
    try:  # or another kernel; only polling can notice it
        metrics = {"acc": 0.5, "f1": 123456.789}
        make_experiment(other, "from-elsewhere", metrics=metrics, minutes=10**7)
    finally:
        other.close()
    wait_until(lambda: ui.names()[:1] == ["from-elsewhere"], "the other process's run listed", 10)
    # its values read as `nbexp list` prints them (show.format_value), not as JavaScript would
    shown = ui.row("from-elsewhere").locator(".nbexp-panel-row-metrics").inner_text()
    assert "f1 1.235e+05" in shown and "acc 0.5" in shown, shown
    assert ui.panel.locator(".nbexp-panel-count").inner_text() == "6 experiments"
    assert ui.page.evaluate("() => window.__sameDocument === true")


def test_clicking_a_row_shows_its_details(ui: Page) -> None:
    ui.row("rf-deep").locator(".nbexp-panel-name").click()
    details = ui.panel.locator(".nbexp-panel-details")
    details.locator(".nbexp-panel-params").wait_for()
    assert details.locator(".nbexp-panel-details-name").inner_text() == "rf-deep"
    params = details.locator(".nbexp-panel-params").inner_text()
    assert re.search(r"depth\s+8", params) and re.search(r"lr\s+0.1", params)
    metrics = details.locator(".nbexp-panel-metrics-table").inner_text()
    assert re.search(r"acc\s+0.86", metrics) and re.search(r"loss\s+0.14", metrics)
    data = details.locator(".nbexp-panel-data").inner_text()
    assert "train.csv" in data and "50 rows" in data
    assert "weights" in details.locator(".nbexp-panel-variables").inner_text()
    code = details.locator(".nbexp-panel-code").inner_text()
    assert code.startswith("%%experiment rf-deep") and "depth = 8" in code
    assert "jp-mod-selected" in (ui.row("rf-deep").get_attribute("class") or "")


def test_restore_into_kernel_brings_back_a_deleted_variable(ui: Page, artifacts: Path) -> None:
    lab_module.run_cell(ui.page, ui.cell("del weights"))
    details = ui.panel.locator(".nbexp-panel-details")
    assert details.locator(".nbexp-panel-details-name").inner_text() == "rf-deep"
    details.locator(".nbexp-panel-restore").click()
    result = details.locator(".nbexp-panel-result")
    wait_until(lambda: "restored" in result.inner_text(), "the restore's report", 60)
    assert "weights" in result.inner_text() and "rf-deep" in result.inner_text()
    assert "nbexp-mod-ok" in (result.get_attribute("class") or "")
    output = lab_module.run_cell(ui.page, ui.cell('print("weights ='))
    assert "weights = [8, 80]" in output  # rf-deep's value, not the last run's [6, 60]
    ui.page.screenshot(path=str(artifacts / "lab-panel.png"))
    if not DOCS_SCREENSHOT.exists() or os.environ.get("NBEXP_UPDATE_SCREENSHOTS"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        widen_sidebar(ui, 120)
        box = ui.panel.bounding_box()
        clip = {"x": 0, "y": 0, "width": box["x"] + box["width"] + 620, "height": 800}
        ui.page.screenshot(path=str(DOCS_SCREENSHOT), clip=clip)
        widen_sidebar(ui, -120)


def widen_sidebar(ui: Page, pixels: int) -> None:
    """Drag the handle between the left sidebar and the notebook by `pixels`."""
    box = ui.panel.bounding_box()
    x, y = box["x"] + box["width"] + 2, box["y"] + box["height"] / 2
    ui.page.mouse.move(x, y)
    ui.page.mouse.down()
    ui.page.mouse.move(x + pixels / 2, y)
    ui.page.mouse.move(x + pixels, y)
    ui.page.mouse.up()


def test_the_search_box_filters(ui: Page) -> None:
    ui.search("metrics.acc > 0.8")
    wait_until(lambda: sorted(ui.names()) == ["late-run", "rf-deep"], "filtered by a metric")
    assert ui.panel.locator(".nbexp-panel-count").inner_text() == "2 matching"
    ui.search("name = 'gbm-slow'")
    wait_until(lambda: ui.names() == ["gbm-slow"], "filtered by name")
    ui.search("metrics.acc >")  # does not parse: the server's message, the rows stay
    message = ui.panel.locator(".nbexp-panel-message")
    wait_until(lambda: message.is_visible() and message.inner_text().strip() != "", "message")
    assert ui.names() == ["gbm-slow"]
    # typing alone (no Enter) filters too, once the typing pauses
    box = ui.panel.locator("input.nbexp-panel-search")
    box.fill("")
    box.press_sequentially("params.depth == 5", delay=20)
    wait_until(lambda: sorted(ui.names()) == ["gbm-fast", "gbm-slow"], "filtered while typing")
    assert not message.is_visible()
    ui.search("")
    wait_until(lambda: len(ui.names()) == 6, "filter cleared")


def open_from_path(ui: Page, path: str) -> None:
    """File > Open from Path…, then the Experiments panel shown again (opening a path shows
    the file browser in the sidebar)."""
    page = ui.page
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Open from Path")).click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input").fill(path)
    dialog.get_by_role("button", name="Open").click()
    page.get_by_role("tabpanel", name=path.rsplit("/", 1)[-1]).locator(".jp-Notebook").wait_for()
    ui.show_panel()


def test_the_panel_follows_the_current_notebook(ui: Page, lab: lab_module.Lab) -> None:
    open_from_path(ui, OTHER)
    empty = ui.panel.locator(".nbexp-panel-empty")
    wait_until(lambda: "%%experiment" in empty.inner_text(), "the empty state's example")
    assert ui.names() == []
    assert ui.panel.locator(".nbexp-panel-store").inner_text() == "elsewhere/.nbexp"

    store = Store(lab.root / MANY / ".nbexp")  # more than a page
    try:
        for i in range(PAGE + 5):
            make_experiment(store, f"many-{i}", metrics={"acc": i / 100}, minutes=i)
    finally:
        store.close()
    lab.put_notebook(f"{MANY}/many.ipynb", ["x = 1"])
    open_from_path(ui, f"{MANY}/many.ipynb")
    wait_until(lambda: len(ui.names()) == PAGE, "the first page")
    assert ui.names()[0] == f"many-{PAGE + 4}"
    more = ui.panel.locator(".nbexp-panel-more")
    assert more.inner_text() == f"Show 5 more ({PAGE} of {PAGE + 5} shown)"
    more.click()
    wait_until(lambda: len(ui.names()) == PAGE + 5, "the next rows")
    assert ui.names()[-1] == "many-0" and not more.is_visible()

    ui.page.locator("#jp-main-dock-panel .lm-TabBar-tab").filter(has_text="runs.ipynb").click()
    wait_until(lambda: len(ui.names()) == 6, "back to the first notebook's store")
    assert ui.panel.locator(".nbexp-panel-store").inner_text() == f"{FOLDER}/.nbexp"
    assert not empty.is_visible()


def test_compare_selected_inserts_and_runs_a_comparison_cell(ui: Page) -> None:
    notebook = ui.notebook
    ui.cell("%load_ext nbexp").locator(".jp-InputArea-prompt").click()  # the active cell
    ids = {}
    for name in ("rf-shallow", "rf-deep"):
        ids[name] = ui.row(name).locator(".nbexp-panel-id").inner_text()
        ui.row(name).locator(".nbexp-panel-check").check()
    compare = ui.panel.locator(".nbexp-panel-compare")
    assert compare.is_enabled()
    compare.click()
    inserted = notebook.locator(".jp-Cell").nth(1)  # below the active cell
    source = f"%exp_diff {ids['rf-shallow']} {ids['rf-deep']}"
    wait_until(lambda: source in inserted.inner_text(), "the comparison cell inserted")
    assert "%load_ext nbexp" not in inserted.locator(".jp-InputArea").inner_text()
    output = inserted.locator(".jp-OutputArea")
    wait_until(lambda: "depth" in output.inner_text(), "the diff shown", 60)
    text = output.inner_text()
    assert "rf-shallow" in text and "rf-deep" in text and "8" in text
    # three: the table widget of just those, selected
    ui.row("gbm-fast").locator(".nbexp-panel-check").check()
    compare.click()
    table = notebook.locator(".jp-Cell").nth(2)
    wait_until(lambda: "nbexp.compare([" in table.inner_text(), "the compare() cell inserted")
    table.locator(".nbexp-browser tr.nbexp-row").first.wait_for(timeout=60_000)
    assert table.locator(".nbexp-browser tr.nbexp-row").count() == 3
