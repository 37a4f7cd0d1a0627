"""Sweeps and searches on a real `distributed.LocalCluster` of process workers: every trial a
record written by the kernel, restorable; failures, killed workers and interrupts lose nothing."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbexp.store import open_store
from nbexp.sweep import combination_line
from tests.conftest import run
from tests.test_magic_run import assert_one_line_usage_error

distributed = pytest.importorskip("distributed")
pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two single-threaded worker processes for the whole file (starting one costs seconds);
    a worker that dies is retried once, as the clusters nbexp starts do."""
    import dask

    from nbexp.executor import CLUSTER_CONFIG

    with dask.config.set(CLUSTER_CONFIG):
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    try:
        yield local.scheduler_address
    finally:
        local.close()


def cell(line: str, body: str) -> str:
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


def records(prefix: str) -> list[Any]:
    store = open_store()
    found = [store.load(row["id"]) for row in store.rows() if row["name"].startswith(prefix)]
    return sorted(found, key=lambda e: int(e.name.rsplit("-", 1)[1]))


def fsck_clean() -> None:
    assert open_store().fsck() == []


FIT = """
depth = 1
n = 5
from sklearn.tree import DecisionTreeClassifier
import matplotlib.pyplot as plt
import nbexp
model = DecisionTreeClassifier(max_depth=depth, random_state=0).fit(X[:n * 10], y[:n * 10])
accuracy = float(model.score(X, y))
for step in range(3):
    nbexp.log("loss", 1.0 / (step + depth))
print(f"fit depth={depth} n={n}")
with open(f"model-{depth}-{n}.txt", "w") as handle:
    handle.write(f"{depth},{n}")
plt.figure()
plt.plot([0, depth, n])
"""


def test_a_grid_on_the_cluster_records_and_restores_every_trial(
    ip, capfd, cluster, project: Path
) -> None:
    run(ip, "from sklearn.datasets import load_iris\nX, y = load_iris(return_X_y=True)\n")
    before = set(ip.user_ns)
    result = run(ip, cell(f"grid --sweep depth=1,2,3,4 --sweep n=5,10,15 --cluster {cluster}", FIT))
    assert result.success, result.error_in_exec
    captured = capfd.readouterr()
    experiments = records("grid-")
    assert [e.name for e in experiments] == [f"grid-{k}" for k in range(1, 13)]
    points = [(d, n) for d in (1, 2, 3, 4) for n in (5, 10, 15)]
    assert [(e.params["depth"], e.params["n"]) for e in experiments] == points
    assert len({e.links["sweep"] for e in experiments}) == 1
    assert "on Dask (2 worker threads)" in captured.out
    assert captured.out.count("✓ recorded grid-") == 12
    store = open_store()
    for experiment, (depth, n) in zip(experiments, points, strict=True):
        assert experiment.status == "ok"
        assert experiment.outcome.stdout == f"fit depth={depth} n={n}\n"
        assert experiment.series["loss"] == [[k, 1.0 / (k + depth)] for k in range(3)]
        assert 0 < experiment.metrics["accuracy"] <= 1
        assert len(experiment.outcome.figures) == 1
        (artifact,) = experiment.artifacts
        assert artifact["path"] == f"model-{depth}-{n}.txt"  # each trial's own bytes, not the last
        assert store.read_object(artifact["hash"]) == f"{depth},{n}".encode()
        assert {d["name"] for d in experiment.data if d["kind"] == "variable"} == {"X", "y"}
        assert experiment.code.cell.startswith(
            f"%%experiment {experiment.name} -p depth={depth} -p n={n}\n"
        )
        # restoring the trial puts its own trained model into the kernel
        ip.run_line_magic("exp_restore", f"{experiment.id[:12]} model accuracy depth")
        assert ip.user_ns["depth"] == depth
        assert ip.user_ns["model"].max_depth == depth
        assert ip.user_ns["model"].score(ip.user_ns["X"], ip.user_ns["y"]) == pytest.approx(
            experiment.metrics["accuracy"]
        )
    # the kernel ran none of it: only what the restores put back is new
    assert set(ip.user_ns) - before <= {"model", "accuracy", "depth"} | {
        k for k in ip.user_ns if k.startswith("_")
    }
    table = result.result
    assert list(table["name"]) == [f"grid-{k}" for k in range(1, 13)]
    # a trial exports as a script like any other run, which reproduces its metrics
    from nbexp.rerun import parse_metrics
    from tests.test_export import assert_same_metrics, run_script

    trial = experiments[7]
    ip.run_line_magic("exp_export", f"{trial.id[:12]} -o trial.py")
    completed = run_script(project / "trial.py", cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert_same_metrics(parse_metrics(completed.stdout), trial.metrics)
    fsck_clean()


def test_a_search_on_the_cluster_is_a_seeded_study_of_records(ip, capfd, cluster) -> None:
    from nbexp.search import study

    run(ip, "import numpy as np\nnoise = np.linspace(0, 1, 5)\n")
    line = (
        'tune --search "lr=loguniform(1e-3,1.0)" --search "depth=int(1,6)" '
        f"--search \"kind=choice('a','b')\" --trials 10 --maximize score --cluster {cluster}"
    )
    body = """
    lr = 0.1
    depth = 3
    kind = "a"
    score = -abs(lr - 0.1) - abs(depth - 4) + (kind == "b") + float(noise[0])
    """
    result = run(ip, cell(line, body))
    assert result.success, result.error_in_exec
    out = capfd.readouterr().out
    experiments = records("tune-")
    assert len(experiments) == 10
    links = [e.links["search"] for e in experiments]
    assert {link["seed"] for link in links} == {links[0]["seed"]}
    assert links[0]["space"] == {
        "lr": "loguniform(0.001,1.0)",
        "depth": "int(1,6)",
        "kind": "choice('a','b')",
    }
    assert sorted(link["trial"] for link in links) == list(range(10))
    assert all(link["sampler"] == "tpe" and link["objective"] == "score" for link in links)
    for experiment in experiments:
        params = experiment.params
        assert 1e-3 <= params["lr"] <= 1.0 and 1 <= params["depth"] <= 6
        expected = -abs(params["lr"] - 0.1) - abs(params["depth"] - 4) + (params["kind"] == "b")
        assert experiment.metrics["score"] == pytest.approx(expected)
        ip.run_line_magic("exp_restore", f"{experiment.id[:12]} score lr")
        assert ip.user_ns["score"] == experiment.metrics["score"]
    best = max(experiments, key=lambda e: e.metrics["score"])
    assert f"best of search {experiments[0].links['sweep']}: {best.name}" in out
    rebuilt = study(experiments[0].links["sweep"])
    assert len(rebuilt.trials) == 10
    assert rebuilt.best_value == pytest.approx(best.metrics["score"])
    fsck_clean()


def test_a_trial_that_raises_is_recorded_failed_and_the_rest_go_on(ip, capfd, cluster) -> None:
    body = """
    k = 0
    def check(value):
        if value == 2:
            raise ValueError("two is cursed")
    check(k)
    score = k * 10
    """
    result = run(ip, cell(f"fragile --sweep k=1,2,3 --cluster {cluster}", body))
    assert result.success  # only a sweep where every run failed fails the cell
    err = capfd.readouterr().err
    assert "✗ fragile-2 failed: TrialFailed: ValueError: two is cursed" in err
    one, two, three = records("fragile-")
    assert (one.status, two.status, three.status) == ("ok", "failed", "ok")
    assert two.outcome.error["type"] == "ValueError"
    trace = two.outcome.error["traceback"]
    assert 'raise ValueError("two is cursed")' in trace and "executor.py" not in trace
    assert "score" not in two.metrics and three.metrics["score"] == 30
    fsck_clean()


def test_a_worker_killed_mid_trial_is_retried_once_then_recorded_failed(
    ip, capfd, cluster, project: Path
) -> None:
    body = """
    mode = "ok"
    import os, signal, pathlib
    marker = pathlib.Path(f"attempted-{mode}")
    first = not marker.exists()
    marker.write_text("x")
    if mode == "always" or (mode == "once" and first):
        os.kill(os.getpid(), signal.SIGKILL)
    done = len(marker.read_text())
    """
    line = f"killed --sweep mode=always,once,ok --cluster {cluster}"
    result = run(ip, cell(line, body))
    assert result.success, result.error_in_exec
    always, once, ok = records("killed-")
    assert always.status == "failed"
    assert always.outcome.error["type"] == "KilledWorker"
    assert "died, and again on retry" in always.outcome.error["message"]
    assert once.status == "ok" and once.metrics["done"] == 1  # retried on a fresh worker
    assert ok.status == "ok"
    fsck_clean()
    capfd.readouterr()


def test_inputs_that_cannot_be_pickled_are_one_line_before_anything_starts(
    ip, capfd, cluster
) -> None:
    from nbexp import executor

    executor.close_cluster()
    run(ip, "import threading\nguard = threading.Lock()\n")
    capfd.readouterr()
    result = run(ip, cell("locked --sweep k=1,2 --workers 2", "k = 0\nwith guard:\n    s = k\n"))
    assert executor.kept_cluster() is None  # no cluster was started for it
    assert_one_line_usage_error(
        result, capfd.readouterr(), "the body reads guard (lock), which cannot be sent to Dask"
    )
    assert open_store().rows() == []


def test_a_value_the_body_makes_that_cannot_travel_is_named_not_stale(ip, capfd, cluster) -> None:
    run(ip, "handle = 'an older value'\n")
    body = """
    k = 0
    import threading
    handle = threading.Lock()
    score = k
    """
    result = run(ip, cell(f"unship --sweep k=1,2 --cluster {cluster}", body))
    assert result.success, result.error_in_exec
    for experiment in records("unship-"):
        assert experiment.status == "ok"
        assert "handle" not in experiment.state["variables"]
        assert "could not leave the worker" in experiment.state["unstored"]["handle"]


def test_a_connected_client_is_used_and_workers_0_stays_in_the_kernel(ip, capfd, cluster) -> None:
    client = distributed.Client(cluster)  # the kernel's default client, as a user makes one
    try:
        assert run(ip, cell("viaclient --sweep k=1,2", "k = 0\nscore = k\n")).success
        assert "on Dask" in capfd.readouterr().out
        assert run(ip, cell("here --sweep k=1,2 --workers 0", "k = 0\nscore = k\n")).success
        out = capfd.readouterr().out
        assert "on Dask" not in out and "[2/2] here-2" in out
    finally:
        client.close()
    assert [e.metrics["score"] for e in records("viaclient-")] == [1, 2]
    assert [e.metrics["score"] for e in records("here-")] == [1, 2]


def test_a_search_in_the_kernel_with_the_grid_sampler(ip, capfd) -> None:
    line = "g --search \"k=int(1,3)\" --search \"m=choice('x','y')\" --sampler grid --minimize loss"
    result = run(ip, cell(line, 'k = 0\nm = "x"\nloss = abs(k - 2) + (m == "y")\n'))
    assert result.success, result.error_in_exec
    experiments = records("g-")
    assert sorted((e.params["k"], e.params["m"]) for e in experiments) == [
        (k, m) for k in (1, 2, 3) for m in ("x", "y")
    ]
    assert "best of search" in capfd.readouterr().out
    assert ip.user_ns["loss"] in {e.metrics["loss"] for e in experiments}  # ran in the kernel


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('--search "lr=normal(0,1)" --maximize f1', "unknown distribution normal()"),
        ('--search "lr=uniform(1,0)" --maximize f1', "the low end must be below the high end"),
        ('--search "lr=loguniform(0,1)" --maximize f1', "loguniform needs a positive low end"),
        ('--search "lr=uniform(0,1)"', "--maximize NAME or --minimize NAME"),
        ('--search "lr=uniform(0,1)" --maximize f1 --sampler grid', "--sampler grid needs"),
        ("--workers 2", "go with a --sweep or a --search"),
        ('--search "k=int(1,3)" --sweep k=1,2 --maximize f1', "do not mix"),
        ('--search "k=int(1,3)" -p k=2 --maximize f1', "k is both searched and set with -p"),
    ],
)
def test_bad_search_lines_are_one_line_usage_errors(ip, capfd, line: str, needle: str) -> None:
    result = run(ip, cell(line, "k = 1\nlr = 0.1\nf1 = 1.0\n"))
    assert_one_line_usage_error(result, capfd.readouterr(), needle)


