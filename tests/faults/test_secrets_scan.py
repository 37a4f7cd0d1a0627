"""Secrets (SPEC §3 "Secrets never enter a record", README "Secrets"): with realistic
credentials in the environment (AWS_*, GITHUB_TOKEN, API_KEY, ...) and in credential-named
variables, an experiment that prints them, raises with them, puts them in dicts, frames and
arrays, writes them to a file, reads them from a CSV, and has them in its cell, its magic line,
its history and its git diff is recorded, shown, exported (script and notebook) and pushed to
a file:// remote and to S3 (moto). Then every byte of the store (records, inline variables,
objects, index and its WAL, config), of the exports, of both remotes and of a store that
pulled from them is scanned, raw and as UTF-16/UTF-32: no planted value appears anywhere.

What is promised, and so tested: the values of credential-named variables (`*token*`,
`*secret*`, `*password*`, `*api_key*`, `*access_key*`, ...) and credential-named environment
variables. A credential under an innocent name that nbexp was never told about (a literal
`config = {"x": "..."}`) cannot be recognised and is not promised."""

from __future__ import annotations

import base64
import json
import random
import string
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

import nbexp
from nbexp import store as store_module
from nbexp.show import html_view
from nbexp.store import open_store
from tests.conftest import run
from tests.faults import figures
from tests.faults.stores import Scan, cli, needles_of, scan_tree
from tests.test_remote_s3 import DUMMY_CREDENTIALS, bucket, moto_endpoint  # noqa: F401

_RNG = random.Random(1337)


def _token(alphabet: str, length: int, prefix: str = "") -> str:
    return prefix + "".join(_RNG.choice(alphabet) for _ in range(length))


UPPER = string.ascii_uppercase + string.digits
B64 = string.ascii_letters + string.digits + "+/"
ALNUM = string.ascii_letters + string.digits

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": _token(UPPER, 16, "AKIA"),
    "AWS_SECRET_ACCESS_KEY": _token(B64, 40),
    "AWS_SESSION_TOKEN": _token(B64, 356, "IQoJb3JpZ2luX2VjE"),
    "GITHUB_TOKEN": _token(ALNUM, 36, "ghp_"),
    "API_KEY": _token("0123456789abcdef", 32),
    "HF_TOKEN": _token(ALNUM, 34, "hf_"),
    "DATABASE_PASSWORD": _token(ALNUM, 20, "pw-"),
    "STRIPE_SECRET_KEY": _token(ALNUM, 24, "sk_live_"),
}
VARIABLES = {  # credential-named variables of the notebook
    "openai_api_key": _token(ALNUM, 48, "sk-proj-"),  # a literal in the cell itself
    "password": _token(ALNUM + "!#%", 18),  # assigned in an earlier cell
    "slack_token": _token(ALNUM, 40, "xoxb-"),  # an earlier cell, then the magic line
    "client_secret": _token(ALNUM, 30, "cs-"),  # read from a file into a variable
}
PLANTED = {**ENVIRONMENT, **VARIABLES}

BODY = """
    import os
    import numpy as np
    import pandas as pd
    openai_api_key = "{openai}"
    env = os.environ
    print("connecting with", env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    print("session", env["AWS_SESSION_TOKEN"], "and", openai_api_key, password)
    config = {{"token": env["GITHUB_TOKEN"], "retries": 3}}
    headers = {{"Authorization": "Bearer " + env["HF_TOKEN"]}}
    creds = pd.DataFrame({{"user": ["ann"], "key": [env["STRIPE_SECRET_KEY"]]}})
    keys = np.array([env["API_KEY"]])
    raw = np.frombuffer(env["DATABASE_PASSWORD"].encode(), dtype=np.uint8)
    nested = [["deep", {{"x": (slack_token,)}}]]
    from_csv = pd.read_csv("aws_credentials.csv")
    with open("client.cfg") as handle:
        client_secret = handle.read().strip()
    with open("dump.txt", "w") as out:
        out.write("github=" + env["GITHUB_TOKEN"] + "\\n")
    with open("dump16.txt", "w", encoding="utf-16") as out:
        out.write(env["HF_TOKEN"])
    harmless = {{"lr": 0.1}}
    depth = 4
    score = 0.75
"""


