"""Benchmark: nbexp's state snapshots and restores, against dill and kishu, in real kernels.

Every tool runs in its own fresh Jupyter kernel (jupyter_client KernelManager, the venv's
`python3` kernelspec), the same cells, one tool after the other (never concurrently).

Scenario A — the 8-cell session kishu was measured on:
  (1) a 52 MB DataFrame, (2) an 8 MB array, (3) a small fitted RandomForest, (4) `x = 1`,
  (5) a read-only `print(df.shape)`, (6) a column add, (7) one element change, then
  (8) restore the state after cell 7 — in the same kernel after clobbering the variables,
  and in a fresh kernel — and check it (the column of cell 6 is there, arr[0, 0] == 5).
  * plain:  the cells in a kernel without any tool (the reference wall time per cell)
  * nbexp:  every cell is a `%%experiment` cell; added ms = wall − plain wall; "own" is
            wall − the body's recorded duration − an empty cell's wall (less noisy);
            stored = size of `.nbexp/objects` and `.nbexp/packs` after the cell
  * dill:   `dill.dump_session(file)` after every cell, one file per cell (added ms = the
            dump cell's wall − an empty cell's); `dill.load_session` of cell 7's file
  * kishu:  headless (KISHU_PATH_ROOT, TEST_NOTEBOOK_PATH, ENV_KISHU_TEST_MODE=true,
            `init_kishu(<notebook>)`, default config); added ms = wall − plain wall; stored =
            `<notebook>.kishudb*`; restore = `_kishu.checkout(<commit after cell 7>)` (what
            `kishu checkout` runs in the kernel). "call" times the call itself; "cell" is the
            whole cell's wall (kishu also commits after the checkout cell).
Scenario B — ~1 GB of numpy/pandas state (~300 MB with --quick), nbexp only:
  first snapshot MB/s vs a plain write+fsync of the same byte count; a cell changing one
  small variable (added ms per 60 MB of unchanged state, new vs changed bytes); a cell
  changing one element of a large array; full restore in a fresh kernel vs a page-cache
  read of the same byte count; the kernel's peak RSS (VmHWM) around the first snapshot.
  References (not targets): 1 MiB files each fsynced (the loose layout, the store's only
  one before pack files), and one read() of the file into new memory (what any restore
  pays for first-touch page faults).
Scenario packs — one `object_batch` of N new objects (N = 1 … 64; 64 KiB and 1 MiB each),
  written as loose files (fsync each) and as one pack (one fsync), in this process: the
  measurement behind `objects.FEW_OBJECTS` (batches up to it stay loose).

Prints figures only; never asserts. Temp files go to a temp dir, deleted at the end.

    .venv/bin/python bench/state.py [--quick] [--only A|B|packs|profile] [--profile] [--keep]

--profile runs an extra nbexp-only pass with cProfile around the costly nbexp cells (its
timings are distorted by the profiler and are not the benchmark's figures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _kernel import Kernel, tree_bytes

MB = 1_000_000
MIB = 1 << 20

IMPORTS = (
    "import time\n"
    "import numpy as np\n"
    "import pandas as pd\n"
    "from sklearn.ensemble import RandomForestClassifier\n"
)
SESSION_SETUP = IMPORTS + "rng = np.random.default_rng(0)\n"

CHECK_A = """\
try:
    print("@@has_new=" + str("new" in df.columns))
    print("@@new_ok=" + str(bool("new" in df.columns and (df["new"] == df.iloc[:, 0] * 2).all())))
    print("@@arr00=" + str(float(arr[0, 0])))
    print("@@x=" + repr(x))
    print("@@model=" + type(model).__name__)
    print("@@shape=" + str(df.shape).replace(" ", ""))
except Exception as _error:
    print("@@check_error=" + repr(_error).replace(chr(10), " ")[:300])
"""

LIVE_SIZE = """\
import types as _types, cloudpickle as _cloudpickle
def _nbytes(_value):
    if isinstance(_value, np.ndarray):
        return _value.nbytes
    if isinstance(_value, (pd.DataFrame, pd.Series)):
        _usage = _value.memory_usage(deep=True)
        return int(_usage.sum() if hasattr(_usage, "sum") else _usage)
    return len(_cloudpickle.dumps(_value, protocol=5))
_sizes = {_k: _nbytes(_v) for _k, _v in list(globals().items())
          if not _k.startswith("_") and _k not in ("In", "Out", "exit", "quit", "get_ipython")
          and not isinstance(_v, (_types.ModuleType, type, _types.FunctionType))}
