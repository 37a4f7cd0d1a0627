"""The query language: parsing, errors, and to_sql agreeing with matches on a real SQLite table."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbexp.errors import NbexpError, QueryError
from nbexp.query import (
    And,
    Compare,
    Field,
    In,
    Node,
    Not,
    Or,
    matches,
    parse,
    to_sql,
)
from nbexp.record import encode_value

SCHEMA = """CREATE TABLE experiments (id TEXT PRIMARY KEY, name TEXT, created TEXT, status TEXT,
    duration REAL, note TEXT, tags TEXT, params TEXT, metrics TEXT)"""

INJECTION = "'); DROP TABLE experiments; --"


def _row(id: str, name: str | None, created: str | None, status: str | None,
         duration: float | None, note: str | None, tags: Any, params: Any, metrics: Any
         ) -> dict[str, Any]:  # fmt: skip
    return dict(id=id, name=name, created=created, status=status, duration=duration, note=note,
                tags=tags, params=params, metrics=metrics)  # fmt: skip


ROWS = [
    _row("e01", "rf-baseline", "2026-10-30T10:00:00.000000+00:00", "done", 12.5, "first try",
         ["best", "baseline"], {"depth": 5, "loss": "l2", "opt": "adam", "lr": 0.01,
         "use-bn": True}, {"f1": 0.85, "acc": 0.91, "loss": 0.2}),
    _row("e02", "rf-deep", "2026-11-01T00:00:00.000000+00:00", "failed", None, None, [],
         {"depth": 12, "loss": "l1", "opt": "sgd", "use-bn": False}, {}),
    _row("e03", "gbm", "2026-11-15T08:30:00.000000+00:00", "done", 300.0, "", ["best"],
         {"depth": "auto", "loss": "huber", "opt": "adam"},
         {"f1": 0.79, "acc": 0.95, "loss": 0.05}),
    _row("e04", "gbm-broken", "2026-11-16T00:00:00.000000+00:00", "failed", 1.0, "NaN loss",
         ["exp/a", "Best"], {"depth": None, "loss": None}, {"f1": "n/a"}),
    _row("e05", "nn", "2026-11-20T12:00:00.000000+00:00", "running", 0.0, None,
         ["best", ["nested"], 3], {"depth": 10, "lr": 0.001, "nested": {"a": 1}, "list": [1, 2]},
         {"f1": 0.8, "acc": 0.9}),
    _row("e06", 'it\'s "quoted"', "2026-11-21T00:00:00.000000+00:00", "done", 60.0, None,
         ["baseline"], {"depth": 3.0, "loss": "l2", "flag": 1}, {"f1": 1, "acc": True}),
    _row("e07", "empty", "2026-11-22T00:00:00.000000+00:00", "done", None, None, [], {}, {}),
    _row("e08", INJECTION, "2026-11-22T12:00:00.000000+00:00", "done", 2.0, "größe ✓",
         ["größe"], {"big": 2**62, "neg": -5, "sci": 1e-3}, {"f1": -0.1}),
    _row("e09", "rf-tuned", "2026-11-23T04:46:09.123456+00:00", "done", 45.0, "keeper",
         ["best", "team/vision"], {"depth": 7, "loss": "l1", "opt": "adamw",
         "learning-rate": 0.1, "my key": "x", "a.b": 2}, {"f1": 0.9, "acc": 0.88, "loss": 0.3}),
    _row("e10", None, None, None, 7, None, None, {"depth": 10, "ok": False}, None),
]  # fmt: skip
ALL = {r["id"] for r in ROWS}


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute(SCHEMA)
    for r in ROWS:
        enc = [None if r[k] is None else json.dumps(r[k]) for k in ("tags", "params", "metrics")]
        conn.execute(
            "INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [r["id"], r["name"], r["created"], r["status"], r["duration"], r["note"], *enc],
        )
    yield conn
    conn.close()


def sql_ids(conn: sqlite3.Connection, node: Node) -> set[str]:
    sql, args = to_sql(node)
    return {i for (i,) in conn.execute(f"SELECT id FROM experiments WHERE {sql}", args)}


def py_ids(node: Node) -> set[str]:
    return {r["id"] for r in ROWS if matches(node, r)}


# ---------------------------------------------------------------- parsing

F1, DEPTH, STATUS = Field("metrics", "f1"), Field("params", "depth"), Field("status")


def test_precedence_or_and_not() -> None:
    a, b, c = (Compare(STATUS, "==", s) for s in "abc")
    assert parse("status == 'a' or status == 'b' and status == 'c'") == Or(a, And(b, c))
    assert parse("(status == 'a' or status == 'b') and status == 'c'") == And(Or(a, b), c)
    assert parse("not status == 'a' and status == 'b'") == And(Not(a), b)
    assert parse("not (status == 'a' and status == 'b')") == Not(And(a, b))
    assert parse("status='a' AND status='b' Or NOT status='c'") == Or(And(a, b), Not(c))
    assert parse("status == 'a' and status == 'b' and status == 'c'") == And(And(a, b), c)
    assert parse("not not status == 'a'") == Not(Not(a))


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_every_operator(op: str) -> None:
    assert parse(f"metrics.f1 {op} 0.8") == Compare(F1, op, 0.8)
    assert parse(f"metrics.f1{op}0.8") == Compare(F1, op, 0.8)


def test_single_equals_and_flipped_comparisons() -> None:
    assert parse("metrics.f1 = 1") == Compare(F1, "==", 1)
    assert parse("0.8 < metrics.f1") == Compare(F1, ">", 0.8)
    assert parse("10 >= params.depth") == Compare(DEPTH, "<=", 10)
    assert parse("'done' != status") == Compare(STATUS, "!=", "done")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3), ("-3", -3), ("3.5", 3.5), ("-.5", -0.5), ("1e-3", 1e-3), ("2E+3", 2000.0),
        ("1.", 1.0), ("9223372036854775807", 2**63 - 1), ("'it''", None), ('"a b"', "a b"),
        ("'say \"hi\"'", 'say "hi"'), (r"'it\'s'", "it's"), (r'"tab\tnl\n\\"', "tab\tnl\n\\"),
        (r"'C:\data'", r"C:\data"), ("'größe ✓'", "größe ✓"), ("''", ""),
        ("true", True), ("True", True), ("FALSE", False), ("null", None), ("None", None),
    ],
)  # fmt: skip
def test_literals(text: str, value: Any) -> None:
    if text == "'it''":
        with pytest.raises(QueryError, match="unterminated string"):
            parse(f"params.x == {text}")
        return
    node = parse(f"params.x == {text}")
    assert isinstance(node, Compare)
    assert node.value == value and type(node.value) is type(value)


def test_lists_in_and_not_in() -> None:
    loss = Field("params", "loss")
    assert parse('params.loss in ["l2", "l1"]') == In(loss, ("l2", "l1"))
    mixed = In(loss, ("l2", 1, True, None), negate=True)
    assert parse("params.loss NOT IN ['l2', 1, true, null,]") == mixed
    assert parse("params.loss in []") == In(loss, ())
    assert parse("not params.loss in [1]") == Not(In(loss, (1,)))


def test_fields() -> None:
    assert parse("params.learning-rate > 0") == Compare(Field("params", "learning-rate"), ">", 0)
    assert parse('params."my key" == 1') == Compare(Field("params", "my key"), "==", 1)
    assert parse("params.a.b == 1") == Compare(Field("params", "a.b"), "==", 1)
    assert parse("Metrics.F1 > 0") == Compare(Field("metrics", "F1"), ">", 0)
    assert parse("Status == 'x'") == Compare(STATUS, "==", "x")
    for name in ("id", "name", "status", "created", "duration", "note"):
        assert parse(f"{name} == 1") == Compare(Field(name), "==", 1)
    assert parse("tags == 'x'") == Compare(Field("tags"), "==", "x")
    assert str(Field("params", "depth")) == "params.depth" and str(STATUS) == "status"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "query is empty"),
        ("  \n ", "query is empty"),
        ("metrics.f1 >", "expected a value after '>' but the query ends at column 13"),
        ("metrics.f1 >", "e.g. metrics.f1 > 0.8"),
        ("param.x > 1", "unknown field 'param.x' at column 1"),
        ("param.x > 1", "use params.<name>, metrics.<name>, name, status"),
        ("foo == 1", "unknown field 'foo'"),
        ("params > 1", "'params' needs a key"),
        ("params.x >> 1", "expected a value after '>' but got '>'"),
        ("params.x == [1]", "a list needs 'in'"),
        ("params.x in 1", "expected a list after 'in'"),
        ("params.x in [1, 2", "expected ',' or ']' in the list at column 18"),
        ("status in ['a' 'b']", "expected ',' or ']'"),
        ("(status == 'a'", "expected ')' to close the '(' at column 1"),
        ("status == 'a')", "unexpected ')' at column 14"),
        ("status == 'a", "unterminated string at column 11"),
        ("status == 'a' status == 'b'", "unexpected 'status'"),
        ("status == 'a' status == 'b'", "join conditions with and/or"),
        ("metrics.f1 > 0.8 and", "expected a condition after 'and' but the query ends"),
        ("and", "expected a condition but got 'and' at column 1"),
        ("1 == 2", "a comparison needs a field on one side"),
        ("metrics.a == metrics.b", "compare a field with a value, not another field"),
        ("metrics.a < true", "'<' needs a number or a string"),
        ("metrics.a >= null", "'>=' needs a number or a string"),
        ("tags > 'a'", "tags only support"),
        ("tags == 1", "tags only support"),
        ("tags in ['a', null]", "tags only support"),
        ("status", "expected an operator after 'status'"),
        ("status ! 'x'", "unexpected character '!' at column 8"),
        ("params.x == 99999999999999999999", "integer out of range"),
        ("1 in [1]", "the left side of 'in' must be a field"),
        ("params.x in [params.y]", "a list holds values, not fields"),
        ('params."a\\"b" == 1', "a quoted key must be printable ASCII"),
        ('params."größe" == 1', "a quoted key must be printable ASCII"),
        ("status == 'a\nb", "unterminated string"),
        ("status == '\ud800'", "lone surrogate"),
        ("(" * 65 + "status == 'a'" + ")" * 65, "more than 64 nested levels"),
        ("not " * 65 + "status == 'a'", "more than 64 nested levels"),
        (" or ".join(["status == 'a'"] * 257), "more than 256 conditions"),
    ],
)
def test_errors_are_one_line_with_where_and_hint(text: str, expected: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(text)
    message = str(info.value)
    assert expected in message
    assert len(message.splitlines()) == 1
    assert message.startswith("query: ")
    assert "column" in message or "e.g." in message
    assert isinstance(info.value, NbexpError)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_nesting_up_to_the_limit_parses() -> None:
    assert parse("(" * 64 + "status == 'a'" + ")" * 64) == Compare(STATUS, "==", "a")
    assert parse(" or ".join(["status == 'a'"] * 256))


# ---------------------------------------------------------------- SQL and Python agreement

AGREEMENT = [
    ("metrics.f1 > 0.8 and params.depth < 10", {"e01", "e06", "e09"}),
    ('params.loss in ["l2", "l1"] or not status == "failed"', ALL - {"e04"}),
    ('name == "rf-baseline" and tags == "best"', {"e01"}),
    ('created >= "2026-11-01"', {f"e0{i}" for i in range(2, 10)}),
    ('created < "2026-11"', {"e01"}),
    ('(metrics.acc >= 0.9 or metrics.loss < 0.1) and params.opt != "sgd"', {"e01", "e03"}),
    ("params.x != 3", set()),
    ("params.depth != 5", {"e02", "e03", "e05", "e06", "e09", "e10"}),
    ("not params.depth == 5", ALL - {"e01"}),
    ("params.depth == null", {"e04", "e07", "e08"}),
    ("params.depth != None", {"e01", "e02", "e03", "e05", "e06", "e09", "e10"}),
    ("params.use-bn == true", {"e01"}),
    ("params.use-bn = false", {"e02"}),
    ("params.use-bn == 1", set()),
    ("params.flag == true", set()),
    ("params.flag == 1", {"e06"}),
    ("metrics.acc == True", {"e06"}),
    ("params.depth == 3", {"e06"}),
    ("params.depth = 3.0", {"e06"}),
    ('params.depth > "a"', {"e03"}),
    ("params.depth < 'zzz'", {"e03"}),
    ("metrics.f1 < 0", {"e08"}),
    ("metrics.f1 >= -0.1", {"e01", "e03", "e05", "e06", "e08", "e09"}),
    ("0.8 < metrics.f1", {"e01", "e06", "e09"}),
    ("0.8 <= metrics.f1", {"e01", "e05", "e06", "e09"}),
    ('tags == "best"', {"e01", "e03", "e05", "e09"}),
    ('tags != "best"', {"e02", "e04", "e06", "e07", "e08", "e10"}),
    ('tags in ["baseline", "team/vision"]', {"e01", "e06", "e09"}),
    ('tags not in ["best", "baseline"]', {"e02", "e04", "e07", "e08", "e10"}),
    ('tags == "nested"', set()),
    ('tags == "größe"', {"e08"}),
    ("tags in []", set()),
    ("tags not in []", ALL),
    ('params.loss not in ["l1", "l2"]', {"e03"}),
    ('params.depth in [5, "auto", null]', {"e01", "e03", "e04", "e07", "e08"}),
    ("params.depth in [true, 7]", {"e09"}),
    ("params.depth in []", set()),
    ("params.depth not in []", {"e01", "e02", "e03", "e05", "e06", "e09", "e10"}),
    ("duration > 10", {"e01", "e03", "e06", "e09"}),
    ("duration == 7", {"e10"}),
    ("duration == null", {"e02", "e07"}),
    ("duration != 0", ALL - {"e02", "e05", "e07"}),
    ('status == "done" and not (tags == "best" or duration < 10)', {"e06", "e07"}),
    ('note == ""', {"e03"}),
    ("note != null", {"e01", "e03", "e04", "e08", "e09"}),
    ('note == "größe ✓"', {"e08"}),
    ('name == "it\'s \\"quoted\\""', {"e06"}),
    ("name == 'it\\'s \"quoted\"'", {"e06"}),
    ("name == 3", set()),
    ("name != 3", ALL - {"e10"}),
    ("params.learning-rate >= 0.1", {"e09"}),
    ('params."my key" == "x"', {"e09"}),
    ("params.a.b == 2", {"e09"}),
    ("params.nested == null", ALL - {"e05"}),
    ("params.nested != null", {"e05"}),
    ("params.list != 1", {"e05"}),
    ("params.list > 1", set()),
    ("params.big > 4611686018427387903", {"e08"}),
    ("params.big == 4611686018427387904", {"e08"}),
    ("params.sci == 1e-3", {"e08"}),
    ("params.lr == 0.001", {"e05"}),
    ("params.neg < -4.5", {"e08"}),
    ('id in ["e01", "e10"]', {"e01", "e10"}),
    ('id > "e08"', {"e09", "e10"}),
    ('STATUS == "done" AND NOT tags == "best"', {"e06", "e07", "e08"}),
    ('metrics.f1 == "n/a"', {"e04"}),
    ('metrics.f1 > 0.5 or metrics.f1 == "n/a"', {"e01", "e03", "e04", "e05", "e06", "e09"}),
    ("not not status == 'done'", {"e01", "e03", "e06", "e07", "e08", "e09"}),
    ("not status == 'done'", {"e02", "e04", "e05", "e10"}),
    ('status == "failed" or status == "running" and duration > 0.5', {"e02", "e04"}),
    ('(status == "failed" or status == "running") and duration > 0.5', {"e04"}),
    (f"name == {json.dumps(INJECTION)}", {"e08"}),
    (f"tags == {json.dumps(INJECTION)} or note == {json.dumps(INJECTION)}", set()),
]


@pytest.mark.parametrize(("text", "expected"), AGREEMENT, ids=[t for t, _ in AGREEMENT])
def test_sql_and_python_select_the_same_rows(
    db: sqlite3.Connection, text: str, expected: set[str]
) -> None:
    node = parse(text)
    assert py_ids(node) == expected
    assert sql_ids(db, node) == expected


def test_sql_shape_uses_placeholders_and_quoted_json_paths() -> None:
    sql, args = to_sql(parse("params.depth < 10"))
    assert "json_extract(params, ?) END) < ?" in sql
    assert args == ['$."depth"'] * 6 + [10]
    assert sql.count("?") == len(args)
    sql, args = to_sql(parse("tags == 'x'"))
    assert "EXISTS (SELECT 1 FROM json_each(experiments.tags)" in sql and args == ["x"]
    assert sql.count("?") == len(args)


def test_non_finite_metrics_compare_as_python_floats(db: sqlite3.Connection) -> None:
    """inf is stored as {"$float": "inf"}: queries still see it as the number it is."""
    rows = [
        {"id": "i", "metrics": {"m": float("inf")}},
        {"id": "n", "metrics": {"m": float("-inf")}},
        {"id": "z", "metrics": {"m": float("nan")}},
        {"id": "f", "metrics": {"m": 1.0}},
    ]
    db.execute("CREATE TABLE IF NOT EXISTS special (id TEXT, metrics TEXT)")
    db.executemany(
        "INSERT INTO special VALUES (?, ?)",
        [(row["id"], json.dumps(encode_value(row["metrics"]))) for row in rows],
    )
    for text in ("metrics.m > 1e308", "metrics.m < -1e308", "metrics.m != 1", "metrics.m == 1",
                 "metrics.m >= 0", "not metrics.m > 0", "metrics.m in [1, 2]"):  # fmt: skip
        node = parse(text)
        where, args = to_sql(node)
        in_sql = {r[0] for r in db.execute(f"SELECT id FROM special WHERE {where}", args)}
        in_python = {row["id"] for row in rows if matches(node, row)}
        assert in_sql == in_python, text
    assert {
        r[0]
        for r in db.execute(
            "SELECT id FROM special WHERE " + to_sql(parse("metrics.m > 1e308"))[0],
            to_sql(parse("metrics.m > 1e308"))[1],
        )
    } == {"i"}


def test_injection_is_only_data(db: sqlite3.Connection) -> None:
    for text in (f"name == {json.dumps(INJECTION)}", f"params.{'x'} in ['{INJECTION[1:]}']",
                 f'params."{INJECTION[3:]}" == 1'):  # fmt: skip
        node = parse(text)
        sql, _ = to_sql(node)
        assert "DROP" not in sql and "--" not in sql
        sql_ids(db, node)
    assert db.execute("SELECT count(*) FROM experiments").fetchone() == (len(ROWS),)


def test_to_sql_refuses_hand_built_nodes_it_cannot_compile() -> None:
    with pytest.raises(QueryError):
        to_sql(Compare(Field("name; DROP TABLE experiments"), "==", 1))
    with pytest.raises(QueryError):
        to_sql(Compare(STATUS, "== 1 OR 1 ==", 1))


def test_matches_never_raises_on_odd_rows() -> None:
    odd = {"id": "x", "params": {"depth": "auto"}, "metrics": None, "tags": None}
    assert not matches(parse("params.depth < 3"), odd)
    assert not matches(parse("metrics.f1 > 0"), odd)
    assert matches(parse("tags != 'a'"), odd)
    assert not matches(parse("created >= '2026'"), {})


# ---------------------------------------------------------------- fuzzing

TOKENS = ["(", ")", "[", "]", ",", ".", "and", "or", "not", "in", "NOT", "==", "=", "!=", "<",
          "<=", ">", ">=", "params", "metrics.f1", "params.depth", "params.my-key", "tags",
          "status", "name", "created", "duration", "bogus", "param.x", "'done'", '"best"',
          "'", '"', "\\", "0.8", "-1", "1e-3", "10", "true", "null", "None", '"a\\"b"', "-",
          "!"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_parses_or_raises_query_error(text: str) -> None:
    try:
        parse(text)
    except QueryError as e:
        assert len(str(e).splitlines()) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=14), st.sampled_from([" ", ""]))
def test_token_soup_parses_or_raises_and_agrees(
    db: sqlite3.Connection, tokens: list[str], sep: str
) -> None:
    try:
        node = parse(sep.join(tokens))
    except QueryError as e:
        assert len(str(e).splitlines()) == 1
        return
    assert sql_ids(db, node) == py_ids(node)


def _scalars_in(value: Any) -> Iterator[Any]:
    if isinstance(value, (dict, list)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _scalars_in(v)
    else:
        yield value


# every distinct scalar stored in ROWS (keyed by type too, so 1, 1.0 and True all survive)
ROW_VALUES = list({(type(v), repr(v)): v for r in ROWS for v in _scalars_in(r)}.values())
text_literals = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.sampled_from(ROW_VALUES) | numbers | text_literals
scalars = scalars | st.booleans() | st.none()
ordered = scalars.filter(lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool))
KEYS = ["depth", "loss", "use-bn", "flag", "missing", "a.b", "my key", "nested", "lr", "big"]
fields = st.sampled_from(
    [Field("params", k) for k in KEYS]
    + [Field("metrics", k) for k in ("f1", "acc", "loss")]
    + [Field(c) for c in ("id", "name", "status", "created", "duration", "note")]
)
tag_values = st.sampled_from(["best", "baseline", "Best", "größe", "nested", "x"]) | text_literals
leaves = st.one_of(
    st.builds(Compare, fields, st.sampled_from(["==", "!="]), scalars),
    st.builds(Compare, fields, st.sampled_from(["<", "<=", ">", ">="]), ordered),
    st.builds(In, fields, st.lists(scalars, max_size=4).map(tuple), st.booleans()),
    st.builds(Compare, st.just(Field("tags")), st.sampled_from(["==", "!="]), tag_values),
    st.builds(In, st.just(Field("tags")), st.lists(tag_values, max_size=3).map(tuple),
              st.booleans()),
)  # fmt: skip
trees = st.recursive(
    leaves,
    lambda sub: st.builds(And, sub, sub) | st.builds(Or, sub, sub) | st.builds(Not, sub),
    max_leaves=12,
)


def _literal(value: Any, data: st.DataObject) -> str:
    if isinstance(value, str):
        quote = data.draw(st.sampled_from(["'", '"']))
        body = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
        return quote + body + quote
    if isinstance(value, bool) or value is None:
        spellings = {True: ["true", "True"], False: ["false", "FALSE"], None: ["null", "None"]}
        return data.draw(st.sampled_from(spellings[value]))
    return repr(value)


def _render(node: Node, data: st.DataObject) -> str:
    """Query text for node, spelled in randomly chosen but equivalent ways."""
    if isinstance(node, (And, Or)):
        word = "and" if isinstance(node, And) else "or"
        word = word.upper() if data.draw(st.booleans()) else word
        return f"({_render(node.left, data)}) {word} ({_render(node.right, data)})"
    if isinstance(node, Not):
        return f"not ({_render(node.operand, data)})"
    f = node.field
    field = f'{f.name}."{f.key}"' if f.key and " " in f.key else str(f)
    if isinstance(node, In):
        values = ", ".join(_literal(v, data) for v in node.values)
        return f"{field} {'not in' if node.negate else 'in'} [{values}]"
    flip = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
    if data.draw(st.booleans()):
        return f"{_literal(node.value, data)} {flip[node.op]} {field}"
    op = "=" if node.op == "==" and data.draw(st.booleans()) else node.op
    return f"{field} {op} {_literal(node.value, data)}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.data())
def test_generated_queries_round_trip_and_sql_agrees_with_python(
    db: sqlite3.Connection, node: Node, data: st.DataObject
) -> None:
    text = _render(node, data)
    assert parse(text) == node
    assert sql_ids(db, node) == py_ids(node)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.data())
def test_mutated_queries_parse_or_raise_and_agree(
    db: sqlite3.Connection, node: Node, data: st.DataObject
) -> None:
    """Near-miss queries: a valid query with a slice cut out and a token spliced in."""
    text = _render(node, data)
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, min(len(text), i + 6)))
    text = text[:i] + data.draw(st.sampled_from(["", *TOKENS])) + text[j:]
    try:
        mutated = parse(text)
    except QueryError as e:
        assert len(str(e).splitlines()) == 1
        return
    assert sql_ids(db, mutated) == py_ids(mutated)


# ---------------------------------------------------------------- a real index's plain columns

PLAIN_EXTRA = [  # flat keys whose values the plain columns must hold exactly as the JSON does
    ({"lr": float("inf"), "mixed": "n/a", "big": 2**70}, {"f1": float("-inf"), "acc": 1}),
    ({"lr": -0.0, "mixed": 3, "depth": 10**19}, {"f1": 1e308, "acc": 0.5}),
    ({"mixed": 2.5, "loss": ""}, {"f1": float("nan"), "loss": 0}),  # nan: metrics.f1 not flat
]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real store holding ROWS' params and metrics (and PLAIN_EXTRA): its index keeps flat
    keys in plain columns, which filters compare directly."""
    from nbexp.record import Code, Experiment, Outcome
    from nbexp.store import Store

    store = Store(tmp_path_factory.mktemp("plain") / ".nbexp")
    rows = [(r["params"] or {}, r["metrics"] or {}) for r in ROWS] + PLAIN_EXTRA
    for number, (params, metrics) in enumerate(rows):
        created = f"2026-11-23T00:00:{number:02d}.000000+00:00"
        draft = Experiment(
            id="",
            name=f"r{number}",
            created=created,
            code=Code(cell="", source=""),
            outcome=Outcome(status="ok", started=created, duration=0.1),
            params=params,
            metrics=metrics,
        )
        body = draft.to_dict()
        body["id"] = store.make_id(body)
        store.save(Experiment.from_dict(body))
    yield store
    store.close()


def _through_plain_and_json(store: Any, text: str) -> tuple[set[str], set[str]]:
    """The names `text` selects as the store filters (plain columns where a key has one),
    and through the JSON documents alone, on the same index."""
    plain = {row["name"] for row in store.rows(text)}
    where, args = to_sql(parse(text))
    with store._lock:
        found = store._db.execute(f"SELECT name FROM experiments WHERE {where}", args)
        return plain, {name for (name,) in found}


def test_filters_use_the_plain_columns_of_flat_keys(indexed: Any) -> None:
    """A flat key is compared in its plain column (no JSON parsed per row); a key with a
    value that is not flat (a bool, a list, nan) goes on through the JSON."""
    plain = {
        (section, key): physical
        for section, key, scalar, physical in indexed._key_columns()
        if scalar and physical
    }
    assert ("params", "lr") in plain and ("params", "mixed") in plain
    assert ("params", "use-bn") not in plain and ("metrics", "f1") not in plain
    where, _ = to_sql(parse('params.lr > 0.01 and params.mixed == "n/a"'), plain)
    assert "json" not in where
    where, _ = to_sql(parse("metrics.f1 > 0.5"), plain)
    assert "json" in where


@pytest.mark.parametrize(("text", "expected"), AGREEMENT, ids=[t for t, _ in AGREEMENT])
def test_plain_columns_select_what_the_json_selects(
    indexed: Any, text: str, expected: set[str]
) -> None:
    through_plain, through_json = _through_plain_and_json(indexed, text)
    assert through_plain == through_json


EXTRA_AGREEMENT = [
    "params.lr > 1e308",
    "params.lr == 0",
    "params.lr < 0.01",
    'params.mixed > "a"',
    "params.mixed >= 2.5",
    "params.mixed != 3",
    'params.mixed in [3, "n/a", null]',
    "params.mixed not in [2.5]",
    "params.big > 1e20",
    "params.depth >= 1e19",
    "params.depth == 10000000000000000000.0",
    'params.loss == ""',
    "metrics.f1 < -1e308",
    "metrics.f1 != 1e308",
    "metrics.acc == 1",
    "metrics.loss <= 0",
]


@pytest.mark.parametrize("text", EXTRA_AGREEMENT)
def test_plain_columns_agree_on_non_finite_big_and_mixed_values(indexed: Any, text: str) -> None:
    through_plain, through_json = _through_plain_and_json(indexed, text)
    assert through_plain == through_json


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.data())
def test_generated_queries_select_the_same_rows_through_plain_columns(
    indexed: Any, node: Node, data: st.DataObject
) -> None:
    through_plain, through_json = _through_plain_and_json(indexed, _render(node, data))
    assert through_plain == through_json
