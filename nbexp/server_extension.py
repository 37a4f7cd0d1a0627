"""The Jupyter server extension: the experiment store over REST, for the JupyterLab panel.

Enabled on install (`jupyter-config/jupyter_server_config.d/nbexp.json`). Both endpoints sit
under the server's base URL, behind its authentication (a request without a token or login
cookie gets 403) and its authorizer ("read" on the "contents" resource: the store is files
under the server root). Every error is JSON `{"message": "<one line>"}`, never a traceback.

``GET {base_url}nbexp/api/experiments?path=P[&query=Q][&offset=N][&limit=N][&sort=K][&desc=1]``
    The experiments of the store of `P`, newest first unless `sort` says otherwise.

    - `path` (required): a notebook or folder, relative to the server root ("" is the root).
      Its store is the one its kernel records into (SPEC §2): `NBEXP_STORE` from the
      server's environment if set (kernels inherit it), else `find_store_root` of the
      notebook's folder with symlinks resolved, as its kernel sees it (the nearest `.nbexp/`
      above it, else the git root, else the folder; it may lie above the server root).
    - `query`: the query language of `nbexp list` (e.g. `metrics.acc > 0.8 and name == "rf"`).
    - `offset` (default 0) and `limit` (default 100, at most 1000): the page.
    - `sort`: created, name, status, duration, id, params.NAME or metrics.NAME, optionally
      prefixed with `-`; ascending unless `desc=1` (`-` flips it). Omitted: newest first.

    200 → ``{"store": S, "total": N, "offset": N, "limit": N, "metric_names": [...],
    "experiments": [row, ...]}``. `store` is the store folder relative to the server root
    (absolute when outside it); `total` counts every experiment matching `query`, `experiments`
    is the page; `metric_names` are the metric keys of the matching experiments, most common
    first (ties in the order the store first saw them). Each row: id, short_id, name, created (ISO 8601), status,
    duration (s), note, tags, params, metrics, notebook, sweep, origin (the remote a pulled
    experiment came from, else null), and `text`: ``{"params": {NAME: T}, "metrics": {NAME:
    T}}``, each value as `nbexp list` prints it (`show.format_value`, TABLE_DIGITS
    significant digits; "" for null) — the panel shows these and sorts by the raw values.
    A folder with no store yet lists as
    ``{"experiments": [], "total": 0, ...}``; the store is not created.

    Caching: the response carries an `ETag` derived from the index's change counter (SQLite's
    `data_version`), the store and the request's parameters, so recording, deleting, tagging,
    pulling or reindexing changes it; a request whose `If-None-Match` matches gets 304 with no
    body, without querying the store (a folder without a store: tornado's hash of the body).
    `Cache-Control: private, no-cache` makes browsers
    revalidate every time (a browser answers a plain `fetch` from its cache on 304).

``GET {base_url}nbexp/api/experiments/REF?path=P``
    One experiment: REF is anything `nbexp show` accepts (id prefix, name, tag, `last`,
    `last~N`; URL-encoded). 200 → the record exactly as `Experiment.to_dict()` /
    `nbexp show --json` gives it (`id` is the resolved full id; secrets were scrubbed when
    it was recorded), plus `short_id`, `origin`, `store` and `text` (params and metrics as
    `nbexp show` prints them, the same shape as a row's).

Non-finite floats (NaN, ±inf) anywhere in a response are written as the record format
writes them, `{"$float": "nan" | "inf" | "-inf"}` — the same as `nbexp list --format json` —
so the JSON stays strict and a NaN metric stays distinguishable from a missing one (null).

Status codes: 400 malformed request (no `path`, a query that does not parse, a bad
offset/limit/sort/desc, an ambiguous id prefix), 403 unauthenticated or a `path` outside the
server root (`..`, absolute, or a symlink leading out), 404 no experiment matches REF,
500 a store nbexp cannot use (its message says how to fix it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tornado.ioloop
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from . import api
from . import query as query_language
from .errors import AmbiguousRefError, NbexpError, QueryError, RefError
from .record import SHORT_ID_LENGTH, Experiment, encode_value
from .show import TABLE_DIGITS, format_value
from .store import STORE_DIRNAME, STORE_ENV, Store, find_store_root, sort_key

API_PATH = "nbexp/api/experiments"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")
_T = TypeVar("_T")


class _Refused(Exception):
    """A request answered with an HTTP error status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- JSON shapes ------------------------------------------------------------------------


