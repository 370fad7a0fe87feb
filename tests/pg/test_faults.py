"""The database failing under a live server: terminated backends, a server that
stops answering (a loopback proxy that stops forwarding), a pool with no free
connection. Each is a 503 OperationOutcome with ``Retry-After`` within the
configured time, the keep-alive connection survives it, ``/readyz`` answers in
bounded time, and the service recovers by itself."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import make_url

from ehr_service.app import build_services, create_app
from ehr_service.config import Settings
from ehr_service.interactions.context import Services
from tests.helpers import FHIR_JSON, bearer, patient

pytestmark = pytest.mark.pg


class StallProxy:
    """Forwards TCP to the database until paused; paused, it keeps every socket
    open and forwards nothing (as a frozen server whose kernel still ACKs)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.running = threading.Event()
        self.running.set()
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.running.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.closed = True
        self.running.set()
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def proxy(pg_url: str) -> Iterator[tuple[StallProxy, str]]:
    parsed = make_url(pg_url)
    stall = StallProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    yield stall, parsed.set(host="127.0.0.1", port=stall.port).render_as_string(False)
    stall.close()


def _live(services: Services) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(services=services), host="127.0.0.1", port=0, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


def _services(url: str, tmp_path: Path, **limits: object) -> Services:
    fields: dict[str, object] = {
        "statement_timeout_ms": 1_000,
        "database_stall_s": 2.0,
        "database_connect_timeout_s": 2.0,
        "database_checkout_timeout_s": 1.0,
        "readiness_timeout_s": 1.0,
        "database_pool_size": 2,
    }
    settings = Settings(
        database_url=url, data_dir=tmp_path / "data", environment="test", **(fields | limits)
    )
    return build_services(settings)


def _is_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_stalled_database_is_a_503_in_time_and_readyz_answers(
    proxy: tuple[StallProxy, str], tmp_path: Path
) -> None:
    stall, url = proxy
    services = _services(url, tmp_path)
    for base in _live(services):
        with httpx.Client(base_url=base, headers=bearer(services.settings), timeout=30) as client:
            assert (
                client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON).status_code == 201
            )
            stall.running.clear()
            started = time.monotonic()
            _is_503(client.get("/fhir/Patient", params={"_count": 1}))
            waited = time.monotonic() - started
            assert waited < 2.0 + 3.0, f"waited {waited:.1f} s for a stalled database"
            started = time.monotonic()
            ready = client.get("/readyz")
            assert ready.status_code == 503 and time.monotonic() - started < 2.5
            assert ready.headers["retry-after"] == "5"
            assert client.get("/readyz").status_code == 503  # a second probe: not piled up
            stall.running.set()
            # recovered without a restart, on the same keep-alive connection
            deadline = time.monotonic() + 15
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "did not recover"
                time.sleep(0.2)
            assert client.get("/fhir/Patient").status_code == 200
        assert services.database.watchdog is not None and services.database.watchdog.fired >= 1
    services.database.dispose()


def test_terminated_backends_are_503s_then_recovery(pg_url: str, tmp_path: Path) -> None:
    services = _services(pg_url, tmp_path, database_stall_s=0.0)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    database = make_url(pg_url).database
    for base in _live(services):
        with httpx.Client(base_url=base, headers=bearer(services.settings), timeout=30) as client:
            for _ in range(3):
                assert client.get("/fhir/Patient").status_code == 200
            with admin.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": database},
                ).scalar_one()
            assert killed >= 1
            statuses = []
            for _ in range(4):  # each dead pooled connection fails once, then is replaced
                response = client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)
                statuses.append(response.status_code)
                if response.status_code == 503:
                    _is_503(response)
            assert set(statuses) <= {201, 503} and statuses[-1] == 201, statuses
    admin.dispose()
    services.database.dispose()


def test_no_free_connection_is_a_503_not_a_hang(pg_url: str, tmp_path: Path) -> None:
    services = _services(pg_url, tmp_path, database_pool_size=1)
    held: list[sa.Connection] = []
    try:
        for base in _live(services):
            with httpx.Client(
                base_url=base, headers=bearer(services.settings), timeout=30
            ) as client:
                assert client.get("/fhir/Patient").status_code == 200
                held += [services.database.engine.connect() for _ in range(2)]  # pool + overflow
                started = time.monotonic()
                _is_503(client.get("/fhir/Patient"))
                assert time.monotonic() - started < 4
                for conn in held:
                    conn.close()
                held.clear()
                assert client.get("/fhir/Patient").status_code == 200
    finally:
        for conn in held:
            conn.close()
        services.database.dispose()
