"""Attacks and damage (issue 15), each reproduced as it was found and now refused: records on a
remote crafted to write files anywhere, shadow local names or run code in another folder; SQL
through sort keys; a deleted or damaged index; edited records; names that read as ids; values
that lost the run; secrets outside credential names; unbounded sweeps; non-finite metrics in
queries; huge `last~N`; secrets as tags; fsck's truncated lists and unchecked labels.

Each test counts the attacks it tried and those refused; the suite prints the totals."""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import nbexp
from nbexp import store as store_module
from nbexp.errors import NbexpError
from nbexp.record import Code, Experiment, Outcome
from nbexp.remote import add_remote, pull, push
from nbexp.store import Store, open_store
from tests.conftest import run
from tests.faults import figures
from tests.faults.stores import cli, one_line_error, scan_tree

_TALLY = {"tried": 0, "refused": 0}


def attack(refused: bool) -> None:
    """Count one attack; it must have been refused (or made harmless)."""
    _TALLY["tried"] += 1
    _TALLY["refused"] += int(refused)
    figures.report(
        "attacks: tried / refused or made harmless", f"{_TALLY['tried']} / {_TALLY['refused']}"
    )
    assert refused


def crafted(
    store: Store,
    name: str,
    *,
    created: str = "2026-11-23T00:00:00.000000+00:00",
    **fields: Any,
) -> Experiment:
    """A record written by hand, as an attacker with write access to a remote would."""
    defaults: dict[str, Any] = {
        "code": Code(cell=f"%%experiment {name}\nx = 1\n", source="x = 1\n"),
        "env": {"python": "3", "platform": "test", "packages": {}},
    }
    draft = Experiment(
        id="",
        name=name,
        created=created,
        outcome=Outcome(status="ok", started=created, duration=1.0),
        **{**defaults, **fields},
    )
    experiment = replace(draft, id=Store.make_id(draft.to_dict()))
    store.save(experiment)
    return experiment


@pytest.fixture
def attacker(tmp_path: Path, project: Path) -> Iterator[tuple[Store, Store]]:
    """The victim's store (the project, cwd) and an attacker's store, sharing remote `team`
    (the victim does not mark it trusted)."""
    store_module._stores.clear()
    victim = open_store(project)
    (tmp_path / "attacker" / ".nbexp").mkdir(parents=True)
    evil = open_store(tmp_path / "attacker" / ".nbexp")
    shared = tmp_path / "remote"
    add_remote(victim, "team", str(shared))
    add_remote(evil, "team", str(shared))
    yield victim, evil
    store_module._stores.clear()


def _pull_all(victim: Store) -> str:
    """Pull everything; returns the refusal line (empty if nothing was refused)."""
    try:
        pull(victim, "team", progress=False)
    except NbexpError as error:
        return str(error)
    return ""


# -- 1. a pulled record's paths never write outside the project -----------------------------


def test_pulled_artifact_paths_cannot_write_outside_the_project(
    attacker: tuple[Store, Store], tmp_path: Path, project: Path
) -> None:
    victim, evil = attacker
    payload = b"import os; os.system('echo owned')\n"
    digest = evil.put_bytes(payload)
    site = tmp_path / "site-packages"
    site.mkdir()
    item = {"hash": digest, "size": len(payload)}
    climbing = crafted(evil, "climbs", artifacts=[{**item, "path": "../owned/evil.pth"}])
    absolute = crafted(evil, "absolute", artifacts=[{**item, "path": str(site / "model.pth")}])
    newline = crafted(evil, "newline", artifacts=[{**item, "path": "a\nimport os"}])
    push(evil, "team", progress=False)

    refusal = _pull_all(victim)
    pulled = {row["name"] for row in victim.rows()}
    # paths nbexp never records (`..`, control characters) refuse the whole record at pull
    attack("climbs" not in pulled and "nbexp never records such a path" in refusal)
    attack("newline" not in pulled and not victim.record_path(newline.id).exists())
    assert not victim.record_path(climbing.id).exists()
    # an absolute path (a run may write to /tmp) arrives, but is never written back there
    assert "absolute" in pulled
    answer = cli("artifact", absolute.short_id, "model.pth")
    one_line_error(answer, "-o DEST", "absolute")
    attack(not (site / "model.pth").exists())
    # with an explicit -o the user chose the place
    assert (
        cli("artifact", absolute.short_id, "model.pth", "-o", str(tmp_path / "here.pth")).code == 0
    )
    assert (tmp_path / "here.pth").read_bytes() == payload
    # a local record with an escaping path is refused the same way
    victim = open_store(project)  # the CLI calls above closed this process's stores
    local = crafted(victim, "local-climb", artifacts=[{**item, "path": "../outside.bin"}])
    victim.put_bytes(payload)
    one_line_error(cli("artifact", local.short_id, "../outside.bin"), "-o DEST")
    attack(not (project.parent / "outside.bin").exists())


