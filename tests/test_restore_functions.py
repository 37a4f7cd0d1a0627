"""Functions and classes defined in cells keep their source after a restore.

cloudpickle rebuilds a cell's code under the file name "<dynamic-code>", so in a fresh kernel
`inspect.getsource(f)` failed and a traceback through a restored function showed no lines.
A real IPython shell records; a real kernel (the venv's python3 kernelspec) restores.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbexp
from nbexp.store import open_store
from tests.conftest import run, run_in_fresh_kernel

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
    assert run(ip, DEFINITIONS).success
    result = run(ip, "%%experiment sources\n" + BODY.strip() + "\n")
    assert result.success, result.error_in_exec
    assert nbexp.get("last").state["variables"]["scaled"]

    output = run_in_fresh_kernel(KERNEL_CHECK, open_store().root, project)
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen["scaled"] == DEFINITIONS.split("\n\ndef broken")[0].lstrip("\n") + "\n"
    assert seen["predict"] == "    def predict(self, x):\n        return scaled([x])[0] + 1\n"
    assert seen["file_is_cell"] and seen["traceback_line"]
    assert seen["value"] == 9
