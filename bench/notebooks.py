"""nbexp on public notebooks nobody on the team wrote: restore equality, export reruns, overhead.

Each corpus item is a notebook (or a `# %%` script) inside a PyPI sdist, downloaded at run
time with `pip download` into bench/.cache/ (gitignored), never committed. Every item runs in
real kernels (the venv's `python3` kernelspec): twice plain, once with `%load_ext nbexp` and
its model-fitting / metric cells wrapped in `%%experiment`. Then each recorded experiment is
restored into a fresh kernel (values and sharing between variables compared with what the
recording kernel held) and exported to a script that is rerun (metrics compared).

Run from the repository root: `.venv/bin/python bench/notebooks.py [--quick|--items N|--only NAME]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CACHE = BENCH / ".cache"
VENV_BIN = Path(sys.executable).parent
# kernels and the nbexp command import this tree's nbexp (not whichever one the venv installed)
# and the harness's _nbprobe
KERNEL_PATH = os.pathsep.join([str(ROOT), str(BENCH)])

sys.path.insert(0, str(BENCH))
from _nbprobe import MARK, NETWORK_MARK  # noqa: E402
from _phases import PHASES  # noqa: E402

# ---- the corpus ------------------------------------------------------------------------------
# (sdist "package==version", path inside the unpacked sdist). imbalanced-learn ships its
# sphinx-gallery notebooks (MIT licence); networkx ships its gallery as `# %%` scripts with
# their small data files (BSD-3). Items that need the network, a package not installed or a
# display are kept in the list: the runner reports them as skipped with the reason.

IMBLEARN = "imbalanced-learn==0.14.2"
NETWORKX = "networkx==3.6.1"
_IMB = "doc/auto_examples/"
_NX = "examples/"

CORPUS: list[tuple[str, str]] = [
    (IMBLEARN, _IMB + "api/plot_sampling_strategy_usage.ipynb"),
    (IMBLEARN, _IMB + "combine/plot_comparison_combine.ipynb"),
    (IMBLEARN, _IMB + "datasets/plot_make_imbalance.ipynb"),
    (IMBLEARN, _IMB + "ensemble/plot_bagging_classifier.ipynb"),
    (IMBLEARN, _IMB + "ensemble/plot_comparison_ensemble_classifier.ipynb"),
    (IMBLEARN, _IMB + "evaluation/plot_classification_report.ipynb"),
    (IMBLEARN, _IMB + "evaluation/plot_metrics.ipynb"),
    (IMBLEARN, _IMB + "model_selection/plot_instance_hardness_cv.ipynb"),
    (IMBLEARN, _IMB + "model_selection/plot_validation_curve.ipynb"),
    (IMBLEARN, _IMB + "over-sampling/plot_comparison_over_sampling.ipynb"),
    (IMBLEARN, _IMB + "over-sampling/plot_illustration_generation_sample.ipynb"),
    (IMBLEARN, _IMB + "over-sampling/plot_shrinkage_effect.ipynb"),
    (IMBLEARN, _IMB + "pipeline/plot_pipeline_classification.ipynb"),
    (IMBLEARN, _IMB + "under-sampling/plot_comparison_under_sampling.ipynb"),
    (IMBLEARN, _IMB + "under-sampling/plot_illustration_nearmiss.ipynb"),
    (IMBLEARN, _IMB + "under-sampling/plot_illustration_tomek_links.ipynb"),
    (IMBLEARN, _IMB + "applications/plot_multi_class_under_sampling.ipynb"),
    (IMBLEARN, _IMB + "applications/plot_outlier_rejections.ipynb"),
    (IMBLEARN, _IMB + "applications/plot_impact_imbalanced_classes.ipynb"),
    (IMBLEARN, _IMB + "applications/plot_topic_classication.ipynb"),
    (IMBLEARN, _IMB + "applications/plot_over_sampling_benchmark_lfw.ipynb"),
    (NETWORKX, _NX + "algorithms/plot_beam_search.py"),
    (NETWORKX, _NX + "algorithms/plot_betweenness_centrality.py"),
    (NETWORKX, _NX + "algorithms/plot_blockmodel.py"),
    (NETWORKX, _NX + "algorithms/plot_circuits.py"),
    (NETWORKX, _NX + "algorithms/plot_cycle_detection.py"),
    (NETWORKX, _NX + "algorithms/plot_davis_club.py"),
    (NETWORKX, _NX + "algorithms/plot_dedensification.py"),
    (NETWORKX, _NX + "algorithms/plot_girvan_newman.py"),
    (NETWORKX, _NX + "algorithms/plot_greedy_coloring.py"),
    (NETWORKX, _NX + "algorithms/plot_image_segmentation_spectral_graph_partition.py"),
    (NETWORKX, _NX + "algorithms/plot_iterated_dynamical_systems.py"),
    (NETWORKX, _NX + "algorithms/plot_krackhardt_centrality.py"),
    (NETWORKX, _NX + "algorithms/plot_lca.py"),
    (NETWORKX, _NX + "algorithms/plot_maximum_independent_set.py"),
    (NETWORKX, _NX + "algorithms/plot_metric_closure.py"),
    (NETWORKX, _NX + "algorithms/plot_rcm.py"),
    (NETWORKX, _NX + "algorithms/plot_shortest_path.py"),
    (NETWORKX, _NX + "algorithms/plot_snap.py"),
    (NETWORKX, _NX + "algorithms/plot_subgraphs.py"),
    (NETWORKX, _NX + "algorithms/plot_trust_rank.py"),
    (NETWORKX, _NX + "basic/plot_properties.py"),
    (NETWORKX, _NX + "basic/plot_read_write.py"),
    (NETWORKX, _NX + "basic/plot_simple_graph.py"),
    (NETWORKX, _NX + "drawing/plot_center_node.py"),
    (NETWORKX, _NX + "drawing/plot_chess_masters.py"),
    (NETWORKX, _NX + "drawing/plot_clusters.py"),
    (NETWORKX, _NX + "drawing/plot_degree.py"),
    (NETWORKX, _NX + "drawing/plot_directed.py"),
    (NETWORKX, _NX + "drawing/plot_edge_colormap.py"),
    (NETWORKX, _NX + "drawing/plot_ego_graph.py"),
    (NETWORKX, _NX + "drawing/plot_eigenvalues.py"),
    (NETWORKX, _NX + "drawing/plot_four_grids.py"),
    (NETWORKX, _NX + "drawing/plot_house_with_colors.py"),
    (NETWORKX, _NX + "drawing/plot_knuth_miles.py"),
    (NETWORKX, _NX + "drawing/plot_labels_and_colors.py"),
    (NETWORKX, _NX + "drawing/plot_multigraphs.py"),
    (NETWORKX, _NX + "drawing/plot_multipartite_graph.py"),
    (NETWORKX, _NX + "drawing/plot_node_colormap.py"),
    (NETWORKX, _NX + "drawing/plot_rainbow_coloring.py"),
    (NETWORKX, _NX + "drawing/plot_random_geometric_graph.py"),
    (NETWORKX, _NX + "drawing/plot_sampson.py"),
    (NETWORKX, _NX + "drawing/plot_selfloops.py"),
    (NETWORKX, _NX + "drawing/plot_simple_path.py"),
    (NETWORKX, _NX + "drawing/plot_spectral_grid.py"),
    (NETWORKX, _NX + "drawing/plot_spring_layout.py"),
    (NETWORKX, _NX + "drawing/plot_tsp.py"),
    (NETWORKX, _NX + "drawing/plot_unix_email.py"),
    (NETWORKX, _NX + "drawing/plot_weighted_graph.py"),
    (NETWORKX, _NX + "graph/plot_dag_layout.py"),
    (NETWORKX, _NX + "graph/plot_degree_sequence.py"),
    (NETWORKX, _NX + "graph/plot_erdos_renyi.py"),
    (NETWORKX, _NX + "graph/plot_expected_degree_sequence.py"),
    (NETWORKX, _NX + "graph/plot_football.py"),
    (NETWORKX, _NX + "graph/plot_karate_club.py"),
    (NETWORKX, _NX + "graph/plot_morse_trie.py"),
    (NETWORKX, _NX + "graph/plot_mst.py"),
    (NETWORKX, _NX + "graph/plot_napoleon_russian_campaign.py"),
    (NETWORKX, _NX + "graph/plot_roget.py"),
    (NETWORKX, _NX + "graph/plot_triad_types.py"),
    (NETWORKX, _NX + "graph/plot_visibility_graph.py"),
    (NETWORKX, _NX + "graph/plot_words.py"),
    (NETWORKX, _NX + "subclass/plot_antigraph.py"),
    (NETWORKX, _NX + "subclass/plot_printgraph.py"),
]

# A cell is an experiment when it fits a model or computes a metric (or, for graph
# notebooks, a graph measure): the "simple heuristic".
WRAP = re.compile(
    r"\.fit\(|fit_resample\(|score\(|cross_val|\.predict\(|classification_report\(|evaluate\("
    r"|centrality\(|communit|shortest_path|pagerank\(|clustering\("
)
NEEDS_NETWORK = (
    NETWORK_MARK,
    "URLError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "HTTPError",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RECORD_MS = re.compile(r"\+(\d+) ms to record")


def item_name(path: str) -> str:
    return Path(path).stem.removeprefix("plot_")


# ---- fetching --------------------------------------------------------------------------------


def fetch(requirement: str) -> Path:
    """The unpacked sdist of `requirement`, downloaded once into bench/.cache/."""
    name, version = requirement.split("==")
    unpacked = CACHE / "src" / f"{name}-{version}"
    if (unpacked / ".complete").exists():
        return unpacked
    downloads = CACHE / "sdists"
    downloads.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_").lower()

    def archive() -> Path | None:
        for candidate in downloads.iterdir():
            lower = candidate.name.lower().replace("-", "_")
            if lower.startswith(f"{stem}_{version}.") and candidate.suffix in (".gz", ".zip"):
                return candidate
        return None

    if archive() is None:
        subprocess.run(
            [
                str(VENV_BIN / "pip"),
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                "-d",
                str(downloads),
                requirement,
            ],
            check=True,
        )
    found = archive()
    if found is None:
        raise RuntimeError(f"pip downloaded no sdist for {requirement}")
    if unpacked.exists():
        shutil.rmtree(unpacked)
    unpacked.mkdir(parents=True)
    if found.suffix == ".zip":
        with zipfile.ZipFile(found) as bundle:
            bundle.extractall(unpacked)
    else:
        with tarfile.open(found) as bundle:
            bundle.extractall(unpacked, filter="data")
    (unpacked / ".complete").write_text(requirement)
    return unpacked


def source_file(requirement: str, path: str) -> Path:
    root = fetch(requirement)
    tops = [p for p in root.iterdir() if p.is_dir()]
    return tops[0] / path


def load_cells(path: Path) -> list[str]:
    """Code cells of a notebook, or the `# %%` cells of a script."""
    if path.suffix == ".ipynb":
        notebook = json.loads(path.read_text())
        cells = []
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                source = cell["source"]
                text = "".join(source) if isinstance(source, list) else source
                if text.strip():
                    cells.append(text)
        return cells
    cells, current = [], []
    for line in path.read_text().splitlines():
        if re.match(r"^#\s?%%", line):
            if "".join(current).strip():
                cells.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if "".join(current).strip():
        cells.append("\n".join(current))
    return cells


def wrapped(cell: str) -> bool:
    first = cell.lstrip()
    return bool(WRAP.search(cell)) and not first.startswith(("%", "!"))


# ---- kernels ---------------------------------------------------------------------------------


@dataclass
class Reply:
    seconds: float  # kernel's execute_input -> execute_reply (header dates)
    stdout: str
    error: str | None  # "Name: value" (plus traceback tail) when the cell raised
    probes: list[dict[str, Any]]
    images: int = 0  # PNGs the cell displayed (figures shown, inline backend)
    cpu: float = math.nan  # CPU seconds of the kernel process (all its threads) meanwhile


class Kernel:
    """A fresh kernel of the venv's `python3` kernelspec; a context manager."""

    def __init__(self, cwd: Path, env: dict[str, str], timeout: float) -> None:
        self.cwd, self.env, self.timeout = cwd, env, timeout

    def __enter__(self) -> Kernel:
        from jupyter_client.manager import KernelManager

        environment = {**os.environ, **self.env}
        environment.pop("PYTHONSTARTUP", None)
        environment.pop("MPLBACKEND", None)  # ipykernel's inline backend, as in Jupyter
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(
            cwd=str(self.cwd), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.pid: int | None = getattr(self.km.provisioner, "pid", None)
        return self

    def cpu_seconds(self) -> float:
        """CPU time the kernel process has used so far, all threads (Linux `schedstat`, ns):
        beside a cell's wall time it tells the cell's own work from waiting for a busy machine,
        and it counts what nbexp's background threads took meanwhile."""
        if self.pid is None:
            return math.nan
        total = 0
        try:
            for task in os.scandir(f"/proc/{self.pid}/task"):
                with (
                    contextlib.suppress(OSError),  # a thread that just ended
                    open(f"{task.path}/schedstat") as handle,
                ):
                    total += int(handle.read().split()[0])
        except OSError:
            return math.nan
        return total / 1e9

    def __exit__(self, *exc: Any) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)

    def run(self, code: str, *, history: bool = True) -> Reply:
        """Execute one cell; harness cells pass history=False (not in In, not in nbexp's history)."""
        cpu_before = self.cpu_seconds()
        msg_id = self.kc.execute(code, store_history=history, allow_stdin=False)
        started: Any = None
        out: list[str] = []
        images = 0
        error: str | None = None
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell ran over {self.timeout:.0f} s")
            try:
                message = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:  # jupyter_client's timeout: an exception with no message
                raise TimeoutError(f"cell ran over {self.timeout:.0f} s") from None
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "execute_input":
                started = message["header"]["date"]
            elif kind == "stream":
                out.append(content["text"])
            elif kind == "display_data" and "image/png" in content.get("data", {}):
                images += 1
            elif kind == "error":
                trace = _ANSI.sub("", "\n".join(content.get("traceback", [])))
                error = f"{content['ename']}: {content['evalue']}\n{trace[-1500:]}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=self.timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=self.timeout)
        if error is None and reply["content"]["status"] != "ok":
            error = f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
        cpu = self.cpu_seconds() - cpu_before
        finished = reply["header"]["date"]
        seconds = (finished - started).total_seconds() if started is not None else math.nan
        text = "".join(out)
        probes = [
            json.loads(line[len(MARK) :]) for line in text.splitlines() if line.startswith(MARK)
        ]
        return Reply(seconds, text, error, probes, images, cpu)

    def probe(self, call: str) -> dict[str, Any]:
        """Run a `_nbprobe` function in a harness cell and return what it printed."""
        reply = self.run(f"__import__('_nbprobe').{call}", history=False)
        if reply.error or not reply.probes:
            raise RuntimeError(f"probe {call[:60]} failed: {reply.error or reply.stdout[-500:]}")
        return reply.probes[-1]