print("@@live=" + str(sum(_sizes.values())))
print("@@live_parts=" + " ".join(f"{_k}:{_v}" for _k, _v in sorted(_sizes.items())))
"""


def timed_call(statement: str) -> str:
    """A cell that prints perf_counter (and the kernel's CPU time: all its threads) before
    and after `statement`, binding no variable."""
    return (
        "print('@@c0=%r' % __import__('time').process_time())\n"
        "print('@@t0=%r' % __import__('time').perf_counter())\n"
        f"{statement}\n"
        "print('@@t1=%r' % __import__('time').perf_counter())\n"
        "print('@@c1=%r' % __import__('time').process_time())\n"
    )


def inner(result: Any) -> float:
    return result.number("t1") - result.number("t0")


def inner_cpu(result: Any) -> float:
    return result.number("c1") - result.number("c0")


def compile_nbexp() -> None:
    """Write nbexp's bytecode, as installing a wheel does: the bench machines set
    PYTHONDONTWRITEBYTECODE, and a fresh kernel would otherwise compile every nbexp module
    it imports (about a third of a 1 GB restore's time)."""
    import nbexp

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(nbexp.__file__).parent)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def a_cells(quick: bool) -> list[tuple[str, str]]:
    rows, side = (406_250, 500) if quick else (1_625_000, 1000)
    return [
        ("df 4 cols", f"df = pd.DataFrame(rng.random(({rows}, 4)), columns=['a', 'b', 'c', 'd'])"),
        ("arr", f"arr = rng.random(({side}, {side}))"),
        (
            "RandomForest",
            "X = rng.random((5000, 10))\n"
            "y = (X[:, 0] + 0.1 * X[:, 1] > 0.55).astype(int)\n"
            "model = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1).fit(X, y)",
        ),
        ("x = 1", "x = 1"),
        ("print(df.shape)", "print(df.shape)"),
        ("column add", 'df["new"] = df.iloc[:, 0] * 2'),
        ("arr[0,0] = 5", "arr[0, 0] = 5"),
    ]


def check_text(values: dict[str, str]) -> tuple[bool, str]:
    if "check_error" in values:
        return False, f"FAILED: {values['check_error']}"
    ok = values.get("new_ok") == "True" and values.get("arr00") == "5.0" and values.get("x") == "1"
    text = (
        f"new column {'present' if values.get('has_new') == 'True' else 'MISSING'}"
        f"{' and = col0*2' if values.get('new_ok') == 'True' else ''}, "
        f"arr[0,0] = {values.get('arr00')}, x = {values.get('x')}, "
        f"model = {values.get('model')}, df.shape = {values.get('shape')}"
    )
    return ok, ("OK: " if ok else "WRONG: ") + text


# -- scenario A ----------------------------------------------------------------------------


def run_plain_a(root: Path, cells: list[tuple[str, str]]) -> dict[str, Any]:
    work = root / "plain"
    work.mkdir()
    with Kernel(str(work)) as kernel:
        kernel.run(SESSION_SETUP)
        baseline = kernel.baseline()
        walls = [kernel.run(code).wall for _, code in cells]
        live = kernel.run(LIVE_SIZE)
    return {
        "walls": walls,
        "baseline": baseline,
        "live": int(live.values["live"]),
        "live_parts": live.values["live_parts"],
    }


def run_nbexp_a(root: Path, cells: list[tuple[str, str]]) -> dict[str, Any]:
    from nbexp.store import Store

    work = root / "nbexp"
    work.mkdir()
    store_dir = work / ".nbexp"
    env = {"NBEXP_STORE": str(store_dir)}
    out: dict[str, Any] = {"walls": [], "stored": []}
    with Kernel(str(work), env) as kernel:
        kernel.run(SESSION_SETUP + "%load_ext nbexp\nimport nbexp\n")
        out["baseline"] = kernel.baseline()
        for index, (_, code) in enumerate(cells, 1):
            result = kernel.run(f"%%experiment A{index}\n{code}")
            if "NOT recorded" in result.stderr:
                out.setdefault("problems", []).append(f"cell {index}: {result.stderr.strip()}")
            out["walls"].append(result.wall)
            out["stored"].append(stored_bytes(store_dir))
        kernel.run("df = arr = model = x = None")
        restore = kernel.run(timed_call('_report = nbexp.restore("A7")') + "print(_report)")
        out["restore_same"] = (inner(restore), restore.wall)
        out["report_same"] = restore.stdout.split("@@t1", 1)[-1].split("\n", 1)[-1].strip()
        out["check_same"] = check_text(kernel.run(CHECK_A).values)
    with Kernel(str(work), env) as kernel:
        kernel.run(IMPORTS + "import nbexp\n")
        restore = kernel.run(timed_call('_report = nbexp.restore("A7")') + "print(_report)")
        out["restore_fresh"] = (inner(restore), restore.wall)
        out["report_fresh"] = restore.stdout.split("@@t1", 1)[-1].split("\n", 1)[-1].strip()
        out["check_fresh"] = check_text(kernel.run(CHECK_A).values)
    store = Store(store_dir)
    try:
        records = [store.get(f"A{index}") for index in range(1, len(cells) + 1)]
        out["durations"] = [record.outcome.duration for record in records]
        out["new_bytes"] = [record.state["new_bytes"] for record in records]
        out["total_bytes"] = [record.state["total_bytes"] for record in records]
        out["unstored"] = records[-1].state.get("unstored", {})
    finally:
        store.close()
    return out


def run_dill_a(root: Path, cells: list[tuple[str, str]]) -> dict[str, Any]:
    work = root / "dill"
    work.mkdir()
    out: dict[str, Any] = {"walls": [], "dumps": [], "sizes": []}
    with Kernel(str(work)) as kernel:
        kernel.run(SESSION_SETUP + "import dill\n")
        out["baseline"] = kernel.baseline()
        for index, (_, code) in enumerate(cells, 1):
            out["walls"].append(kernel.run(code).wall)
            path = work / f"session-{index}.pkl"
            out["dumps"].append(kernel.run(f"dill.dump_session({str(path)!r})").wall)
            out["sizes"].append(path.stat().st_size)
        kernel.run("df = arr = model = x = None")
        restore = kernel.run(timed_call(f"dill.load_session({str(work / 'session-7.pkl')!r})"))
        out["restore_same"] = (inner(restore), restore.wall)
        out["check_same"] = check_text(kernel.run(CHECK_A).values)
    with Kernel(str(work)) as kernel:
        kernel.run(IMPORTS + "import dill\n")
        restore = kernel.run(timed_call(f"dill.load_session({str(work / 'session-7.pkl')!r})"))
        out["restore_fresh"] = (inner(restore), restore.wall)
        out["check_fresh"] = check_text(kernel.run(CHECK_A).values)
    return out


def kishu_db_bytes(work: Path) -> int:
    return sum(p.stat().st_size for p in work.iterdir() if p.name.startswith("session.kishudb"))


def run_kishu_a(root: Path, cells: list[tuple[str, str]]) -> dict[str, Any]:
    import nbformat

    work = root / "kishu"
    work.mkdir()
    notebook = work / "session.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(notebook))
    env = {
        "KISHU_PATH_ROOT": str(work),
        "TEST_NOTEBOOK_PATH": str(notebook),
        "ENV_KISHU_TEST_MODE": "true",
    }
    init = f"from kishu import init_kishu\ninit_kishu({str(notebook)!r})\n"
    out: dict[str, Any] = {"walls": [], "stored": [], "errors": []}

    def run_init(kernel: Kernel, setup: str) -> None:
        # The init cell's own post_run_cell hook fires without its pre_run_cell
        # (PostWithoutPreError): kishu's own quirk, harmless. Anything else is a failure.
        result = kernel.run(setup + init, check=False)
        if result.error and "PostWithoutPreError" not in result.error:
            raise RuntimeError(f"init_kishu failed: {result.error[-1500:]}")

    with Kernel(str(work), env) as kernel:
        run_init(kernel, SESSION_SETUP)
        out["baseline"] = kernel.baseline()
        for _, code in cells:
            result = kernel.run(code, check=False)
            if result.error:
                out["errors"].append(result.error[-500:])
            out["walls"].append(result.wall)
            out["stored"].append(kishu_db_bytes(work))
        head = kernel.run(
            "print('@@head=' + _kishu._kishu_branch.get_head().commit_id)\n"
            "df = arr = model = x = None"
        )
        commit = head.values["head"]
        out["commit"] = commit
        checkout = f"print(_kishu.checkout({commit!r}, skip_notebook=True))"
        restore = kernel.run(timed_call(checkout))
        out["restore_same"] = (inner(restore), restore.wall)
        out["check_same"] = check_text(kernel.run(CHECK_A).values)
    out["stored_after_session"] = kishu_db_bytes(work)
    with Kernel(str(work), env) as kernel:
        run_init(kernel, IMPORTS)
        restore = kernel.run(timed_call(checkout))
        out["restore_fresh"] = (inner(restore), restore.wall)
        out["check_fresh"] = check_text(kernel.run(CHECK_A).values)
    return out


def report_a(cells: list[tuple[str, str]], results: dict[str, Any]) -> None:
    plain = results["plain"]
    nbexp, dill, kishu = results.get("nbexp"), results.get("dill"), results.get("kishu")
    live = plain["live"]
    print(f"\nlive state after cell 7: {live / MB:.1f} MB (sum of nbytes; pickle size for others)")
    print(f"  {plain['live_parts']}")
    print(f"empty-cell wall (messaging): plain {plain['baseline'] * 1e3:.1f} ms", end="")
    for name in ("nbexp", "dill", "kishu"):
        if results.get(name):
            print(f", {name} {results[name]['baseline'] * 1e3:.1f} ms", end="")
    print()

    header = (
        f"\n{'cell':<18}{'plain':>8} |{'nbexp +ms':>10}{'own ms':>8}{'new MB':>8}{'obj MB':>8} |"
        f"{'dill +ms':>9}{'file MB':>8}{'sum MB':>8} |{'kishu +ms':>10}{'db MB':>8}"
    )
    print(header)
    print("-" * len(header.strip("\n")))
    totals = {"nbexp": 0.0, "own": 0.0, "dill": 0.0, "kishu": 0.0}
    dill_sum = 0
    for i, (label, _) in enumerate(cells):
        line = f"{i + 1} {label:<16}{plain['walls'][i] * 1e3:>8.1f} |"
        if nbexp:
            added = (nbexp["walls"][i] - plain["walls"][i]) * 1e3
            own = (nbexp["walls"][i] - nbexp["durations"][i] - nbexp["baseline"]) * 1e3
            totals["nbexp"] += added
            totals["own"] += own
            line += (
                f"{added:>10.1f}{own:>8.1f}{nbexp['new_bytes'][i] / MB:>8.2f}"
                f"{nbexp['stored'][i] / MB:>8.1f} |"
            )
        else:
            line += f"{'-':>34} |"
        if dill:
            added = (dill["dumps"][i] - dill["baseline"]) * 1e3
            totals["dill"] += added
            dill_sum += dill["sizes"][i]
            line += f"{added:>9.1f}{dill['sizes'][i] / MB:>8.1f}{dill_sum / MB:>8.1f} |"
        else:
            line += f"{'-':>25} |"
        if kishu:
            added = (kishu["walls"][i] - plain["walls"][i]) * 1e3
            totals["kishu"] += added
            line += f"{added:>10.1f}{kishu['stored'][i] / MB:>8.1f}"
        else:
            line += f"{'-':>18}"
        print(line)

    print("\ntotals after cell 7:")
    summary: dict[str, dict[str, float]] = {}
    if nbexp:
        stored = nbexp["stored"][-1]
        summary["nbexp"] = {
            "added": totals["nbexp"],
            "stored": stored,
            "same": nbexp["restore_same"][0],
            "fresh": nbexp["restore_fresh"][0],
        }
        print(
            f"  nbexp: +{totals['nbexp']:.0f} ms over 7 cells (own overhead {totals['own']:.0f} ms),"
            f" stored {stored / MB:.1f} MB = {stored / live:.2f}x live"
        )
        print(
            f"         restore same kernel {nbexp['restore_same'][0] * 1e3:.0f} ms "
            f"(cell {nbexp['restore_same'][1] * 1e3:.0f} ms), fresh kernel "
            f"{nbexp['restore_fresh'][0] * 1e3:.0f} ms (cell {nbexp['restore_fresh'][1] * 1e3:.0f} ms)"
        )
        print(f"         correct (same kernel):  {nbexp['check_same'][1]}")
        print(f"         correct (fresh kernel): {nbexp['check_fresh'][1]}")
        print(f"         restore report (fresh): {nbexp['report_fresh'].splitlines()[0]}")
        for line in nbexp["report_fresh"].splitlines()[1:]:
            print(f"           {line.strip()}")
        if nbexp.get("unstored"):
            print(f"         not stored: {nbexp['unstored']}")
        for problem in nbexp.get("problems", []):
            print(f"         PROBLEM: {problem}")
    if dill:
        summary["dill"] = {
            "added": totals["dill"],
            "stored": dill_sum,
            "same": dill["restore_same"][0],
            "fresh": dill["restore_fresh"][0],
        }
        print(
            f"  dill:  +{totals['dill']:.0f} ms over 7 cells (dump_session after each), "
            f"{dill_sum / MB:.1f} MB for 7 files = {dill_sum / live:.2f}x live "
            f"(last file {dill['sizes'][-1] / MB:.1f} MB)"
        )
        print(
            f"         load_session same kernel {dill['restore_same'][0] * 1e3:.0f} ms, fresh "
            f"kernel {dill['restore_fresh'][0] * 1e3:.0f} ms"
        )
        print(f"         correct (same kernel):  {dill['check_same'][1]}")
        print(f"         correct (fresh kernel): {dill['check_fresh'][1]}")
    if kishu:
        stored = kishu["stored"][-1]
        summary["kishu"] = {
            "added": totals["kishu"],
            "stored": stored,
            "same": kishu["restore_same"][0],
            "fresh": kishu["restore_fresh"][0],
        }
        print(
            f"  kishu: +{totals['kishu']:.0f} ms over 7 cells, db {stored / MB:.1f} MB = "
            f"{stored / live:.2f}x live (after the whole session incl. clobber/checkout cells: "
            f"{kishu['stored_after_session'] / MB:.1f} MB)"
        )
        print(
            f"         checkout {kishu['commit']} same kernel: call "
            f"{kishu['restore_same'][0] * 1e3:.0f} ms (cell {kishu['restore_same'][1] * 1e3:.0f} ms),"
            f" fresh kernel: call {kishu['restore_fresh'][0] * 1e3:.0f} ms "
            f"(cell {kishu['restore_fresh'][1] * 1e3:.0f} ms)"
        )
        print(f"         correct (same kernel):  {kishu['check_same'][1]}")
        print(f"         correct (fresh kernel): {kishu['check_fresh'][1]}")
        for error in kishu["errors"]:
            print(f"         cell error: {error.strip().splitlines()[-1]}")
    if "nbexp" in summary:
        mine = summary["nbexp"]
        for other in ("kishu", "dill"):
            if other not in summary:
                continue
            theirs = summary[other]

            def ratio(key: str, theirs: dict[str, float] = theirs) -> str:
                return f"{mine[key] / theirs[key]:.2f}" if theirs[key] > 0 else "n/a"

            print(
                f"  nbexp / {other}: added time {ratio('added')}, stored bytes {ratio('stored')}, "
                f"restore same kernel {ratio('same')}, restore fresh kernel {ratio('fresh')}"
                "   (< 1: nbexp is cheaper)"
            )


def scenario_a(root: Path, quick: bool) -> None:
    cells = a_cells(quick)
    print("\n=== Scenario A: 7 cells, then restore the state after cell 7 ===", flush=True)
    results: dict[str, Any] = {}
    for name, runner in (
        ("plain", run_plain_a),
        ("nbexp", run_nbexp_a),
        ("dill", run_dill_a),
        ("kishu", run_kishu_a),
    ):
        begin = time.perf_counter()
        try:
            results[name] = runner(root, cells)
            print(f"  ran {name} in {time.perf_counter() - begin:.1f} s", flush=True)
        except Exception as error:
            print(f"  {name}: FAILED: {type(error).__name__}: {error}"[:3000], flush=True)
            traceback.print_exc(limit=3)
            results[name] = None
            if name == "plain":
                return
    report_a(cells, results)


# -- scenario B ----------------------------------------------------------------------------


def b_build(total_mb: int) -> tuple[str, int]:
    """A cell that builds ~total_mb of state without temporaries (so VmHWM ≈ VmRSS)."""
    frame_rows = total_mb * MB // 2 // 64  # half in an 8-column float frame
    array_items = total_mb * MB // 4 // 8  # a quarter in each of two arrays
    code = f"""\
_g = np.random.default_rng(1)
_block = np.empty((8, {frame_rows}))
for _i in range(8):
    _g.random(out=_block[_i])
bdf = pd.DataFrame(_block.T, columns=[f"c{{_i}}" for _i in range(8)], copy=False)
barr1 = np.empty({array_items}); _g.random(out=barr1)
barr2 = np.empty({array_items}); _g.random(out=barr2)
small = np.zeros(1000)
del _block, _g, _i
print("@@live=" + str(int(bdf.memory_usage(deep=True).sum()) + barr1.nbytes + barr2.nbytes + small.nbytes))
"""
    return code, frame_rows


def stored_bytes(store_dir: Path) -> int:
    """Bytes of the store's objects, loose (objects/) and packed (packs/)."""
    return tree_bytes(str(store_dir / "objects")) + tree_bytes(str(store_dir / "packs"))


def write_fsync(path: Path, nbytes: int) -> float:
    buffer = os.urandom(64 * MIB)
    begin = time.perf_counter()
    with open(path, "wb") as handle:
        left = nbytes
        while left > 0:
            count = min(len(buffer), left)
            handle.write(memoryview(buffer)[:count])
            left -= count
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - begin


def write_chunk_files(folder: Path, nbytes: int) -> float:
    """Reference for the loose layout: 1 MiB files, each written, fsynced and renamed."""
    buffer = os.urandom(MIB)
    folder.mkdir()
    begin = time.perf_counter()
    for index in range((nbytes + MIB - 1) // MIB):
        temp, final = folder / f"{index}.tmp", folder / f"{index}"
        with open(temp, "wb") as handle:
            handle.write(buffer)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
    seconds = time.perf_counter() - begin
    shutil.rmtree(folder)
    return seconds


def read_fresh(path: Path) -> float:
    """Reference: read the whole file into newly allocated memory (page faults included)."""
    begin = time.perf_counter()
    with open(path, "rb") as handle:
        data = handle.read()
    seconds = time.perf_counter() - begin
    del data
    return seconds


def timed_cpu(read: Callable[[Path], float], path: Path) -> tuple[float, float]:
    """(wall seconds `read` reports, this process's CPU seconds meanwhile)."""
    begin = time.process_time()
    seconds = read(path)
    return seconds, time.process_time() - begin


def read_all(path: Path) -> float:
    buffer = bytearray(8 * MIB)
    begin = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
    return time.perf_counter() - begin


def scenario_b(root: Path, quick: bool, total_mb: int) -> None:
    from nbexp.store import Store

    print(f"\n=== Scenario B: ~{total_mb} MB of numpy/pandas state (nbexp) ===", flush=True)
    work = root / "big"
    work.mkdir()
    store_dir = work / ".nbexp"
    env = {"NBEXP_STORE": str(store_dir)}
    build, _ = b_build(total_mb)
    with Kernel(str(work), env) as kernel:
        kernel.run(IMPORTS + "%load_ext nbexp\n")
        built = kernel.run(build)
        live = int(built.values["live"])
        baseline = kernel.baseline()
        mem0 = kernel.memory()
        first = kernel.run("%%experiment B1\nstep = 1")
        mem1 = kernel.memory()
        stored1 = stored_bytes(store_dir)
        second = kernel.run("%%experiment B2\nsmall[0] = 1")
        mem2 = kernel.memory()
        stored2 = stored_bytes(store_dir)
        third = kernel.run("%%experiment B3\nbarr1[0] = 1.0")
        mem3 = kernel.memory()
        stored3 = stored_bytes(store_dir)
    store = Store(store_dir)
    try:
        records = {name: store.get(name) for name in ("B1", "B2", "B3")}
    finally:
        store.close()

    plain_file = work / "plain.bin"
    write_seconds = write_fsync(plain_file, live)
    chunk_seconds = write_chunk_files(work / "chunks", live)
    compile_nbexp()
    with Kernel(str(work), env) as kernel:
        kernel.run(IMPORTS + "import nbexp\n")
        restore = kernel.run(timed_call('_report = nbexp.restore("B3")') + "print(_report)")
        check = kernel.run(
            'print("@@ok=" + str(bool(barr1[0] == 1.0 and small[0] == 1 and bdf.shape[1] == 8)))'
        )
        # the same restore again in that kernel: nbexp's modules are imported by now (the
        # first one pays for importing them, which is all of it without cached bytecode)
        kernel.run("del bdf, barr1, barr2, small\n")
        again = kernel.run(timed_call('_report = nbexp.restore("B3")') + "print(_report)")
    read_all(plain_file)  # warm the page cache
    read_seconds, read_cpu = min(timed_cpu(read_all, plain_file) for _ in range(3))
    fresh_seconds, fresh_cpu = timed_cpu(read_fresh, plain_file)

    def own(result: Any, name: str) -> float:
        return result.wall - baseline - records[name].outcome.duration

    live_mb = live / MB
    snap = own(first, "B1")
    rate, plain_rate = live / snap, live / write_seconds
    print(f"live state: {live_mb:.0f} MB (bdf {total_mb // 2} MB frame, barr1/barr2, small)")
    print(
        f"empty-cell wall {baseline * 1e3:.1f} ms; added = cell wall − empty cell − body duration"
    )
    print(
        f"first snapshot: {snap * 1e3:.0f} ms = {rate / MB:.0f} MB/s "
        f"(cell wall {first.wall * 1e3:.0f} ms; wrote {stored1 / MB:.0f} MB objects)"
    )
    print(
        f"  plain write+fsync of {live_mb:.0f} MB: {write_seconds * 1e3:.0f} ms = "
        f"{plain_rate / MB:.0f} MB/s;  ratio {rate / plain_rate:.2f}  (target >= 0.7: "
        f"{'met' if rate / plain_rate >= 0.7 else 'MISSED'})"
    )
    print(
        f"  reference, the loose layout: {live / MIB:.0f} files of 1 MiB, each write+fsync+rename:"
        f" {chunk_seconds * 1e3:.0f} ms = {live / chunk_seconds / MB:.0f} MB/s"
    )
    for label, result, name, before, after, changed in (
        ("one small variable (small[0] = 1)", second, "B2", stored1, stored2, 8000),
        ("one element of a large array (barr1[0] = 1.0)", third, "B3", stored2, stored3, 8),
    ):
        added = own(result, name)
        unchanged_mb = (live - changed) / MB
        per60 = added * 1e3 / (unchanged_mb / 60)
        state = records[name].state
        print(
            f"after a cell changing {label}: +{added * 1e3:.0f} ms "
            f"(cell wall {result.wall * 1e3:.0f} ms) = {per60:.1f} ms per 60 MB unchanged"
            + (f"  (target <= 10 ms: {'met' if per60 <= 10 else 'MISSED'})" if name == "B2" else "")
        )
        print(
            f"  new bytes {state['new_bytes']:,} (objects grew {after - before:,}) vs changed "
            f"bytes {changed:,}; state total {state['total_bytes'] / MB:.0f} MB"
        )
    total = records["B3"].state["total_bytes"]
    restore_seconds = inner(restore)
    restore_rate, read_rate = total / restore_seconds, live / read_seconds
    print(
        f"full restore in a fresh kernel (nbexp's bytecode compiled, as installed): "
        f"{restore_seconds * 1e3:.0f} ms for {total / MB:.0f} MB = "
        f"{restore_rate / 1e9:.2f} GB/s (cell {restore.wall * 1e3:.0f} ms; kernel CPU "
        f"{inner_cpu(restore) * 1e3:.0f} ms, all threads), correct: {check.values.get('ok')}"
    )
    print(
        f"  page-cache read of {live_mb:.0f} MB into one reused 8 MiB buffer: "
        f"{read_seconds * 1e3:.0f} ms = {read_rate / 1e9:.2f} GB/s (CPU {read_cpu * 1e3:.0f} ms);"
        f"  ratio {restore_rate / read_rate:.2f}  (target >= 0.5: "
        f"{'met' if restore_rate / read_rate >= 0.5 else 'MISSED'})"
    )
    again_rate = total / inner(again)
    print(
        f"  the same restore again in that kernel (imports done): {inner(again) * 1e3:.0f} ms = "
        f"{again_rate / 1e9:.2f} GB/s (CPU {inner_cpu(again) * 1e3:.0f} ms);  ratio "
        f"{again_rate / read_rate:.2f}"
    )
    print(
        f"  reference, one read() of the file into new memory (page faults included): "
        f"{fresh_seconds * 1e3:.0f} ms = {live / fresh_seconds / 1e9:.2f} GB/s (CPU "
        f"{fresh_cpu * 1e3:.0f} ms); fresh-kernel restore vs it: "
        f"{restore_rate / (live / fresh_seconds):.2f}"
    )
    extra = mem1["VmHWM"] - mem0["VmRSS"]
    print(
        f"kernel memory (fresh kernel that built the state): VmRSS before {mem0['VmRSS'] / MB:.0f} MB,"
        f" VmHWM before {mem0['VmHWM'] / MB:.0f} MB, after first snapshot {mem1['VmHWM'] / MB:.0f} MB"
    )
    note = " (snapshot stayed under the build's peak)" if mem1["VmHWM"] == mem0["VmHWM"] else ""
    print(
        f"  peak during first snapshot: +{extra / MB:.0f} MB over RSS = {extra / live * 100:+.1f}% of"
        f" live state{note}  (target <= +10%: {'met' if extra / live <= 0.10 else 'MISSED'})"
    )
    print(
        f"  VmHWM after B2 {mem2['VmHWM'] / MB:.0f} MB (+{(mem2['VmHWM'] - mem0['VmRSS']) / MB:.0f}),"
        f" after B3 {mem3['VmHWM'] / MB:.0f} MB (+{(mem3['VmHWM'] - mem0['VmRSS']) / MB:.0f}) "
        f"over the RSS before the first snapshot"
    )


# -- profiling pass --------------------------------------------------------------------------

PROFILE = """\
import cProfile as _cProfile, pstats as _pstats, io as _io
_profiler = _cProfile.Profile()
_profiler.runcall({call})
_out = _io.StringIO()
_pstats.Stats(_profiler, stream=_out).sort_stats("cumulative").print_stats(15)
print(_out.getvalue())
del _profiler, _out
"""


def profiled(kernel: Kernel, title: str, call: str) -> None:
    """Run `call` (a callable and its arguments, as source) under cProfile in the kernel."""
    result = kernel.run(PROFILE.format(call=call))
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "function calls" in line), 0)
    print(f"\n--- cProfile: {title} (cell wall {result.wall * 1e3:.0f} ms under the profiler) ---")
    print("\n".join(lines[start:]))


