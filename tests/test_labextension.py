"""The prebuilt JupyterLab extension (the Experiments panel) is installed with nbexp."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nbexp

ROOT = Path(__file__).parents[1]


def test_the_lab_extension_source_and_package_versions_agree() -> None:
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert package["name"] == "nbexp"
    assert package["version"] == nbexp.__version__
    assert package["jupyterlab"]["outputDir"] == "../nbexp/labextension"
    assert nbexp._jupyter_labextension_paths() == [{"src": "labextension", "dest": "nbexp"}]


@pytest.mark.timeout(120)
def test_jupyter_labextension_list_reports_it_enabled_and_ok() -> None:
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        pytest.skip(f"no jupyter command beside {sys.executable} (pip install -e '.[test]')")
    result = subprocess.run(
        [str(jupyter), "labextension", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=100,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    line = next((row for row in text.splitlines() if row.strip().startswith("nbexp ")), None)
    assert line is not None, f"nbexp is not among the lab extensions (scripts/setup.sh):\n{text}"
    assert "enabled" in line and "OK" in line, line
    assert f"v{nbexp.__version__}" in line, f"the built extension is another version: {line}"
