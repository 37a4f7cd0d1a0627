"""`nbexp artifact REF PATH [-o DEST]` (SPEC §8): a recorded file written back out, byte-identical."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import run
from tests.test_cli import COMMAND, assert_user_error, nbexp_cli


def _record_model(ip, payload: bytes) -> None:
    (Path.cwd() / "payload.bin").write_bytes(payload)
    result = run(
        ip,
        "%%experiment fit\n"
        "blob = open('payload.bin', 'rb').read()\n"
        "os.makedirs('out', exist_ok=True)\n"
        "with open('out/model.bin', 'wb') as f:\n"
        "    f.write(blob[::-1])\n",
    )
    assert result.success


def test_artifact_comes_back_byte_identical_after_the_file_changed(ip, project: Path) -> None:
    ip.run_cell("import os")
    payload = os.urandom(3_000_000)
    _record_model(ip, payload)
    (project / "out" / "model.bin").write_bytes(b"a later, different model")

    # the recorded path exists and differs: kept, and the user is told how to proceed
    refused = nbexp_cli("artifact", "fit", "out/model.bin", cwd=project)
    assert_user_error(refused, "out/model.bin", "--force")
    assert (project / "out" / "model.bin").read_bytes() == b"a later, different model"

    elsewhere = nbexp_cli("artifact", "fit", "model.bin", "-o", "restored.bin", cwd=project)
    assert elsewhere.code == 0, elsewhere
    assert (project / "restored.bin").read_bytes() == payload[::-1]

    forced = nbexp_cli("artifact", "fit", "out/model.bin", "--force", cwd=project)
    assert forced.code == 0, forced
    assert (project / "out" / "model.bin").read_bytes() == payload[::-1]
    assert not [p for p in (project / "out").iterdir() if p.name.endswith("nbexp-tmp")]


def test_artifact_to_stdout_and_into_a_folder(ip, project: Path) -> None:
    ip.run_cell("import os")
    _record_model(ip, b"0123456789" * 1000)
    piped = subprocess.run(
        [*COMMAND, "artifact", "last", "out/model.bin", "-o", "-"],
        cwd=project, capture_output=True, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (b"0123456789" * 1000)[::-1]

    (project / "exports").mkdir()
    into = nbexp_cli("artifact", "last", "out/model.bin", "-o", "exports", cwd=project)
    assert into.code == 0, into
    assert (project / "exports" / "model.bin").read_bytes() == (b"0123456789" * 1000)[::-1]


def test_unknown_artifact_names_the_ones_there_are(ip, project: Path) -> None:
    ip.run_cell("import os")
    _record_model(ip, b"x")
    line = assert_user_error(nbexp_cli("artifact", "fit", "nope.bin", cwd=project), "nope.bin")
    assert "out/model.bin" in line
    assert_user_error(nbexp_cli("artifact", "no-such-run", "x", cwd=project), "no-such-run")
