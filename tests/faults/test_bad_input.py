"""Bad input (SPEC §3, §5, §8, §11): fuzzed `%%experiment` lines and queries through a real
IPython shell, the API and the CLI; unknown and ambiguous references; non-literal params;
file names that are not UTF-8; huge outputs; a read-only store; a store whose path has spaces
and non-ASCII letters. Every mistake is one line (UsageError / NbexpError / `nbexp:` and exit
1), never a traceback; a bad line never runs the body; whatever runs is recorded truthfully."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

import nbexp
from nbexp import store as store_module
from nbexp.errors import QueryError, RefError
from nbexp.store import open_store
from tests.conftest import run
from tests.faults import figures
from tests.faults.stores import cli, nbexp_cli, one_line_error, read_only
from tests.test_store import _ambiguous_pair, make_experiment, schema_errors

FUZZ = settings(
    max_examples=int(os.environ.get("NBEXP_FUZZ_EXAMPLES", "100")),
    deadline=None,
    derandomize=not os.environ.get("NBEXP_FUZZ_EXAMPLES"),  # the same examples every run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_COUNTS = {"lines": 0, "line errors": 0, "queries": 0, "query errors": 0}


def cell(line: str, body: str) -> str:
    return f"%%experiment {line}".rstrip() + "\n" + textwrap.dedent(body).strip("\n") + "\n"


def usage_error_line(result: Any, captured: Any) -> str:
    """The cell failed with one `UsageError: ...` line on stderr and no traceback."""
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert "Traceback" not in captured.out + captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), captured.err
    return lines[0]


def record_count() -> int:
    return sum(1 for _ in open_store().iter_record_ids())


# -- fuzzing the %%experiment line --------------------------------------------------------

KEYS = st.sampled_from(["lr", "depth", "fuzz_x", "1x", "", "a b", "lr ", "print"])
LITERALS = st.sampled_from(
    [
        *["0.1", "3", "'s'", '"s"', "[1, 2]", "{1: 2}", "(1,)", "None", "True", "1e999", "-5"],
        *["1j", "foo()", "10**9", "(", "'open", "x", "lambda: 1", "import os", "", "=", "{}"],
        "{1,2}",
    ]
)
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r"), max_size=10
)
SWEEPS = st.sampled_from(["fuzz_x=1,2", "lr=0.1,0.01", "fuzz_x=", "=1,2", "fuzz_x=1,1", "x"])
EXPECTS = st.sampled_from(["fuzz_y >= 0", "fuzz_y > 99", "", "x =", "import os", "1/0", "("])


@st.composite
def words(draw: Any) -> list[str]:
    """One flag with a value drawn from mostly plausible, sometimes broken, choices."""
    flag = draw(
        st.sampled_from(
            [
                *["-p", "--param", "-m", "-t", "--note", "--expect", "--sweep", "-d"],
                *["--no-state", "--cache", "--bogus", "-x", "--", "NAME", "TEXT"],
            ]
        )
    )
    if flag in ("-p", "--param"):
        return [flag, draw(st.one_of(st.builds("{}={}".format, KEYS, LITERALS), TEXT))]
    if flag == "--sweep":
        return [flag, draw(st.one_of(SWEEPS, TEXT))]
    if flag == "--expect":
        return [flag, draw(st.one_of(EXPECTS, TEXT))]
    if flag == "-d":
        return [flag, draw(st.sampled_from([".", "data.csv", "no/such", ""]))]
    if flag in ("-m", "-t", "--note"):
        return [flag, draw(st.one_of(st.sampled_from(["fuzz_y", "x y", ""]), TEXT))]
    if flag in ("NAME", "TEXT"):
        return [draw(st.one_of(st.sampled_from(["run-1", "last", "last~1", "ab12"]), TEXT))]
    return [flag]


@st.composite
def lines(draw: Any) -> str:
    """Flags joined with quoting that is right, missing or broken."""
    parts = draw(st.lists(words(), max_size=4))
    quote = draw(st.sampled_from(["shlex", "raw", "broken"]))
    flat = [word for part in parts for word in part]
    if quote == "shlex":
        text = " ".join(shlex.quote(word) for word in flat)
    else:
        text = " ".join(flat)
    if quote == "broken":
        text += draw(st.sampled_from(['"', "'", ' "unterminated', " 'x"]))
    return text


BODY = "fuzz_marker.append(1)\nfuzz_y = 7\n"


@FUZZ
@given(line=st.one_of(lines(), TEXT))
def test_fuzzed_experiment_lines_are_usage_errors_or_truthful_records(
    ip: Any, capsys: Any, project: Path, line: str
) -> None:
    (project / "data.csv").write_text("a,b\n1,2\n")
    ip.user_ns.setdefault("fuzz_marker", [])
    marker = ip.user_ns["fuzz_marker"]
    ran_before, records_before = len(marker), record_count()
    capsys.readouterr()
    result = run(ip, f"%%experiment {line}\n{BODY}")
    captured = capsys.readouterr()
    ran, recorded = len(marker) - ran_before, record_count() - records_before
    _COUNTS["lines"] += 1
    assert "Traceback" not in captured.out + captured.err, (line, captured.err)
    if result.error_in_exec is not None:
        usage_error_line(result, captured)
        assert ran == 0 and recorded == 0, line  # a bad line never runs the body
        _COUNTS["line errors"] += 1
    else:
        assert ran >= 1 and recorded == ran, (line, ran, recorded)  # one record per run
        assert "NOT recorded" not in captured.err, captured.err
        for experiment in nbexp.experiments().head(ran)["id"]:
            assert schema_errors(nbexp.get(experiment).to_dict()) == [], line
    figures.report(
        "bad input: %%experiment lines fuzzed / refused with one UsageError line",
        f"{_COUNTS['lines']} / {_COUNTS['line errors']}",
    )


# -- fuzzing queries: the API, the CLI and %experiments --------------------------------------

QUERY_WORDS = st.sampled_from(
    [
        *["params.depth", "metrics.f1", "params.loss", "name", "status", "tags", "created"],
        *["duration", "id", "note", "params.", "metrics", "bogus", "params.lst", "metrics.nan"],
        *["==", "!=", "<", "<=", ">", ">=", "=", "in", "not", "and", "or", "(", ")", "[", "]"],
        *[",", "1", "-2.5", "1e999", "10000000000000000000000", "'l2'", '"ok"', "'open", "true"],
        *["null", "nan", "'\\x'", "'\\n'", "\x00", "é", ";", "--", "DROP TABLE experiments"],
    ]
)
CONDITIONS = st.builds(
    "{} {} {}".format,
    st.sampled_from(["params.depth", "metrics.f1", "params.loss", "name", "tags", "params.big"]),
    st.sampled_from(["==", "!=", "<", ">=", "in", "not in"]),
    st.sampled_from(["3", "0.5", "'l2'", "'a'", "['a', 'b']", "[]", "1e30", "null", "true"]),
)
QUERIES = st.one_of(
    st.lists(CONDITIONS, min_size=1, max_size=3).map(" and ".join),
    st.lists(QUERY_WORDS, min_size=1, max_size=9).map(" ".join),
    st.text(  # one line: a magic's line ends at the first line break
        st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=25
    ),
)


@pytest.fixture
def listed(project: Path) -> None:
    store_module._stores.clear()
    store = open_store()
    make_experiment(
        store,
        "a",
        params={"depth": 3, "loss": "l2", "lst": [1, 2], "big": 10**30},
        metrics={"f1": 0.5, "nan": float("nan")},
        tags=("best",),
    )
    make_experiment(store, "b", params={"depth": "deep"}, metrics={"f1": 2}, minutes=1)


@FUZZ
@given(query=QUERIES)
def test_fuzzed_queries_are_answered_or_refused_in_one_line_everywhere(
    ip: Any, capsys: Any, listed: None, query: str
) -> None:
    _COUNTS["queries"] += 1
    try:
        frame = nbexp.experiments(query)
        refused = None
        assert len(frame) <= 2
    except QueryError as error:
        refused = str(error)
        assert "\n" not in refused and refused.startswith("query: ")
        _COUNTS["query errors"] += 1

    answer = cli("list", "--format", "json", "--", query)  # `--`: a query may start with -
    if refused is None:
        assert answer.code == 0 and len(json.loads(answer.out)) <= 2, answer
    else:
        assert refused in one_line_error(answer)

    capsys.readouterr()
    result = run(ip, f"%experiments {query}")
    captured = capsys.readouterr()
    if result.error_in_exec is not None:
        line = usage_error_line(result, captured)
        if refused is not None:  # the same refusal (the magic strips its line first)
            assert line.startswith("UsageError: query: "), line
    figures.report(
        "bad input: queries fuzzed (API + CLI + %experiments) / refused in one line",
        f"{_COUNTS['queries']} / {_COUNTS['query errors']}",
    )


# -- references -------------------------------------------------------------------------------


def test_unknown_and_ambiguous_references_everywhere_and_how_names_resolve(
    ip: Any, capsys: Any
) -> None:
    store = open_store()
    first, second, prefix = _ambiguous_pair(store)
    store.save(first)
    store.save(second)
    run(ip, cell("shared -t twice", "value = 1.0"))
    older = nbexp.get("last")
    run(ip, cell("shared -t twice", "value = 2.0"))
    newer = nbexp.get("last")
    # a name, a tag: their latest run; a name that spells an id prefix is refused
    assert nbexp.get("shared").id == newer.id and nbexp.get("twice").id == newer.id
    refused = run(ip, cell(older.id[:6], "value = 3.0"))
    assert isinstance(refused.error_in_exec, UsageError) and "id prefix" in str(
        refused.error_in_exec
    )
    assert nbexp.get(older.id[:6]).id == older.id  # the id, never a name
    ip.user_ns["value"] = "clobbered"
    run(ip, "%exp_restore shared value")
    assert ip.user_ns["value"] == 2.0

    for ref, words in (
        (prefix, ["ambiguous", first.id[:8], second.id[:8]]),
        ("nosuch", ["no experiment matches"]),
        ("abc", ["too short"]),
        ("last~999", ["does not exist"]),
    ):
        with pytest.raises(RefError) as caught:
            nbexp.get(ref)
        assert "\n" not in str(caught.value) and all(w in str(caught.value) for w in words)
        for function in (nbexp.load, nbexp.restore):
            with pytest.raises(RefError):
                function(ref)
        for argv in (["show", ref], ["export", ref], ["diff", ref], ["rm", ref]):
            one_line_error(cli(*argv), *words[:1])
        for magic in (f"%exp_show {ref}", f"%exp_restore {ref}", f"%exp_diff {ref} last"):
            capsys.readouterr()
            result = run(ip, magic)
            assert words[0] in usage_error_line(result, capsys.readouterr())
    assert store.record_path(first.id).exists() and store.record_path(second.id).exists()

    # a name that a reference already means could never be looked up by that name
    for name in ("last", "last~2"):
        capsys.readouterr()
        result = run(ip, cell(name, "never = 1"))
        assert "choose another name" in usage_error_line(result, capsys.readouterr())
        assert "never" not in ip.user_ns


# -- params that are not literals ---------------------------------------------------------------


def test_a_p_override_the_body_would_overwrite_is_refused_before_running(
    ip: Any, capsys: Any
) -> None:
    for line, body in (
        ("-p x=5", "x = int('3')\ny = x * 2"),
        ("-p x=5", "if True:\n    x = 3\ny = x * 2"),
        ("-p x=5", "x, z = 3, 4\ny = x * 2"),
        ("--sweep x=5,6", "x = len('abc')\ny = x * 2"),
        ("-p x=foo()", "x = 3\ny = x * 2"),
    ):
        before = record_count()
        capsys.readouterr()
        result = run(ip, cell(line, body))
        message = usage_error_line(result, capsys.readouterr())
        assert "-p x" in message, message
        assert "y" not in ip.user_ns and record_count() == before, line  # never ran
    # literal, then recomputed from itself: the override is the value the body starts from
    assert run(ip, cell("decay -p lr=0.5", "lr = 0.1\nlr = lr * 2\nsteps = 3")).success
    experiment = nbexp.get("decay")
    assert experiment.params == {"lr": 0.5, "steps": 3} and ip.user_ns["lr"] == 1.0
    # a counter the body only increments gets the injected start value
    assert run(ip, cell("count -p start=10", "start += 1\nseen = start")).success
    assert ip.user_ns["seen"] == 11 and nbexp.get("count").params == {"start": 10}
    # a computed value is not a param; a computed number is a metric
    assert run(ip, cell("computed", "k = int('4')\nname_len = len('abc')")).success
    experiment = nbexp.get("computed")
    assert experiment.params == {} and experiment.metrics == {"k": 4, "name_len": 3}
    # an empty tag would break the record schema
    capsys.readouterr()
    assert "-t" in usage_error_line(run(ip, cell("-t ''", "w = 1")), capsys.readouterr())


def test_a_param_beyond_64_bits_is_recorded_and_listed(ip: Any) -> None:
    result = run(ip, cell("huge-seed", "seed = 123456789012345678901234567890\nscore = 0.5"))
    assert result.success
    experiment = nbexp.get("huge-seed")
    assert experiment.params["seed"] == 123456789012345678901234567890
    listed = nbexp.experiments("params.seed > 1e29")
    assert listed["name"].tolist() == ["huge-seed"]
    assert cli("list").code == 0


# -- file names that are not UTF-8 -------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_recorded_and_shown_escaped(
    ip: Any, capsys: Any, project: Path
) -> None:
    name = os.fsdecode(b"data\xff.csv")
    (project / name).write_bytes(b"a,b\n1,2\n3,4\n")
    body = f"""
        import os
        import pandas as pd
        frame = pd.read_csv({name!r})
        with open(os.fsdecode(b"out\\xfe.txt"), "w") as handle:
            handle.write("written")
        rows = len(frame)
    """
    capsys.readouterr()
    result = run(ip, cell("bytes-name", body))
    captured = capsys.readouterr()
    assert result.success, result.error_in_exec
    assert "NOT recorded" not in captured.err, captured.err
    experiment = nbexp.get("bytes-name")
    (entry,) = [item for item in experiment.data if item.get("kind") == "file"]
    assert entry["path"] == "data\\xff.csv" and entry["rows"] == 2  # the byte shown escaped
    assert [item["path"] for item in experiment.artifacts] == ["out\\xfe.txt"]
    assert experiment.metrics == {"rows": 2}
    assert schema_errors(experiment.to_dict()) == []
    # a real process (real stdout encoding) shows, lists and exports it without crashing
    for argv in (["show", "bytes-name"], ["list"], ["export", "bytes-name"], ["fsck"]):
        done = nbexp_cli(*argv)
        assert done.code == 0 and "Traceback" not in done.err, (argv, done)
    out = nbexp_cli("export", "bytes-name", "-o", "bytes.ipynb")
    assert out.code == 0, out
    assert json.loads((project / "bytes.ipynb").read_text())["cells"]


# -- huge outputs -----------------------------------------------------------------------------


class Wide:
    def __repr__(self) -> str:
        return "W" * 20_000_000


def test_huge_output_errors_and_reprs_do_not_balloon_the_record(
    ip: Any, capsys: Any, project: Path
) -> None:
    ip.user_ns["Wide"] = Wide
    body = """
        for _ in range(50):
            print("x" * 1_000_000)
        wide = Wide()
        blob_text = "y" * 5_000_000
        wide
    """
    result = run(ip, cell("loud -m wide", body))
    out = capsys.readouterr().out
    assert result.success and len(out) > 50_000_000  # the user still saw all of it
    experiment = nbexp.get("loud")
    assert experiment.outcome.output_truncated
    assert len(experiment.outcome.stdout) <= 256 * 1024
    assert len(json.dumps(experiment.metrics["wide"])) < 1000  # a repr, cut short
    size = open_store().record_path(experiment.id).stat().st_size
    assert size < 1_000_000, size

    result = run(ip, cell("crash", "raise ValueError('z' * 30_000_000)"))
    capsys.readouterr()
    assert isinstance(result.error_in_exec, ValueError)
    failed = nbexp.get("crash")
    assert failed.status == "failed" and len(failed.outcome.error["message"]) <= 2000
    crash_size = open_store().record_path(failed.id).stat().st_size
    assert crash_size < 1_000_000, crash_size
    figures.report(
        "bad input: record size after printing 50 MB / raising a 30 MB message",
        f"{size / 1024:.0f} KiB / {crash_size / 1024:.0f} KiB",
    )


# -- a read-only store ------------------------------------------------------------------------


def test_a_read_only_store_still_runs_the_cell_and_says_not_recorded(
    ip: Any, capsys: Any, project: Path
) -> None:
    assert run(ip, cell("before", "a = 1.5")).success
    store_module._stores.clear()
    root = project / ".nbexp"
    try:
        guard = read_only(root)
        how = guard.__enter__()
    except OSError as error:
        pytest.skip(f"cannot make a store read-only here: {error}")
    try:
        capsys.readouterr()
        result = run(ip, cell("during", "kept = 6 * 7\nkept"))
        captured = capsys.readouterr()
        listing = nbexp_cli("list")
    finally:
        guard.__exit__(None, None, None)
    assert result.success and result.result == 42 and ip.user_ns["kept"] == 42
    assert "Traceback" not in captured.err
    (line,) = [line for line in captured.err.splitlines() if "NOT recorded" in line]
    assert "writable" in line or "ermission" in line or "not permitted" in line, line
    assert (listing.code == 0 and "before" in listing.out) or listing.code == 1, listing
    assert "Traceback" not in listing.err
    store_module._stores.clear()
    assert nbexp.experiments()["name"].tolist() == ["before"]
    figures.report("bad input: read-only store made with", how)


# -- a store whose path has spaces and non-ASCII letters -------------------------------------


def test_a_store_on_a_path_with_spaces_and_unicode_works_end_to_end(
    ip: Any, capsys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "my projects" / "expériences ü 1"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    store_module._stores.clear()
    (here / "in put.csv").write_text("a,b\n1,2\n")
    body = """
        import numpy as np
        import pandas as pd
        frame = pd.read_csv("in put.csv")
        weights = np.arange(200_000.0)
        depth = 4
        score = float(frame["a"].sum()) + depth
    """
    assert run(ip, cell("spaced", body)).success
    store = open_store()
    assert store.root == here / ".nbexp"
    assert cli("list").out.count("spaced") == 1 and cli("fsck").code == 0
    for name in ("weights", "frame"):
        ip.user_ns[name] = "clobbered"
    assert run(ip, "%exp_restore spaced").success
    assert np.array_equal(ip.user_ns["weights"], np.arange(200_000.0))

    script = here / "re run.py"
    assert run(ip, f"%exp_export spaced -o '{script}'").success
    done = subprocess.run(
        [sys.executable, str(script)], cwd=here, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert json.loads(last.removeprefix("NBEXP_METRICS "))["score"] == 5.0
    assert run(ip, f"%exp_export spaced -o '{here / 'note book.ipynb'}'").success

    remote = tmp_path / "shared drive" / "équipe remote"
    assert cli("remote", "add", "team", f"file://{remote}", "--trusted").code == 0
    pushed = cli("push", "team", "-q")
    assert pushed.code == 0, pushed
    other = tmp_path / "other machine" / "ñ"
    (other / ".nbexp").mkdir(parents=True)
    root = str(other / ".nbexp")
    assert cli("--store", root, "remote", "add", "team", str(remote), "--trusted").code == 0
    pulled = cli("--store", root, "pull", "team", "-q")
    assert pulled.code == 0 and "pulled 1 experiment" in pulled.out, pulled
    store_module._stores.clear()
    copy = nbexp.api.load("spaced", store=root)
    assert np.array_equal(copy["weights"], np.arange(200_000.0))
    assert cli("--store", root, "fsck").code == 0
