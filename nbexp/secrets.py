"""Keeping credentials out of records, exports and remotes.

Two defences: names that look like credentials are never snapshotted or shown, and the values
of such variables and environment variables are scrubbed from every string that is recorded
(code, history, printed output, tracebacks, git diffs) before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

_SECRET_NAME = re.compile(
    r"(token|secret|passw(or)?d|passwd|api_?key|apikey|access_?key|private_?key|credential)",
    re.IGNORECASE,
)
REDACTED = "***"
MIN_SECRET_LENGTH = 6

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


def looks_like_secret(name: str) -> bool:
    """True for names like `api_key`, `GITHUB_TOKEN`, `db_password`, `client_secret`."""
    return bool(_SECRET_NAME.search(name))


def secret_values(
    namespace: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The string values that must never be written: credential-named variables and env vars."""
    found: set[str] = set()
    for source in (namespace or {}, os.environ if environ is None else environ):
        for name, value in list(source.items()):
            is_secret = looks_like_secret(str(name)) and isinstance(value, str)
            if is_secret and len(value) >= MIN_SECRET_LENGTH:
                found.add(value)
    # Longest first, so a secret that contains another is replaced whole.
    return sorted(found, key=len, reverse=True)


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


class Redactor:
    """Replaces known secret values in strings, recursively through JSON-like structures."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values = [value for value in values if len(value) >= MIN_SECRET_LENGTH]
        self._pattern = (
            re.compile("|".join(re.escape(value) for value in self._values))
            if self._values
            else None
        )

    def text(self, value: str) -> str:
        if self._pattern is None or not value:
            return value
        return self._pattern.sub(REDACTED, value)

    def __call__(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(key)): self(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(item) for item in value)
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
    source = os.environ if environ is None else environ
    return {name: source[name] for name in ENV_ALLOW_LIST if name in source}
