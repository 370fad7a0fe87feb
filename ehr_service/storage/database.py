"""Engine set-up and transactions (begun and ended for ``storage.unit_of_work``).

SQLite is the embedded default, PostgreSQL (psycopg 3) the production store.
On SQLite a write transaction starts with ``BEGIN IMMEDIATE`` so concurrent
writers queue on the busy timeout instead of failing to upgrade a read lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg.errors import DeadlockDetected, QueryCanceled, SerializationFailure
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.storage import citus
from ehr_service.storage.stall import StallWatchdog

_WRITE = "ehr_write"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_engine(url: str, statement_timeout_ms: int, pool_size: int) -> Engine:
    pooling: dict[str, Any] = {}
    if make_url(url).database not in (None, "", ":memory:"):  # a file; memory has one connection
        # as on PostgreSQL: connections beyond it are opened and closed
        pooling = {"pool_size": pool_size, "max_overflow": pool_size}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pooling)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
        if statement_timeout_ms > 0:
            # SQLite has no statement_timeout: a progress handler interrupts work that
            # runs past the deadline of this transaction ("interrupted").
            deadline = time.monotonic() + statement_timeout_ms / 1000
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.set_progress_handler(lambda: int(time.monotonic() > deadline), 20_000)

    return engine


def _cancelled(exc: OperationalError) -> bool:
    return isinstance(exc.orig, QueryCanceled) or "interrupted" in str(exc.orig)


def _lost() -> FhirError:
    return FhirError.of(
        Category.UNAVAILABLE, "The database connection was lost; try again", code="transient"
    )


@contextmanager
def _too_costly() -> Iterator[None]:
    """Database answers that are the request's lot, not our bug: a statement stopped
    by the statement timeout, a deadlock or serialization failure among concurrent
    writers (PostgreSQL picks one to fail: it may retry), and the database going
    away (terminated, shut down, failed over, stalled): 503, try again."""
    try:
        yield
    except DBAPIError as exc:
        if exc.connection_invalidated:  # the server went away under this connection
            raise _lost() from None
        if not isinstance(exc, OperationalError):
            raise
        if isinstance(exc.orig, DeadlockDetected | SerializationFailure):
            raise FhirError.of(
                Category.CONFLICT,
                "A concurrent request changed the same records; retry",
                code="conflict",
            ) from None
        if _cancelled(exc):
            raise FhirError.of(
                Category.UNAVAILABLE,
                "The query ran longer than this server allows (EHR_STATEMENT_TIMEOUT_MS); "
                "narrow it",
                code="too-costly",
            ) from None
        # Every other operational error (an administrator shutdown, a crash, a
        # terminated backend, a connection cut by the stall watchdog) is the
        # database's state, not the request's.
        raise _lost() from None
    except PendingRollbackError:  # the connection was invalidated under the work's cleanup
        raise _lost() from None
    except (PoolTimeout, DisconnectionError):
        raise FhirError.of(
            Category.UNAVAILABLE,
            "No database connection became free in time; try again",
            code="transient",
        ) from None


def transaction_cache(conn: Connection, name: str) -> dict[Any, Any]:
    """A dict that lives as long as the connection's current transaction: rows
    read many times by one unit of work (an institution, the partner list) are
    read once. Whoever writes such a row in the transaction drops its entry."""
    transaction = conn.get_transaction()
    held = conn.info.get(("transaction_cache", name))
    if held is None or held[0] is not transaction:  # held[0] keeps its identity unique
        held = (transaction, {})
        conn.info[("transaction_cache", name)] = held
    cache: dict[Any, Any] = held[1]
    return cache


IDLE_PING_SECONDS = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling without a round trip per transaction: a
    pooled connection idle for longer than ``IDLE_PING_SECONDS`` is pinged when
    checked out, and a dead one is replaced (the pool retries with a new
    connection). Under load connections never idle that long and nothing is
    pinged; ``pool_pre_ping`` would add a ``SELECT 1`` to every transaction."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi)
        except Exception as exc:  # the driver's own error: the connection is gone
            raise DisconnectionError("a pooled connection was found dead") from exc
        if not alive:
            raise DisconnectionError("a pooled connection was found dead")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the service waits on PostgreSQL (docs/architecture.md §10); 0 is off.

    ``connect``: the whole connection set-up (libpq ``connect_timeout``);
    ``checkout``: waiting for a free pooled connection; ``keepalive_idle``: TCP
    keepalives after this idle time, with ``tcp_user_timeout`` so a lost network
    (unacknowledged data) breaks the connection; ``stall``: the watchdog of a
    statement that gets no answer (``storage.stall``)."""

    connect: float = 5.0
    checkout: float = 5.0
    keepalive_idle: float = 10.0
    stall: float = 0.0


def _postgresql_args(statement_timeout_ms: int, timeouts: Timeouts) -> dict[str, Any]:
    # Search statements differ by their values' selectivity: a cached generic plan
    # of a prepared statement can be 100x slower than the custom plan.
    options = "-c plan_cache_mode=force_custom_plan"
    if statement_timeout_ms > 0:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"
    args: dict[str, Any] = {"options": options}
    if timeouts.connect > 0:
        args["connect_timeout"] = max(2, round(timeouts.connect))  # libpq: whole seconds, >= 2
    if timeouts.keepalive_idle > 0:
        idle = max(1, round(timeouts.keepalive_idle))
        args |= {
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": max(1, idle // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": idle * 2000,  # ms of unacknowledged data
        }
    return args


class Database:
    """Owns the engine; hands out connections inside one transaction each."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        statement_timeout_ms: int = 0,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.url = normalise_url(url)
        self.watchdog: StallWatchdog | None = None
        if self.url.startswith("sqlite"):
            self.engine = _sqlite_engine(self.url, statement_timeout_ms, pool_size)
        else:
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=timeouts.checkout if timeouts.checkout > 0 else 3600,
                connect_args=_postgresql_args(statement_timeout_ms, timeouts),
            )
            _ping_when_idle(self.engine)
            if timeouts.stall > 0 and statement_timeout_ms > 0:
                self.watchdog = StallWatchdog(timeouts.stall)
                self.watchdog.install(self.engine)
        self.dialect = self.engine.dialect.name

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def transaction(self, *, write: bool, snapshot: bool = False) -> Iterator[Connection]:
        """One transaction: commits when the block ends, rolls back on error. Only
        the unit of work (``storage.unit_of_work``) calls this."""
        with (
            _too_costly(),
            self._connect(write=write, snapshot=snapshot) as conn,
            conn.begin(),
            citus.layout(citus.is_citus(conn)),
        ):
            yield conn

    @contextmanager
    def _connect(self, *, write: bool, snapshot: bool = False) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
        except (OperationalError, DisconnectionError) as exc:
            raise FhirError.of(
                Category.UNAVAILABLE,
                "The database is not reachable; try again later",
                code="transient",
            ) from exc
        try:
            if write:
                conn = conn.execution_options(**{_WRITE: True})
            elif snapshot and self.dialect == "postgresql":
                conn = conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            yield conn
        finally:
            conn.close()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (OperationalError, PoolTimeout, DisconnectionError):
            return False
        return True

    def dispose(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        self.engine.dispose()