def magic(name: str, code: str) -> str:
    return f"get_ipython().run_cell_magic, 'experiment', {name!r}, {code!r}"


def profile_pass(root: Path, quick: bool, total_mb: int) -> None:
    print("\n=== cProfile of nbexp cells (timings distorted by the profiler) ===", flush=True)
    cells = a_cells(quick)
    work = root / "profile-a"
    work.mkdir()
    env = {"NBEXP_STORE": str(work / ".nbexp")}
    with Kernel(str(work), env) as kernel:
        kernel.run(SESSION_SETUP + "%load_ext nbexp\nimport nbexp\n")
        for index, (label, code) in enumerate(cells, 1):
            if index in (1, 3, 5, 6, 7):
                profiled(kernel, f"A cell {index} %%experiment ({label})", magic(f"A{index}", code))
            else:
                kernel.run(f"%%experiment A{index}\n{code}")
    work = root / "profile-b"
    work.mkdir()
    env = {"NBEXP_STORE": str(work / ".nbexp")}
    build, _ = b_build(total_mb)
    with Kernel(str(work), env) as kernel:
        kernel.run(IMPORTS + "%load_ext nbexp\nimport nbexp\n")
        kernel.run(build)
        profiled(kernel, f"B first snapshot of {total_mb} MB", magic("B1", "step = 1"))
        profiled(kernel, "B small change", magic("B2", "small[0] = 1"))
        profiled(kernel, "B one element of a large array", magic("B3", "barr1[0] = 1.0"))
    with Kernel(str(work), env) as kernel:
        kernel.run(IMPORTS + "import nbexp\n")
        profiled(kernel, f"B restore of {total_mb} MB in a fresh kernel", 'nbexp.restore, "B3"')


