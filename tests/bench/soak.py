"""Soak: a realistic mix against a live server for a bounded time, one line a minute.

    EHR_SOAK_MINUTES=15 EHR_SOAK_CLIENTS=32 EHR_DATABASE_URL=postgresql://... \\
        .venv/bin/python tests/bench/soak.py

Starts ``ehr-service serve`` (``EHR_SOAK_WORKERS`` processes, default 2) on a
migrated database of its own data directory, then keeps ``EHR_SOAK_CLIENTS``
clients busy with reads, searches, creates, updates, a transaction and a
``$everything`` (weights below) until ``EHR_SOAK_MINUTES`` have passed or
``EHR_SOAK_MAX_REQUESTS`` were sent. Each minute (``EHR_SOAK_INTERVAL_S``) it
prints requests/s, errors by status, p95 latency, the server's resident memory
(all its processes) and its open TCP connections; at the end whether memory and
connections stayed flat (last interval against the second). Every acknowledged
create is read back at the end: none may be lost. Not part of ``make test``.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.load_bench import process_tree

MINUTES = float(os.environ.get("EHR_SOAK_MINUTES", "2"))
CLIENTS = int(os.environ.get("EHR_SOAK_CLIENTS", "32"))
WORKERS = os.environ.get("EHR_SOAK_WORKERS", "2")
MAX_REQUESTS = int(os.environ.get("EHR_SOAK_MAX_REQUESTS", "1000000"))
INTERVAL = float(os.environ.get("EHR_SOAK_INTERVAL_S", "60"))
FHIR = {"Content-Type": "application/fhir+json"}
MIX = [("read", 40), ("search", 25), ("create", 15), ("update", 10), ("bundle", 5), ("all", 5)]


def _rss_mb(pid: int) -> float:
    total = 0
    for current in process_tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _connections(pid: int) -> int:
    """Open TCP sockets of the server's processes (clients and database)."""
    count = 0
    for current in process_tree(pid):
        try:
            count += sum(
                1
                for fd in Path(f"/proc/{current}/fd").iterdir()
                if os.readlink(fd).startswith("socket:")
            )
        except OSError:
            continue
    return count


class Soak:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.sent = 0
        self.created: list[str] = []
        self.patients: list[str] = []

    async def one(self, client: httpx.AsyncClient) -> None:
        kind = random.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
        pid = random.choice(self.patients)
        started = time.perf_counter()
        if kind == "read":
            response = await client.get(f"/fhir/Patient/{pid}")
        elif kind == "search":
            response = await client.get("/fhir/Observation", params={"subject": pid, "_count": 20})
        elif kind == "create":
            response = await client.post("/fhir/Observation", json=_observation(pid), headers=FHIR)
            if response.status_code == 201:
                self.created.append(response.json()["id"])
        elif kind == "update":
            body = {
                "resourceType": "Patient",
                "id": pid,
                "gender": random.choice(["male", "female"]),
            }
            response = await client.put(f"/fhir/Patient/{pid}", json=body, headers=FHIR)
        elif kind == "bundle":
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": _observation(pid), "request": {"method": "POST", "url": "Observation"}}
                for _ in range(5)
            ]}  # fmt: skip
            response = await client.post("/fhir", json=bundle, headers=FHIR)
        else:
            response = await client.get(f"/fhir/Patient/{pid}/$everything", params={"_count": 50})
        self.latencies.append(time.perf_counter() - started)
        self.statuses[response.status_code] += 1
        self.sent += 1

    async def client(self, deadline: float) -> None:
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers, timeout=60) as c:
            while time.monotonic() < deadline and self.sent < MAX_REQUESTS:
                try:
                    await self.one(c)
                except httpx.HTTPError:
                    self.statuses[0] += 1  # no answer at all
                    self.sent += 1


def _observation(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-03-01",
        "valueQuantity": {"value": round(random.uniform(3, 9), 1), "unit": "mmol/L"},
    }


async def _run(soak: Soak, server_pid: int) -> list[dict[str, float]]:
    deadline = time.monotonic() + MINUTES * 60
    tasks = [asyncio.create_task(soak.client(deadline)) for _ in range(CLIENTS)]
    rows: list[dict[str, float]] = []
    print(f"every {INTERVAL:g} s: interval  req/s  errors  p95_ms  rss_mb  sockets")
    while not all(t.done() for t in tasks):
        before, errors_before = soak.sent, sum(n for s, n in soak.statuses.items() if s >= 500)
        soak.latencies.clear()
        await asyncio.wait(tasks, timeout=INTERVAL)
        lat = sorted(soak.latencies) or [0.0]
        errors = sum(n for s, n in soak.statuses.items() if s >= 500 or s == 0)
        row = {
            "rate": (soak.sent - before) / INTERVAL,
            "errors": errors - errors_before,
            "p95": lat[int(len(lat) * 0.95)] * 1000,
            "rss": _rss_mb(server_pid),
            "sockets": _connections(server_pid),
        }
        rows.append(row)
        print(f"{len(rows):6d} {row['rate']:6.0f} {row['errors']:7.0f} {row['p95']:7.1f} "
              f"{row['rss']:7.0f} {row['sockets']:8.0f}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="ehr-soak-"))
    env = {**os.environ, "EHR_DATA_DIR": str(data), "EHR_ENVIRONMENT": "development",
           "EHR_LOG_LEVEL": "WARNING", "EHR_RATE_LIMIT_PER_MINUTE": "0"}  # fmt: skip
    cli = [sys.executable, "-m", "ehr_service.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    token = subprocess.run([*cli, "token", "mint", "--scope", "system/*.cruds"], env=env,
                           check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen([*cli, "serve", "--port", str(port), "--workers", WORKERS], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        soak = Soak(base, token)
        with httpx.Client(base_url=base, headers=soak.headers) as setup:
            for _ in range(50):
                created = setup.post(
                    "/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR
                )
                soak.patients.append(created.json()["id"])
        rows = asyncio.run(_run(soak, server.pid))
        with httpx.Client(base_url=base, headers=soak.headers, timeout=60) as check:
            lost = [
                i for i in soak.created if check.get(f"/fhir/Observation/{i}").status_code != 200
            ]
        print(f"requests {soak.sent}, statuses {dict(sorted(soak.statuses.items()))}")
        print(f"acknowledged creates {len(soak.created)}, lost {len(lost)}")
        if len(rows) >= 3:
            second, last = rows[1], rows[-1]
            print(f"memory {second['rss']:.0f} -> {last['rss']:.0f} MB, "
                  f"sockets {second['sockets']:.0f} -> {last['sockets']:.0f}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
