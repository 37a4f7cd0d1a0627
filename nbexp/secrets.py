"""Keeping credentials out of records, exports and remotes.

The defences: names that look like credentials are never snapshotted or shown; the values of
such variables and environment variables, of variables computed from them, and the password
of any URL that carries one (`scheme://user:password@host`) are scrubbed from every string
that is recorded (code, history, printed output, tracebacks, git diffs, params, tags) before
anything is written; and containers whose keys or columns are credential names (a dict with
a "password" key, a DataFrame with a `token` column) are not snapshotted unless the user asks.
What is not caught: a secret under an innocent name that never passes through a credential-
named variable, a URL, or a credential-named key (e.g. a bare literal assigned to `x`).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from .analysis import parse

_SECRET_NAME = re.compile(
    r"(token|secret|passw(or)?d|passwd|api_?key|apikey|access_?key|private_?key|credential)",
    re.IGNORECASE,
)
REDACTED = "***"
MIN_SECRET_LENGTH = 6
# The password part of a URL: scheme://user:password@host (RFC 3986 userinfo).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"]*:)(?P<password>[^\s/?#@'\"]+)(?=@)"
)

# Environment variables worth recording because they change results; nothing else is kept.
ENV_ALLOW_LIST = (
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "CONDA_DEFAULT_ENV",
    "TZ",
)


@lru_cache(maxsize=8192)
def looks_like_secret(name: str) -> bool:
    """True for names like `api_key`, `GITHUB_TOKEN`, `db_password`, `client_secret`."""
    return bool(_SECRET_NAME.search(name))


# Values that can hold no credential under a key or column: `credential_values` of them is
# always empty, so the scan below skips the call.
_FLAT_TYPES = frozenset({str, int, float, bool, bytes, complex, type(None)})


def secret_values(
    namespace: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The string values that must never be written: credential-named variables and env vars."""
    found: set[str] = set()
    for value in list((namespace or {}).values()):  # {"password": ...}, a `token` column
        if type(value) not in _FLAT_TYPES:
            found.update(v for v in credential_values(value) if len(v) >= MIN_SECRET_LENGTH)
    found.update(_named_secrets(namespace or {}))
    found.update(_environment_secrets() if environ is None else _named_secrets(environ))
    # Longest first, so a secret that contains another is replaced whole.
    return sorted(found, key=len, reverse=True)


def _named_secrets(source: Mapping[Any, Any]) -> set[str]:
    """Strings under credential-looking names, and the passwords of URLs under any name."""
    found: set[str] = set()
    for name, value in list(source.items()):
        if not isinstance(value, str):
            continue
        if looks_like_secret(str(name)) and len(value) >= MIN_SECRET_LENGTH:
            found.add(value)
        elif "://" in value:  # a URL's password is a secret whatever holds it
            found.update(url_passwords(value))
    return found


# What was read from the environment, with the environment it was read from: read again
# only when a variable was set, changed or removed (every change made in Python goes
# through `os.environ`'s own dict, which is compared, not copied, on each record).
_environment_seen: tuple[dict[Any, Any] | None, frozenset[str], dict[str, str]] = (
    None,
    frozenset(),
    {},
)


def _environment_read() -> tuple[frozenset[str], dict[str, str]]:
    """(the environment's secrets, its variables worth recording)."""
    global _environment_seen
    current = getattr(os.environ, "_data", None)
    seen, found, allowed = _environment_seen
    if current is None or seen is None or current != seen:
        found = frozenset(_named_secrets(os.environ))
        allowed = {name: os.environ[name] for name in ENV_ALLOW_LIST if name in os.environ}
        _environment_seen = (dict(current) if isinstance(current, dict) else None, found, allowed)
    return found, allowed


def _environment_secrets() -> frozenset[str]:
    return _environment_read()[0]


# The bytes a secret can take in what we store: UTF-8 (text, pickles), UTF-16 (files some
# tools write) and UTF-32 (numpy str arrays).
SECRET_ENCODINGS = ("utf-8", "utf-16-le", "utf-32-le")


def encoded_secrets(values: Iterable[str]) -> list[bytes]:
    """Each secret value as the byte strings to look for in pickles, buffers and files. A
    value holding lone surrogates (undecodable bytes of an environment variable) is looked
    for both as pickle writes it (surrogatepass) and as the original bytes (surrogateescape)."""
    found: dict[bytes, None] = {}
    for value in values:
        if len(value) < MIN_SECRET_LENGTH:
            continue
        for encoding in SECRET_ENCODINGS:
            for errors in ("surrogatepass", "surrogateescape"):
                with contextlib.suppress(UnicodeEncodeError):
                    found.setdefault(value.encode(encoding, errors), None)
    return list(found)


