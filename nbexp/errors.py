"""One root exception for everything a user can get wrong, with messages that name the fix."""

from __future__ import annotations


class NbexpError(Exception):
    """A mistake the user can fix; its message says what is wrong and what to do."""


class NbexpWarning(UserWarning):
    """Something the user should know that did not stop the work."""


class StoreError(NbexpError):
    """The store cannot be opened, read or written."""


class RefError(NbexpError):
    """An experiment reference that matches nothing, or more than one experiment."""


class AmbiguousRefError(RefError):
    """An id prefix that starts more than one experiment's id."""


class QueryError(NbexpError):
    """A query that does not parse or names an unknown field."""


class RecordError(NbexpError):
    """A record that cannot be read: corrupt, or written by an incompatible version."""


class IntegrityError(StoreError):
    """An object or record whose content no longer matches its hash."""


class MissingObjectError(IntegrityError):
    """An object a record names is in neither a loose file nor a pack."""


class DamagedIndexError(StoreError):
    """The SQLite index file is damaged; `nbexp reindex` rebuilds it from the records."""


class RemoteError(NbexpError):
    """A remote that is not configured, cannot be reached, or refuses an operation."""


class UntrustedRemoteError(RemoteError):
    """Restoring state pulled from a remote that is not marked trusted (unpickling runs code)."""


class TransferError(RemoteError):
    """A push or pull that moved some experiments but not all; `report` says what happened."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class ExpectationFailed(NbexpError):
    """A `--strict` run whose `--expect` failed: raised after the record is saved, so a
    headless run (papermill, `jupyter execute`) exits non-zero and a scheduler alerts."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the failure is the user's data, not a bug
        return [f"ExpectationFailed: {self}"]