# ---- one item --------------------------------------------------------------------------------


@dataclass
class Experiment:
    cell: int
    id: str
    added_ms: float = math.nan  # nbexp cell time minus the plain cell time
    record_ms: float = math.nan  # the summary line's "+N ms to record"
    new_bytes: int = 0
    variables: int = 0
    equal: int = 0
    pairs: int = 0
    pairs_kept: int = 0
    export_ok: bool = False
    figures_shown: int = 0  # images the wrapped cell displayed
    figures_recorded: int = 0  # figures in its record
    phases: dict[str, list[float]] = field(default_factory=dict)  # [wall, CPU] s per phase
    first: bool = False  # the item's first experiment (the kernel's first record)
    notes: list[str] = field(default_factory=list)


# Cells whose plain time (median over the runs) is under this are not timed: a 2 ms cell
# is mostly message passing and scheduler noise, and its ratio says nothing about nbexp.
SHORTEST_TIMED = 0.005


@dataclass
class Timings:
    """One kernel run's cell times, in cell order: wall (execute_input → execute_reply) and
    the kernel process's CPU seconds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, reply: Reply) -> None:
        self.wall.append(reply.seconds)
        self.cpu.append(reply.cpu)


def _per_cell_median(runs: list[Timings], kind: str, count: int) -> list[float]:
    columns = [getattr(run, kind)[:count] for run in runs]
    return [statistics.median(values) for values in zip(*columns, strict=True)]


@dataclass
class Result:
    name: str
    status: str = "ran"  # or "skipped: ..." / "failed: ..."
    cells: int = 0
    plain_runs: list[Timings] = field(default_factory=list)  # in the order they ran
    nbexp_runs: list[Timings] = field(default_factory=list)
    plain_errors: int = 0
    new_errors: list[str] = field(default_factory=list)
    experiments: list[Experiment] = field(default_factory=list)
    seconds: float = 0.0
    wrapped: set[int] = field(default_factory=set)  # cells the nbexp runs wrap

    def _count(self) -> int:
        runs = self.plain_runs + self.nbexp_runs
        return min((len(run.wall) for run in runs), default=0)

    def medians(self, kind: str = "wall") -> tuple[list[float], list[float]]:
        """Per cell, the median over the plain runs and over the nbexp runs."""
        count = self._count()
        if not self.plain_runs or not self.nbexp_runs:
            return [], []
        return (
            _per_cell_median(self.plain_runs, kind, count),
            _per_cell_median(self.nbexp_runs, kind, count),
        )

    def timed_cells(self) -> list[int]:
        """The cells long enough to time (plain wall median ≥ `SHORTEST_TIMED`)."""
        plain, _ = self.medians()
        return [i for i, seconds in enumerate(plain) if seconds >= SHORTEST_TIMED]

    @property
    def plain_s(self) -> float:
        plain, _ = self.medians()
        return sum(plain[i] for i in self.timed_cells()) if plain else math.nan

    @property
    def nbexp_s(self) -> float:
        _, nbexp = self.medians()
        return sum(nbexp[i] for i in self.timed_cells()) if nbexp else math.nan

    @property
    def ratio(self) -> float:
        """Σ per-cell nbexp medians / Σ per-cell plain medians, over the timed cells."""
        return self.nbexp_s / self.plain_s if self.plain_s > 0 else math.nan

    @property
    def unwrapped_ratio(self) -> float:
        """The ratio over the timed cells nbexp does not wrap: what a loaded nbexp adds to
        every cell, apart from the recording of experiments."""
        plain, nbexp = self.medians()
        cells = [i for i in self.timed_cells() if i not in self.wrapped]
        below = sum(plain[i] for i in cells) if plain else math.nan
        return sum(nbexp[i] for i in cells) / below if below > 0 else math.nan

    @property
    def cpu_ratio(self) -> float:
        """The same over the kernel process's CPU seconds (all its threads)."""
        plain, nbexp = self.medians("cpu")
        cells = self.timed_cells()
        below = sum(plain[i] for i in cells) if plain else math.nan
        return sum(nbexp[i] for i in cells) / below if below > 0 else math.nan

    @property
    def old_ratio(self) -> float:
        """The statistic before 2026-12-08: every cell of the first nbexp run over the mean
        of the first and last plain runs (one nbexp run, short cells included)."""
        count = self._count()
        if not self.plain_runs or not self.nbexp_runs or count == 0:
            return math.nan
        first, last = self.plain_runs[0].wall[:count], self.plain_runs[-1].wall[:count]
        plain = sum((a + b) / 2 for a, b in zip(first, last, strict=True))
        return sum(self.nbexp_runs[0].wall[:count]) / plain if plain > 0 else math.nan


