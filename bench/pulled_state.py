"""Benchmark: a pull of a large state, and restoring it from the pulling store — the pulled
objects written into one pack as they arrive (what `nbexp pull` does for more than 16
objects) beside the same objects written as loose files (what a small pull does; forced here
with `FEW_OBJECTS`), in one run, alternating, best of N.

One record holds a float64 array of --mb megabytes (1 MiB chunks, one pack in the recording
store), pushed once to a file:// remote. Each round pulls it into two fresh stores (pack,
loose) and restores the array from each into a fresh namespace (`api.restore`, in this
process). References measured in the same run: writing the same bytes once from memory into
one file and fsyncing it (what a pull must at least do: every byte written once, durably),
copying them file to file (`shutil.copyfile`, no fsync), and reading them from the page
cache into new memory (the floor of a restore that copies).

Prints figures and the load average; never asserts. Everything lives in a temp dir.

    .venv/bin/python bench/pulled_state.py [--mb 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbexp import api
from nbexp import store as store_module
from nbexp.remote import add_remote, pull, push
from nbexp.store import objects as objects_module


@contextlib.contextmanager
def loose_pulls() -> Iterator[None]:
    """Adopt pulled objects as loose files, as nbexp did before pulls wrote packs."""
    saved = objects_module.FEW_OBJECTS
    objects_module.FEW_OBJECTS = 1 << 40
    try:
        yield
    finally:
        objects_module.FEW_OBJECTS = saved


def record(root: Path, megabytes: int) -> str:
    """A record whose state is one array, written through a real IPython shell."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    assert shell is not None
    os.environ["NBEXP_STORE"] = str(root)
    shell.run_line_magic("load_ext", "nbexp")
    count = megabytes * 1_000_000 // 8
    cell = f"%%experiment big\nimport numpy as np\narr = np.random.default_rng(0).random({count})\n"
    assert shell.run_cell(cell).success
    del os.environ["NBEXP_STORE"]
    return str(api.get("big", store=root).id)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def write_once(data: bytes, path: Path) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_into_memory(path: Path) -> None:
    buffer = bytearray(os.path.getsize(path))
    with open(path, "rb", buffering=0) as handle:
        handle.readinto(buffer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbexp-pulled-"))
    try:
        source = work / "source" / ".nbexp"
        source.mkdir(parents=True)
        experiment_id = record(source, args.mb)
        remote = work / "remote"
        origin = store_module.open_store(source)
        add_remote(origin, "origin", str(remote))
        push(origin, "origin", progress=False)
        size = sum(p.stat().st_size for p in (remote / "objects").rglob("*") if p.is_file())
        expected = np.random.default_rng(0).random(args.mb * 1_000_000 // 8)
        blob = work / "blob"
        blob.write_bytes(expected.tobytes())
        figures: dict[str, list[float]] = {}
        for round_number in range(args.rounds):
            for how in ("pack", "loose"):
                root = work / f"{how}-{round_number}" / ".nbexp"
                root.mkdir(parents=True)
                target = store_module.open_store(root)
                add_remote(target, "origin", str(remote), trusted=True)
                with loose_pulls() if how == "loose" else contextlib.nullcontext():
                    seconds = timed(lambda t=target: pull(t, "origin", progress=False))
                figures.setdefault(f"pull, {how}", []).append(seconds)
                namespace: dict[str, object] = {}
                seconds = timed(
                    lambda t=target, n=namespace: api.restore(experiment_id, namespace=n, store=t)
                )
                assert np.array_equal(namespace["arr"], expected)  # type: ignore[arg-type]
                figures.setdefault(f"restore, {how}", []).append(seconds)
                del namespace
                target.close()
                store_module._stores.clear()
                shutil.rmtree(root.parent)
            # references: the bytes written once + fsync, a file copy of them, a page-cache
            # read of them into new memory
            data = blob.read_bytes()
            figures.setdefault("reference: write the bytes once + fsync", []).append(
                timed(lambda d=data: write_once(d, work / "once"))  # type: ignore[misc]
            )
            del data
            os.unlink(work / "once")
            figures.setdefault("reference: copy the bytes", []).append(
                timed(lambda: shutil.copyfile(blob, work / "copy"))
            )
            figures.setdefault("reference: read into new memory", []).append(
                timed(lambda: read_into_memory(blob))
            )
            os.unlink(work / "copy")
        print(f"pulled state: {size / 1e6:.0f} MB in one record, best of {args.rounds}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, values in figures.items():
            best = min(values)
            print(f"  {name:42s} {best:7.3f} s  {size / 1e6 / best:8.0f} MB/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
