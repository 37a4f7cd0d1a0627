"""Records: immutable JSON documents named by the hash of their content; saving and deleting
them with their index rows (crash notes cover the moment between), tags beside them, and
records arriving from remotes."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import refs
from ..errors import (
    DamagedIndexError,
    IntegrityError,
    NbexpError,
    RecordError,
    RefError,
    StoreError,
)
from ..hashing import canonical_json, hash_bytes, hash_json
from ..paths import crafted
from ..record import SHORT_ID_LENGTH, Experiment
from . import locks
from .files import say
from .index import StoreIndex, index_guard
from .objects import StoreObjects

UNINDEXED_SUFFIX = ".unindexed"  # tmp/<id>.unindexed: a record being published (_publishing)
# What a note of `_publishing` holds (a note of `set_tags`, same suffix, is empty): its record
# was never acknowledged, so a damaged one (a power cut between its name and its bytes
# reaching the disk) is deleted rather than indexed.
PUBLISHING = b"publishing\n"


DELETING_SUFFIX = ".deleting"  # tmp/<id>.deleting: an experiment being deleted (delete)


def _halves(body: dict[str, Any]) -> tuple[bytes, bytes]:
    """A record's members (the id left out) that sort before "id" and those after it, each
    as `canonical_json` writes them inside the record's braces: two serialisations, the
    id then goes between them."""
    before = canonical_json({key: value for key, value in body.items() if key < "id"})
    after = canonical_json({key: value for key, value in body.items() if key > "id"})
    return before[1:-1], after[1:-1]


def _sealed(body: dict[str, Any], halves: tuple[bytes, bytes]) -> bytes:
    """Give `body` the id of its content (`make_id`: the hash of `canonical_json` of it
    without its id, which is what `halves` hold); the record's bytes (`canonical_json` of
    it with its id)."""
    before, after = halves
    body["id"] = hash_bytes(b"{" + b",".join(part for part in halves if part) + b"}")
    member = b'"id":' + canonical_json(body["id"])
    return b"{" + b",".join(part for part in (before, member, after) if part) + b"}\n"


class _Publishing:
    """What `save` did under its note: whether the record's index row was written."""

    indexed = False


