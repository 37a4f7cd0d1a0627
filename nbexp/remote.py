"""Remotes: named fsspec URLs to push experiments to and pull them from (SPEC §9).

A remote holds the same layout as a store, without the index::

    <url>/records/ab/<id>.json   records, byte for byte as written by the recording store
    <url>/objects/ab/<rest>      content-addressed objects
    <url>/tags/<id>.json         tags added after the run
    <url>/tmp/                   keys being written (file-system back ends only)

What makes sharing safe:

- Only store bytes travel: records, objects, tags. Secrets never enter a store, so they never
  reach a remote; storage options that look like credentials are refused, so they never
  reach `.nbexp/config.json` either (the back end's environment variables are the way).
- Objects are written before the records that need them, on both sides, and a record only
  once all its objects are there: an interrupted push or pull leaves no visible record whose
  objects are missing, and running it again resumes. Objects are immutable and records are
  named by their content, so two machines pushing at once cannot make a remote inconsistent.
- Every object is verified against its hash: before upload, and on arrival, as its bytes
  come, before it counts in the local store (`store/receiving.py`: written there once). A
  record is verified against its id the same way.
- What the remote serves is data: a record naming an object by anything but its digest is
  refused, and so is a key that is no regular file or larger than anything nbexp writes
  there; a pull never leaves the store's disk full.
- Requests grow with what is new: one listing of `records/`, one listing of the object
  prefixes that new records need, then one request per key that travels.
- A pulled experiment remembers its origin; restoring its state unpickles bytes someone else
  wrote, which can run any code, so it is refused unless that remote is marked trusted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    IntegrityError,
    NbexpError,
    RecordError,
    RefError,
    RemoteError,
    StoreError,
    TransferError,
    UntrustedRemoteError,
)
from .hashing import hash_bytes
from .record import SHORT_ID_LENGTH, Experiment
from .refs import check_label, could_be_id, is_hex, steps_back
from .store import Store, editing_config, read_config
from .transfer import (
    DEFAULT_WORKERS,
    IN_MEMORY_LIMIT,
    Entry,
    Progress,
    RemoteFiles,
    UnreadableKey,
    run_parallel,
)

# An unreferenced object younger than this may belong to a push still running elsewhere.
GC_GRACE_SECONDS = 3600.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CREDENTIAL = re.compile(r"(key|secret|token|passw|credential)", re.IGNORECASE)
_HASH = re.compile(r"^[0-9a-f]{32}$")
# What is read from a remote into memory is bounded (a remote may serve an endless file):
# records are JSON of at most this many bytes, tag files far smaller.
RECORD_LIMIT = 256 * 2**20
TAGS_LIMIT = 2**20
# s3fs passes these to the botocore client, not to itself.
_S3_CLIENT_OPTIONS = ("endpoint_url", "region_name", "verify")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
_CREDENTIAL_ENV = {
    "s3": "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS",
    "azure": "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_KEY",
}


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """A named remote: an fsspec URL, storage options, and whether its state is trusted."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    trusted: bool = False

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    def storage_options(self) -> dict[str, Any]:
        """The options as the back end takes them (s3fs wants the endpoint in client_kwargs)."""
        options = dict(self.options)
        if self.protocol in ("s3", "s3a"):
            client = dict(options.pop("client_kwargs", None) or {})
            for name in _S3_CLIENT_OPTIONS:
                if name in options:
                    client.setdefault(name, options.pop(name))
            if client:
                options["client_kwargs"] = client
        return options

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "options": self.options, "trusted": self.trusted}


def _read_config(store: Store) -> dict[str, Any]:
    try:
        return read_config(store)
    except StoreError as error:
        raise RemoteError(str(error)) from error


def remotes(store: Store) -> dict[str, Remote]:
    """The configured remotes by name."""
    found: dict[str, Remote] = {}
    for name, entry in (_read_config(store).get("remotes") or {}).items():
        if isinstance(entry, dict) and entry.get("url"):
            found[name] = Remote(
                name=name,
                url=str(entry["url"]),
                options=dict(entry.get("options") or {}),
                trusted=bool(entry.get("trusted")),
            )
    return found


def default_remote(store: Store) -> str | None:
    """The remote used when none is named: the one marked default, or the only one."""
    configured = remotes(store)
    chosen = _read_config(store).get("default_remote")
    if chosen in configured:
        return str(chosen)
    return next(iter(configured)) if len(configured) == 1 else None


