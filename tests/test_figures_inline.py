"""Under Jupyter's inline backend, a figure the body draws is rendered once: the image the
cell displays is the one recorded (not a second rendering made for the record alone), the
cell still displays it once, and the backend still closes it. Real kernel, real inline
backend."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

SETUP = r"""
%load_ext nbexp
%matplotlib inline
import json, hashlib
import matplotlib.pyplot as plt
from matplotlib.backend_bases import FigureCanvasBase
import nbexp
from nbexp.store import open_store

renders = []
_print_figure = FigureCanvasBase.print_figure
def counting(self, *args, **kwargs):
    renders.append(kwargs.get("format") or (args[0] if args else None))
    return _print_figure(self, *args, **kwargs)
FigureCanvasBase.print_figure = counting
"""

DRAWN = "%%experiment drawn\nfig, ax = plt.subplots()\nax.plot([1, 3, 2])\nscore = 0.5\n"
SILENT_NONE = "%%experiment plain\nscore = 0.7\n"

REPORT = r"""
def recorded(name):
    experiment = nbexp.get(name)
    return [hashlib.sha256(open_store().read_object(d)).hexdigest() for d in experiment.outcome.figures]
print("REPORT " + json.dumps({
    "drawn": recorded("drawn"), "plain": recorded("plain"),
    "renders": len(renders), "open": len(plt.get_fignums()),
}))
"""


def _run(client: Any, code: str) -> tuple[list[str], str]:
    """Execute one cell; the SHA-256 of each PNG it displayed, and its printed text."""
    images: list[str] = []
    text: list[str] = []
    errors: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        content = message["content"]
        kind = message["msg_type"]
        if kind == "display_data" and "image/png" in content["data"]:
            png = base64.b64decode(content["data"]["image/png"])
            images.append(hashlib.sha256(png).hexdigest())
        elif kind == "stream":
            text.append(content["text"])
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    reply = client.execute_interactive(code, timeout=120, output_hook=collect)
    assert reply["content"]["status"] == "ok", errors
    return images, "".join(text)


def test_the_image_the_cell_displays_is_the_one_recorded_and_is_rendered_once(
    tmp_path: Path,
) -> None:
    from jupyter_client.manager import KernelManager

    env = {**os.environ, "NBEXP_STORE": str(tmp_path / ".nbexp")}
    env.pop("MPLBACKEND", None)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(tmp_path))
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        _run(client, SETUP)
        shown, output = _run(client, DRAWN)
        nothing_shown, _ = _run(client, SILENT_NONE)
        _, report_text = _run(client, REPORT)
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=True)
    report = json.loads(report_text.split("REPORT ", 1)[1])
    assert "recorded drawn" in output
    assert len(shown) == 1  # displayed once, as without nbexp
    assert report["drawn"] == shown  # the record holds the very image the user saw
    assert report["renders"] == 1  # not rendered again for the record
    assert report["open"] == 0  # the inline backend's closing, as without nbexp
    assert nothing_shown == [] and report["plain"] == []