def _git(project: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *argv],
        cwd=project,
        check=True,
        capture_output=True,
    )


def test_no_planted_secret_reaches_any_byte_of_store_export_or_remote(
    ip: Any,
    capsys: Any,
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_endpoint: str,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    for name, value in ENVIRONMENT.items():  # after `bucket`: s3fs signs with these too
        monkeypatch.setenv(name, value)
    # a git repo whose uncommitted diff holds a secret
    (project / "settings.py").write_text("DEBUG = True\n")
    _git(project, "init", "-q")
    _git(project, "add", "settings.py")
    _git(project, "commit", "-q", "-m", "settings")
    (project / "settings.py").write_text(f'DEBUG = True\nAPI_KEY = "{ENVIRONMENT["API_KEY"]}"\n')
    # files the cell reads: the CSV AWS hands out for an access key, a config file
    (project / "aws_credentials.csv").write_text(
        "User name,Access key ID,Secret access key\n"
        f"deploy,{ENVIRONMENT['AWS_ACCESS_KEY_ID']},{ENVIRONMENT['AWS_SECRET_ACCESS_KEY']}\n"
    )
    (project / "client.cfg").write_text(VARIABLES["client_secret"] + "\n")
    store_module._stores.clear()

    run(ip, f'password = "{VARIABLES["password"]}"')  # an earlier cell: in the history
    run(ip, 'print("earlier cell", password)')
    run(ip, f'slack_token = "{VARIABLES["slack_token"]}"')
    line = (
        "leaky -p depth=4 --note 'rotating {slack_token}' --expect \"password != ''\" "
        '--expect "score > 0.5"'
    )
    body = textwrap.dedent(BODY).format(openai=VARIABLES["openai_api_key"])
    capsys.readouterr()
    result = run(ip, f"%%experiment {line}\n{body}")
    captured = capsys.readouterr()
    assert result.success, result.error_in_exec
    assert ENVIRONMENT["AWS_SECRET_ACCESS_KEY"] in captured.out  # the user saw their output
    failing = "raise PermissionError('denied for ' + os.environ['GITHUB_TOKEN'])"
    assert not run(ip, f"%%experiment leaky-fail\nimport os\n{failing}\n").success
    capsys.readouterr()

    experiment = nbexp.get("leaky")
    state = experiment.state
    assert {"openai_api_key", "password", "slack_token", "client_secret"} <= set(state["secrets"])
    for name in ("config", "headers", "creds", "keys", "raw", "nested", "from_csv", "env"):
        assert "credential" in state["unstored"].get(name, ""), name
    assert {"harmless", "depth", "score"} <= set(state["variables"])
    assert set(experiment.links["unstored_artifacts"]) == {"dump.txt", "dump16.txt"}
    assert experiment.git and "settings.py" in experiment.git.get("diff", "")
    assert experiment.params == {"depth": 4, "harmless": {"lr": 0.1}, "score": 0.75}

    # everything the user can look at
    shown = [run(ip, "%exp_show leaky").result, run(ip, "%exp_diff leaky-fail leaky").result]
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, html_view(experiment), *map(str, shown)]
    for argv in (["show", "leaky"], ["show", "leaky", "--json"], ["show", "leaky-fail"]):
        texts.append(cli(*argv).out)
    exports = tmp_path / "exports"
    exports.mkdir()
    for ref in ("leaky", "leaky-fail"):
        for suffix in ("py", "ipynb"):
            assert cli("export", ref, "-o", str(exports / f"{ref}.{suffix}")).code == 0
    assert run(ip, f"%exp_export leaky -o {exports / 'magic.py'}").success

    # remotes: a folder and an S3 bucket; and a store that pulls from each
    folder = tmp_path / "remote"
    assert cli("remote", "add", "folder", str(folder)).code == 0
    endpoint = f"endpoint_url={moto_endpoint}"
    assert cli("remote", "add", "lake", f"s3://{bucket}/team", "--option", endpoint).code == 0
    for remote in ("folder", "lake"):
        pushed = cli("push", remote, "-q")
        assert pushed.code == 0 and "pushed 2 experiments" in pushed.out, pushed
    pulled_root = tmp_path / "elsewhere" / ".nbexp"
    pulled_root.mkdir(parents=True)
    for remote, url, *options in (
        ("folder", str(folder)),
        ("lake", f"s3://{bucket}/team", "--option", endpoint),
    ):
        assert cli("--store", str(pulled_root), "remote", "add", remote, url, *options).code == 0
    assert cli("--store", str(pulled_root), "pull", "lake", "-q").code == 0
    store_module._stores.clear()

    # every byte: store (records, objects, index + WAL, config), exports, both remotes
    values = list(PLANTED.values())
    store = open_store()
    store_files = [p for p in store.root.rglob("*") if p.is_file()]
    assert any(p.name == "index.sqlite-wal" for p in store_files)  # scanned while live
    scan = Scan(leaks=[])
    for tree in (store.root, exports, folder, pulled_root):
        scan_tree(tree, values, scan)
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_endpoint})
    needles = needles_of(values)
    for key in fs.find(bucket):
        data = fs.cat_file(key)
        scan.files += 1
        scan.bytes += len(data)
        scan.leaks += [f"s3://{key}: {v[:6]}…" for n, v in needles.items() if n in data]
    # inline variables live base64-encoded inside records: decode and scan them too
    for path in store.records_dir.rglob("*.json"):
        for entry in json.loads(path.read_bytes())["state"]["variables"].values():
            if "inline" in entry:
                payload = base64.b64decode(entry["inline"])
                scan.bytes += len(payload)
                scan.leaks += [
                    f"{path.name} inline: {v[:6]}…" for n, v in needles.items() if n in payload
                ]
    for text in texts:
        scan.bytes += len(text)
        scan.leaks += [f"shown: {value[:6]}…" for value in values if value in text]
    assert scan.leaks == [], scan.leaks
    assert scan.files >= 25 and scan.bytes > 200_000  # it really looked at the whole store
    # and it would have seen them: the files the cell wrote (UTF-8 and UTF-16) hold two
    control = tmp_path / "control"
    control.mkdir()
    for name in ("dump.txt", "dump16.txt"):
        (control / name).write_bytes((project / name).read_bytes())
    assert len(scan_tree(control, values).leaks or []) == 2
    figures.report("secrets: values planted (env + credential-named variables)", len(values))
    figures.report(
        "secrets: files scanned (store, exports, file:// + S3 remotes, pulled)", scan.files
    )
    figures.report("secrets: bytes scanned (raw, UTF-16, UTF-32)", f"{scan.bytes:,}")
    figures.report("secrets: leaks found", len(scan.leaks))


def test_unstored_secret_files_are_named_and_the_rest_of_the_run_is_kept(
    ip: Any, capsys: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", ENVIRONMENT["GITHUB_TOKEN"])
    body = textwrap.dedent(
        """
        import os
        with open("token.txt", "w") as out:
            out.write(os.environ["GITHUB_TOKEN"])
        with open("model.bin", "wb") as out:
            out.write(b"weights" * 1000)
        n = 3
        """
    )
    capsys.readouterr()
    assert run(ip, f"%%experiment files\n{body}").success
    err = capsys.readouterr().err
    assert "token.txt" in err and "credential" in err and "model.bin" not in err
    experiment = nbexp.get("files")
    assert [item["path"] for item in experiment.artifacts] == ["model.bin"]
    assert (project / "token.txt").read_text() == ENVIRONMENT["GITHUB_TOKEN"]  # untouched
    assert cli("fsck").code == 0