def test_status_of_a_pulled_record_never_reads_outside_the_project(
    attacker: tuple[Store, Store], project: Path
) -> None:
    victim, evil = attacker
    data = [
        {"kind": "file", "path": "/dev/zero", "abspath": "/dev/zero", "hash": "0" * 32, "size": 1},
        {"kind": "file", "path": "/etc/hostname", "abspath": "/etc/hostname", "hash": "1" * 32},
    ]
    crafted(evil, "reader", data=data, code=Code(cell="x", source="x", notebook="/etc/passwd",
                                                  notebook_hash="2" * 32))  # fmt: skip
    push(evil, "team", progress=False)
    assert _pull_all(victim) == ""
    answer = cli("status")  # /dev/zero would never end; /etc/* are not this project's
    assert answer.code == 0 and "/etc" not in answer.out and "/dev" not in answer.out, answer
    attack(True)


def test_recorded_text_cannot_break_out_of_an_export_comment(project: Path) -> None:
    store = open_store()
    evil = "x\nopen('pwned', 'w').close()\n"
    record = crafted(
        store,
        evil,
        env={"python": "3", "platform": "test", "packages": {}, "cwd": evil},
        code=Code(cell="%%experiment x\nx = 1\n", source="x = 1\n", notebook=evil),
    )
    assert cli("export", record.short_id, "-o", "run.py").code == 0
    done = subprocess.run([sys.executable, "run.py"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    attack(not (project / "pwned").exists())


# -- 11. a pulled record never shadows local names or `last`, and never runs unasked --------


def test_a_pulled_record_does_not_take_over_names_last_or_where_code_runs(
    ip: Any, attacker: tuple[Store, Store], tmp_path: Path
) -> None:
    victim, evil = attacker
    assert run(ip, "%%experiment rf-baseline\nscore = 0.9\n").success
    mine = victim.get("rf-baseline")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    payload = b"attacker's model"
    digest = evil.put_bytes(payload)
    evil_record = crafted(
        evil,
        "rf-baseline",
        created="2099-01-01T00:00:00.000000+00:00",
        artifacts=[{"path": "model.bin", "hash": digest, "size": len(payload)}],
        env={"python": "3", "platform": "test", "packages": {}, "cwd": str(elsewhere)},
        git={"commit": "0" * 40, "root": str(elsewhere)},
        tags=("best",),
    )
    push(evil, "team", progress=False)
    assert _pull_all(victim) == ""
    victim = open_store()
    assert victim.resolve("rf-baseline") == mine.id
    attack(victim.resolve("last") == mine.id)
    victim.add_tag(mine.id, "best")
    attack(victim.resolve("best") == mine.id)
    one_line_error(cli("artifact", "rf-baseline", "model.bin"), "wrote no file")
    attack(not Path("model.bin").exists())
    # by its id the pulled record is reachable, but its code is not run, nor branched
    rerun = cli("rerun", evil_record.short_id)
    attack("not trusted" in one_line_error(rerun) and not list(elsewhere.iterdir()))
    branch = cli("branch", evil_record.short_id, "evil")
    attack("not trusted" in one_line_error(branch))


def test_a_trusted_rerun_runs_in_this_project_not_at_the_recorded_folder(
    ip: Any, project: Path, tmp_path: Path
) -> None:
    from nbexp.rerun import _working_folder

    store = open_store()
    outside = tmp_path / "outside"
    outside.mkdir()
    inside = project / "sub"
    inside.mkdir()
    attack(_working_folder(store, str(outside)) == os.getcwd())
    assert _working_folder(store, str(inside)) == str(inside.resolve())


# -- 2. sort keys are data -------------------------------------------------------------------


INJECTIONS = [
    "params.a')--",
    "params.a' || (SELECT CASE WHEN (SELECT count(*) FROM experiments) > 1 "
    "THEN abs(-9223372036854775807-1) END) || '",
    "params.a' || (SELECT CASE WHEN (SELECT count(*) FROM experiments) > 100 "
    "THEN abs(-9223372036854775807-1) END) || '",
    'metrics.x") DESC; DROP TABLE experiments; --',
    "created; DROP TABLE experiments",
]


def test_sort_keys_cannot_reach_the_sql(ip: Any) -> None:
    for i in range(3):
        assert run(ip, f"%%experiment run-{i}\na = {i}\nf1 = a / 10\n").success
    answers = set()
    for key in INJECTIONS:
        answer = cli("list", "--sort", key)
        line = one_line_error(answer, "cannot sort by")
        answers.add(line.split(":")[1].split(";")[0].split("`")[0])
        with pytest.raises(NbexpError):
            nbexp.experiments(sort=key)
        attack(True)
    # the oracle is gone: a true and a false condition give the same kind of answer
    assert cli("list").out.count("run-") == 3
    # a real key still sorts, both ways
    ordered = cli("list", "--sort", "-metrics.f1", "--format", "json")
    assert [row["name"] for row in json.loads(ordered.out)] == ["run-2", "run-1", "run-0"]
    assert nbexp.experiments(sort="params.a")["name"].tolist() == ["run-0", "run-1", "run-2"]


# -- 3, 4. the index is a cache: missing or damaged, it is rebuilt and says so --------------


def _three_runs(ip: Any) -> Path:
    for i in range(3):
        assert run(ip, f"%%experiment run-{i} -t t{i}x\nd = {i}\nm = {i} / 10\n").success
    root = open_store().root
    store_module._stores.clear()
    return root


def _rebuilt(answer: Any) -> None:
    assert answer.code == 0, answer
    assert answer.out.count("run-") == 3, answer
    notes = [line for line in answer.err.splitlines() if line.strip()]
    assert len(notes) == 1 and "rebuilt it from 3 records" in notes[0], answer.err


def test_a_deleted_index_is_rebuilt_never_an_empty_answer(ip: Any) -> None:
    root = _three_runs(ip)
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / "index.sqlite") + suffix).unlink(missing_ok=True)
    _rebuilt(cli("list"))
    attack(cli("show", "run-1").code == 0)


