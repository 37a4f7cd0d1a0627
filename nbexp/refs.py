"""The reference grammar: how a user names an experiment, and which labels may be names or tags.

A reference is tried in this order: `last` / `last~N`, a unique id prefix (≥ 4 hex
characters), a name (its newest run), a tag. Ids come before names so that no name can stand
in for another experiment's id; and a label that would read as a reference — empty, `last`,
`last~N`, or four or more hex characters — can be neither a name nor a tag. The store and the
remotes resolve with these rules; nothing here touches the file system.
"""

from __future__ import annotations

import re

from .errors import NbexpError

MIN_PREFIX = 4
MAX_BACK = 2**62  # last~N beyond this cannot exist (and SQLite's OFFSET is 64-bit)
_LAST = re.compile(r"^last(?:~(\d+))?$")
_HEX = re.compile(r"^[0-9a-f]+$")
MAX_LABEL = 200


def steps_back(ref: str) -> int | None:
    """N for `last~N` (0 for `last`), or None if `ref` is not of that form. A number too large
    for any store is returned as MAX_BACK, which then simply does not exist."""
    match = _LAST.match(ref)
    if match is None:
        return None
    digits = match.group(1) or "0"
    return int(digits) if len(digits) < 19 else MAX_BACK


def is_hex(ref: str) -> bool:
    return bool(_HEX.match(ref.lower()))


def could_be_id(ref: str) -> bool:
    """Whether `ref` is read as an id prefix (four or more hex digits)."""
    return len(ref) >= MIN_PREFIX and is_hex(ref)


def check_label(label: str, kind: str = "name") -> str:
    """`label` stripped, or an NbexpError saying why it cannot be an experiment's `kind`
    ("name" or "tag"): it would be read as another reference, or it is empty or too long."""
    text = label.strip()
    flag = "-t" if kind == "tag" else "NAME"
    if not text:
        raise NbexpError(f"an experiment's {kind} cannot be empty; e.g. {flag} baseline")
    if steps_back(text) is not None:
        raise NbexpError(
            f"`{text}` cannot be a {kind}: it already means the newest experiment (last~N: the "
            f"Nth before it); choose another {kind}"
        )
    if could_be_id(text):
        raise NbexpError(
            f"`{text}` cannot be a {kind}: it reads as an experiment id prefix (hex digits), so "
            f"it could point at another experiment; add a letter beyond a-f, e.g. `run-{text}`"
        )
    if len(text) > MAX_LABEL or any(ord(c) < 32 for c in text):
        raise NbexpError(
            f"a {kind} must be one line of at most {MAX_LABEL} characters; choose a shorter one"
        )
    return text
