"""Run the quickstart notebook headless, in a fresh folder, and list what nbexp recorded.

    python scripts/run_quickstart.py [--workdir DIR] [--overwrite] [--timeout SECONDS]

Copies `example_notebooks/01_quickstart.ipynb` into DIR (default `./quickstart-run`), executes
it there with nbclient, saves the executed copy as `01_quickstart.executed.ipynb` beside it,
and prints `nbexp list` for the store the run produced (`DIR/.nbexp`). Exits 1 when a cell
fails, 2 when DIR is not fresh.

The kernel: the notebook asks for `python3`. This script does not look that name up among the
installed kernelspecs (a `python3` spec in ~/.local/share/jupyter could point at another
Python). It starts ipykernel's *native* `python3` kernel instead, which is always
`sys.executable -m ipykernel_launcher`: the interpreter running this script, with nbexp,
scikit-learn and ipykernel installed. So no `ipykernel install` step is needed, only
`pip install -e ".[test]"` (for nbclient, scikit-learn and ipykernel) in that interpreter.

The kernel's environment gets `JPY_SESSION_NAME` (the notebook's path, as Jupyter sets it, so
nbexp records `code.notebook`) and `NBEXP_STORE=DIR/.nbexp` (so the store lands in DIR even
when DIR is inside a git repository, whose root would otherwise hold the store).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "example_notebooks" / "01_quickstart.ipynb"
KERNEL_NAME = "python3"
# What a run leaves in its folder; --overwrite removes exactly these, nothing else.
PRODUCED = (".nbexp", "data", "models", NOTEBOOK.name, "01_quickstart.executed.ipynb")


def kernel_manager() -> object:
    """An AsyncKernelManager for ipykernel's native `python3` kernel, i.e. this interpreter.

    An empty `kernel_dirs` makes jupyter_client skip every installed kernelspec and fall back on
    the kernel ipykernel describes itself (`ensure_native_kernel`), whose argv[0] is
    `sys.executable`.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def execute(
    workdir: Path, *, source: Path = NOTEBOOK, timeout: int = 120
) -> tuple[nbformat.NotebookNode, Path, Exception | None]:
    """Copy `source` into `workdir`, run it there, save the executed copy beside it.

    Returns (executed notebook, path of the copy that ran, the execution error or None).
    The executed notebook is saved even when a cell failed, so the failure can be read.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    notebook_path = workdir / source.name
    shutil.copyfile(source, notebook_path)
    notebook = nbformat.read(notebook_path, as_version=4)

    env = dict(os.environ)
    env["JPY_SESSION_NAME"] = str(notebook_path)
    env["NBEXP_STORE"] = str(workdir / ".nbexp")
    env.setdefault("MPLBACKEND", "Agg")

    client = NotebookClient(
        notebook,
        km=kernel_manager(),
        kernel_name=KERNEL_NAME,
        timeout=timeout,
        resources={"metadata": {"path": str(workdir)}},
    )
    error: Exception | None = None
    try:
        client.execute(env=env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as problem:
        error = problem
    nbformat.write(notebook, workdir / f"{notebook_path.stem}.executed.ipynb")
    return notebook, notebook_path, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("quickstart-run"),
        help="the folder to run in (default: ./quickstart-run); must be empty or absent",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"first delete what an earlier run left in the workdir ({', '.join(PRODUCED)})",
    )
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    args = parser.parse_args(argv)

    workdir: Path = args.workdir.absolute()
    if args.overwrite:
        for name in PRODUCED:
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if workdir.exists() and any(workdir.iterdir()):
        print(
            f"{workdir} is not empty; pass --overwrite to replace an earlier run, "
            "or choose another --workdir",
            file=sys.stderr,
        )
        return 2

    notebook, notebook_path, error = execute(workdir, timeout=args.timeout)
    executed = workdir / f"{notebook_path.stem}.executed.ipynb"
    if error is not None:
        print(f"the notebook failed; executed copy: {executed}\n{error}", file=sys.stderr)
        return 1
    print(f"ran {notebook_path} ({len(notebook.cells)} cells); executed copy: {executed}")

    store = workdir / ".nbexp"
    print(f"\n$ nbexp --store {store} list")
    sys.stdout.flush()
    listing = subprocess.run(
        [sys.executable, "-m", "nbexp.cli", "--store", str(store), "list"], check=False
    )
    return 0 if listing.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