class StoreRecords(StoreIndex, StoreObjects):
    """Records, tags and pulled records."""

    def record_path(self, experiment_id: str) -> Path:
        return self.records_dir / experiment_id[:2] / f"{experiment_id}.json"

    def has_record(self, experiment_id: str) -> bool:
        return self.record_path(experiment_id).exists()

    def record_bytes(self, experiment_id: str) -> bytes:
        """A record's file as it is on disk (push sends it byte for byte, after checking it)."""
        try:
            return self.record_path(experiment_id).read_bytes()
        except FileNotFoundError as error:
            raise RefError(
                f"experiment {experiment_id[:SHORT_ID_LENGTH]} does not exist"
            ) from error

    @staticmethod
    def make_id(body: dict[str, Any]) -> str:
        """An experiment's id: the hash of its record's content (without the id itself)."""
        return hash_json({key: value for key, value in body.items() if key != "id"})

    @staticmethod
    def seal(body: dict[str, Any]) -> bytes:
        """Give `body` its id (`make_id`) and return the record's bytes as `save` writes
        them, its content serialised once for both."""
        return _sealed(body, _halves(body))

    @staticmethod
    def seal_if(body: dict[str, Any], accept: Callable[[Iterable[bytes]], bool]) -> bytes | None:
        """`seal`, if `accept` passes the serialised content (the secrets check:
        `Redactor.finds_nothing_in_json`); else `body` is left as it was and None returned."""
        halves = _halves(body)
        return _sealed(body, halves) if accept(halves) else None

    def save(
        self,
        experiment: Experiment,
        *,
        cache: dict[str, Any] | None = None,
        sealed: tuple[dict[str, Any], bytes] | None = None,
    ) -> Experiment:
        """Write a new record (its id must be `make_id` of its content) and index it, with
        `cache` entries (`cache_put`; skipped if its table cannot take them) in the index's
        same transaction. `sealed`: this experiment's body (`to_dict`) and the record's
        bytes, as `seal` gave them, so neither is made again."""
        self._writable("recording an experiment")
        body, data = sealed if sealed is not None else (experiment.to_dict(), None)
        path = self.record_path(experiment.id)
        if path.exists():
            raise StoreError(f"experiment {experiment.short_id} already exists")
        with self._file_writes(), self._publishing(experiment.id, path) as published:
            syncing = self._publish(path, data or canonical_json(body) + b"\n")
            try:
                # While the record's bytes and name go to disk: its row. The record is
                # written, and records are the truth: a damaged index says to run `nbexp
                # reindex` wherever it is read, and reindex lists this experiment too.
                with contextlib.suppress(DamagedIndexError):
                    self._index_upsert(experiment, body, cache)
                    published.indexed = True
            finally:
                syncing.wait()  # durable before the note goes and the caller hears of it
        return experiment

    @contextlib.contextmanager
    def _publishing(self, experiment_id: str, path: Path) -> Iterator[_Publishing]:
        """Around writing a record and its index row. A process killed between the two
        would leave a record that `nbexp list` never shows and `fsck` reports; so meanwhile
        a note in tmp/, locked by this process, names the record, and the next process to
        open the store indexes the records of notes whose writer died (`_finish_interrupted`).
        If the record cannot be made durable, or its row cannot be written (disk full,
        read-only index), the record is taken back, with its row if it was written (the row
        goes in while the record is being synced): the caller then says it was not recorded,
        and that is true. What cannot be taken back leaves the note, for the next open."""
        with self._locked_note(f"{experiment_id}{UNINDEXED_SUFFIX}", PUBLISHING) as note:
            published = _Publishing()
            taken_back = True
            try:
                yield published
            except BaseException:
                try:
                    if published.indexed:
                        self._delete_row(experiment_id)
                    path.unlink(missing_ok=True)
                except (OSError, NbexpError):
                    taken_back = False  # the note stays: the next open finishes the work
                raise
            finally:
                if taken_back:
                    with contextlib.suppress(OSError):
                        note.unlink()

    def _has_interrupted_work(self) -> bool:
        """Whether notes of work in progress (`_publishing`, `delete`) wait in tmp/."""
        try:
            return any(
                name.endswith((UNINDEXED_SUFFIX, DELETING_SUFFIX))
                for name in os.listdir(self.tmp_dir)
            )
        except OSError:
            return False

    def _finish_interrupted(self) -> None:
        """Finish what processes killed between a record file and its index row left half
        done, as their notes, no longer locked by anyone, say: index a record written
        without its row (`_publishing`), or remove the files of an experiment whose row is
        already deleted (`delete`)."""
        try:
            notes = [
                p
                for p in self.tmp_dir.iterdir()
                if p.name.endswith((UNINDEXED_SUFFIX, DELETING_SUFFIX))
            ]
        except OSError:
            return
        for note in notes:
            experiment_id, suffix = os.path.splitext(note.name)
            # OSError: the note is gone (its writer finished) or still locked (its writer is
            # at work), or the work failed again (the note stays; `nbexp fsck` names the fix)
            with contextlib.suppress(OSError), open(note, "rb") as handle:
                locks.exclusive(handle, wait=False)
                if os.fstat(handle.fileno()).st_nlink == 0:
                    continue  # its writer finished meanwhile
                try:
                    if suffix == DELETING_SUFFIX:
                        self._delete_row(experiment_id)
                        self._delete_files(experiment_id)
                    else:
                        self._index_upsert(self.load(experiment_id))
                except RefError:
                    # killed before the record was written: nothing to index; or a power
                    # cut kept the row written while the record was synced, and not the
                    # record (`save`): that row goes
                    if handle.read() == PUBLISHING and not self._gone_from_index(experiment_id):
                        continue
                except RecordError:
                    if handle.read() != PUBLISHING:
                        continue  # an acknowledged record, damaged since: fsck names it
                    self.record_path(experiment_id).unlink(missing_ok=True)
                    if not self._gone_from_index(experiment_id):
                        continue
                except (NbexpError, sqlite3.Error):
                    continue
                note.unlink()

    def _gone_from_index(self, experiment_id: str) -> bool:
        """Delete the row of a record that was never acknowledged; False if that failed."""
        try:
            self._delete_row(experiment_id)
        except (NbexpError, sqlite3.Error):
            return False
        return True

    def load(self, experiment_id: str, *, salvage: bool = False) -> Experiment:
        """The record of `experiment_id`, verified against its id. With `salvage` (restoring
        and loading variables, each of which is verified against its own hash) a damaged
        record is still returned, after one line on stderr saying so."""
        path = self.record_path(experiment_id)
        try:
            body = json.loads(path.read_bytes())
        except FileNotFoundError as error:
            raise RefError(
                f"experiment {experiment_id[:SHORT_ID_LENGTH]} does not exist"
            ) from error
        except (ValueError, UnicodeDecodeError) as error:
            raise RecordError(
                f"record {experiment_id[:SHORT_ID_LENGTH]} is corrupt ({error}); run `nbexp fsck`"
            ) from error
        # The id is the hash of the content: an edited value or a flipped bit anywhere in the
        # record is caught here, before anything of it is shown, restored or exported.
        if not isinstance(body, dict) or self.make_id(body) != experiment_id:
            damage = (
                f"record {experiment_id[:SHORT_ID_LENGTH]} is damaged: its content no longer "
                "matches its id (edited, or a flipped bit on disk)"
            )
            if not salvage or not isinstance(body, dict):
                raise RecordError(
                    f"{damage}; run `nbexp fsck`, then delete it or `nbexp pull` it again "
                    "from a remote that has it"
                )
            say(
                f"nbexp: {damage}; only variables that match their own hashes are used; "
                "run `nbexp fsck`"
            )
        experiment = Experiment.from_dict(body)
        if experiment.id != experiment_id:  # the id field itself was damaged
            raise RecordError(
                f"record {experiment_id[:SHORT_ID_LENGTH]} is corrupt (its id field says "
                f"{str(experiment.id)[:SHORT_ID_LENGTH]!r}); run `nbexp fsck`"
            )
        extra = self._read_tags(experiment_id)
        return experiment.with_tags(extra) if extra is not None else experiment

    def iter_record_ids(self) -> Iterator[str]:
        if not self.records_dir.is_dir():  # a read-only look at a store never written to
            return
        for folder in sorted(self.records_dir.iterdir()):
            if folder.is_dir():
                for item in folder.iterdir():
                    if item.suffix == ".json":
                        yield item.stem

    def delete(self, experiment_id: str) -> None:
        """Remove an experiment: its index row, record, tags and origin (its objects stay
        until `nbexp gc`).

        The row goes first, under a locked note, so no process lists an experiment whose
        record is gone; if this one is killed before the files are gone too, the next
        process to open the store removes them (`_finish_interrupted`). Either way the
        experiment ends fully present or fully gone."""
        self._writable("deleting an experiment")
        with self._file_writes(), self._locked_note(f"{experiment_id}{DELETING_SUFFIX}") as note:
            try:
                self._delete_row(experiment_id)
            except BaseException:  # nothing was deleted: nothing to finish later
                with contextlib.suppress(OSError):
                    note.unlink()
                raise
            self._delete_files(experiment_id)  # if this fails, the note stays: retried
            note.unlink()

    @index_guard
    def _delete_row(self, experiment_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))

    def _delete_files(self, experiment_id: str) -> None:
        for path in (
            self.record_path(experiment_id),
            self.tags_dir / f"{experiment_id}.json",
            self.origins_dir / f"{experiment_id}.json",
        ):
            path.unlink(missing_ok=True)

    def _read_tags(self, experiment_id: str) -> tuple[str, ...] | None:
        try:
            return tuple(json.loads((self.tags_dir / f"{experiment_id}.json").read_bytes()))
        except (FileNotFoundError, ValueError):
            return None

    def tagged(self) -> Iterator[tuple[str, list[str]]]:
        """(id, tags) of every experiment whose tags were changed after its run."""
        for path in self.tags_dir.glob("*.json"):
            tags = self._read_tags(path.stem)
            if tags is not None and all(isinstance(tag, str) for tag in tags):
                yield path.stem, list(tags)

    def set_tags(self, experiment_id: str, tags: Iterable[str]) -> Experiment:
        """Replace an experiment's tags: the tags file, then its index row. If the row is
        refused (disk full, read-only index), the old tags file is put back, so nothing
        changed; a process killed in between leaves a locked note, and the next process to
        open the store re-indexes the experiment from its files (`_finish_interrupted`)."""
        self._writable("tagging")
        experiment = self.load(experiment_id)
        ordered = tuple(dict.fromkeys(tags))
        updated = experiment.with_tags(ordered)
        path = self.tags_dir / f"{experiment_id}.json"
        previous = path.read_bytes() if path.exists() else None
        with self._file_writes(), self._locked_note(f"{experiment_id}{UNINDEXED_SUFFIX}") as note:
            try:
                self._write_atomic(path, json.dumps(ordered).encode())
                self._index_upsert(updated)
            except BaseException:
                with contextlib.suppress(OSError):  # if this fails too, the note stays
                    if previous is None:
                        path.unlink(missing_ok=True)
                    else:
                        self._write_atomic(path, previous)
                    note.unlink()
                raise
            note.unlink()
        return updated

    def add_tag(self, experiment_id: str, tag: str) -> Experiment:
        """Tag an experiment. A tag that reads as a reference (`last`, hex digits), is empty,
        or holds a secret (an environment credential, a URL password) is refused: tags are
        shown everywhere and travel to remotes."""
        from ..secrets import Redactor, secret_values

        tag = refs.check_label(tag, "tag")
        if Redactor(secret_values({})).text(tag) != tag:
            raise NbexpError(
                "this tag holds a credential (a secret's value or a URL password); tags are "
                "shown everywhere and pushed to remotes, so choose another tag"
            )
        experiment = self.load(experiment_id)
        return self.set_tags(experiment_id, (*experiment.tags, tag))

    def remove_tag(self, experiment_id: str, tag: str) -> Experiment:
        experiment = self.load(experiment_id)
        if tag not in experiment.tags:
            has = ", ".join(experiment.tags) or "none"
            raise NbexpError(
                f"{experiment.name} ({experiment.short_id}) has no tag {tag!r} (its tags: {has})"
            )
        return self.set_tags(experiment_id, (t for t in experiment.tags if t != tag))

    def import_record(self, data: bytes, origin: dict[str, Any]) -> Experiment:
        """Add a record that arrived from a remote, byte for byte, once its content is
        verified against its id. Its origin is written first, so a visible pulled record is
        never mistaken for a local one. Its objects must already be in the store."""
        self._writable("pulling")
        try:
            body = json.loads(data)
            experiment = Experiment.from_dict(body)
        except (ValueError, UnicodeDecodeError, RecordError) as error:
            raise IntegrityError(f"a record arrived unreadable ({error})") from error
        if self.make_id(body) != experiment.id:
            raise IntegrityError(
                f"record {experiment.short_id} arrived corrupt (its content does not match its id)"
            )
        for recorded in experiment.recorded_paths():
            why = crafted(recorded)
            if why:  # nbexp never records such a path: the record was made to attack
                raise IntegrityError(
                    f"record {experiment.short_id} was refused: it names the file {recorded!r}, "
                    f"and {why}; nbexp never records such a path"
                )
        path = self.record_path(experiment.id)
        if path.exists():  # recorded or pulled here already: the same content, by its id
            return self.load(experiment.id)
        self._write_atomic(self.origins_dir / f"{experiment.id}.json", json.dumps(origin).encode())
        with self._file_writes(), self._publishing(experiment.id, path):
            self._write_atomic(path, data, sync_dir=True)
            self._index_upsert(experiment)
        return experiment

    def get(self, ref: str, *, salvage: bool = False) -> Experiment:
        return self.load(self.resolve(ref), salvage=salvage)