def _skip_reason(error: str) -> str | None:
    if any(mark in error for mark in NEEDS_NETWORK):
        return "skipped: needs network"
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", error)
    if missing:
        return f"skipped: needs package {missing.group(1).split('.')[0]}"
    if "TimeoutError: cell ran over" in error:
        return "skipped: too slow"
    return None


HARNESS = "__import__('_nbprobe').guard_network()"


def _plain_run(cells: list[str], cwd: Path, env: dict[str, str], timeout: float) -> Any:
    """Times and errors of each cell, and the numbers and digests each would-be experiment
    left behind (to tell a notebook's own non-determinism from nbexp's)."""
    times = Timings()
    errors: dict[int, str] = {}
    numbers: dict[int, dict[str, Any]] = {}
    with Kernel(cwd, env, timeout) as kernel:
        kernel.run(HARNESS, history=False)
        for index, cell in enumerate(cells):
            try:
                reply = kernel.run(cell)
            except TimeoutError as error:
                return None, f"TimeoutError: {error}", None
            times.add(reply)
            if reply.error:
                reason = _skip_reason(reply.error)
                if reason:
                    return None, reply.error, None
                errors[index] = reply.error.splitlines()[0]
            if wrapped(cell):
                numbers[index] = kernel.probe("numbers()")
    return times, errors, numbers


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def run_item(requirement: str, path: str, work: Path, timeout: float, repeats: int = 2) -> Result:
    """One corpus item: fetched from its sdist, then measured by `run_notebook`."""
    try:
        source = source_file(requirement, path)
    except Exception as error:
        return Result(item_name(path), status=f"failed: fetch: {error}")
    return run_notebook(item_name(path), source, work, timeout, repeats)