def test_a_missing_extra_is_one_line_naming_the_install(ip, capfd, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed → ImportError
    result = run(ip, cell("x --sweep k=1,2 --workers 2", "k = 0\n"))
    assert_one_line_usage_error(result, capfd.readouterr(), "pip install 'nbexp[dask]'")


def test_a_trials_line_drops_the_options_of_running_many() -> None:
    line = (
        'rf --search "lr=uniform(0,1)" --trials 5 --maximize f1 --sampler random --workers 2 '
        "--cluster tcp://h:1 --max-runs 9 --params-file p.yaml -t a"
    )
    assert combination_line(line, "rf-3", ["lr=0.5"]) == (
        "rf-3 --params-file p.yaml -t a -p lr=0.5"
    )
    assert combination_line("--workers=2 --sweep k=1,2", "s-1", ["k=1"]) == "s-1 -p k=1"


KERNEL_SWEEP = """
%load_ext nbexp
import time
"""


@contextlib.contextmanager
def sweep_kernel(project: Path) -> Iterator[tuple[Any, Any]]:
    """A real kernel in `project` (Agg, no NBEXP_STORE) with nbexp loaded by KERNEL_SWEEP:
    (its manager, a started client); shut down after."""
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("NBEXP_STORE", None)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(project))
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        assert client.execute_interactive(KERNEL_SWEEP, timeout=60)["content"]["status"] == "ok"
        yield manager, client
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)


