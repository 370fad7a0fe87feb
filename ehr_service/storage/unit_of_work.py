"""The unit of work (docs/architecture.md §11): the only code that opens, commits or rolls
back a transaction, takes a savepoint, and records the audit events of what the
transaction did, inside it.

Every HTTP interaction, bundle, command-line write, background worker and
exchange path runs in ``unit.write()`` or ``unit.read()``; what runs inside
receives the connection and never begins or commits. An event recorded with
:func:`record` is inserted in the same transaction, just before it commits: a
write and its audit event commit together or not at all (the sealer of
``audit.sealing`` chains committed events afterwards; nothing here locks a row
that every request needs).
A read-only transaction cannot hold an event; its events go, after it ends, to
the chain's group commit (``events_after_read``), which is itself a unit of work.

``tests/unit/test_layering.py`` checks that nothing else begins, commits or
takes a savepoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection

from ehr_service.storage import audit as audit_store
from ehr_service.storage.audit import NewEvent
from ehr_service.storage.database import Database

_EVENTS = "unit_of_work_events"
_TOUCHED = "unit_of_work_touched"


class UnitOfWork:
    """One per process (``Services.unit``), over the process's database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        # Where the events of read-only work go once it ends (the audit group commit).
        self.events_after_read: Callable[[Sequence[NewEvent]], None] = self._append_now
        # The event of a write that recorded none (an operator's command: every
        # transaction it commits is on the audit chain), given the connection.
        self.each_write: Callable[[Connection], NewEvent] | None = None

    @contextmanager
    def write(self, *events: NewEvent, audited: bool = True) -> Iterator[Connection]:
        """A write transaction: commits when the block ends, with the events given
        here and those recorded inside; rolls back (events too) on error.
        ``audited=False``: the chain's own upkeep (sealing), never an operator's act."""
        with self.database.transaction(write=True) as conn:
            pending = list(events)
            conn.info[_EVENTS] = pending
            try:
                yield conn
                if not pending and audited and self.each_write is not None:
                    pending.append(self.each_write(conn))
                audit_store.append(conn, pending)
            finally:
                conn.info.pop(_EVENTS, None)
                conn.info.pop(_TOUCHED, None)

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction; events recorded inside are appended once it ends.
        ``snapshot``: every statement sees the same committed state (PostgreSQL:
        REPEATABLE READ, read only; a SQLite read transaction always does)."""
        pending: list[NewEvent] = []
        with self.database.transaction(write=False, snapshot=snapshot) as conn:
            conn.info[_EVENTS] = pending
            try:
                yield conn
            finally:
                conn.info.pop(_EVENTS, None)
        if pending:
            self.events_after_read(pending)

    def _append_now(self, events: Sequence[NewEvent]) -> None:
        with self.write(*events):
            pass


def record(conn: Connection, event: NewEvent) -> None:
    """Record ``event`` in the unit of work ``conn`` belongs to."""
    pending = conn.info.get(_EVENTS)
    if pending is None:
        raise RuntimeError("audit event recorded outside a unit of work")
    pending.append(event)


def touch(conn: Connection, patients: Iterable[str | None]) -> None:
    """Records (compartment patient ids) this work changed beyond the resource its
    event names, e.g. results re-marked because their institution changed: the
    event lists them, so each resident's access log shows it."""
    touched = conn.info.setdefault(_TOUCHED, set())
    touched.update(p for p in patients if p)


def touched(conn: Connection) -> frozenset[str]:
    return frozenset(conn.info.get(_TOUCHED, ()))


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A savepoint inside the unit of work: the block's writes roll back alone."""
    with conn.begin_nested():
        yield
