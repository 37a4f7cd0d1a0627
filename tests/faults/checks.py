"""What the fault suite checks after every fault: the store is valid, every experiment that
finished is intact and restorable, no half-written record is visible."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from nbexp import store as store_module
from nbexp.cli import main
from nbexp.hashing import hash_bytes, hash_file
from nbexp.restorer import restore_into
from nbexp.store import Store
from nbexp.store.packs import decode_index, scan_pack
from tests.faults.workers import REPO, expected_state, same_value, worker_env

_RECORD = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}\.json$")
_OBJECT = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{30}$")
_PACK = re.compile(r"^pack-[0-9a-f]{32}\.(pack|idx)$")


def forget_stores() -> None:
    """Close the stores this process opened, so the next CLI call opens the store afresh
    (as a new `nbexp` process would)."""
    for store in list(store_module._stores.values()):
        with contextlib.suppress(Exception):
            store.close()
    store_module._stores.clear()


def nbexp(root: Path, *argv: str, fresh_process: bool = False, env: dict[str, str] | None = None):
    """Run `nbexp --store ROOT ARGV...`: in this process (the console script's own code path,
    on a freshly opened store), or as a real `nbexp` process. Returns (code, stdout, stderr)."""
    words = ["--store", str(root), *argv]
    if fresh_process:
        done = subprocess.run(
            [sys.executable, "-m", "nbexp.cli", *words],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env or worker_env(),
            timeout=300,
        )
        return done.returncode, done.stdout, done.stderr
    forget_stores()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(words)
    forget_stores()
    return code, out.getvalue(), err.getvalue()


def assert_fsck_clean(root: Path, *, fresh_process: bool = False) -> None:
    code, out, err = nbexp(root, "fsck", fresh_process=fresh_process)
    assert code == 0 and out.startswith("ok:") and not err, f"fsck: {code}\n{out}\n{err}"


def listed(root: Path) -> dict[str, str]:
    """`nbexp list --format json`: name → id (names are unique in these tests)."""
    code, out, err = nbexp(root, "list", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    names = {row["name"]: row["id"] for row in rows}
    assert len(names) == len(rows), "two experiments share a name"
    return names


def check_layout(root: Path) -> int:
    """No stray file where records and objects live (a half-written file would be one), and
    every object file — referenced or not — holds the bytes its name promises: a future
    record may reuse any object that exists. Returns how many objects were verified."""
    for path in (root / "records").rglob("*"):
        if path.is_file():
            relative = path.relative_to(root / "records").as_posix()
            assert _RECORD.match(relative), f"stray file among the records: {relative}"
    count = 0
    for path in (root / "objects").rglob("*"):
        if path.is_file():
            relative = path.relative_to(root / "objects").as_posix()
            assert _OBJECT.match(relative), f"stray file among the objects: {relative}"
            assert hash_file(path)[0] == relative.replace("/", ""), f"object {relative} is corrupt"
            count += 1
    return count + check_packs(root)


def check_packs(root: Path) -> int:
    """Every file in packs/ is a pack or its index; every index is whole and every object it
    names reads back as the bytes its digest promises. A pack without an index (its writer
    killed between the two renames) names nothing, but must be whole too. Returns how many
    packed objects were verified."""
    folder = root / "packs"
    if not folder.is_dir():
        return 0
    names = {path.name for path in folder.iterdir()}
    count = 0
    for name in sorted(names):
        assert _PACK.match(name), f"stray file among the packs: {name}"
        if not name.endswith(".pack"):
            continue
        pack = folder / name
        index = pack.with_suffix(".idx")
        if index.name in names:
            entries = decode_index(index.read_bytes())
            assert entries is not None, f"the index of {name} is damaged"
            assert entries == scan_pack(pack), f"{name} and its index disagree"
        else:
            entries = scan_pack(pack)
        data = pack.read_bytes()
        for digest, (offset, length) in entries.items():
            assert hash_bytes(data[offset : offset + length]) == digest, f"{digest} is corrupt"
            count += 1
    for name in names:
        if name.endswith(".idx"):
            assert name[: -len(".idx")] + ".pack" in names, f"an index without its pack: {name}"
    return count


def orphan_packs(root: Path) -> int:
    """Packs without an index: a writer killed between renaming the pack and its index."""
    folder = root / "packs"
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.glob("*.pack") if not p.with_suffix(".idx").exists())


def leftover_temps(root: Path) -> int:
    return sum(1 for _ in (root / "tmp").iterdir()) if (root / "tmp").is_dir() else 0


def assert_restores(store: Store, name: str, step: int, kind: str) -> None:
    """The experiment loads, says what it ran, and its state restores to the very values
    the kernel had (every chunk verified against its hash on the way)."""
    experiment = store.get(name)
    assert experiment.name == name and experiment.status == "ok", experiment.name
    assert experiment.params.get("step") == step
    namespace: dict[str, Any] = {}
    report = restore_into(namespace, store, experiment)
    assert not report.skipped, f"{name}: {report.skipped}"
    for variable, value in expected_state(name, step, kind).items():
        assert variable in namespace, f"{name}: {variable} was not restored"
        assert same_value(namespace[variable], value), f"{name}: {variable} differs"
    if kind == "snapshot":
        assert namespace["alias"] is namespace["arrays"]["a0"], f"{name}: identity lost"
    if kind == "pack":
        assert namespace["alias"] is namespace["pieces"][0], f"{name}: identity lost"


def step_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize
