"""`nbexp list` right after a change prints the text it kept, patched with the rows that
changed (`listing_text.patch`): it must be byte for byte what a full render of the store
prints, whatever the sequence of tags, removals and records — from this store handle or
another one — that led there."""

from __future__ import annotations

import random
from typing import Any

import pytest

from nbexp import api
from nbexp import listing_text as text
from nbexp.record import Code, Experiment, Outcome
from nbexp.store import Store, open_store

OPTIONS = [  # (query, fmt): the table and the CSV, whole and filtered
    (None, "table"),
    (None, "csv"),
    ("params.depth < 6", "table"),
    ("params.depth < 6", "csv"),
]
NAMES = ["rf", "gbm", "a much longer experiment name", "bayes, naive", 'say "hi"', "x"]
TAGS = ["best", "t", "a-much-longer-tag-than-any-other", "ok", "v2"]


def _record(
    store: Store, rng: random.Random, serial: int, *, ascii_only: bool = True, new_keys: bool = True
) -> Experiment:
    """A record with values of every kind a column may hold: ints and floats in one column,
    strings with commas and quotes, a rare new key, a rare terminal escape in a name (and
    unless `ascii_only`, names beyond ASCII: a table padded by characters, not bytes)."""
    params: dict[str, Any] = {"depth": rng.randint(1, 12), "lr": rng.choice([0.1, 0.01, 1e-05])}
    if rng.random() < 0.5:
        params["model"] = rng.choice(["rf", "gbm,v2", 'q"uote'])
    if new_keys and rng.random() < 0.08:
        params[f"new{serial}"] = rng.choice([1, 2.5, "s", [1, 2], True])
    metrics: dict[str, Any] = {"acc": rng.choice([rng.random(), rng.randint(0, 10**7), 1.0])}
    if rng.random() < 0.3:
        metrics["loss"] = rng.choice([rng.random() * 1e6, float("inf"), -0.0, 3])
    name = rng.choice(NAMES if ascii_only else [*NAMES, "naïve", "試行"])
    if rng.random() < 0.05:
        name += "\x1b[31m"
    second = rng.randint(0, 40)  # created times collide: then ids order the rows
    draft = Experiment(
        id="",
        name=f"{name}-{serial}" if rng.random() < 0.5 else name,
        created=f"2026-11-23T00:{second // 60:02d}:{second % 60:02d}.000000+00:00",
        code=Code(cell="", source=str(serial)),
        outcome=Outcome(
            status=rng.choice(["ok", "failed"]),
            started="2026-11-23T00:00:00+00:00",
            duration=rng.choice([0.1, 12.5, 1234.5678]),
        ),
        params=params,
        metrics=metrics,
        tags=tuple(rng.sample(TAGS, rng.randint(0, 2))),
    )
    body = draft.to_dict()
    body["id"] = store.make_id(body)
    return store.save(Experiment.from_dict(body))


def _full_render(store: Store, query: str | None, fmt: str) -> bytes:
    """What `nbexp list` prints when it formats every row again (no kept text): the same
    through both ways a listing is made (in its own order, and as `--sort` makes it)."""
    empty = "no experiments" + (f" match `{query}`" if query else " yet") + "\n"
    names, columns = store.listing_columns(query)
    made, _ = text.render(fmt, names, columns, empty)
    header, columns = api.table(query, store=store)
    if columns[0]:
        other = text.csv(header, columns) if fmt == "csv" else text.table(header, columns)
        assert made == other.encode("utf-8", "backslashreplace")
    return made


def _step(store: Store, other: Store, rng: random.Random, serial: int, ascii_only: bool) -> None:
    """One change a user makes: a tag added or taken off, a record removed or added —
    through this store handle or another one (another process's)."""
    handle = other if rng.random() < 0.3 else store
    rows = store.rows()
    choice = rng.random()
    if not rows or choice < 0.25:
        _record(handle, rng, serial, ascii_only=ascii_only)
    elif choice < 0.55:
        handle.add_tag(rng.choice(rows)["id"], rng.choice(TAGS))
    elif choice < 0.8:
        tagged = [row for row in rows if row["tags"]]
        if tagged:
            row = rng.choice(tagged)
            handle.remove_tag(row["id"], rng.choice(row["tags"]))
    else:
        handle.delete(rng.choice(rows)["id"])


