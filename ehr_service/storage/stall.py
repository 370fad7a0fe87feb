"""Client-side limits for a PostgreSQL server that stops answering.

A database server that is paused (stopped process, frozen VM, a proxy that stops
forwarding) still has its kernel acknowledge every packet: TCP keepalives and
``tcp_user_timeout`` never fire, and its ``statement_timeout`` cannot run while it
is frozen. Without a client-side limit a request waits for ever. The watchdog here
notes when each statement (and commit) starts on a pooled connection; a statement
still running ``stall_seconds`` later has its socket shut down, so the waiting
thread gets a connection error at once (answered 503 with ``Retry-After``), the
connection is discarded by the pool, and the thread is free again.

``stall_seconds`` is set above the statement timeout: a slow statement on a
healthy server is stopped by the server first (and reported as too costly).
Long-running work that sets no statement timeout (the CLI, export jobs) is not
watched: ``Database`` only installs the watchdog when both limits are on.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, event

logger = logging.getLogger("ehr_service.storage")


class StallWatchdog:
    """Shuts down the socket of any statement that runs longer than ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = 0  # statements stopped (a counter for tests and metrics)
        self._running: dict[int, tuple[float, int]] = {}  # id(dbapi conn) -> (deadline, fd)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def install(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def _statement(_conn: Any, cursor: Any, *_args: Any) -> None:
            self.watch(cursor.connection)

        @event.listens_for(engine, "after_cursor_execute")
        def _done(_conn: Any, cursor: Any, *_args: Any) -> None:
            self.unwatch(cursor.connection)

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            driver = conn.connection.driver_connection
            if driver is not None:
                self.watch(driver)

        @event.listens_for(engine, "handle_error")
        def _failed(context: Any) -> None:
            driver = getattr(context.connection, "connection", None)
            if driver is not None and driver.driver_connection is not None:
                self.unwatch(driver.driver_connection)

        @event.listens_for(engine.pool, "checkin")
        def _returned(dbapi: Any, _record: Any) -> None:
            if dbapi is not None:
                self.unwatch(dbapi)

    def watch(self, dbapi: Any) -> None:
        try:
            fd = dbapi.fileno()
        except Exception:  # already closed: nothing to watch
            return
        with self._lock:
            self._running[id(dbapi)] = (time.monotonic() + self.seconds, fd)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="db-stall-watchdog", daemon=True
                )
                self._thread.start()

    def unwatch(self, dbapi: Any) -> None:
        with self._lock:
            self._running.pop(id(dbapi), None)

    def _watch(self) -> None:
        interval = min(1.0, max(self.seconds / 4, 0.05))
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:  # held while shutting down: the fd cannot be reused meanwhile
                for key, (deadline, fd) in list(self._running.items()):
                    if now >= deadline:
                        del self._running[key]
                        self._shut(fd)

    def _shut(self, fd: int) -> None:
        try:
            sock = socket.socket(fileno=socket.dup(fd))
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
            self.fired += 1
            logger.error(
                "a database statement got no answer for %.1f s: its connection was dropped",
                self.seconds,
            )
        except OSError:
            pass
        finally:
            sock.close()

    def stop(self) -> None:
        self._stop.set()
