"""Several kernels and a CLI reader sharing one store at the same time (SPEC §2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from nbexp.store import Store

WRITERS = 3
RUNS = 30

# One "kernel": a real IPython shell with nbexp loaded, recording RUNS experiments.
KERNEL = textwrap.dedent(
    """
    import os, sys, time
    from IPython.core.interactiveshell import InteractiveShell

    worker, runs, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbexp")
    assert shell.run_cell("import numpy as np\\nshared = np.arange(20000.0)", store_history=True).success
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(runs):
        own = f"mine = np.full(500, {worker} * 1000.0 + {i})\\n" if i % 3 == 0 else ""
        cell = (
            f"%%experiment w{worker}-{i} -t worker{worker}\\n"
            f"worker = {worker}\\nstep = {i}\\n{own}"
            "score = float(shared.sum()) + step\\n"
        )
        result = shell.run_cell(cell, store_history=True)
        if not result.success:
            print(f"worker {worker} run {i} failed", file=sys.stderr)
            sys.exit(3)
    print(f"worker {worker} done")
    """
)

# A CLI user listing the store over and over while the kernels write.
READER = textwrap.dedent(
    """
    import contextlib, io, json, os, sys, time
    from nbexp.cli import main

    def cli(*argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
        if code != 0:
            print(f"reader: {argv} exited {code}", file=sys.stderr)
            sys.exit(4)
        return out.getvalue()

    go, stop = sys.argv[1], sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.005)
    rounds = seen = 0
    while not os.path.exists(stop) or rounds < 3:
        count = len(json.loads(cli("list", "--format", "json")))
        if count < seen:
            print(f"reader: the store shrank from {seen} to {count}", file=sys.stderr)
            sys.exit(5)
        seen = count
        cli("list", "metrics.score > 0", "--sort", "-metrics.score")
        if count:
            cli("show", "last")
        rounds += 1
    print(f"reader did {rounds} rounds, last saw {seen}")
    """
)


def test_kernels_and_cli_share_one_store(tmp_path: Path) -> None:
    store_root = tmp_path / "shared" / ".nbexp"  # created by the racing processes themselves
    go, stop = tmp_path / "go", tmp_path / "stop"
    env = {
        **os.environ,
        "NBEXP_STORE": str(store_root),
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    env.pop("JPY_SESSION_NAME", None)
    workdir = tmp_path / "work"
    workdir.mkdir()
    kernels = [
        subprocess.Popen(
            [sys.executable, "-c", KERNEL, str(worker), str(RUNS), str(go)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(1, WRITERS + 1)
    ]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(go), str(stop)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    go.touch()
    outputs = []
    try:
        for kernel in kernels:
            out, err = kernel.communicate(timeout=120)
            outputs.append((kernel.returncode, out, err))
        stop.touch()
        reader_out, reader_err = reader.communicate(timeout=120)
    finally:
        for process in (*kernels, reader):
            if process.poll() is None:
                process.kill()
    for code, out, err in outputs:
        text = out + err
        assert code == 0, text
        assert "database is locked" not in text, text
        assert "NOT recorded" not in text, text
        assert "Traceback" not in text, text
        assert out.count("✓ recorded") == RUNS, text
    assert reader.returncode == 0, reader_out + reader_err
    assert "database is locked" not in reader_err, reader_err

    expected = {f"w{worker}-{i}" for worker in range(1, WRITERS + 1) for i in range(RUNS)}
    cli = [sys.executable, "-m", "nbexp.cli"]
    listed = subprocess.run(
        [*cli, "list", "--format", "json"], env=env, capture_output=True, text=True, check=True
    )
    rows = json.loads(listed.stdout)
    assert len(rows) == WRITERS * RUNS
    assert {row["name"] for row in rows} == expected
    assert len({row["id"] for row in rows}) == WRITERS * RUNS
    for row in rows:
        worker, step = row["name"][1:].split("-")
        assert row["params"] == {"worker": int(worker), "step": int(step)}
        assert row["tags"] == [f"worker{worker}"]

    store = Store(store_root)
    assert sorted(store.iter_record_ids()) == sorted(row["id"] for row in rows)
    assert list(store.tmp_dir.iterdir()) == []
    assert store.fsck() == []
    fsck = subprocess.run([*cli, "fsck"], env=env, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    # every record's state loads back: shared objects written by racing kernels are intact
    from nbexp.state import StateLoader

    for experiment_id in list(store.iter_record_ids())[:: WRITERS * 3]:
        experiment = store.load(experiment_id)
        loader = StateLoader(store, experiment.state or {})
        assert loader.load("shared").sum() == sum(range(20000))
    assert store.reindex() == WRITERS * RUNS