@pytest.mark.kernel
def test_interrupting_the_kernel_cancels_the_rest_and_keeps_every_finished_trial(
    project: Path, cluster: str
) -> None:
    """A real kernel, a real SIGINT (`interrupt_kernel`) while it waits on the cluster."""
    with sweep_kernel(project) as (manager, client):
        sweep = cell(
            f"slow --sweep k=1,2,3,4,5,6,7,8,9,10 --cluster {cluster}",
            "k = 0\nimport time\ntime.sleep(0.5 if k <= 2 else 30)\nscore = k\n",
        )
        message_id = client.execute(sweep)
        records_dir = project / ".nbexp" / "records"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if records_dir.exists() and len(list(records_dir.rglob("*.json"))) >= 2:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # the long trials are running now
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != message_id:
            reply = client.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        # the kernel is alive, and the cluster is free again (the rest were cancelled)
        check_code = (
            "import distributed\n"
            f"c = distributed.Client({cluster!r}, set_as_default=False)\n"
            "import time\n"
            "for _ in range(50):\n"
            "    if not any(c.processing().values()): break\n"
            "    time.sleep(0.2)\n"
            "assert not any(c.processing().values()), c.processing()\n"
            "c.close()\n"
        )
        for _ in range(5):  # a request that races the kernel's abort after an error is aborted
            check = client.execute_interactive(check_code, timeout=60)
            if check["content"]["status"] != "aborted":
                break
            time.sleep(0.5)
        assert check["content"]["status"] == "ok"
    store = open_store()
    names = sorted(row["name"] for row in store.rows())
    assert names == ["slow-1", "slow-2"]
    assert all(store.load(row["id"]).status == "ok" for row in store.rows())
    fsck_clean()


