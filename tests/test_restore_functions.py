"""Functions and classes defined in cells keep their source after a restore.

cloudpickle rebuilds a cell's code under the file name "<dynamic-code>", so in a fresh kernel
`inspect.getsource(f)` failed and a traceback through a restored function showed no lines.
A real IPython shell records; a real kernel (the venv's python3 kernelspec) restores.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import nbexp
from nbexp.store import open_store
from tests.conftest import run

DEFINITIONS = '''
def scaled(values, factor=2):
    """Multiply each value."""
    def one(v):
        return v * factor
    return [one(v) for v in values]

def broken(x):
    return x / 0  # the line a traceback should show
'''

BODY = """
class Model:
    def predict(self, x):
        return scaled([x])[0] + 1

model = Model()
score = model.predict(3)
"""

KERNEL_CHECK = textwrap.dedent(
    """
    %load_ext nbexp
    %exp_restore sources
    import inspect, json, traceback
    try:
        broken(1)
    except ZeroDivisionError:
        shown = traceback.format_exc()
    print(json.dumps({
        "scaled": inspect.getsource(scaled),
        "predict": inspect.getsource(Model.predict),
        "file_is_cell": "dynamic-code" not in scaled.__code__.co_filename,
        "traceback_line": "the line a traceback should show" in shown,
        "value": model.predict(4),
    }))
    """
)


def test_restored_functions_show_their_source_in_a_fresh_kernel(ip, project: Path):
    from jupyter_client.manager import KernelManager

    assert run(ip, DEFINITIONS).success
    result = run(ip, "%%experiment sources\n" + BODY.strip() + "\n")
    assert result.success, result.error_in_exec
    assert nbexp.get("last").state["variables"]["scaled"]

    env = {**os.environ, "NBEXP_STORE": str(open_store().root), "MPLBACKEND": "Agg"}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(project))
    chunks: list[str] = []
    errors: list[str] = []
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)

        def collect(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                chunks.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))

        reply = client.execute_interactive(KERNEL_CHECK, timeout=120, output_hook=collect)
        assert reply["content"]["status"] == "ok", errors
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
    seen = json.loads("".join(chunks).strip().splitlines()[-1])
    assert seen["scaled"] == DEFINITIONS.split("\n\ndef broken")[0].lstrip("\n") + "\n"
    assert seen["predict"] == "    def predict(self, x):\n        return scaled([x])[0] + 1\n"
    assert seen["file_is_cell"] and seen["traceback_line"]
    assert seen["value"] == 9