@lru_cache(maxsize=4096)
def _assignments(source: str) -> tuple[tuple[tuple[str, ...], frozenset[str]], ...]:
    """(names bound, names read) of each assignment in a cell; () if it does not parse."""
    try:
        tree = parse(source)
    except (SyntaxError, ValueError):
        return ()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = tuple(
                name.id
                for target in targets
                for name in ast.walk(target)
                if isinstance(name, ast.Name)
            )
            value = node.value
            reads = (
                frozenset(name.id for name in ast.walk(value) if isinstance(name, ast.Name))
                if value is not None
                else frozenset()
            )
            found.append((bound, reads))
    return tuple(found)


def derived_secret_values(namespace: Mapping[str, Any], cells: Iterable[str]) -> list[str]:
    """String values of variables computed from a credential (`pw = my_password.upper()`,
    `auth = "Bearer " + token`), following assignments through the cells in order: they are
    as secret as what they came from, though their names look innocent. `cells` is read
    only when some credential exists: without one, nothing is derived from it."""
    # the credentials themselves: credential-named strings (a list named `tokens` is none)
    sources = {
        name
        for name, value in list(namespace.items())
        if isinstance(value, str) and looks_like_secret(str(name))
    }
    if not sources:
        return []
    assignments = [item for cell in cells for item in _assignments(cell)]
    tainted: set[str] = set()
    changed = True
    while changed:
        changed = False
        for bound, reads in assignments:
            if any(name in sources or name in tainted for name in reads):
                new = [
                    name for name in bound if name not in tainted and not looks_like_secret(name)
                ]
                if new:
                    tainted.update(new)
                    changed = True
    values = []
    for name in tainted:
        value = namespace.get(name)
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            values.append(value)
    return values


def url_passwords(text: str) -> list[str]:
    """The passwords of URLs in `text` (`postgresql://admin:pg_pass@db/x` → `pg_pass`)."""
    return [
        match.group("password")
        for match in _URL_PASSWORD.finditer(text)
        if match.group("password") != REDACTED
    ]


def mask_urls(text: str) -> str:
    """`text` with every URL password masked: `postgresql://admin:***@db/x`."""
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(lambda match: match.group("head") + REDACTED, text)


def mask_credential_keys(value: Any) -> Any:
    """A JSON-like user value (a param, a metric) with whatever sits under a credential-named
    key masked: `{"user": "a", "password": "x"}` → `{"user": "a", "password": "***"}`."""
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and looks_like_secret(key)
            else mask_credential_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(mask_credential_keys(item) for item in value)
    return value


def _credential_entries(value: Any, depth: int = 3) -> Iterator[tuple[str, Any]]:
    """(key, what it holds) for each credential-looking key or column of a container — a
    dict's `password` key, a DataFrame's `api_token` column, a structured array's `secret`
    field — looked for a few levels deep (bounded, so a huge container costs little)."""
    if depth <= 0:
        return
    if isinstance(value, Mapping):
        for key, item in list(value.items())[:10_000]:
            if isinstance(key, str) and looks_like_secret(key):
                yield key, item
            elif type(item) not in _FLAT_TYPES and isinstance(item, (Mapping, list, tuple)):
                yield from _credential_entries(item, depth - 1)
    elif isinstance(value, (list, tuple)):
        for item in value[:100]:  # IPython's In and _ih: strings, which hold no key
            if type(item) not in _FLAT_TYPES and isinstance(item, (Mapping, list, tuple)):
                yield from _credential_entries(item, depth - 1)
    else:
        module = type(value).__module__ or ""
        if module.startswith("pandas") and hasattr(value, "columns"):
            for label in list(value.columns)[:10_000]:
                if looks_like_secret(str(label)):
                    yield str(label), value[label]
        elif module.startswith("numpy") and getattr(getattr(value, "dtype", None), "names", None):
            for label in value.dtype.names:
                if looks_like_secret(str(label)):
                    yield str(label), value[label]


def credential_fields(value: Any) -> list[str]:
    """The credential-looking keys or columns a container holds text under: storing the
    container would store the credentials with it. (A `tokens` column of lists, or a
    `token_count` of numbers, holds no credential.)"""
    return list(dict.fromkeys(key for key, held in _credential_entries(value) if _is_text(held)))