def test_a_cut_json_row_is_rebuilt_not_a_traceback(ip: Any) -> None:
    root = _three_runs(ip)
    with sqlite3.connect(root / "index.sqlite") as db:
        db.execute("UPDATE experiments SET tags = '[\"a'")
    _rebuilt(cli("list"))
    attack(cli("list", 'tags == "t1x"').out.count("run-1") == 1)


def test_random_bytes_in_the_index_never_stop_any_command(ip: Any) -> None:
    root = _three_runs(ip)
    index = root / "index.sqlite"
    data = bytearray(index.read_bytes())
    rng = random.Random(15)
    for offset in rng.sample(range(len(data)), 50):
        data[offset] ^= 0xFF
    index.write_bytes(bytes(data))
    for argv in (["list"], ["fsck"], ["reindex"], ["show", "run-2"]):
        answer = cli(*argv)
        assert "Traceback" not in answer.out + answer.err and answer.code == 0, (argv, answer)
    attack(cli("list").out.count("run-") == 3)


def test_a_flipped_header_byte_is_damage_not_read_only_and_runs_are_recorded(
    ip: Any, capsys: Any
) -> None:
    root = _three_runs(ip)
    index = root / "index.sqlite"
    data = bytearray(index.read_bytes())
    data[18] ^= 0xFF  # SQLite then takes the file for read-only
    index.write_bytes(bytes(data))
    capsys.readouterr()
    assert run(ip, "%%experiment after\nz = 3\n").success
    captured = capsys.readouterr()
    assert "recorded after" in captured.out and "NOT recorded" not in captured.err, captured
    assert "read-only" not in captured.err and "rebuilt it from" in captured.err
    attack("after" in cli("list").out)
    assert cli("fsck").code == 0


def test_fsck_names_a_damaged_index_header(ip: Any) -> None:
    root = _three_runs(ip)
    store = open_store()
    data = bytearray((root / "index.sqlite").read_bytes())
    data[19] = 7
    (root / "index.sqlite").write_bytes(bytes(data))
    problems = store.fsck()  # the open store's own check: not healed behind its back
    attack(any(p.kind == "index" and "header" in p.detail for p in problems))


# -- 5. a damaged record is named, not served ---------------------------------------------