@pytest.mark.kernel
def test_in_a_notebook_the_sweeps_table_shows_while_trials_land_then_gives_way(
    project: Path, cluster: str
) -> None:
    """A real kernel's messages: the live table is displayed as the first trials land, refreshed
    in place, and emptied before the cell's own final table."""
    messages: list[dict[str, Any]] = []
    with sweep_kernel(project) as (_, client):
        sweep = cell(
            f"live --sweep k=1,2,3,4 --cluster {cluster}",
            "k = 0\nimport time\ntime.sleep(1.5 * k)\nscore = k\n",
        )
        reply = client.execute_interactive(sweep, timeout=120, output_hook=messages.append)
        assert reply["content"]["status"] == "ok"
    shown = [
        m
        for m in messages
        if m["msg_type"] in ("display_data", "update_display_data")
        and "text/html" in m["content"]["data"]
        and "live-" in m["content"]["data"]["text/html"]
    ]
    assert shown, [m["msg_type"] for m in messages]
    first = shown[0]
    assert first["msg_type"] == "display_data"  # shown while the sweep was still running
    table_id = first["content"]["transient"]["display_id"]
    assert "live-4" not in first["content"]["data"]["text/html"]
    updates = [
        m
        for m in messages
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == table_id
    ]
    assert updates and updates[-1]["content"]["data"] == {"text/plain": ""}
    (final,) = [m for m in messages if m["msg_type"] == "execute_result"]
    assert all(f"live-{k}" in final["content"]["data"]["text/html"] for k in range(1, 5))


def test_a_large_input_is_scattered_once_and_read_by_every_trial(ip, capfd, cluster) -> None:
    from nbexp.executor import SCATTER_BYTES, pack_inputs

    run(ip, "import numpy as np\nbig = np.arange(400_000.0)\nsmall = [1, 2, 3]\n")
    shipment = pack_inputs(ip.user_ns, {"big", "small", "np"})
    assert set(shipment.large) == {"big"} and big_enough(ip.user_ns["big"], SCATTER_BYTES)
    assert set(shipment.small) == {"small", "np"}
    result = run(
        ip,
        cell(
            f"scat --sweep k=1,2,3 --cluster {cluster}",
            "k = 0\ntotal = float(big[k]) + small[k - 1]\n",
        ),
    )
    assert result.success, result.error_in_exec
    experiments = records("scat-")
    assert [e.metrics["total"] for e in experiments] == [2.0, 4.0, 6.0]
    assert all(any(d.get("name") == "big" for d in e.data) for e in experiments)


def big_enough(value: Any, limit: int) -> bool:
    return int(value.nbytes) >= limit


WORKER = """
k = 0
import os
import helper
pid = os.getpid()
answer = helper.ANSWER + k
threads = int(os.environ.get("OMP_NUM_THREADS", "0"))  # 0: unset
"""


def test_workers_keep_their_cluster_for_the_next_sweep_and_see_edited_modules(
    ip, capfd, project: Path, monkeypatch
) -> None:
    from nbexp import executor

    (project / "helper.py").write_text("ANSWER = 40\n")
    kernel_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        assert run(ip, cell("first --sweep k=1,2 --workers 2", WORKER)).success
        out = capfd.readouterr().out
        assert "stays up for the next sweep" in out and "NBEXP_DASK_KEEP=0" in out
        first = records("first-")
        assert [e.metrics["answer"] for e in first] == [41, 42]
        assert os.environ.get("OMP_NUM_THREADS") == kernel_threads  # the kernel's, untouched
        assert {e.metrics["threads"] for e in first} == {1}  # one BLAS/OpenMP thread each

        # the next sweep runs in the same worker processes, not in new ones
        assert run(ip, cell("second --sweep k=1,2 --workers 2", WORKER)).success
        assert "kept from the last sweep" in capfd.readouterr().out
        pids = {e.metrics["pid"] for e in first}
        assert {e.metrics["pid"] for e in records("second-")} <= pids

        # a module of the project edited since: the workers start again and import the new one
        (project / "helper.py").write_text("ANSWER = 50\n")
        later = time.time() + 5
        os.utime(project / "helper.py", (later, later))
        assert run(ip, cell("edited --sweep k=1,2 --workers 2", WORKER)).success
        edited = records("edited-")
        assert [e.metrics["answer"] for e in edited] == [51, 52]
        assert not {e.metrics["pid"] for e in edited} & pids

        # NBEXP_DASK_KEEP=0: closed after the sweep, the next one starts its own
        monkeypatch.setenv("NBEXP_DASK_KEEP", "0")
        assert run(ip, cell("closing --sweep k=1,2 --workers 2", WORKER)).success
        assert executor.kept_cluster() is None
        assert "stays up" not in capfd.readouterr().out
    finally:
        executor.close_cluster()
    fsck_clean()
