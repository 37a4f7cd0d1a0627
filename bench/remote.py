"""Benchmark: `nbexp push` / `pull` against an S3 API, beside raw s3fs on the same bytes.

Starts moto's standalone S3 server (`python -m moto.server`) on a free local port, fills a
temp store with N synthetic experiments that each hold distinct 1 MiB objects (full: 1,000
experiments, 2 GB; `--quick`: 100 experiments, 200 MB), and times, through s3fs with the
`endpoint_url` option exactly as a real bucket would be reached:

* ``push``            everything, into an empty remote                   (MB/s)
* ``push again``      nothing new: what a second push costs              target <= 2 s
* ``pull``            everything, into a second empty store              (MB/s)
* raw s3fs ``put`` / ``get`` of the same files — every object and every record, as keys of
  their own — in one batched call each (s3fs's own asyncio concurrency): the ceiling for
  this server on this machine.

Ratios push/raw put and pull/raw get: target >= 0.8. Requests sent by the second push are
counted with botocore's `before-send` event. Prints figures only; never asserts. moto keeps
objects in memory, so the server holds about twice the data size at the end (nbexp's copy
and the raw copy): the script checks free disk and memory first and shrinks the run when
either is short.

    .venv/bin/python bench/remote.py [--quick] [--experiments N] [--mb N] [--workers N]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime as dt
import io
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 1_000_000
MIB = 1 << 20
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
                return process, endpoint
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit("moto's S3 server did not start") from None
            time.sleep(0.1)


def fill_store(store: Any, experiments: int, objects_each: int) -> int:
    """N records, each with `objects_each` distinct 1 MiB objects (random bytes)."""
    import numpy as np

    from nbexp.record import Code, Experiment, Outcome

    rng = np.random.default_rng(7)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    batch = getattr(store, "object_batch", None)
    total = 0
    for i in range(experiments):
        context = batch() if batch is not None else _nothing()
        with context:
            hashes = [store.put_bytes(rng.bytes(MIB)) for _ in range(objects_each)]
        total += objects_each * MIB
        created = (base + dt.timedelta(seconds=i)).isoformat(timespec="microseconds")
        draft = Experiment(
            id="",
            name=f"bench-{i}",
            created=created,
            code=Code(cell=f"%%experiment bench-{i}\nx = {i}\n", source=f"x = {i}\n"),
            outcome=Outcome(status="ok", started=created, duration=1.0),
            params={"i": i},
            metrics={"score": i / experiments},
            env={"python": "3", "platform": "bench", "packages": {}},
            artifacts=[
                {"path": f"a{j}.bin", "hash": digest, "size": MIB}
                for j, digest in enumerate(hashes)
            ],
        )
        store.save(dataclasses.replace(draft, id=store.make_id(draft.to_dict())))
    return total


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    begin = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - begin


class Requests:
    """Counts the HTTP requests a botocore client sends (`before-send` event)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, **kwargs: Any) -> None:
        self.sent.append(str(kwargs.get("event_name")).split(".")[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 experiments, 200 MB")
    parser.add_argument("--experiments", type=int, help="number of experiments")
    parser.add_argument("--mb", type=int, help="total data size in MB (MiB objects)")
    parser.add_argument("--workers", type=int, default=None, help="nbexp's parallel transfers")
    parser.add_argument("--dir", help="where the temp stores go (default: system temp)")
    parser.add_argument("--profile", action="store_true", help="cProfile the push and the pull")
    parser.add_argument(
        "--repeat", type=int, help="rounds; the best of each is shown (default: 3 quick, 1 full)"
    )
    args = parser.parse_args()

    experiments = args.experiments or (100 if args.quick else 1000)
    total_mb = args.mb or (200 if args.quick else 2000)
    objects_each = max(1, round(total_mb / experiments / (MIB / MB)))
    notes: list[str] = []
    base = Path(args.dir or tempfile.gettempdir())
    need_disk = 3 * experiments * objects_each * MIB + 500 * MB
    rounds = args.repeat or (3 if args.quick else 1)
    need_memory = (2 * rounds + 0.5) * experiments * objects_each * MIB + 1000 * MB
    free_disk = shutil.disk_usage(base).free
    free_memory = available_memory()
    if free_disk < need_disk or free_memory < need_memory:
        scale = min(free_disk / need_disk, free_memory / need_memory)
        experiments = max(10, int(experiments * scale))
        notes.append(
            f"shrunk to {experiments} experiments: {free_disk / 1e9:.1f} GB disk and "
            f"{free_memory / 1e9:.1f} GB memory free"
        )
    size = experiments * objects_each * MIB
    repeat = args.repeat or (3 if args.quick else 1)

    os.environ.update(CREDENTIALS)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    import s3fs

    from nbexp.remote import add_remote, get_remote, open_remote, pull, push
    from nbexp.store import Store
    from nbexp.transfer import DEFAULT_WORKERS

    workers = args.workers or DEFAULT_WORKERS
    load_before = os.getloadavg()[0]
    moto, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="nbexp-bench-remote-", dir=base))
    rows: list[tuple[str, str, str]] = []
    moved: list[str] = []
    moved_bytes = size
    try:
        raw_fs = s3fs.S3FileSystem(
            client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True
        )
        raw_fs.mkdir("bench")
        print(
            f"filling a store with {experiments} experiments x {objects_each} MiB "
            f"({size / MB:.0f} MB) ...",
            flush=True,
        )
        a = Store(work / "a" / ".nbexp")
        _, setup = timed(fill_store, a, experiments, objects_each)
        print(f"  setup {setup:.1f} s", flush=True)
        # the same bytes as nbexp moves: every object file and every record file
        moved = sorted(str(p) for p in a.objects_dir.glob("*/*"))
        moved += sorted(str(p) for p in a.records_dir.glob("*/*.json"))
        moved_bytes = sum(os.path.getsize(p) for p in moved)
        profiler = cProfile.Profile() if args.profile else None
        times: dict[str, list[float]] = {}
        again_requests: list[str] = []
        problems: list[Any] = []
        for round_ in range(repeat):
            # each round: a fresh remote prefix, raw keys and pulling store, nbexp and raw
            # s3fs alternating so that a change in the machine's load hits both
            name = f"bench{round_}"
            url = f"s3://bench/nbexp-{round_}"
            add_remote(a, name, url, {"endpoint_url": endpoint})
            b = Store(work / f"b{round_}" / ".nbexp")
            add_remote(b, name, url, {"endpoint_url": endpoint})
            raw_keys = [f"bench/raw-{round_}/{Path(p).parent.name}{Path(p).name}" for p in moved]

            if profiler:
                profiler.enable()
            first, seconds = timed(push, a, name, workers=workers, progress=False)
            if profiler:
                profiler.disable()
            times.setdefault("push", []).append(seconds)
            print(f"  {first}", flush=True)

            fs = open_remote(get_remote(a, name)).fs
            fs.connect()
            counter = Requests()
            fs.s3.meta.events.register("before-send.s3", counter)
            again, seconds = timed(push, a, name, workers=workers, progress=False)
            fs.s3.meta.events.unregister("before-send.s3", counter)
            times.setdefault("again", []).append(seconds)
            again_requests = counter.sent
            kinds = ", ".join(sorted(set(again_requests)))
            print(f"  {again} ({len(again_requests)} requests: {kinds})", flush=True)

            _, seconds = timed(raw_fs.put, moved, raw_keys)
            times.setdefault("put", []).append(seconds)

            if profiler:
                profiler.enable()
            pulled, seconds = timed(pull, b, name, workers=workers, progress=False)
            if profiler:
                profiler.disable()
            times.setdefault("pull", []).append(seconds)
            print(f"  {pulled}", flush=True)
            fetched = work / f"raw-get-{round_}"
            fetched.mkdir()
            local_targets = [str(fetched / key.rsplit("/", 1)[-1]) for key in raw_keys]
            _, seconds = timed(raw_fs.get, raw_keys, local_targets)
            times.setdefault("get", []).append(seconds)
            problems = b.fsck()
            b.close()
            shutil.rmtree(b.root.parent, ignore_errors=True)
            shutil.rmtree(fetched, ignore_errors=True)

        push_seconds, again_seconds = min(times["push"]), min(times["again"])
        raw_put_seconds, pull_seconds = min(times["put"]), min(times["pull"])
        raw_get_seconds = min(times["get"])

        def rate(seconds: float) -> float:
            return moved_bytes / MB / seconds

        push_rate, put_rate = rate(push_seconds), rate(raw_put_seconds)
        pull_rate, get_rate = rate(pull_seconds), rate(raw_get_seconds)
        rows = [
            ("push (everything new)", f"{push_seconds:.2f} s", f"{push_rate:.1f} MB/s"),
            ("raw s3fs put (same files)", f"{raw_put_seconds:.2f} s", f"{put_rate:.1f} MB/s"),
            ("push / raw put", "", f"{push_rate / put_rate:.2f}  (target >= 0.8)"),
            (
                "push again (nothing new)",
                f"{again_seconds:.3f} s",
                f"{len(again_requests)} requests  (target <= 2 s)",
            ),
            ("pull (everything new)", f"{pull_seconds:.2f} s", f"{pull_rate:.1f} MB/s"),
            ("raw s3fs get (same keys)", f"{raw_get_seconds:.2f} s", f"{get_rate:.1f} MB/s"),
            ("pull / raw get", "", f"{pull_rate / get_rate:.2f}  (target >= 0.8)"),
            ("fsck of the pulled store", "", "clean" if not problems else f"{problems[:3]}"),
        ]
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"remote: {experiments} experiments, {experiments * objects_each} objects of 1 MiB "
        f"({size / MB:.0f} MB; with the records {moved_bytes / MB:.0f} MB in "
        f"{len(moved)} keys), moto S3 server on localhost, nbexp workers {workers}, "
        f"best of {repeat} round{'s' if repeat > 1 else ''}, "
        f"{cores()} cores, load average {load_before:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )
    width = max(len(row[0]) for row in rows)
    print(f"{'what':<{width}}  {'time':>10}  rate / note")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:>10}  {note}")
    for note in notes:
        print(f"NOTE: {note}")
    if args.profile and profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(20)
        print("\n--- cProfile: push + pull (top 20 by cumulative time) ---")
        print(out.getvalue().rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