def row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One `api.rows` row (an `IndexRow`) as the panel gets it: `short_id` and the values'
    text added, strict JSON values."""
    shaped: dict[str, Any] = encode_value(dict(row))
    shaped["short_id"] = str(row["id"])[:SHORT_ID_LENGTH]
    shaped["text"] = value_texts(row.get("params"), row.get("metrics"), TABLE_DIGITS)
    return shaped


def record_json(experiment: Experiment, origin: str | None, store: str) -> dict[str, Any]:
    """A full record as the panel gets it: `to_dict()` plus short_id, origin, store and
    the values' text."""
    body: dict[str, Any] = encode_value(experiment.to_dict())
    body.update(short_id=experiment.short_id, origin=origin, store=store)
    body["text"] = value_texts(experiment.params, experiment.metrics)
    return body


def value_texts(
    params: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None, digits: int = 6
) -> dict[str, dict[str, str]]:
    """Params and metrics as the CLI prints them (`show.format_value`): the panel shows
    these, so a value reads the same in the terminal and in Lab."""
    return {
        section: {str(key): format_value(value, digits) for key, value in (values or {}).items()}
        for section, values in (("params", params), ("metrics", metrics))
    }


# -- requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """A validated list request."""

    query: str | None
    offset: int
    limit: int
    sort: str | None
    descending: bool

    def etag(self, *parts: object) -> str:
        text = "\0".join(map(str, (*parts, self.query, self.offset, self.limit, self.sort)))
        digest = hashlib.blake2b(f"{text}\0{self.descending}".encode(), digest_size=16)
        return f'"{digest.hexdigest()}"'


def parse_listing(argument: Callable[[str], str | None]) -> Listing:
    """Validate the list parameters (`argument(name)` gives one, or None); `_Refused(400)`."""
    query = argument("query")
    query = query if query and query.strip() else None
    if query is not None:
        try:  # compiled here so a store-less folder refuses a bad query all the same
            query_language.to_sql(query_language.parse(query))
        except NbexpError as error:
            raise _Refused(400, str(error)) from error
    offset = _count(argument("offset"), "offset", 0)
    limit = _count(argument("limit"), "limit", DEFAULT_LIMIT)
    if limit > MAX_LIMIT:
        raise _Refused(400, f"limit must be at most {MAX_LIMIT}; page with offset")
    sort = argument("sort") or None
    try:
        sort_key(sort)
    except QueryError as error:
        raise _Refused(400, str(error)) from error
    desc = (argument("desc") or "").strip().lower()
    if desc not in _TRUE + _FALSE:
        raise _Refused(400, f"desc must be 1 or 0, not `{desc}`")
    return Listing(query, offset, limit, sort, desc in _TRUE)


def _count(text: str | None, name: str, default: int) -> int:
    if text is None or not text.strip():
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()):
        raise _Refused(400, f"{name} must be a whole number ≥ 0, not `{text}`")
    return int(text)


def store_for(server_root: str, path: str) -> Path:
    """The `.nbexp` folder serving the notebook (or folder) `path`, relative to the server
    root; `_Refused(403)` if `path` leads outside the root. Nothing is created.

    The search starts from the notebook's folder with symlinks resolved, as its kernel's
    (which runs there and sees the physical `os.getcwd()`) does."""
    if path.startswith(("/", "\\")) or os.path.isabs(path) or re.match(r"^[A-Za-z]:", path):
        raise _Refused(403, f"path `{path}` is absolute; give it relative to the server root")
    target = os.path.join(os.path.abspath(server_root), path)
    try:
        real_root = os.path.realpath(server_root)
        real_target = os.path.realpath(target)
        folder = real_target if os.path.isdir(target) else os.path.realpath(os.path.dirname(target))
    except (ValueError, OSError) as error:
        raise _Refused(400, f"path `{path}` is not a usable path: {error}") from error
    if not all(_inside(real_root, item) for item in (real_target, folder)):
        raise _Refused(403, f"path `{path}` is outside the server root")
    override = os.environ.get(STORE_ENV)
    if override:
        return Path(override).expanduser().absolute()
    return find_store_root(folder)


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def shown_path(server_root: str, store: Path) -> str:
    """The store folder relative to the server root, or absolute when outside it."""
    for root in (os.path.realpath(server_root), os.path.abspath(server_root)):
        if _inside(root, str(store)):
            return Path(os.path.relpath(store, root)).as_posix()
    return str(store)


# -- the stores the server has open ----------------------------------------------------


class _Open:
    """One open store, and a read-only connection to its index whose `data_version`
    changes whenever any other connection (any process, or this one's `Store`) commits."""

    def __init__(self, root: Path) -> None:
        self.lock = threading.Lock()
        # read-only: the server never creates or changes a store (`api.reading`); the root
        # as found, even one NBEXP_STORE names that is not called .nbexp
        self.store = Store(root, read_only=True)
        self.nonce = secrets.token_hex(8)  # data_version counts per connection

    def version(self) -> str:
        return f"{self.nonce}:{api.change_token(store=self.store)}"