@pytest.mark.parametrize(("seed", "ascii_only"), [(1, True), (2, True), (3, False), (4, False)])
def test_a_patched_listing_is_what_a_full_render_prints(
    project, monkeypatch: pytest.MonkeyPatch, seed: int, ascii_only: bool
) -> None:
    rng = random.Random(seed)
    store = open_store()
    other = Store(store.root)
    for serial in range(25):
        _record(store, rng, serial, ascii_only=ascii_only)
    outcomes: list[bool] = []
    listing: list[tuple[str | None, str]] = []  # the options being listed
    real_patch = text.patch

    def counted(kept: bytes, rows: text.Rows, *args: Any) -> bytes | None:
        """The patch, and the rows it leaves for the next one checked against those a full
        render makes (a wrong line length or cell length would misplace a later patch)."""
        made = real_patch(kept, rows, *args)
        outcomes.append(made is not None)
        if made is not None:
            query, fmt = listing[-1]
            names, columns = store.listing_columns(query)
            fresh = text.render(fmt, names, columns, "")[1]
            assert fresh is not None and rows.dump() == fresh.dump()
        return made

    monkeypatch.setattr(text, "patch", counted)
    for serial in range(25, 85):
        _step(store, other, rng, serial, ascii_only)
        if rng.random() < 0.3:
            _step(store, other, rng, serial + 1000, ascii_only)  # two changes between listings
        for query, fmt in OPTIONS:
            listing.append((query, fmt))
            listed = api.listing_text(query, fmt=fmt, store=store)
            assert listed == _full_render(store, query, fmt), (seed, serial, query, fmt)
            assert api.listing_text(query, fmt=fmt, store=store) == listed  # kept as it is
    other.close()
    # most listings were patched (a column appearing or going, a CSV cell with a line
    # break, a shrinking column's last cell make the text again)
    assert len(outcomes) >= 200 and sum(outcomes) >= len(outcomes) * 0.85, outcomes


def test_a_cell_reads_the_same_alone_as_in_its_column() -> None:
    """`cell` is the rule `_cells` applies to whole columns by their types: a patched row's
    cells must be what the full render would give them."""
    rng = random.Random(7)
    pool: list[Any] = [
        None, 0, 1, -1, 10**6, 10**20, 1.0, 1e6, 0.1, -0.0, 0.0, float("inf"), float("-inf"),
        float("nan"), 1e-300, 123456.789, "", "s", "a,b", True, False, [1, 2], {"k": 1},
    ]  # fmt: skip
    for _ in range(300):
        kinds = rng.sample(pool, rng.randint(1, 6))
        values = [rng.choice(kinds) for _ in range(rng.randint(1, 1500))]
        for exact in (False, True):
            assert text._cells("params.x", values, exact=exact) == [
                text.cell("params.x", value, exact=exact) for value in values
            ]


def test_damaged_or_foreign_rows_are_never_used(project) -> None:
    """What patches a kept text (`cache/rows-*`) is trusted only whole, for its own options
    and its own text: a flipped byte, or another listing's rows in its place, makes the
    text again instead."""
    rng = random.Random(5)
    store = open_store()
    for serial in range(12):
        _record(store, rng, serial)
    for query, fmt in OPTIONS:
        api.listing_text(query, fmt=fmt, store=store)
    kept = sorted((store.root / "cache").glob("rows-*"))
    assert len(kept) == len(OPTIONS)
    first = store.rows()[0]["id"]

    def listed_after_a_tag(tag: str) -> None:
        store.add_tag(first, tag)
        for query, fmt in OPTIONS:
            assert api.listing_text(query, fmt=fmt, store=store) == _full_render(store, query, fmt)

    damaged = bytearray(kept[0].read_bytes())
    damaged[-5] ^= 0xFF
    kept[0].write_bytes(bytes(damaged))
    listed_after_a_tag("one")
    for target in kept[1:]:  # each listing's rows in another's place
        target.write_bytes(kept[0].read_bytes())
    listed_after_a_tag("two")


def test_many_changes_between_two_listings(project, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep's forty records and a clean-up's forty removals between two listings: the
    kept text patched all at once (every line split out; the removed rows found through one
    map of the ids), as a full render prints it."""
    real_patch, patched = text.patch, []
    monkeypatch.setattr(
        text, "patch", lambda *args: patched.append(real_patch(*args)) or patched[-1]
    )
    rng = random.Random(11)
    store = open_store()
    for serial in range(60):  # no column one row alone has: removing it would make it again
        _record(store, rng, serial, new_keys=False)
    for query, fmt in OPTIONS:
        api.listing_text(query, fmt=fmt, store=store)
    for row in rng.sample(store.rows(), 40):
        store.delete(row["id"])
    for serial in range(60, 100):
        _record(store, rng, serial, new_keys=False)
    for query, fmt in OPTIONS:
        assert api.listing_text(query, fmt=fmt, store=store) == _full_render(store, query, fmt)
    assert len(patched) == len(OPTIONS) and None not in patched


def test_packed_ids_are_found_alone_or_all_at_once() -> None:
    values = [f"{random.Random(i).getrandbits(128):032x}" for i in range(500)]
    packed = text.Packed.of(values)
    assert packed is not None and len(packed) == 500 and packed[7] == values[7]
    absent = "f" * 31 + "g"
    for wanted in (values[3:6], values[100:160]):  # few: searched; many: one map
        assert packed.find_all([*wanted, absent]) == sorted(map(values.index, wanted))
    assert packed.find(values[42][1:] + values[43][:1]) == -1  # straddling two: not an id
