"""Benchmark: the JupyterLab Experiments panel over 10,000 experiments (headless Chromium).

Setup writes N records into a temp project's store with `listing.py`'s fast writer (the
store's own record and index-row code, no per-record fsync; `--via-save`: `Store.save`),
starts `jupyter lab` on the project (tests/browser/lab.py: nbexp's server and lab extensions
as installed in this venv) and opens a notebook there in Chromium.

Timed in the page with `performance.now()`, from the user's input event (a capturing click /
keydown listener) to the DOM change a MutationObserver sees:

* first page: a click on the sidebar's Experiments tab in a freshly loaded page (the panel
  has fetched nothing yet) → the first rows are in the list. Each repetition reloads the
  page (`?reset`).                                                   target <= 1 s
* search, Enter: the query put in the box, Enter pressed → the list replaced by the
  filtered rows (several queries, each followed by clearing it)     target <= 300 ms
* search, typing: the query typed key by key (30 ms apart) → the list replaced, counted
  from the last key; includes the panel's 150 ms debounce          target <= 300 ms
* details: a click on a row → its params shown (reference)

and, for reference, the server alone (urllib in this process, median of 5): the first
page's request, a filtered one, and a poll answered 304 from its ETag.

Prints figures only; never asserts. The temp project is deleted at the end.

    .venv/bin/python bench/panel_browser.py [--records N] [--repeat N] [--via-save] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from listing import cores, default_dir, populate  # noqa: E402  (bench/listing.py)

from tests.browser import lab as lab_module  # noqa: E402

FIRST_TARGET, SEARCH_TARGET = 1.0, 0.300
NOTEBOOK = "bench.ipynb"
TAB = ".jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id='nbexp-experiments']"
QUERIES = [
    "metrics.acc > 0.9",
    'params.model == "rf" and params.depth < 5',
    "name = 'sweep-4242'",
    'tags == "best"',
]

# t0: the user's click or key (for keys, only `state.key`); t1: the first change the
# observer sees after `arm(selector, appear)`: an element matching `selector` appearing
# (appear=true), or the children of the element `selector` changing (appear=false).
INSTRUMENT = """() => {
  if (window.__panelBench) return;
  const state = window.__panelBench = {t0: null, t1: null, key: null, observer: null};
  const start = (event) => {
    if (event.type === 'keydown' && event.key !== state.key) return;
    state.t0 = performance.now(); state.t1 = null;
  };
  document.addEventListener('keydown', start, true);
  document.addEventListener('click', start, true);
  state.arm = (selector, appear, key) => {
    if (state.observer) state.observer.disconnect();
    state.t0 = null; state.t1 = null; state.key = key || null;
    const done = () => { if (state.t0 !== null && state.t1 === null) state.t1 = performance.now(); };
    if (appear) {
      state.observer = new MutationObserver(() => { if (document.querySelector(selector)) done(); });
      state.observer.observe(document.body, {childList: true, subtree: true});
    } else {
      state.observer = new MutationObserver(done);
      state.observer.observe(document.querySelector(selector), {childList: true});
    }
  };
}"""


def elapsed(page: Any) -> float:
    page.wait_for_function(
        "() => window.__panelBench.t0 !== null && window.__panelBench.t1 !== null",
        timeout=30_000,
    )
    return float(page.evaluate("() => window.__panelBench.t1 - window.__panelBench.t0")) / 1000


def first_page(ctx: Any, lab: Any) -> tuple[Any, float]:
    """A fresh page of the notebook; the time from clicking the tab to rows shown."""
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(lab.notebook_url(NOTEBOOK))
    page.get_by_role("tabpanel", name=NOTEBOOK).locator(".jp-Notebook").wait_for()
    page.locator(TAB).wait_for()
    page.evaluate(INSTRUMENT)
    page.evaluate("() => window.__panelBench.arm('.nbexp-panel-row', true)")
    page.locator(TAB).click()
    return page, elapsed(page)


def search(page: Any, query: str, typing: bool) -> tuple[float, str]:
    """Put `query` in the search box (typed, or set then Enter); time until the list changes."""
    box = page.locator("input.nbexp-panel-search")
    if typing:
        box.evaluate("(el) => { el.value = ''; }")
        page.evaluate("(k) => window.__panelBench.arm('.nbexp-panel-list', false, k)", query[-1])
        box.press_sequentially(query, delay=30)
    else:
        box.evaluate("(el, q) => { el.value = q; }", query)  # no input event: no debounce
        page.evaluate("() => window.__panelBench.arm('.nbexp-panel-list', false, 'Enter')")
        box.press("Enter")
    seconds = elapsed(page)
    time.sleep(0.05)
    return seconds, page.locator(".nbexp-panel-count").inner_text()


def clear(page: Any) -> None:
    box = page.locator("input.nbexp-panel-search")
    box.evaluate("(el) => { el.value = ''; }")
    page.evaluate("() => window.__panelBench.arm('.nbexp-panel-list', false, 'Enter')")
    box.press("Enter")
    elapsed(page)


def details(page: Any, index: int) -> float:
    page.evaluate("() => window.__panelBench.arm('.nbexp-panel-params', true)")
    page.evaluate("() => document.querySelectorAll('.nbexp-panel-params').forEach(n => n.remove())")
    page.locator(".nbexp-panel-row .nbexp-panel-name").nth(index).click()
    return elapsed(page)


def server_times(lab: Any, repeat: int = 5) -> list[tuple[str, list[float], str]]:
    """The list endpoint alone, from this process: full page, filtered page, 304 poll."""
    results = []
    base = f"{lab.url}/nbexp/api/experiments"

    def get(params: dict[str, Any], etag: str | None = None) -> tuple[float, int, str | None]:
        headers = {"Authorization": f"token {lab.token}"}
        if etag:
            headers["If-None-Match"] = etag
        request = urllib.request.Request(
            f"{base}?{urllib.parse.urlencode(params)}", headers=headers
        )
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
                status, tag = response.status, response.headers.get("ETag")
        except urllib.error.HTTPError as error:
            status, tag = error.code, error.headers.get("ETag")
        return time.perf_counter() - began, status, tag

    page = {"path": NOTEBOOK, "query": "", "offset": 0, "limit": 50}
    for label, params in (
        ("server: first page (50 rows, total, metric names)", page),
        ("server: filtered page (metrics.acc > 0.9)", {**page, "query": QUERIES[0]}),
    ):
        times = [get(params)[0] for _ in range(repeat)]
        results.append((label, times, ""))
    _, _, etag = get(page)
    polls = [get(page, etag) for _ in range(repeat)]
    results.append(
        ("server: poll, unchanged (304)", [t for t, _, _ in polls], f"status {polls[0][1]}")
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each timing")
    parser.add_argument("--via-save", action="store_true", help="write with Store.save (slow)")
    parser.add_argument("--keep", action="store_true", help="keep the temp project")
    parser.add_argument("--dir", default=None, help="where the temp project goes")
    args = parser.parse_args()
    why = lab_module.missing()
    if why:
        print(f"cannot run: {why}")
        return 0
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="nbexp-bench-panel-", dir=args.dir or default_dir()))
    root = workdir / "project"
    (root / ".nbexp").mkdir(parents=True)
    results: list[tuple[str, list[float], float | None, str]] = []
    try:
        from nbexp.store import Store

        store = Store(root / ".nbexp")
        print(f"writing {args.records:,} records to {root / '.nbexp'} ...", flush=True)
        setup = populate(store, args.records, args.via_save)
        store.close()
        print(f"  written in {setup:.1f} s; starting jupyter lab ...", flush=True)
        with lab_module.jupyter_lab(root) as lab, lab_module.chromium(workdir / "profile") as ctx:
            lab.put_notebook(NOTEBOOK, ["x = 1"])
            firsts: list[float] = []
            page = None
            for _ in range(args.repeat):
                if page is not None:
                    page.close()
                page, seconds = first_page(ctx, lab)
                firsts.append(seconds)
            assert page is not None
            shown = page.locator(".nbexp-panel-count").inner_text()
            rows = page.locator(".nbexp-panel-row").count()
            print(f"  panel shown: {shown}, {rows} rows", flush=True)
            results.append(
                ("first page: tab clicked → rows shown", firsts, FIRST_TARGET, f"{rows} rows")
            )
            for typing in (False, True):
                for query in QUERIES:
                    times, count = [], ""
                    for _ in range(args.repeat):
                        seconds, count = search(page, query, typing)
                        times.append(seconds)
                        clear(page)
                    how = "typed" if typing else "Enter"
                    results.append((f"search ({how}) {query}", times, SEARCH_TARGET, count))
            opened = [details(page, i % 10) for i in range(args.repeat)]
            results.append(("details: row clicked → params shown", opened, None, ""))
            page.close()
            for label, times, note in server_times(lab, args.repeat):
                results.append((label, times, None, note))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"panel browser bench: {args.records:,} experiments, JupyterLab + headless Chromium, "
        f"{cores()} cores, Python {sys.version.split()[0]}; load average {load_before:.2f} at "
        f"start, {os.getloadavg()[0]:.2f} at end; whole bench {time.perf_counter() - started:.0f} s"
    )
    width = max(len(r[0]) for r in results)
    print(f"{'what':<{width}}  {'best ms':>8}  {'median ms':>9}  note")
    for label, times, target, note in results:
        best, median = min(times), statistics.median(times)
        extra = f"{note}; " if note else ""
        if target is None:
            verdict = "reference"
        else:
            verdict = f"target <= {target * 1000:.0f} ms: {'met' if median <= target else 'MISSED'}"
        print(f"{label:<{width}}  {best * 1000:>8.0f}  {median * 1000:>9.1f}  {extra}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