def test_an_edited_record_is_refused_where_it_is_read(ip: Any, capsys: Any) -> None:
    assert run(ip, "%%experiment first\nv = 100000.0\nk = [1, 2]\n").success
    assert run(ip, "%%experiment second\nw = 1.0\n").success
    store = open_store()
    first = store.get("first")
    path = store.record_path(first.id)
    path.write_bytes(path.read_bytes().replace(b"100000.0", b"900000.0"))
    for argv in (
        ["show", "first"],
        ["export", first.short_id, "-o", "x.py"],
        ["diff", "first", "second"],
    ):
        one_line_error(cli(*argv), "damaged", "nbexp fsck")
        attack(True)
    # restore and load verify each variable on its own: they go on, saying so in one line
    capsys.readouterr()
    assert nbexp.load(first.short_id)["k"] == [1, 2]
    assert "damaged" in capsys.readouterr().err
    assert cli("show", "second").code == 0  # the rest keep working
    # a flipped bit in a key is the same damage
    store = open_store()
    second = store.get("second")
    path = store.record_path(second.id)
    path.write_bytes(path.read_bytes().replace(b'"variables"', b'"varIables"'))
    one_line_error(cli("show", second.short_id), "damaged")
    with pytest.raises(NbexpError, match="damaged"):
        nbexp.get(second.short_id)
    attack(True)


# -- 6. names that read as ids ---------------------------------------------------------------


def test_a_name_that_reads_as_an_id_is_refused_and_ids_win(ip: Any, capsys: Any) -> None:
    assert run(ip, "%%experiment first\na = 1\n").success
    first = open_store().get("first")
    capsys.readouterr()
    result = run(ip, f"%%experiment {first.short_id}\nb = 2\n")
    assert isinstance(result.error_in_exec, UsageError) and "id prefix" in str(result.error_in_exec)
    attack("b" not in ip.user_ns)
    for label in ("last", "last~2", "", "  ", "cafe", "0123abcd"):
        with pytest.raises(NbexpError):
            nbexp.tag("first", label)
        attack(True)
    # an old record (or a pulled one) named like an id: the id still wins
    store = open_store()
    impostor = crafted(store, first.short_id)
    assert store.resolve(first.short_id) == first.id
    one_line_error(cli("rm", impostor.short_id[:6] + "zz"), "no experiment")
    assert cli("rm", first.short_id).code == 0
    attack(open_store().resolve(first.short_id) == impostor.id)


# -- 7. one value never loses the run -----------------------------------------------------------


def test_a_huge_integer_metric_keeps_the_run(ip: Any, capsys: Any) -> None:
    capsys.readouterr()
    assert run(ip, "%%experiment big\nimport math\nm_big = math.factorial(200)\nm = 0.5\n").success
    assert "NOT recorded" not in capsys.readouterr().err
    experiment = open_store().get("big")
    attack(experiment.metrics["m_big"] == math.factorial(200) and experiment.state is not None)
    assert nbexp.experiments("metrics.m_big > 1e300")["name"].tolist() == ["big"]


# -- 8. secrets outside credential names ----------------------------------------------------------


def test_secrets_outside_credential_names_never_reach_the_store(
    ip: Any, project: Path, capsys: Any
) -> None:
    ip.user_ns["my_password"] = "hunter2-hunter2"
    body = (
        "dsn = 'postgresql://admin:pg_pass_4242@db/x'\n"
        "shouted = my_password.upper()\n"
        "conf = {'user': 'me', 'password': 'conf_pw_5151'}\n"
        "import pandas as pd\n"
        "users = pd.DataFrame({'name': ['a'], 'password': ['frame_pw_6161']})\n"
        "print('connecting to', dsn, shouted)\n"
        "score = 0.5\n"
    )
    assert run(ip, "%%experiment leaky\n" + body).success
    failing = "url = 'https://bob:url_pw_7171@host/x'\nraise RuntimeError(f'cannot reach {url}')\n"
    run(ip, "%%experiment leaky-fail\n" + failing)
    captured = capsys.readouterr()
    assert "--allow-secret conf" in captured.err and "--allow-secret users" in captured.err
    experiment = open_store().get("leaky")
    assert experiment.params["dsn"] == "postgresql://admin:***@db/x"
    assert experiment.params["conf"] == {"user": "me", "password": "***"}
    assert "users" not in (experiment.state or {}).get("variables", {})
    for where in ("list", "show leaky", "show leaky-fail"):
        shown = cli(*where.split())
        assert "pg_pass_4242" not in shown.out and "url_pw_7171" not in shown.out
    secrets = ["pg_pass_4242", "HUNTER2-HUNTER2", "hunter2-hunter2", "conf_pw_5151",
               "frame_pw_6161", "url_pw_7171"]  # fmt: skip
    scan = scan_tree(project / ".nbexp", secrets)
    for _ in secrets:
        attack(not scan.leaks)
    # the user may keep such a container on purpose
    assert run(ip, "%%experiment kept --allow-secret users\nn = len(users)\n").success
    assert "users" in open_store().get("kept").state["variables"]


