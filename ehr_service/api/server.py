"""HTTP limits below the application, and the shutdown drain.

uvicorn has no limit on the size of a request head, no timeout for a head or a
body that arrives byte by byte, and keeps connections that never send a byte.
:func:`limited_protocol` wraps its HTTP protocol (httptools or h11, whichever the
server runs) with them, answering with OperationOutcomes:

* a head (request line and headers) over ``max_header_bytes`` or with more than
  ``max_headers`` lines: 431, connection closed;
* a head not complete ``header_timeout`` seconds after the connection opened (or
  after the previous response): 408 if it had begun, else the idle connection is
  closed;
* a body with no byte for ``body_timeout`` seconds: the connection is closed (the
  application sees a disconnect);
* more than ``max_connections`` open connections in this worker: 503 with
  ``Retry-After``.

On shutdown uvicorn stops accepting, then waits ``drain_seconds`` for running
requests. :class:`DrainMiddleware` answers every request that starts during the
drain, and every one still running a second before it ends, with a 503
OperationOutcome instead of the plain-text 500 of a cancelled task.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ehr_service.api.http_protocol import FhirHttpToolsProtocol
from ehr_service.api.middleware import ResponseTracker
from ehr_service.fhir import jsonio

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    drain_seconds: float = 30.0
    retry_after: int = 5


def outcome_bytes(status: int, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response carrying an OperationOutcome, closing the connection."""
    body = jsonio.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": message}],
        }
    )
    head = [
        b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
        b"content-type: application/fhir+json; charset=utf-8",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Drain:
    """The shutdown drain of this process (one event loop, one server): the
    requests in flight, and at the drain's deadline those still running cancelled
    (:class:`DrainMiddleware` answers them)."""

    def __init__(self) -> None:
        self.active = False
        self.running: set[asyncio.Task[Any]] = set()
        self.cut: set[asyncio.Task[Any]] = set()  # cancelled by the deadline

    def start(self, seconds: float) -> None:
        if self.active:
            return
        self.active = True
        # A second before uvicorn gives up, so the answer is out before it cancels.
        asyncio.get_running_loop().call_later(max(seconds - 1.0, 0.0), self._deadline)

    def _deadline(self) -> None:
        for task in self.running:
            self.cut.add(task)
            task.cancel()


DRAIN = Drain()


def limits_of(settings: Any) -> HttpLimits:
    return HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        header_timeout=settings.http_header_timeout_s,
        body_timeout=settings.http_body_timeout_s,
        max_connections=settings.http_max_connections,
        drain_seconds=settings.shutdown_drain_s,
        retry_after=settings.retry_after_s,
    )


@cache
def _from_environment() -> HttpLimits:
    from ehr_service.config import Settings

    return limits_of(Settings())


def limited_protocol(base: type[Any], fixed: HttpLimits | None = None) -> type[Any]:
    """``base`` (uvicorn's H11Protocol or HttpToolsProtocol) with the limits above:
    ``fixed``, or the settings of the environment (each worker process reads them,
    as it builds its app)."""

    class Limited(base):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.limits = limits = fixed or _from_environment()
            self._timer: asyncio.TimerHandle | None = None
            if DRAIN.active or len(self.connections) > limits.max_connections:
                reason = "shutting down" if DRAIN.active else "at its connection limit"
                self._refuse(503, "transient", f"The server is {reason}; try again")
                return
            self._await_head()

        def _arm(self, seconds: float, then: Any) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(seconds, then)

        def _await_head(self) -> None:
            self._head_bytes = 0
            self._head_lines = 0
            self._head_done = False
            self._arm(self.limits.header_timeout, self._head_late)

        def _refuse(self, status: int, code: str, message: str) -> None:
            if not self.transport.is_closing():
                retry = self.limits.retry_after if status == 503 else None
                self.transport.write(outcome_bytes(status, code, message, retry))
                self.transport.close()

        def _head_late(self) -> None:
            if self._head_done or self.transport.is_closing():
                return
            if self._head_bytes == 0:
                self.transport.close()  # idle: nothing to answer
            else:
                self._refuse(408, "timeout", "The request head was not received in time")

        def _body_late(self) -> None:
            cycle = getattr(self, "cycle", None)
            if cycle is not None and cycle.more_body and not cycle.response_started:
                self.transport.close()  # the application sees http.disconnect

        def data_received(self, data: bytes) -> None:
            if not self._head_done and self._timer is not None:
                end = data.find(b"\r\n\r\n")
                head = data if end < 0 else data[:end]
                self._head_bytes += len(head)
                self._head_lines += head.count(b"\n")
                if self._head_bytes > self.limits.max_header_bytes or (
                    self._head_lines > self.limits.max_headers
                ):
                    self._refuse(
                        431,
                        "too-costly",
                        f"The request head exceeds {self.limits.max_header_bytes} bytes or "
                        f"{self.limits.max_headers} header lines",
                    )
                    return
                if end >= 0:
                    self._head_done = True
                    self._arm(self.limits.body_timeout, self._body_late)
            elif self._head_done and self._timer is not None:
                self._arm(self.limits.body_timeout, self._body_late)
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            timer = getattr(self, "_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

        def shutdown(self) -> None:
            DRAIN.start(self.limits.drain_seconds)
            super().shutdown()

    Limited.__name__ = f"Limited{base.__name__}"
    return Limited


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """``uvicorn.run`` keyword arguments: the limited protocol by import path (worker
    processes import it; a class object cannot be handed to them), the keep-alive
    and the drain."""
    return {
        "http": f"{__name__}:{_BASE_NAME}",
        "timeout_keep_alive": settings.http_keep_alive_s,
        "timeout_graceful_shutdown": settings.shutdown_drain_s,
    }


# httptools taking raw UTF-8 request targets (api/http_protocol.py), with the limits.
LimitedHttpToolsProtocol = limited_protocol(FhirHttpToolsProtocol)
_BASE_NAME = "LimitedHttpToolsProtocol"


class DrainMiddleware:
    """503 OperationOutcomes instead of cancelled requests during the shutdown drain."""

    def __init__(self, app: ASGIApp, retry_after: int = 5) -> None:
        self.app = app
        self.retry_after = retry_after

    async def _unavailable(self, send: Send) -> None:
        body = outcome_bytes(503, "transient", "The server is shutting down; try again")
        payload = body.partition(b"\r\n\r\n")[2]
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/fhir+json; charset=utf-8"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"retry-after", str(self.retry_after).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = DRAIN
        if drain.active:
            await self._unavailable(send)
            return
        task = asyncio.current_task()
        assert task is not None  # an ASGI request always runs in a task
        tracked = ResponseTracker(send)
        drain.running.add(task)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if task not in drain.cut:  # the server or the client gave up on it
                raise
            if not tracked.started:  # the drain ends: answer rather than be cancelled
                await self._unavailable(send)
        finally:
            drain.running.discard(task)
            if task in drain.cut:  # the deadline's cancellation is spent here
                drain.cut.discard(task)
                task.uncancel()