def run_notebook(name: str, source: Path, work: Path, timeout: float, repeats: int = 2) -> Result:
    """Plain and nbexp runs of one notebook or script, alternating (plain, nbexp, nbexp,
    plain, plain, nbexp, …: `repeats` of each, so a drift in the machine's speed hits both
    alike), then restores and export reruns of the first nbexp run's experiments."""
    if repeats < 2:
        raise ValueError(
            "repeats: at least 2 (the two plain runs tell the notebook's own non-determinism)"
        )
    result = Result(name)
    begin = time.perf_counter()
    cells = load_cells(source)
    result.cells = len(cells)
    result.wrapped = {index for index, cell in enumerate(cells) if wrapped(cell)}
    project = work / name
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    for sibling in source.parent.iterdir():  # data files the example reads beside itself
        if sibling.is_file() and sibling.suffix not in (".py", ".ipynb", ".rst", ".txt_"):
            shutil.copy2(sibling, project / sibling.name)
    store = project / ".nbexp"
    env = {
        # no MPLBACKEND: ipykernel's default inline backend renders figures at the end of
        # each cell, as in Jupyter, in the plain runs too
        "PYTHONPATH": KERNEL_PATH,
        "NBEXP_STORE": str(store),
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    order = [
        kind for rep in range(repeats) for kind in (("plain", "nbexp"), ("nbexp", "plain"))[rep % 2]
    ]
    errors: dict[int, str] = {}
    numbers: list[dict[int, dict[str, Any]]] = []
    fingerprints: dict[str, dict[str, Any]] = {}
    for kind in order:
        if kind == "plain":
            times, found, numbers_of_run = _plain_run(cells, project, env, timeout)
            if times is None:
                if not result.plain_runs:  # the first run: the item cannot be measured
                    result.status = _skip_reason(found) or "skipped"
                    result.seconds = time.perf_counter() - begin
                    return result
                continue  # a later plain run over time: one repeat fewer
            if not result.plain_runs:
                errors = found
                result.plain_errors = len(errors)
            result.plain_runs.append(times)
            numbers.append(numbers_of_run or {})
        elif not result.nbexp_runs:
            if not _first_nbexp_run(
                result, name, cells, project, env, timeout, store, errors, fingerprints
            ):
                break  # a cell ran over the timeout with nbexp: a new error, no more repeats
        else:
            _timing_nbexp_run(result, name, cells, project, env, timeout)

    plain, nbexp = result.medians()
    for experiment in result.experiments:  # added time against the plain median of the cell
        index = experiment.cell
        if index < len(plain):
            experiment.added_ms = (nbexp[index] - plain[index]) * 1000

    _check_restores(result, project, env, timeout, store, fingerprints)
    numbers1 = numbers[0] if numbers else {}
    numbers2 = numbers[1] if len(numbers) > 1 else {}
    _check_exports(result, project, store, numbers1, numbers2)
    result.seconds = time.perf_counter() - begin
    return result


def _first_nbexp_run(
    result: Result,
    name: str,
    cells: list[str],
    project: Path,
    env: dict[str, str],
    timeout: float,
    store: Path,
    errors: dict[int, str],
    fingerprints: dict[str, dict[str, Any]],
) -> bool:
    """The run with nbexp whose experiments are checked: wrapped cells, then a fingerprint of
    the state each one recorded, its figures and its recording phases. False when a cell
    ran over the timeout."""
    times = Timings()
    last: str | None = None
    with Kernel(project, env, timeout) as kernel:
        kernel.run(HARNESS, history=False)
        kernel.run("%load_ext nbexp", history=False)
        kernel.run("__import__('_nbprobe').time_phases()", history=False)
        for index, cell in enumerate(cells):
            code = f"%%experiment {name}-c{index}\n{cell}" if wrapped(cell) else cell
            try:
                reply = kernel.run(code)
            except TimeoutError as error:
                result.new_errors.append(f"cell {index}: {error}")
                result.nbexp_runs.append(times)
                return False
            times.add(reply)
            if reply.error and index not in errors:
                result.new_errors.append(f"cell {index}: {reply.error.splitlines()[0][:160]}")
            if not wrapped(cell):
                continue
            answer = kernel.probe("last_experiment()")
            newest = answer.get("last")
            if newest is None or newest == last:
                result.new_errors.append(f"cell {index}: no experiment recorded")
                continue
            last = newest
            experiment = Experiment(cell=index, id=newest)
            recorded = _RECORD_MS.search(reply.stdout)
            if recorded:
                experiment.record_ms = float(recorded.group(1))
            experiment.phases = answer.get("phases") or {}
            experiment.first = not result.experiments
            experiment.figures_shown = reply.images
            experiment.figures_recorded = len(_record(store, newest).outcome.figures)
            if experiment.figures_recorded < experiment.figures_shown:
                experiment.notes.append(
                    f"figures: {experiment.figures_shown} shown, "
                    f"{experiment.figures_recorded} recorded"
                )
            result.experiments.append(experiment)
            names = _stored_names(store, newest)
            fingerprints[newest] = kernel.probe(f"fingerprint({names!r})")
    result.nbexp_runs.append(times)
    return True


def _timing_nbexp_run(
    result: Result,
    name: str,
    cells: list[str],
    project: Path,
    env: dict[str, str],
    timeout: float,
) -> None:
    """Another run with nbexp, for its cell times only (its records stay in the store)."""
    times = Timings()
    with Kernel(project, env, timeout) as kernel:
        kernel.run(HARNESS, history=False)
        kernel.run("%load_ext nbexp", history=False)
        for index, cell in enumerate(cells):
            code = f"%%experiment {name}-c{index}\n{cell}" if wrapped(cell) else cell
            try:
                times.add(kernel.run(code))
            except TimeoutError:
                return  # this repeat does not count
    result.nbexp_runs.append(times)


def _record(store: Path, experiment_id: str) -> Any:
    from nbexp import api

    return api.get(experiment_id, store=str(store))


def _stored_names(store: Path, experiment_id: str) -> list[str]:
    state = _record(store, experiment_id).state or {}
    return sorted(state.get("variables", {}))


def _check_restores(
    result: Result,
    project: Path,
    env: dict[str, str],
    timeout: float,
    store: Path,
    fingerprints: dict[str, dict[str, Any]],
) -> None:
    """Restore each experiment into an emptied namespace of one fresh kernel; compare."""
    if not result.experiments:
        return
    with Kernel(project, env, timeout) as kernel:
        kernel.run(HARNESS, history=False)
        kernel.run("%load_ext nbexp", history=False)
        for experiment in result.experiments:
            before = fingerprints[experiment.id]
            record = _record(store, experiment.id)
            state = record.state or {}
            experiment.new_bytes = int(state.get("new_bytes", 0))
            names = sorted(before["digests"])
            experiment.variables = len(names)
            kernel.run("%reset -f", history=False)
            restored = kernel.run(f"%exp_restore {experiment.id}", history=False)
            if restored.error:
                result.new_errors.append(f"restore {experiment.id[:8]}: {restored.error[:160]}")
                experiment.pairs = len(before["pairs"])
                continue
            after = kernel.probe(f"fingerprint({names!r})")
            for variable in names:
                if after["digests"].get(variable) == before["digests"][variable]:
                    experiment.equal += 1
                else:
                    experiment.notes.append(f"{variable} differs")
            pairs_before, pairs_after = set(before["pairs"]), set(after["pairs"])
            experiment.pairs = len(pairs_before | pairs_after)
            experiment.pairs_kept = len(pairs_before & pairs_after)
            for pair in sorted(pairs_before ^ pairs_after):
                side = "lost" if pair in pairs_before else "new"
                experiment.notes.append(f"sharing {pair} {side}")


def _check_exports(
    result: Result,
    project: Path,
    store: Path,
    numbers1: dict[int, dict[str, Any]] | None,
    numbers2: dict[int, dict[str, Any]],
) -> None:
    """Export each experiment, run the script in a fresh process, compare its metrics."""
    from nbexp.exporter import DATA_CHANGED_EXIT, METRICS_PREFIX

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(NBEXP_STORE=str(store), MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    cli_env = {**env, "PYTHONPATH": str(ROOT)}  # this tree's nbexp, as in the kernels
    for experiment in result.experiments:
        script = project / f"export_{experiment.id[:10]}.py"
        exported = subprocess.run(
            [str(VENV_BIN / "nbexp"), "export", experiment.id, "-o", str(script), "--force"],
            cwd=project,
            env=cli_env,
            capture_output=True,
            text=True,
        )
        if exported.returncode != 0:
            result.new_errors.append(
                f"export {experiment.id[:8]}: {(exported.stderr or exported.stdout).strip()[:160]}"
            )
            continue
        plain1 = (numbers1 or {}).get(experiment.cell, {})
        plain2 = numbers2.get(experiment.cell, {})
        ran = _run_script(script, project, env, [])
        if isinstance(ran, str):
            experiment.notes.append(ran)
            continue
        if ran.returncode == DATA_CHANGED_EXIT:
            # The export refused: the cells it kept rebuilt an input with other values. Fine
            # when the notebook itself rebuilds it differently each run; a bug otherwise.
            named = re.findall(r"^\S+: (\w+) is not what the experiment read", ran.stderr, re.M)
            varying = [
                v
                for v in named
                if plain1.get("digests", {}).get(v) != plain2.get("digests", {}).get(v)
            ]
            if not named or len(varying) < len(named):
                tail = (ran.stderr.strip().splitlines() or ["(no output)"])[-1]
                experiment.notes.append(f"export refused a deterministic input: {tail[:160]}")
                continue
            experiment.notes.append(
                f"export: {', '.join(named)} differ between plain runs too (rerun --no-check-data)"
            )
            ran = _run_script(script, project, env, ["--no-check-data"])
            if isinstance(ran, str):
                experiment.notes.append(ran)
                continue
        lines = [ln for ln in ran.stdout.splitlines() if ln.startswith(METRICS_PREFIX)]
        if ran.returncode != 0 or not lines:
            tail = (ran.stderr.strip().splitlines() or ["(no output)"])[-1]
            experiment.notes.append(f"export: exit {ran.returncode}: {tail[:160]}")
            continue
        rerun = json.loads(lines[-1][len(METRICS_PREFIX) :])
        recorded = _record(store, experiment.id).metrics
        numbers_1, numbers_2 = plain1.get("numbers", {}), plain2.get("numbers", {})
        differing = []
        for metric, value in recorded.items():
            deterministic = (
                metric in numbers_1
                and metric in numbers_2
                and _same(numbers_1[metric], numbers_2[metric])
            )
            if deterministic and not _same(rerun.get(metric), value):
                differing.append(f"{metric}: {value!r} -> {rerun.get(metric)!r}")
        if differing:
            experiment.notes.append("export metrics differ: " + "; ".join(differing)[:200])
        else:
            experiment.export_ok = True


def _run_script(
    script: Path, project: Path, env: dict[str, str], extra: list[str]
) -> subprocess.CompletedProcess[str] | str:
    try:
        return subprocess.run(
            [sys.executable, str(script), *extra],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        return "export: timed out after 300 s"


# ---- profile ---------------------------------------------------------------------------------


def profile_slowest(results: list[Result], work: Path, count: int, timeout: float) -> None:
    """Re-run the slowest experiments' items with those cells under cProfile; print the split."""
    experiments = [
        (experiment.added_ms, result.name, experiment.cell)
        for result in results
        for experiment in result.experiments
        if not math.isnan(experiment.added_ms)
    ]
    chosen = sorted(experiments, reverse=True)[:count]
    if not chosen:
        return
    totals: dict[str, float] = {}
    by_item: dict[str, set[int]] = {}
    for _, name, cell in chosen:
        by_item.setdefault(name, set()).add(cell)
    lookup = {item_name(path): (req, path) for req, path in CORPUS}
    for name, cells_to_profile in by_item.items():
        requirement, path = lookup[name]
        cells = load_cells(source_file(requirement, path))
        project = work / f"profile-{name}"
        shutil.copytree(work / name, project, ignore=shutil.ignore_patterns(".nbexp", "export_*"))
        env = {
            "PYTHONPATH": KERNEL_PATH,
            "NBEXP_STORE": str(project / ".nbexp"),
            "OMP_NUM_THREADS": "1",
        }
        with Kernel(project, env, timeout) as kernel:
            kernel.run(HARNESS, history=False)
            kernel.run("%load_ext nbexp", history=False)
            for index, cell in enumerate(cells):
                if index in cells_to_profile:
                    call = f"profiled_experiment({f'{name}-c{index}'!r}, {cell!r})"
                    rows = kernel.probe(call)["profile"]
                    for label, seconds in rows.items():
                        totals[label] = totals.get(label, 0.0) + seconds
                else:
                    kernel.run(f"%%experiment {name}-c{index}\n{cell}" if wrapped(cell) else cell)
    print(
        f"\nWhere recording time goes: cProfile of the {len(chosen)} slowest experiments "
        "(cumulative seconds summed over them; nested rows overlap; cProfile inflates times)"
    )
    for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:22]:
        print(f"  {seconds * 1000:9.1f} ms  {label}")


# ---- what nbexp adds to every cell ----------------------------------------------------------

# What runs (as harness cells) before the notebook's cells, in each variant: nothing, the
# package imported, the extension loaded and the kernel left idle for a while (as a user
# reading: its load-time work done), and the extension loaded right before the first cell
# (as "Run All"). `IDLE` is a pause of the harness, the kernel idle, not a cell.
IDLE = ""
CELL_COST_VARIANTS: dict[str, list[str]] = {
    "a plain": [],
    "b import nbexp": ["import nbexp"],
    "c %load_ext, settled": ["%load_ext nbexp", IDLE],
    "d %load_ext, at once": ["%load_ext nbexp"],
}


def cell_cost(
    name: str, work: Path, timeout: float, repeats: int, against: Path | None = None
) -> None:
    """Time one item's cells (none wrapped) in fresh kernels of each `CELL_COST_VARIANTS`
    variant, the variants' order rotated per repeat; print per variant the Σ of per-cell
    median wall and kernel CPU, its ratio to plain, and the first cells' medians. `against`:
    another checkout, whose nbexp is loaded in the `%load_ext` variants too, interleaved."""
    lookup = {item_name(path): (req, path) for req, path in CORPUS}
    source = source_file(*lookup[name])
    cells = load_cells(source)
    project = work / f"cellcost-{name}"
    project.mkdir(parents=True, exist_ok=True)
    for sibling in source.parent.iterdir():
        if sibling.is_file() and sibling.suffix not in (".py", ".ipynb", ".rst", ".txt_"):
            shutil.copy2(sibling, project / sibling.name)
    env = {
        "PYTHONPATH": KERNEL_PATH,
        "NBEXP_STORE": str(project / ".nbexp"),
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    variants = [(label, before, KERNEL_PATH) for label, before in CELL_COST_VARIANTS.items()]
    if against is not None:
        other = os.pathsep.join([str(against.resolve()), str(BENCH)])
        variants += [
            (f"{label} ({against.name})", before, other)
            for label, before in CELL_COST_VARIANTS.items()
            if "load_ext" in label
        ]
    runs: dict[str, list[Timings]] = {label: [] for label, _, _ in variants}
    load_start = os.getloadavg()
    for repeat in range(repeats):
        shift = repeat % len(variants)
        for label, before, path in variants[shift:] + variants[:shift]:
            times = Timings()
            with Kernel(project, {**env, "PYTHONPATH": path}, timeout) as kernel:
                kernel.run(HARNESS, history=False)
                for line in before:
                    if line == IDLE:
                        time.sleep(5)
                    else:
                        kernel.run(line, history=False)
                for cell in cells:
                    times.add(kernel.run(cell))
            runs[label].append(times)
    load_end = os.getloadavg()
    print(
        f"{name}: {len(cells)} cells, {repeats} fresh kernels per variant (order rotated); "
        f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
    )
    plain_wall = _per_cell_median(runs["a plain"], "wall", len(cells))
    plain_cpu = _per_cell_median(runs["a plain"], "cpu", len(cells))
    for label, _, _ in variants:
        wall = _per_cell_median(runs[label], "wall", len(cells))
        cpu = _per_cell_median(runs[label], "cpu", len(cells))
        print(
            f"  {label:30} wall {sum(wall) * 1000:8.1f} ms {sum(wall) / sum(plain_wall):6.3f}x"
            f"   CPU {sum(cpu) * 1000:8.1f} ms {sum(cpu) / sum(plain_cpu):6.3f}x"
            "   first cells (wall ms): " + " ".join(f"{v * 1000:.0f}" for v in wall[:6])
        )


# ---- report ----------------------------------------------------------------------------------


def disk_write_speed(folder: Path) -> float:
    """Sequential write + fsync of 64 MiB in bytes/s: the scale of the per-experiment budget."""
    path = folder / "disk-probe.bin"
    block = os.urandom(1 << 20)
    begin = time.perf_counter()
    with open(path, "wb") as handle:
        for _ in range(64):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - begin
    path.unlink()
    return (64 << 20) / seconds


def _differences(result: Result) -> list[str]:
    """One line per new error and per difference an experiment of `result` showed."""
    lines = [f"new error: {error}" for error in result.new_errors]
    for e in result.experiments:
        lines.extend(f"c{e.cell} {e.id[:8]}: {note}" for note in e.notes)
    return lines


def _counts(result: Result) -> str:
    """The item's figures, as the totals count them."""
    exps = result.experiments
    return (
        f"equal {sum(e.equal for e in exps)}/{sum(e.variables for e in exps)}, "
        f"sharing {sum(e.pairs_kept for e in exps)}/{sum(e.pairs for e in exps)}, "
        f"exports {sum(e.export_ok for e in exps)}/{len(exps)}, "
        f"figures {sum(min(e.figures_shown, e.figures_recorded) for e in exps)}"
        f"/{sum(e.figures_shown for e in exps)}, notebook errors {result.plain_errors}; "
        f"cells {result.ratio:.3f}x plain ({result.plain_s:.2f} s over "
        f"{len(result.timed_cells())} of {result.cells} cells; CPU {result.cpu_ratio:.3f}x; "
        f"cells not wrapped {result.unwrapped_ratio:.3f}x; "
        f"old method {result.old_ratio:.3f}x); added per experiment "
        + ", ".join(f"c{e.cell} {e.added_ms:+.0f} ms{_top_phases(e)}" for e in exps)
    )


def _top_phases(experiment: Experiment) -> str:
    """The record's three costliest phases (wall ms), for an item's line."""
    own = [(k, v) for k, v in experiment.phases.items() if k in PHASES]  # not the body
    ranked = sorted(own, key=lambda kv: -kv[1][0])[:3]
    return " (" + ", ".join(f"{k} {v[0] * 1000:.0f}" for k, v in ranked) + ")" if ranked else ""


def report(results: list[Result], disk: float, load_start: tuple[float, ...]) -> None:
    print(
        f"\n{'item':38} {'status':26} {'cells':>5} {'exps':>4} {'vars eq':>9}"
        f" {'sharing':>9} {'export':>7} {'new err':>7} {'plain s':>8} {'ratio':>6}"
    )
    for r in results:
        exps = r.experiments
        variables = sum(e.variables for e in exps)
        equal = sum(e.equal for e in exps)
        pairs, kept = sum(e.pairs for e in exps), sum(e.pairs_kept for e in exps)
        exported = sum(e.export_ok for e in exps)
        ran = r.status == "ran"
        print(
            f"{r.name[:38]:38} {r.status[:26]:26} {r.cells:5} {len(exps):4} "
            + (
                f"{equal:4}/{variables:<4} {kept:4}/{pairs:<4} {exported:3}/{len(exps):<3}"
                f" {len(r.new_errors):7} {r.plain_s:8.2f} {r.ratio:6.3f}"
                if ran
                else ""
            )
        )
    ran = [r for r in results if r.status == "ran"]
    exps = [e for r in ran for e in r.experiments]
    print("\nDetails (differences, new errors):")
    for r in ran:
        for line in _differences(r):
            print(f"  {r.name}: {line}")
    variables = sum(e.variables for e in exps)
    pairs = sum(e.pairs for e in exps)
    budget_over = []
    worst: Experiment | None = None
    worst_excess = -math.inf
    for r in ran:
        for e in r.experiments:
            allowed = 50 + e.new_bytes / (0.7 * disk) * 1000
            if e.added_ms - allowed > worst_excess:
                worst_excess, worst = e.added_ms - allowed, e
                worst_name = r.name
            if e.added_ms > allowed:
                budget_over.append(e)
    skipped: dict[str, int] = {}
    for r in results:
        if r.status != "ran":
            skipped[r.status] = skipped.get(r.status, 0) + 1
    print("\nTotals")
    print(f"  items run {len(ran)} / listed {len(results)}; not run: {skipped or 'none'}")
    print(f"  experiments {len(exps)}")
    print(f"  variables restored equal {sum(e.equal for e in exps)} / {variables}")
    print(f"  sharing pairs preserved {sum(e.pairs_kept for e in exps)} / {pairs}")
    print(f"  exports rerun with same metrics {sum(e.export_ok for e in exps)} / {len(exps)}")
    print(f"  new errors {sum(len(r.new_errors) for r in ran)}")
    shown = sum(min(e.figures_shown, e.figures_recorded) for e in exps)
    print(
        f"  figures shown by experiments and recorded {shown} / {sum(e.figures_shown for e in exps)}"
    )
    overhead_lines(ran)
    if exps:
        added = [e.added_ms for e in exps if not math.isnan(e.added_ms)]
        recorded = [e.record_ms for e in exps if not math.isnan(e.record_ms)]
        print(
            f"  added per experiment: median {statistics.median(added):.0f} ms, max {max(added):.0f} ms;"
            f" '+N ms to record': median {statistics.median(recorded):.0f} ms, max {max(recorded):.0f} ms"
            if added and recorded
            else ""
        )
        print(
            f"  budget 50 ms + new bytes at 70% of {disk / 1e6:.0f} MB/s: {len(budget_over)} of "
            f"{len(exps)} experiments over"
        )
        if worst is not None:
            print(
                f"  worst vs budget: {worst_name} c{worst.cell}: +{worst.added_ms:.0f} ms for "
                f"{worst.new_bytes / 1e6:.2f} MB new (budget "
                f"{50 + worst.new_bytes / (0.7 * disk) * 1000:.0f} ms; record {worst.record_ms:.0f} ms)"
            )
    phase_table(exps)
    load_end = os.getloadavg()
    print(
        f"  machine: {os.cpu_count()} cores, load average {load_start[0]:.2f} at start, "
        f"{load_end[0]:.2f} at end; wall {sum(r.seconds for r in results):.0f} s"
    )


def _spread(values: list[float]) -> str:
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return "no items"
    return (
        f"median {statistics.median(kept):.3f}, min {min(kept):.3f}, max {max(kept):.3f} "
        f"over {len(kept)} items"
    )


def overhead_lines(ran: list[Result]) -> None:
    """The notebook's own cells, nbexp over plain: per item Σ of per-cell medians over the
    repeats (cells under `SHORTEST_TIMED` plain left out), median over items; split by
    whether the item has experiments; and, once, the statistic as it was measured before."""
    if not ran:
        return
    runs = min(len(r.plain_runs) for r in ran), min(len(r.nbexp_runs) for r in ran)
    cells = sum(min(r.cells, r._count()) for r in ran)
    timed = sum(len(r.timed_cells()) for r in ran)
    print(
        f"  overhead of the notebook's own cells (nbexp / plain), per cell the median of "
        f"≥{runs[0]} plain and ≥{runs[1]} nbexp runs, alternating; {cells - timed} of {cells} "
        f"cells under {SHORTEST_TIMED * 1000:.0f} ms plain left out:"
    )
    with_exps = [r for r in ran if r.experiments]
    without = [r for r in ran if not r.experiments]
    print(f"    wall, all items:              {_spread([r.ratio for r in ran])}")
    print(f"    wall, items with experiments: {_spread([r.ratio for r in with_exps])}")
    print(f"    wall, items without any:      {_spread([r.ratio for r in without])}")
    unwrapped = [r.unwrapped_ratio for r in with_exps]
    print(f"    wall, items with experiments, only their cells not wrapped: {_spread(unwrapped)}")
    print(f"    kernel CPU, all items:        {_spread([r.cpu_ratio for r in ran])}")
    print(f"    kernel CPU, items without:    {_spread([r.cpu_ratio for r in without])}")
    print(
        f"    old method (first nbexp run, every cell, over the mean of the first and last "
        f"plain runs): {_spread([r.old_ratio for r in ran])}; items without experiments: "
        f"{_spread([r.old_ratio for r in without])}"
    )


def phase_table(exps: list[Experiment]) -> None:
    """Milliseconds per phase of recording (`_phases`; nested phases charged once), wall and
    the recording thread's CPU: median over the items' first experiments (a fresh kernel's
    first record) and over the others, and the wall sum over all experiments."""
    timed = [e for e in exps if e.phases]
    if not timed:
        return
    firsts = [e for e in timed if e.first]
    later = [e for e in timed if not e.first]
    print(
        f"  per phase, ms: median wall / CPU of first records ({len(firsts)}), of later ones "
        f"({len(later)}); wall sum over all {len(timed)}"
    )

    def median(group: list[Experiment], phase: str, kind: int) -> float:
        values = [e.phases.get(phase, [0.0, 0.0])[kind] * 1000 for e in group]
        return statistics.median(values) if values else math.nan

    for phase in PHASES:
        total = sum(e.phases.get(phase, [0.0, 0.0])[0] for e in timed) * 1000
        print(
            f"    {phase:<14} {median(firsts, phase, 0):8.1f} / {median(firsts, phase, 1):6.1f}"
            f"   {median(later, phase, 0):8.1f} / {median(later, phase, 1):6.1f}   {total:9.1f}"
        )


def compile_bytecode() -> None:
    """Compile this tree's nbexp and the harness once, as an installed package ships them:
    kernels inherit PYTHONDONTWRITEBYTECODE from a session that sets it, and would otherwise
    compile nbexp's source again in every kernel, inside its first experiment."""
    import compileall

    for folder in (ROOT / "nbexp", BENCH):
        compileall.compile_dir(str(folder), quiet=1, maxlevels=0 if folder == BENCH else 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first 8 items")
    parser.add_argument("--items", type=int, help="the first N items")
    parser.add_argument("--only", action="append", help="only items whose name contains NAME")
    parser.add_argument("--jobs", type=int, default=1, help="items in parallel (only 1 for now)")
    parser.add_argument(
        "--profile",
        type=int,
        default=5,
        metavar="N",
        help="cProfile the N slowest experiments (0: none)",
    )
    parser.add_argument("--timeout", type=float, default=120, help="seconds per cell")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        metavar="N",
        help="plain and nbexp runs per item, N of each, alternating (default 2: plain, nbexp, "
        "nbexp, plain); cell times are per-cell medians over them",
    )
    parser.add_argument("--dir", help="the temp folder (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument(
        "--cell-cost",
        metavar="NAME",
        help="only time item NAME's cells plain, after `import nbexp`, after `%%load_ext nbexp` "
        "once settled and right after it (--repeats kernels each)",
    )
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="with --cell-cost: also the %%load_ext variants with DIR's nbexp (a checkout)",
    )
    args = parser.parse_args(argv)
    if args.jobs != 1:
        parser.error("--jobs: only 1 is supported (timings need an otherwise idle kernel)")
    if args.repeats < 2:
        parser.error("--repeats: at least 2 (two plain runs tell the notebook's own randomness)")

    if args.cell_cost:
        compile_bytecode()
        work = Path(tempfile.mkdtemp(prefix="nbexp-cellcost-", dir=args.dir))
        try:
            against = Path(args.against) if args.against else None
            cell_cost(args.cell_cost, work, args.timeout, args.repeats, against)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    corpus = list(CORPUS)
    if args.only:
        corpus = [c for c in corpus if any(o in item_name(c[1]) for o in args.only)]
    if args.quick:
        corpus = corpus[:8]
    if args.items:
        corpus = corpus[: args.items]
    load_start = os.getloadavg()
    print(
        f"nbexp on {len(corpus)} public notebooks; {os.cpu_count()} cores, "
        f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    )
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="nbexp-notebooks-", dir=args.dir))
    disk = disk_write_speed(work)
    print(f"disk: sequential write + fsync {disk / 1e6:.0f} MB/s")
    results = []
    try:
        for requirement, path in corpus:
            try:
                result = run_item(requirement, path, work, args.timeout, args.repeats)
            except Exception as error:  # a kernel that died on start, a full disk: go on
                result = Result(item_name(path), status=f"failed: harness: {error!r}"[:60])
            results.append(result)
            print(
                f"  {result.name}: {result.status}, {len(result.experiments)} experiments, "
                f"{len(result.new_errors)} new errors, {result.seconds:.0f} s"
                + (f"; {_counts(result)}" if result.status == "ran" else ""),
                flush=True,
            )
            for line in _differences(result):  # as each item ends: a long run cut short keeps them
                print(f"    {line}", flush=True)
        report(results, disk, load_start)
        if args.profile:
            profile_slowest(
                [r for r in results if r.status == "ran"], work, args.profile, args.timeout
            )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