def test_a_secret_used_as_a_tag_is_refused(ip: Any, capsys: Any) -> None:
    ip.user_ns["api_token"] = "tok-abcdef-123456"
    assert run(ip, "%%experiment tagged\na = 1\n").success
    result = run(ip, "%exp_tag last {api_token}")
    assert isinstance(result.error_in_exec, UsageError)
    attack("tok-abcdef-123456" not in open_store().get("tagged").tags)
    with pytest.raises(NbexpError, match="credential"):
        nbexp.tag("tagged", "postgres://u:pw_in_tag@h/db")
    attack(True)


# -- 9. sweeps have a cap ------------------------------------------------------------------------


def test_a_sweep_of_a_million_runs_is_refused_unless_confirmed(ip: Any) -> None:
    grid = " ".join(f"--sweep k{i}={','.join(map(str, range(10)))}" for i in range(6))
    result = run(ip, f"%%experiment {grid}\ny = 1\n")
    assert isinstance(result.error_in_exec, UsageError)
    assert "1,000,000 runs" in str(result.error_in_exec) and "--max-runs 1000000" in str(
        result.error_in_exec
    )
    attack(not open_store().rows())
    small = run(ip, "%%experiment s --sweep a=1,2,3 --max-runs 2\nb = a\n")
    assert isinstance(small.error_in_exec, UsageError)
    assert run(ip, "%%experiment s --sweep a=1,2,3 --max-runs 3\nb = a\n").success
    assert len(open_store().rows()) == 3


# -- 10. queries see non-finite metrics ------------------------------------------------------------


def test_queries_over_inf_and_nan_behave_as_python_floats(ip: Any) -> None:
    assert run(ip, "%%experiment pos\nm = float('inf')\n-m\n").success
    assert run(
        ip,
        "%%experiment pos2\nimport math\nm_inf = math.inf\nm_nan = math.nan\nm_neg = -math.inf\n",
    ).success
    found = nbexp.experiments("metrics.m_inf > 1e308")["name"].tolist()
    attack(found == ["pos2"])
    assert nbexp.experiments("metrics.m_neg < -1e308")["name"].tolist() == ["pos2"]
    assert nbexp.experiments("metrics.m_nan > 0 or metrics.m_nan <= 0").empty
    assert nbexp.experiments("metrics.m_nan != 1")["name"].tolist() == ["pos2"]
    ordered = cli("list", "--sort", "-metrics.m_inf", "--format", "json")
    assert json.loads(ordered.out)[0]["name"] == "pos2"


# -- 12. huge last~N ----------------------------------------------------------------------------------


def test_a_huge_last_n_is_one_line(ip: Any) -> None:
    assert run(ip, "%%experiment one\na = 1\n").success
    huge = "last~99999999999999999999"
    one_line_error(cli("show", huge), "does not exist")
    result = run(ip, f"%exp_show {huge}")
    assert isinstance(result.error_in_exec, UsageError)
    with pytest.raises(NbexpError):
        nbexp.get(huge)
    attack(True)


# -- 14. fsck names every user; labels and -p values are checked -------------------------------------


def test_fsck_names_every_experiment_using_a_damaged_object(ip: Any) -> None:
    assert run(ip, "import numpy as np\nshared = np.arange(300_000)").success
    for i in range(6):
        assert run(ip, f"%%experiment user-{i}\nv{i} = float(shared[{i}])\n").success
    store = open_store()
    users = {store.get(f"user-{i}").short_id for i in range(6)}
    digests = set.intersection(*(store.get(f"user-{i}").object_hashes() for i in range(6)))
    big = max(digests, key=lambda d: store.object_path(d).stat().st_size)
    path = store.object_path(big)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    answer = cli("fsck")
    (line,) = [line for line in answer.out.splitlines() if big[:12] in line]
    attack(all(short in line for short in users) and "more" not in line)


def test_a_param_that_overflows_to_inf_is_refused(ip: Any) -> None:
    result = run(ip, "%%experiment huge -p lr=1e999999\nlr = 0.1\n")
    assert isinstance(result.error_in_exec, UsageError)
    attack("finite" in str(result.error_in_exec) and not open_store().rows())


def test_refused_labels_in_the_cli(ip: Any) -> None:
    assert run(ip, "%%experiment named\na = 1\n").success
    for label in ("last", "", "beef"):
        one_line_error(cli("tag", "named", label))
        attack(True)
    assert cli("tag", "named", "best").code == 0