def get_remote(store: Store, name: str | None = None) -> Remote:
    """A remote by name, or the default one."""
    configured = remotes(store)
    if name is None:
        name = default_remote(store)
        if name is None:
            if not configured:
                raise RemoteError(
                    "no remote is configured; add one with `nbexp remote add NAME URL`"
                )
            raise RemoteError(
                f"several remotes are configured ({', '.join(sorted(configured))}) and none is "
                "the default; name one, or add one with `nbexp remote add NAME URL --default`"
            )
    if name not in configured:
        known = f" (configured: {', '.join(sorted(configured))})" if configured else ""
        raise RemoteError(
            f"no remote named `{name}`{known}; add it with `nbexp remote add {name} URL`"
        )
    return configured[name]


def normalize_url(url: str) -> str:
    """An fsspec URL; a plain path becomes an absolute file:// URL."""
    url = url.strip()
    if not url:
        raise RemoteError("empty remote URL; give e.g. s3://bucket/prefix or /shared/folder")
    if "://" not in url:
        return "file://" + os.path.abspath(os.path.expanduser(url))
    protocol, rest = url.split("://", 1)
    if protocol == "file":
        return "file://" + os.path.abspath(os.path.expanduser(rest))
    from urllib.parse import urlsplit

    with contextlib.suppress(ValueError):
        if urlsplit(url).password:
            raise RemoteError(
                "the remote URL holds a password, which would be written to .nbexp/config.json "
                "in plain text; remove it from the URL and give it through the back end's "
                "environment variables"
            )
    return url.rstrip("/")


def parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` words as storage options; VALUE is JSON when it parses (true, 3, {...})."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RemoteError(f"`--option {pair}` is not KEY=VALUE; e.g. --option anon=true")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        options[key] = value
    return options


def _refuse_credentials(options: Mapping[str, Any], protocol: str, path: str = "") -> None:
    for key, value in options.items():
        name = f"{path}{key}"
        if _CREDENTIAL.search(str(key)):
            variables = _CREDENTIAL_ENV.get(_EXTRAS.get(protocol, ""), "")
            hint = f" ({variables})" if variables else ""
            raise RemoteError(
                f"`--option {name}` looks like a credential and would be written to "
                f".nbexp/config.json in plain text; set the back end's environment variables "
                f"instead{hint}"
            )
        if isinstance(value, Mapping):
            _refuse_credentials(value, protocol, f"{name}.")


def _backend_class(protocol: str) -> Any:
    import fsspec

    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError as error:
        extra = _EXTRAS.get(protocol)
        fix = (
            f"pip install 'nbexp[{extra}]'"
            if extra
            else f"install the fsspec back end for {protocol}://"
        )
        raise RemoteError(f"the {protocol}:// back end is not installed; {fix}") from error
    except ValueError as error:
        raise RemoteError(
            f"fsspec knows no {protocol}:// back end; use e.g. file://, s3://, gs:// or az://"
        ) from error


def add_remote(
    store: Store,
    name: str,
    url: str,
    options: Mapping[str, Any] | None = None,
    *,
    trusted: bool = False,
    default: bool = False,
) -> Remote:
    """Name a remote (stored in `.nbexp/config.json`; credentials are refused)."""
    if not _NAME.match(name):
        raise RemoteError(
            f"`{name}` is not a usable remote name; use letters, digits, '.', '_' and '-'"
        )
    remote = Remote(name=name, url=normalize_url(url), options=dict(options or {}), trusted=trusted)
    _refuse_credentials(remote.options, remote.protocol)
    _backend_class(remote.protocol)
    with editing_config(store) as config:
        entries = config.setdefault("remotes", {})
        if name in entries:
            raise RemoteError(
                f"a remote named `{name}` exists ({entries[name].get('url')}); "
                f"remove it first with `nbexp remote remove {name}`"
            )
        entries[name] = remote.to_dict()
        if default:
            config["default_remote"] = name
    return remote


def remove_remote(store: Store, name: str) -> Remote:
    remote = get_remote(store, name)
    with editing_config(store) as config:
        config.get("remotes", {}).pop(name, None)
        if config.get("default_remote") == name:
            config.pop("default_remote")
    return remote


def set_trusted(store: Store, name: str, trusted: bool = True) -> Remote:
    """Mark a remote trusted (its pulled state may be restored) or not."""
    get_remote(store, name)
    with editing_config(store) as config:
        config["remotes"][name]["trusted"] = trusted
    return get_remote(store, name)


# -- trust -----------------------------------------------------------------------------


_UNTRUSTED_BECAUSE = {
    "restore": "its state is not loaded: restoring unpickles bytes written elsewhere, and "
    "unpickling can run any code they hold",
    "rerun": "its code is not run: a rerun executes the code its author recorded",
    "branch": "no branch is made from it: the branch would hold code and a diff its author "
    "wrote, ready to be checked out and run",
}


def require_trusted(store: Store, experiment: Experiment, doing: str = "restore") -> None:
    """Refuse to go on unless the experiment is local or came from a trusted remote: `doing`
    (restore, rerun, branch) would run what its author wrote."""
    origin = store.origin(experiment.id)
    if origin is None:
        return
    url = str(origin.get("url", ""))
    name = str(origin.get("remote", "?"))
    configured = remotes(store)
    if any(remote.trusted and remote.url == url for remote in configured.values()):
        return
    if configured.get(name) is not None and configured[name].url == url:
        fix = f"`nbexp remote trust {name}`"
    else:
        fix = f"`nbexp remote add {name} {url or 'URL'} --trusted`"
    raise UntrustedRemoteError(
        f"{experiment.name} ({experiment.short_id}) was pulled from remote `{name}` ({url}), "
        f"which is not trusted, so {_UNTRUSTED_BECAUSE[doing]}; if you trust everyone who can "
        f"write to that remote, run {fix} (its params, metrics, data hashes and code are "
        "usable without that)"
    )


# -- reports ---------------------------------------------------------------------------


@dataclass
class TransferReport:
    """What a push or pull did."""

    direction: str
    remote: str
    experiments: list[str] = field(default_factory=list)
    present: int = 0
    objects: int = 0
    bytes: int = 0
    tags: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        verb = "pushed" if self.direction == "push" else "pulled"
        where = "to" if self.direction == "push" else "from"
        count = len(self.experiments)
        already = (
            f"{self.present} experiment{'' if self.present == 1 else 's'} already on both sides"
        )
        if not count and not self.failed:
            if self.tags:
                return f"tags of {self.tags} experiments synchronised with {self.remote}; {already}"
            return f"nothing to {self.direction}: {already} ({self.remote})"
        rate = self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        line = (
            f"{verb} {count} experiment{'' if count == 1 else 's'} {where} {self.remote} "
            f"({self.objects} objects, {self.bytes / 1e6:.1f} MB, {rate:.1f} MB/s)"
        )
        if self.present:
            line += f"; {self.present} already there"
        if self.tags:
            line += f"; tags of {self.tags} synchronised"
        return line

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def _fail(report: TransferReport, fix: str) -> None:
    """Raise a TransferError naming the first problem, if there was any."""
    if not report.failed:
        return
    verb, where = ("pushed", "to") if report.direction == "push" else ("pulled", "from")
    done = len(report.experiments)
    first = next(iter(report.failed.values()))
    more = len(report.failed) - 1
    raise TransferError(
        f"{verb} {done} of {done + len(report.failed)} experiments {where} {report.remote}; "
        f"{first}"
        + (f" (and {more} more problem{'' if more == 1 else 's'})" if more else "")
        + (f"; {fix}" if fix else ""),
        report,
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:240] if text else type(error).__name__


def _label(experiment: Experiment) -> str:
    """How a message names an experiment: a pulled record's name is anyone's text, so a
    control character (a newline, a terminal escape) is shown escaped, never sent as is."""
    name = "".join(
        character if character.isprintable() else repr(character)[1:-1]
        for character in experiment.name
    )
    return f"{name} ({experiment.short_id})"


# -- opening a remote ------------------------------------------------------------------


def _filesystem(remote: Remote) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a remote (tests wrap this to count requests)."""
    import fsspec.core

    _backend_class(remote.protocol)
    try:
        fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options())
    except (TypeError, ValueError) as error:
        raise RemoteError(
            f"remote `{remote.name}`: the {remote.protocol}:// back end refused its options "
            f"({_describe(error)}); `nbexp remote remove {remote.name}` and add it again"
        ) from error
    return fs, str(root)


def open_remote(remote: Remote) -> RemoteFiles:
    fs, root = _filesystem(remote)
    return RemoteFiles(fs, root)


def _reaching(remote: Remote, call: Any, *args: Any) -> Any:
    """Run a remote call whose failure means the remote cannot be used at all."""
    try:
        return call(*args)
    except NbexpError:
        raise
    except Exception as error:
        variables = _CREDENTIAL_ENV.get(_EXTRAS.get(remote.protocol, ""), "")
        creds = f" and credentials ({variables})" if variables else ""
        raise RemoteError(
            f"cannot use remote `{remote.name}` ({remote.url}): {_describe(error)}; "
            f"check the URL, its options (`nbexp remote list`){creds}"
        ) from error


def _record_key(experiment_id: str) -> str:
    return f"records/{experiment_id[:2]}/{experiment_id}.json"


def _object_key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest[2:]}"


def _tags_key(experiment_id: str) -> str:
    return f"tags/{experiment_id}.json"


def _record_ids(listing: Mapping[str, Entry]) -> dict[str, str]:
    """Record id → key, for the well-formed keys of a `records/` listing."""
    found: dict[str, str] = {}
    for key in listing:
        parts = key.split("/")
        if len(parts) == 3 and parts[2].endswith(".json"):
            experiment_id = parts[2][:-5]
            if _HASH.match(experiment_id) and parts[1] == experiment_id[:2]:
                found[experiment_id] = key
    return found


def _object_digests(listing: Mapping[str, Entry]) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for key, entry in listing.items():
        parts = key.split("/")
        if len(parts) == 3 and _HASH.match(parts[1] + parts[2]):
            found[parts[1] + parts[2]] = entry
    return found


def _merge(ours: Sequence[str], theirs: Sequence[str], base: Sequence[str] | None) -> list[str]:
    """Both sides' tags after a three-way merge against `base`, the tags both had when they
    were last exchanged: a tag added on either side is kept, one removed on either side since
    then is dropped. Never exchanged (no base): everything from both sides is kept."""
    removed = (
        set() if base is None else {tag for tag in base if tag not in ours or tag not in theirs}
    )
    return [tag for tag in dict.fromkeys([*ours, *theirs]) if tag not in removed]


def _parse_tags(data: bytes) -> list[str]:
    """A tags file's tags; from a remote, those nbexp would refuse to add here (a control
    character, a label that reads as a reference, too long) are left out."""
    value = json.loads(data)
    if not isinstance(value, list) or not all(isinstance(tag, str) and tag for tag in value):
        raise ValueError("not a list of tags")
    return [tag for tag in value if _usable_tag(tag)]


def _usable_tag(tag: str) -> bool:
    try:
        return check_label(tag, "tag") == tag
    except NbexpError:
        return False


def _strange_object_names(experiment: Experiment) -> list[str]:
    """The objects a record names that are no object's name (32 lowercase hex digits)."""
    return [digest for digest in experiment.object_order() if not _HASH.match(str(digest))]


# -- push ------------------------------------------------------------------------------


def push(
    store: Store,
    remote: str | None = None,
    refs: Sequence[str] = (),
    *,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
) -> TransferReport:
    """Send experiments (all, or `refs`) and the objects the remote lacks; objects first,
    each verified against its hash before it leaves, records last."""
    spec = get_remote(store, remote)
    files = open_remote(spec)
    started = time.perf_counter()
    report = TransferReport("push", spec.name)
    ids = (
        list(dict.fromkeys(store.resolve(ref) for ref in refs))
        if refs
        else sorted(store.iter_record_ids())
    )
    _reaching(spec, files.prepare)
    on_remote = _record_ids(_reaching(spec, files.listing, "records/"))
    new = [i for i in ids if i not in on_remote]
    report.present = len(ids) - len(new)
    # Named experiments have their objects checked even when their record is already there,
    # which is how an object lost or damaged on the remote is put back.
    checked = ids if refs else new
    experiments: dict[str, Experiment] = {}
    for experiment_id in checked:
        try:
            experiments[experiment_id] = store.load(experiment_id)
        except (RecordError, RefError) as error:
            report.failed[experiment_id] = f"{experiment_id[:SHORT_ID_LENGTH]}: {error}"
    users: dict[str, list[str]] = {}
    for experiment_id, experiment in experiments.items():
        for digest in experiment.object_hashes():
            users.setdefault(digest, []).append(experiment_id)
    sizes: dict[str, int] = {}
    broken: dict[str, str] = {}
    for digest in users:
        try:
            sizes[digest] = store.object_size(digest)
        except IntegrityError:
            broken[digest] = f"object {digest[:12]} is missing from this store"
    # about how many objects the remote holds, to choose how to list them (see listing_of)
    per_record = len(users) / max(1, len(experiments))
    expected = int(len(on_remote) * per_record) + len(users)
    remote_objects = _object_digests(
        _reaching(spec, files.listing_of, "objects", [_object_key(d) for d in sizes], expected)
    )
    upload = [d for d in sizes if d not in remote_objects or remote_objects[d].size != sizes[d]]

    def send(digest: str) -> int:
        if sizes[digest] <= IN_MEMORY_LIMIT:
            data = store.read_object(digest, verify=False)
            if hash_bytes(data) != digest:
                raise IntegrityError(f"object {digest[:12]} is corrupt in this store")
            files.write(_object_key(digest), data)
            return len(data)
        with store.object_file(digest) as path:  # verified: a corrupt one is refused
            files.upload(path, _object_key(digest))
        return sizes[digest]

    meter = Progress(
        f"push {spec.name}",
        len(upload),
        total_bytes=sum(sizes[d] for d in upload),
        enabled=progress,
    )
    for digest, problem in run_parallel(upload, send, workers=workers, progress=meter).items():
        broken[digest] = (
            str(problem)
            if isinstance(problem, IntegrityError)
            else f"object {digest[:12]} could not be uploaded ({_describe(problem)})"
        )
    sent = [d for d in upload if d not in broken]
    if sent:
        # Verify by size, with listings rather than a request per object: what was sent
        # arrived whole, and what was already there is still there (a gc elsewhere may
        # have taken an unreferenced object that a new record is about to reference).
        arrived = _object_digests(
            _reaching(spec, files.listing_of, "objects", [_object_key(d) for d in sizes], expected)
        )
        for digest in sizes:
            if digest not in broken and (
                digest not in arrived or arrived[digest].size != sizes[digest]
            ):
                broken[digest] = f"object {digest[:12]} did not arrive whole on the remote"
    report.objects = len(sent) - sum(1 for d in sent if d in broken)
    report.bytes = sum(sizes[d] for d in sent if d not in broken)
    for digest, reason in broken.items():
        for experiment_id in users.get(digest, ()):
            experiment = experiments[experiment_id]
            report.failed.setdefault(experiment_id, f"{reason} (needed by {_label(experiment)})")
    ready = [i for i in new if i in experiments and i not in report.failed]
    records: dict[str, bytes] = {}

    def send_record(experiment_id: str) -> int:
        data = store.record_bytes(experiment_id)
        if store.make_id(json.loads(data)) != experiment_id:
            raise IntegrityError(
                f"record {experiment_id[:SHORT_ID_LENGTH]} is corrupt in this store"
            )
        records[experiment_id] = data
        files.write(_record_key(experiment_id), data)
        return len(data)

    for experiment_id, problem in run_parallel(ready, send_record, workers=workers).items():
        report.failed[experiment_id] = (
            f"record of {_label(experiments[experiment_id])} could not be uploaded "
            f"({_describe(problem)})"
        )
    written = [i for i in ready if i not in report.failed]
    if written:
        arrived_records = _reaching(
            spec,
            files.listing_of,
            "records",
            [_record_key(i) for i in written],
            len(on_remote) + len(written),
        )
        for experiment_id in written:
            entry = arrived_records.get(_record_key(experiment_id))
            if entry is None or entry.size != len(records[experiment_id]):
                report.failed[experiment_id] = (
                    f"record of {_label(experiments[experiment_id])} did not arrive whole"
                )
            else:
                report.experiments.append(experiment_id)
    report.tags = _push_tags(store, spec, files, set(ids) - set(report.failed), workers)
    report.seconds = time.perf_counter() - started
    _fail(report, f"run `nbexp fsck`, fix what it reports, then `nbexp push {spec.name}` again")
    return report


def _push_tags(store: Store, spec: Remote, files: RemoteFiles, ids: set[str], workers: int) -> int:
    """Send tags changed here since they were last exchanged with this remote, merged with
    the remote's (a tag added on either side survives, one removed on either side goes)."""
    changed: list[tuple[str, list[str]]] = []
    markers = store.sync_markers(spec.url)
    for experiment_id, local in store.tagged():
        if experiment_id in ids and markers.get(experiment_id).get("tags") != local:
            changed.append((experiment_id, local))

    updated: list[str] = []

    def send(item: tuple[str, list[str]]) -> int:
        experiment_id, local = item
        try:
            theirs = _parse_tags(files.read(_tags_key(experiment_id), limit=TAGS_LIMIT))
        except FileNotFoundError:
            theirs = []
        base = markers.get(experiment_id).get("tags")
        merged = _merge(local, theirs, base)
        if merged != theirs:
            files.write(_tags_key(experiment_id), json.dumps(merged).encode())
            updated.append(experiment_id)
        if merged != local:
            store.set_tags(experiment_id, merged)
        markers.put(experiment_id, {"tags": merged, "stamp": ""})
        return 0

    try:
        run_parallel(changed, send, workers=workers)
    finally:
        markers.save()
    return len(updated)


# -- pull ------------------------------------------------------------------------------


def pull(
    store: Store,
    remote: str | None = None,
    refs: Sequence[str] = (),
    *,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
) -> TransferReport:
    """Fetch experiments (all, or `refs`) and the objects this store lacks; each object is
    verified against its hash before it counts in the store, records come last."""
    spec = get_remote(store, remote)
    files = open_remote(spec)
    started = time.perf_counter()
    report = TransferReport("pull", spec.name)
    if files.is_local and not Path(files.root).is_dir():
        raise RemoteError(
            f"remote `{spec.name}` ({spec.url}) does not exist yet; check the URL, or push to "
            "it first"
        )
    on_remote = _record_ids(_reaching(spec, files.listing, "records/"))
    if not on_remote and not refs:
        report.seconds = time.perf_counter() - started
        return report
    here = {i for i in on_remote if store.has_record(i)}
    new = [i for i in on_remote if i not in here]
    wanted = _prefix_matches(refs, on_remote) if refs else None
    fetch = new if wanted is None else [i for i in new if i in wanted]
    bodies: dict[str, tuple[bytes, Experiment]] = {}

    def fetch_record(experiment_id: str) -> int:
        short = experiment_id[:SHORT_ID_LENGTH]
        try:
            data = files.read(on_remote[experiment_id], limit=RECORD_LIMIT)
        except UnreadableKey as error:
            raise IntegrityError(f"record {short} was not read ({error})") from error
        try:
            body = json.loads(data)
            experiment = Experiment.from_dict(body)
        except (ValueError, UnicodeDecodeError, RecordError) as error:
            raise IntegrityError(f"record {short} is unreadable ({error})") from error
        if store.make_id(body) != experiment_id or experiment.id != experiment_id:
            raise IntegrityError(
                f"record {short} on the remote is corrupt (its content does not match its id)"
            )
        strange = _strange_object_names(experiment)
        if strange:  # never joined onto a path, here or on the remote
            raise IntegrityError(
                f"record {short} was refused: it names the object {str(strange[0])[:40]!r}, "
                "which is no object's name (32 hex digits); nbexp never writes such a record"
            )
        bodies[experiment_id] = (data, experiment)
        return len(data)

    users: dict[str, list[str]] = {}  # object → the records that need it, of those chosen

    def fetch_object(digest: str) -> int:
        # hashed as it arrives; it becomes an object only if it is whole and matches
        return arrivals.receive(digest, lambda sink: files.download(_object_key(digest), sink))

    def fetch_one(item: tuple[str, str]) -> int:
        kind, key = item
        return fetch_record(key) if kind == "record" else fetch_object(key)

    def objects_of(item: tuple[str, str]) -> list[tuple[str, str]]:
        """The objects a record needs that no earlier record asked for and we lack."""
        kind, experiment_id = item
        if kind != "record":
            return []
        missing = []
        for digest in bodies[experiment_id][1].object_order():
            if digest in users:
                users[digest].append(experiment_id)
            elif not store.has_object(digest):
                users[digest] = [experiment_id]
                missing.append(("object", digest))
        # laid out in a pack as the record names them (a variable's chunks in sequence, so
        # its restore maps them as one range)
        arrivals.plan(digest for _, digest in missing)
        return missing

    # Without names, tags or `last` to resolve, the records to pull are known from the
    # listing: a record's objects are fetched as soon as it arrives, beside other records.
    resolving = bool(refs) and wanted is None
    with store.writing(), store.receiving() as arrivals:
        meter = Progress(f"pull {spec.name}", len(fetch), unit="files", enabled=progress)
        failures = run_parallel(
            [("record", i) for i in fetch],
            fetch_one,
            workers=workers,
            progress=None if resolving else meter,
            then=None if resolving else objects_of,
        )
        if resolving:
            selected = _resolve_on_remote(store, spec, refs, here, bodies)
            for experiment_id in [i for i in fetch if i in selected and i in bodies]:
                objects_of(("record", experiment_id))
            meter = Progress(f"pull {spec.name}", len(users), enabled=progress)
            failures |= run_parallel(
                [("object", d) for d in users], fetch_one, workers=workers, progress=meter
            )
        else:
            selected = set(wanted) if wanted is not None else set(on_remote)
        arrivals.adopt()  # durable, then visible: before any record naming them
        sizes = arrivals.sizes
        broken: dict[str, str] = {}
        for (kind, key), error in failures.items():
            if kind == "record":
                if key in selected:
                    report.failed[key] = (
                        str(error)
                        if isinstance(error, IntegrityError)
                        else f"record {key[:SHORT_ID_LENGTH]} could not be read ({_describe(error)})"
                    )
            elif isinstance(error, (IntegrityError, UnreadableKey)):
                why = (
                    f"object {key[:12]} was not read ({error})"
                    if isinstance(error, UnreadableKey)
                    else _first_line(error)
                )
                broken[key] = (
                    f"{why}, so nothing that needs it was pulled; delete "
                    f"{files.path(_object_key(key))} and push it again from a store that has "
                    f"it intact: `nbexp push {spec.name} {{ref}}`"
                )
            elif isinstance(error, FileNotFoundError):
                broken[key] = (
                    f"object {key[:12]} is missing on the remote; push it again from a store "
                    f"that has it: `nbexp push {spec.name} {{ref}}`"
                )
            elif isinstance(error, StoreError):  # no room, or the store cannot be written
                broken[key] = _first_line(error)
            else:
                broken[key] = f"object {key[:12]} could not be read ({_describe(error)})"
        for digest in users:  # what did not arrive never lets a record in
            if digest not in broken and not store.has_object(digest):
                broken[digest] = f"object {digest[:12]} did not arrive"
        chosen = [i for i in new if i in selected and i in bodies]
        report.present = len([i for i in selected if i in here])
        report.objects = len(sizes)
        report.bytes = sum(sizes.values())
        for digest, reason in broken.items():
            for experiment_id in users[digest]:
                experiment = bodies[experiment_id][1]
                why = reason.replace("{ref}", experiment.short_id)
                report.failed.setdefault(experiment_id, f"{_label(experiment)}: {why}")
        origin = {
            "remote": spec.name,
            "url": spec.url,
            "pulled": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        whole = [i for i in chosen if i not in report.failed]

        def settle(experiment_id: str) -> int:  # in parallel: each record is fsynced
            store.import_record(bodies[experiment_id][0], origin)
            return 0

        for experiment_id, error in run_parallel(whole, settle, workers=workers).items():
            report.failed[experiment_id] = str(error)
        report.experiments = sorted(
            (i for i in whole if i not in report.failed), key=lambda i: bodies[i][1].created
        )
    interesting = (here | set(report.experiments)) & (selected if refs else set(on_remote))
    report.tags = _pull_tags(store, spec, files, interesting, workers)
    report.seconds = time.perf_counter() - started
    _fail(report, "")
    return report


def _pull_tags(store: Store, spec: Remote, files: RemoteFiles, ids: set[str], workers: int) -> int:
    """Merge the remote's tags into ours where they changed since we last looked."""
    listing = _reaching(spec, files.listing, "tags/")
    changed: list[tuple[str, str, str]] = []
    markers = store.sync_markers(spec.url)
    for key, entry in listing.items():
        experiment_id = key.rsplit("/", 1)[-1].removesuffix(".json")
        if experiment_id not in ids:
            continue
        stamp = f"{entry.size}:{entry.stamp}:{entry.modified}"
        if markers.get(experiment_id).get("stamp") != stamp:
            changed.append((experiment_id, key, stamp))

    updated: list[str] = []

    def fetch(item: tuple[str, str, str]) -> int:
        experiment_id, key, stamp = item
        theirs = _parse_tags(files.read(key, limit=TAGS_LIMIT))
        ours = list(store.load(experiment_id).tags)
        base = markers.get(experiment_id).get("tags")
        merged = _merge(ours, theirs, base)
        if merged != ours:
            store.set_tags(experiment_id, merged)
            updated.append(experiment_id)
        markers.put(experiment_id, {"tags": merged, "stamp": stamp})
        return 0

    try:
        run_parallel(changed, fetch, workers=workers)
    finally:
        markers.save()
    return len(updated)


def _prefix_matches(refs: Sequence[str], on_remote: Mapping[str, str]) -> set[str] | None:
    """When every ref is an id prefix that names exactly one remote record, those records;
    otherwise None (names, tags and `last` need the records themselves)."""
    chosen: set[str] = set()
    for ref in refs:
        lowered = ref.strip().lower()
        if len(lowered) < SHORT_ID_LENGTH or not is_hex(lowered):
            return None
        matches = [i for i in on_remote if i.startswith(lowered)]
        if len(matches) != 1:
            return None
        chosen.add(matches[0])
    return chosen


def _resolve_on_remote(
    store: Store,
    spec: Remote,
    refs: Sequence[str],
    here: set[str],
    bodies: Mapping[str, tuple[bytes, Experiment]],
) -> set[str]:
    """Resolve references among the remote's experiments, as `Store.resolve` does locally."""
    rows: list[tuple[str, str, str, tuple[str, ...]]] = [
        (row["id"], row["name"], row["created"], tuple(row["tags"])) for row in store.rows(ids=here)
    ]
    rows += [(i, e.name, e.created, e.tags) for i, (_, e) in bodies.items()]
    newest = sorted(rows, key=lambda row: (row[2], row[0]), reverse=True)
    chosen: set[str] = set()
    for ref in refs:
        ref = ref.strip()
        lowered = ref.lower()
        back = steps_back(ref)
        by_name = [row[0] for row in newest if row[1] == ref]
        by_prefix = (
            [row[0] for row in newest if row[0].startswith(lowered)] if could_be_id(lowered) else []
        )
        by_tag = [row[0] for row in newest if ref in row[3]]
        if back is not None:
            if back >= len(newest):
                raise RefError(f"`{ref}` does not exist on remote `{spec.name}`")
            chosen.add(newest[back][0])
        elif len(by_prefix) == 1:
            chosen.add(by_prefix[0])
        elif len(by_prefix) > 1:
            raise RefError(
                f"`{ref}` is ambiguous on remote `{spec.name}`: it starts {len(by_prefix)} "
                "experiment ids; give more characters"
            )
        elif by_name:
            chosen.add(by_name[0])
        elif by_tag:
            chosen.add(by_tag[0])
        else:
            raise RefError(
                f"no experiment on remote `{spec.name}` matches `{ref}`; use an id prefix, "
                "a name, a tag, `last` or `last~N`"
            )
    return chosen


# -- garbage collection on a remote ----------------------------------------------------


@dataclass
class RemoteGarbage:
    """Objects no record on the remote references (and leftover temporary keys)."""

    remote: str
    objects: list[str] = field(default_factory=list)
    size: int = 0
    young: int = 0
    young_size: int = 0
    temporary: list[str] = field(default_factory=list)
    deleted: bool = False


def gc_remote(
    store: Store,
    remote: str,
    *,
    delete: bool = False,
    grace: float = GC_GRACE_SECONDS,
    workers: int = DEFAULT_WORKERS,
) -> RemoteGarbage:
    """Find (and with `delete`, remove) the remote's objects that none of its records
    references. The records on the remote define what is referenced; an unreferenced object
    younger than `grace` seconds is kept, since a push may be writing the record that needs
    it. A referenced object is never removed."""
    spec = get_remote(store, remote)
    files = open_remote(spec)
    on_remote = _record_ids(_reaching(spec, files.listing, "records/"))
    referenced: set[str] = set()
    unknown: list[str] = []
    for experiment_id in on_remote:  # a record here is the same bytes as there: its id says so
        try:
            referenced |= store.load(experiment_id).object_hashes()
        except (RecordError, RefError):
            unknown.append(experiment_id)
    found: dict[str, set[str]] = {}

    def fetch(experiment_id: str) -> int:
        data = files.read(on_remote[experiment_id], limit=RECORD_LIMIT)
        found[experiment_id] = Experiment.from_dict(json.loads(data)).object_hashes()
        return len(data)

    failures = run_parallel(unknown, fetch, workers=workers)
    if failures:
        experiment_id, error = next(iter(failures.items()))
        raise RemoteError(
            f"record {experiment_id[:SHORT_ID_LENGTH]} on remote `{spec.name}` cannot be read "
            f"({_describe(error)}), so gc cannot know what it references and stops without "
            "deleting anything; fix or remove that record first"
        )
    for hashes in found.values():
        referenced |= hashes
    objects = _object_digests(_reaching(spec, files.listing, "objects/"))
    cutoff = time.time() - grace
    garbage = RemoteGarbage(spec.name)
    for digest, entry in sorted(objects.items()):
        if digest in referenced:
            continue
        if entry.modified is None or entry.modified > cutoff:
            garbage.young += 1
            garbage.young_size += entry.size
        else:
            garbage.objects.append(digest)
            garbage.size += entry.size
    for key, entry in _reaching(spec, files.listing, "tmp/").items():
        if entry.modified is not None and entry.modified <= cutoff:
            garbage.temporary.append(key)
    if delete and (garbage.objects or garbage.temporary):
        keys = [_object_key(d) for d in garbage.objects] + garbage.temporary
        _reaching(spec, files.delete, keys)
        garbage.deleted = True
    return garbage