class Stores:
    """The stores the server reads, opened on first use and reopened when their index file
    is replaced; a store that does not exist is never created. A replaced store is not
    closed here (a request may still be reading it): it closes when the last one drops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, _Open] = {}

    def get(self, root: Path) -> _Open | None:
        with self._lock:
            current = self._open.get(root)
            if not root.is_dir():
                self._open.pop(root, None)
                return None
            if current is None:  # a replaced index is followed by the store itself
                current = self._open[root] = _Open(root)
            return current


# -- handlers ----------------------------------------------------------------------------


class _Handler(APIHandler):
    auth_resource = "contents"

    @property
    def stores(self) -> Stores:
        stores: Stores = self.settings["nbexp_stores"]
        return stores

    @property
    def server_root(self) -> str:
        root = getattr(self.contents_manager, "root_dir", None)
        return str(root or self.settings.get("server_root_dir") or os.getcwd())

    def _store_root(self) -> Path:
        path = self.get_query_argument("path", None)
        if path is None:
            raise _Refused(400, "missing `path`: give the notebook's path relative to the root")
        return store_for(self.server_root, path)

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        return await tornado.ioloop.IOLoop.current().run_in_executor(None, function, *args)

    def _fail(self, status: int, message: str) -> None:
        self.clear_header("Etag")
        self.set_status(status)
        self.finish(json_dumps({"message": message}))

    def _answer(self, body: dict[str, Any]) -> None:
        self.set_header("Cache-Control", "private, no-cache")
        self.finish(json_dumps(body))


class ExperimentsHandler(_Handler):
    """GET nbexp/api/experiments: one page of a store's listing."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        try:
            root = self._store_root()
            listing = parse_listing(lambda name: self.get_query_argument(name, None))
            opened = await self._in_thread(self.stores.get, root)
            if opened is not None:
                version = await self._in_thread(opened.version)
                self.set_header("Etag", listing.etag(root, version))
                if self.check_etag_header():
                    self.set_header("Cache-Control", "private, no-cache")
                    self.set_status(304)
                    self.finish()
                    return
            body = await self._in_thread(_list, opened, listing)
        except _Refused as refusal:
            self._fail(refusal.status, refusal.message)
            return
        except QueryError as error:  # e.g. a sort key no experiment has: the request's fault
            self._fail(400, str(error))
            return
        except NbexpError as error:
            self.log.warning("nbexp: listing %s failed: %s", self.request.uri, error)
            self._fail(500, str(error))
            return
        self._answer({"store": shown_path(self.server_root, root), **body})


def _list(opened: _Open | None, listing: Listing) -> dict[str, Any]:
    page = {"offset": listing.offset, "limit": listing.limit}
    if opened is None:
        return {"total": 0, **page, "metric_names": [], "experiments": []}
    found = api.page(
        listing.query,
        sort=listing.sort,
        descending=listing.descending,
        limit=listing.limit,
        offset=listing.offset,
        store=opened.store,
    )
    return {
        "total": found.total,
        **page,
        "metric_names": found.metric_names,
        "experiments": [row_json(row) for row in found.rows],
    }


class ExperimentHandler(_Handler):
    """GET nbexp/api/experiments/REF: one full record."""

    @web.authenticated
    @authorized
    async def get(self, ref: str) -> None:
        try:
            root = self._store_root()
            opened = await self._in_thread(self.stores.get, root)
            if opened is None:
                raise _Refused(404, f"no experiment matches `{ref}`: there is no store yet")
            body = await self._in_thread(
                _record, opened.store, ref, shown_path(self.server_root, root)
            )
        except _Refused as refusal:
            self._fail(refusal.status, refusal.message)
            return
        except AmbiguousRefError as error:
            self._fail(400, str(error))
            return
        except RefError as error:
            self._fail(404, str(error))
            return
        except NbexpError as error:
            self.log.warning("nbexp: reading %s failed: %s", self.request.uri, error)
            self._fail(500, str(error))
            return
        self._answer(body)


def _record(store: Store, ref: str, shown: str) -> dict[str, Any]:
    experiment = api.get(ref, store=store)
    return record_json(experiment, api.origin(experiment.id, store=store), shown)


def json_dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


# -- registration ------------------------------------------------------------------------


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter_server (via `nbexp._jupyter_server_extension_points`)."""
    web_app = serverapp.web_app
    web_app.settings["nbexp_stores"] = Stores()
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base_url, API_PATH) + "/?", ExperimentsHandler),
            (url_path_join(base_url, API_PATH, "(?P<ref>.+)"), ExperimentHandler),
        ],
    )
    serverapp.log.info(
        "nbexp: serving experiment stores at %s (store folder %s)",
        url_path_join(base_url, API_PATH),
        os.environ.get(STORE_ENV) or f"{STORE_DIRNAME}/ found from each notebook",
    )