# -- scenario packs -------------------------------------------------------------------------


def _one_batch(store: Any, blobs: list[bytes], packed: bool) -> float:
    from nbexp.store import objects

    objects.FEW_OBJECTS = 0 if packed else len(blobs)
    begin = time.perf_counter()
    with store.writing(), store.object_batch():
        for blob in blobs:
            store.put_bytes(blob)
    return time.perf_counter() - begin


def scenario_packs(root: Path, quick: bool) -> None:
    from nbexp.store import Store, objects

    print("\n=== Scenario packs: one batch of N new objects, loose vs one pack ===", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}; objects.FEW_OBJECTS = {objects.FEW_OBJECTS}")
    chosen = objects.FEW_OBJECTS
    store = Store(root / "packs-bench" / ".nbexp")
    repeats = 3 if quick else 5
    print(f"{'size':>8}{'N':>5} |{'loose ms':>10}{'pack ms':>10}{'pack/loose':>12}")
    try:
        for size in (64 * 1024, MIB):
            for count in (1, 2, 4, 8, 16, 32, 64):
                times: dict[bool, list[float]] = {False: [], True: []}
                for _ in range(repeats):
                    for packed in (False, True):
                        blobs = [os.urandom(size) for _ in range(count)]
                        times[packed].append(_one_batch(store, blobs, packed))
                loose = sorted(times[False])[repeats // 2]
                pack = sorted(times[True])[repeats // 2]
                print(
                    f"{size // 1024:>6}Ki{count:>5} |{loose * 1e3:>10.1f}{pack * 1e3:>10.1f}"
                    f"{pack / loose:>12.2f}",
                    flush=True,
                )
    finally:
        objects.FEW_OBJECTS = chosen
        store.close()
    print(f"(medians of {repeats}; load average now {os.getloadavg()[0]:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (< 1 min)")
    parser.add_argument(
        "--only",
        choices=("A", "B", "packs", "profile"),
        default=None,
        help="run one scenario, or only the cProfile pass",
    )
    parser.add_argument("--big-mb", type=int, default=None, help="scenario B state size in MB")
    parser.add_argument("--profile", action="store_true", help="add a cProfile pass (nbexp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--dir", default=None, help="where to put the temp dir")
    args = parser.parse_args()

    total_mb = args.big_mb or (300 if args.quick else 1000)
    root = Path(tempfile.mkdtemp(prefix="nbexp-bench-state-", dir=args.dir))
    free = shutil.disk_usage(root).free
    need = (3.5 * total_mb + 1200) * MB  # B: objects + plain file; A: dill files, kishu db
    print(f"nbexp state benchmark ({'quick' if args.quick else 'full'}); temp dir {root}")
    print(f"disk: {free / 1e9:.1f} GB free, about {need / 1e9:.1f} GB needed")
    if free < need:
        total_mb = max(50, int((free / MB - 1200) / 3.5 * 0.8))
        print(f"NOTE: not enough free disk; scenario B shrunk to {total_mb} MB")
    load = os.getloadavg()
    print(
        f"python {sys.version.split()[0]}, {len(os.sched_getaffinity(0))} cores, "
        f"load average {load[0]:.2f}"
    )
    begin = time.perf_counter()
    try:
        if args.only in (None, "A"):
            scenario_a(root, args.quick)
        if args.only in (None, "B"):
            scenario_b(root, args.quick, total_mb)
        if args.only in (None, "packs"):
            scenario_packs(root, args.quick)
        if args.profile or args.only == "profile":
            profile_pass(root, args.quick, total_mb)
    finally:
        if args.keep:
            print(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"\ntotal bench time {time.perf_counter() - begin:.0f} s; "
        f"load average now {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