def _is_text(held: Any) -> bool:
    """Whether what sits under a credential-looking key is text: a string, or a column or
    array of strings."""
    if isinstance(held, (str, bytes)):
        return True
    kind = getattr(getattr(held, "dtype", None), "kind", None)
    if kind in ("U", "S"):
        return True
    if kind == "O" or str(getattr(held, "dtype", "")).startswith(("string", "str")):
        with contextlib.suppress(Exception):
            first = held.dropna().iloc[0] if hasattr(held, "dropna") else held.flat[0]
            return isinstance(first, (str, bytes))
    return False


def credential_values(value: Any) -> list[str]:
    """The strings a container holds under credential-looking keys or columns (its
    `password` values): secrets to scrub wherever they appear, the code that wrote them too."""
    found: list[str] = []
    for _, held in _credential_entries(value):
        if isinstance(held, str):
            found.append(held)
            continue
        with contextlib.suppress(Exception):  # a column, a list, a dict of strings
            items = held.values() if isinstance(held, Mapping) else held
            if hasattr(items, "tolist"):
                items = items.tolist()
            found += [v for v in list(items)[:10_000] if isinstance(v, str)]
    return found


class Redactor:
    """Replaces known secret values and URL passwords in strings, recursively through
    JSON-like structures."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values = [value for value in values if len(value) >= MIN_SECRET_LENGTH]
        self._needles: list[bytes] | None = None  # their JSON forms (`finds_nothing_in_json`)
        self._pattern = (
            re.compile("|".join(re.escape(value) for value in self._values))
            if self._values
            else None
        )

    def text(self, value: str) -> str:
        if not value:
            return value
        if self._pattern is not None:
            value = self._pattern.sub(REDACTED, value)
        return mask_urls(value)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (dict, list, tuple)) and self._finds_nothing_in(value):
            return with_text_keys(value)
        return self._scrubbed(value)

    def _scrubbed(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(key)): self._scrubbed(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._scrubbed(item) for item in value)
        return value

    def _finds_nothing_in(self, value: Any) -> bool:
        """True when no string inside `value` holds a secret or a URL, proved on its JSON
        text in one pass: JSON escapes each character on its own, so a string holding a
        secret holds the secret's escaped form in the text too (keys included; those that
        are not strings are numbers or words too short to hold one). A value JSON cannot
        write is walked string by string instead."""
        try:
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            return False
        if "://" in text:  # a URL, whose password `mask_urls` would mask
            return False
        return not any(json.dumps(secret)[1:-1] in text for secret in self._values)

    def finds_nothing_in_json(self, parts: Iterable[bytes]) -> bool:
        """`_finds_nothing_in` proved on a value already written as UTF-8 JSON (a record's
        parts, as `Store.seal` serialises them, non-ASCII characters as themselves): JSON
        escapes each character on its own there too. A secret that UTF-8 cannot encode (lone
        surrogates) cannot be in such bytes either."""
        if self._needles is None:
            needles = []
            for secret in self._values:
                with contextlib.suppress(UnicodeEncodeError):
                    needles.append(json.dumps(secret, ensure_ascii=False)[1:-1].encode())
            self._needles = needles
        needles = self._needles
        return not any(
            b"://" in part or any(needle in part for needle in needles) for part in parts
        )


def with_text_keys(value: Any) -> Any:
    """`value` copied as `Redactor` copies it, every dict key made a string, no text changed.
    Strings and numbers (most of a record) are passed on without a call of their own."""
    if isinstance(value, dict):
        return {
            key if type(key) is str else str(key): item
            if type(item) in _FLAT_TYPES
            else with_text_keys(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(
            item if type(item) in _FLAT_TYPES else with_text_keys(item) for item in value
        )
    return value


@lru_cache(maxsize=4096)
def redact_assignments(source: str) -> str:
    """Replace the literal assigned to a credential-looking name in source code with '***'."""
    pattern = re.compile(
        r"^(?P<lhs>\s*[A-Za-z_][A-Za-z0-9_]*\s*(?::[^=]+)?=\s*)(?P<q>[rbuRBU]{0,2}['\"])(?P<body>.*?)(?P=q)",
        re.MULTILINE,
    )

    def replace(match: re.Match[str]) -> str:
        name = match.group("lhs").split("=")[0].split(":")[0].strip()
        if not looks_like_secret(name):
            return match.group(0)
        return f"{match.group('lhs')}{match.group('q')}{REDACTED}{match.group('q')[-1]}"

    return pattern.sub(replace, source)


def allowed_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    if environ is None:
        return dict(_environment_read()[1])
    return {name: environ[name] for name in ENV_ALLOW_LIST if name in environ}
