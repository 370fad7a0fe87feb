"""HTTP limits below the application, against a real uvicorn server speaking raw
sockets: oversized heads are 431, slow heads 408, idle and stalled-body
connections are dropped, a worker's connection limit is a 503, keep-alive and
slow handlers are untouched, and the shutdown drain answers 503 OperationOutcomes
instead of cancelling."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.responses import JSONResponse

from ehr_service.api import server as server_module
from ehr_service.api.http_protocol import FhirHttpToolsProtocol
from ehr_service.api.server import Drain, limited_protocol, limits_of, uvicorn_options
from ehr_service.app import create_app
from ehr_service.interactions.context import Services
from tests.helpers import bearer

LIMITS = {
    "http_max_header_bytes": 4096,
    "http_max_headers": 20,
    "http_header_timeout_s": 0.5,
    "http_body_timeout_s": 0.5,
    "http_max_connections": 5,
    "shutdown_drain_s": 1.5,
}


class Live:
    def __init__(self, services: Services) -> None:
        app = create_app(services=services)

        async def slow(seconds: float = 1.0) -> JSONResponse:
            await asyncio.sleep(seconds)
            return JSONResponse({"slept": seconds})

        app.add_api_route("/test-slow", slow)
        options = uvicorn_options(services.settings)
        assert options["http"] == "ehr_service.api.server:LimitedHttpToolsProtocol"
        options["http"] = limited_protocol(FhirHttpToolsProtocol, limits_of(services.settings))
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", **options)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.token = bearer(services.settings)["Authorization"]

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live(make_services: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    monkeypatch.setattr(server_module, "DRAIN", Drain())  # each server its own drain
    server = Live(make_services(**LIMITS))
    yield server
    server.stop()


def _read(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = [
                int(line.split(b":")[1]) for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]  # fmt: skip
            if length and len(body) >= length[0]:
                break
    return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _outcome(response: bytes) -> dict[str, Any]:
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert body["resourceType"] == "OperationOutcome"
    return body


def _get(path: str, token: str, extra: bytes = b"") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n".encode() + extra + b"\r\n"
    )


def test_oversized_and_overlong_heads_are_431(live: Live) -> None:
    with live.connect() as sock:
        sock.sendall(_get("/fhir/metadata", live.token, b"X-Big: " + b"a" * 8000 + b"\r\n"))
        response = _read(sock)
    assert _status(response) == 431 and _outcome(response)["issue"][0]["code"] == "too-costly"
    with live.connect() as sock:
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(40))
        sock.sendall(_get("/fhir/metadata", live.token, many))
        assert _status(_read(sock)) == 431


def test_a_slow_head_is_408_and_an_idle_connection_is_dropped(live: Live) -> None:
    with live.connect() as sock:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        response = _read(sock)
        assert _status(response) == 408 and time.monotonic() - started < 3
    with live.connect() as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed without a word
        assert time.monotonic() - started < 3


def test_a_stalled_body_is_dropped(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    with live.connect() as sock:
        head = (
            f"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nAuthorization: {live.token}\r\n"
            "Content-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"resourceType"')
        started = time.monotonic()
        while sock.recv(65536):
            pass
        assert time.monotonic() - started < 3
    time.sleep(0.3)  # the handler sees the disconnect: not an unexpected error
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]


def test_keep_alive_and_slow_handlers_are_untouched(live: Live) -> None:
    with live.connect() as sock:
        for _ in range(3):  # three requests, one connection, gaps under the keep-alive
            sock.sendall(_get("/fhir/metadata", live.token))
            assert _status(_read(sock)) == 200
            time.sleep(0.2)
        sock.sendall(_get("/test-slow?seconds=1.2", live.token))  # longer than the timeouts
        response = _read(sock)
        assert _status(response) == 200 and b'"slept":1.2' in response


def test_the_connection_limit_is_a_503(live: Live) -> None:
    held = [live.connect() for _ in range(5)]
    try:
        time.sleep(0.1)
        with live.connect() as extra:
            response = _read(extra)
        assert _status(response) == 503 and b"retry-after: 5" in response.lower()
    finally:
        for sock in held:
            sock.close()


def test_the_drain_answers_503s_not_cancelled_500s(live: Live) -> None:
    done = live.connect()
    cut = live.connect()
    done.sendall(_get("/test-slow?seconds=0.3", live.token))
    cut.sendall(_get("/test-slow?seconds=10", live.token))
    time.sleep(0.1)
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    assert _status(_read(done)) == 200  # finished inside the drain
    started = time.monotonic()
    response = _read(cut)
    assert _status(response) == 503, response
    assert _outcome(response)["issue"][0]["code"] == "transient"
    assert time.monotonic() - started < 3
    stopper.join(timeout=15)
    done.close()
    cut.close()
    assert server_module.DRAIN.active
