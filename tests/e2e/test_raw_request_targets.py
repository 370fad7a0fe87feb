"""A real ``ehr-service serve`` on loopback, spoken to through a raw socket, as a
client that does not percent-encode its request target (curl --globoff, some
hospital systems) reaches it: ``GET /fhir/Patient?family=王`` with the UTF-8 bytes
on the wire is searched like its percent-encoded form, however the bytes arrive;
bodies and headers are never rewritten; what the HTTP parser still refuses is a
FHIR OperationOutcome 400, and so is a query that is not UTF-8."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest


@dataclass
class Served:
    port: int
    token: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("raw-targets")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    env.update(EHR_ENVIRONMENT="test", EHR_DATA_DIR=str(root), EHR_PORT=str(port),
               EHR_LOG_LEVEL="INFO", EHR_AUDIT_SEAL_SECONDS="0")  # fmt: skip

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ehr_service.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        return done.stdout

    cli("migrate")
    token = cli("token", "mint", "--scope", "system/*.cruds").strip()
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ehr_service.cli", "serve"], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
        yield Served(port, token, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _request(served: Served, method: str, target: bytes, body: bytes = b"") -> bytes:
    head = (f" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {served.token}\r\n"
            "Content-Type: application/fhir+json\r\n").encode()  # fmt: skip
    length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
    return method.encode() + b" " + target + head + length


def _exchange(served: Served, *parts: bytes, responses: int = 1) -> list[tuple[int, Any]]:
    """Send the parts one by one (a pause between: separate reads on the server), then
    read ``responses`` answers on the same connection."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in parts:
            sock.sendall(part)
            time.sleep(0.15)
        answers = []
        with sock.makefile("rb") as reader:
            for _ in range(responses):
                status = int(reader.readline().split()[1])
                headers = {}
                while (line := reader.readline()) not in {b"\r\n", b""}:
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers["content-length"]))
                assert headers["content-type"].startswith("application/fhir+json"), headers
                answers.append((status, json.loads(body)))
        return answers


def _get(target: str) -> bytes:
    return target.encode()  # the UTF-8 bytes as they are: not percent-encoded


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


@pytest.fixture(scope="module")
def wang(served: Served) -> str:
    """A resident named 王芳, created over a raw socket: the body's UTF-8 untouched."""
    body = json.dumps({"resourceType": "Patient", "name": [{"family": "王", "given": ["芳"]}]},
                      ensure_ascii=False).encode()  # fmt: skip
    request = _request(served, "POST", b"/fhir/Patient", body)
    # the headers and the body in separate reads: the body is no request line
    ((status, created),) = _exchange(served, request + b"\r\n", body)
    assert status == 201, created
    assert created["name"][0]["family"] == "王"
    return str(created["id"])


def test_a_raw_utf8_query_is_searched_as_its_encoded_form(served: Served, wang: str) -> None:
    ((status, bundle),) = _exchange(
        served, _request(served, "GET", _get("/fhir/Patient?family=王")) + b"\r\n"
    )
    assert status == 200, bundle
    assert _ids(bundle) == {wang}
    assert "family=%E7%8E%8B" in bundle["link"][0]["url"]
    auth = {"Authorization": f"Bearer {served.token}"}
    encoded = httpx.get(f"http://127.0.0.1:{served.port}/fhir/Patient", params={"family": "王"},
                        headers=auth)  # fmt: skip
    assert _ids(encoded.json()) == {wang}
    ((_, nobody),) = _exchange(
        served, _request(served, "GET", _get("/fhir/Patient?family=李")) + b"\r\n"
    )
    assert nobody["total"] == 0


def test_a_request_line_split_across_reads_and_kept_alive(served: Served, wang: str) -> None:
    first = _request(served, "GET", _get("/fhir/Patient?given=芳")) + b"\r\n"
    second = _request(served, "GET", _get("/fhir/Patient?family:contains=王")) + b"\r\n"
    cut = first.index("芳".encode()) + 1  # in the middle of a character's bytes
    answers = _exchange(served, first[:cut], first[cut:], b"\r\n" + second, responses=2)
    assert [status for status, _ in answers] == [200, 200], answers
    assert _ids(answers[0][1]) == {wang}
    assert _ids(answers[1][1]) == {wang}
    assert "given=%E8%8A%B3" in answers[0][1]["link"][0]["url"]


def test_what_the_parser_still_refuses_is_an_operation_outcome(served: Served) -> None:
    for target in (b"/fhir/Patient?family=\x01x", b"/fhir/Patient?family=a b c"):
        ((status, outcome),) = _exchange(served, _request(served, "GET", target) + b"\r\n")
        assert status == 400 and outcome["resourceType"] == "OperationOutcome", outcome
        assert "percent-encoded" in outcome["issue"][0]["diagnostics"]
    lines = [
        json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")
    ]
    refused = [r for r in lines if r.get("interaction") == "unparsable"]
    assert refused and refused[-1]["status"] == 400  # in the access log too


def test_a_query_that_is_not_utf8_is_refused(served: Served) -> None:
    for target in ("/fhir/Patient?family=王".encode("gbk"), b"/fhir/Patient?family=%CD%F5"):
        ((status, outcome),) = _exchange(served, _request(served, "GET", target) + b"\r\n")
        assert status == 400, (target, outcome)
        assert "not UTF-8" in outcome["issue"][0]["diagnostics"]
