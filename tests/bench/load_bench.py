"""Throughput and latency under concurrent load on loopback: an asyncio httpx load
generator keeps ``concurrency`` requests in flight for ``seconds`` and reports
requests/s and p50/p95/p99. Run against the service and against the bare endpoint
of tests/bench/bare_app.py (the ceiling) in the same run, on the same database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

CONCURRENCY = int(os.environ.get("EHR_BENCH_CONCURRENCY", "16"))
SECONDS = float(os.environ.get("EHR_BENCH_LOAD_SECONDS", "10"))


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found.append(current)
        pending += [int(c) for c in children]
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def _load(
    urls: Callable[[int], str],
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    mark: Callable[[], None],
) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
        for n in range(concurrency * 5):  # warm up connections and caches
            await client.get(urls(n))
        deadline = time.perf_counter() + seconds

        async def user(offset: int) -> None:
            nonlocal failures
            n = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(urls(n))
                latencies.append((time.perf_counter() - started) * 1000)
                failures += response.status_code != 200
                n += concurrency

        mark()
        started = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        mark()
    return {
        "requests": len(latencies),
        "failures": failures,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p95_ms": round(_percentile(latencies, 95), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
    }


def load(
    urls: Callable[[int], str],
    headers: dict[str, str],
    concurrency: int = CONCURRENCY,
    seconds: float = SECONDS,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """With ``server_pid``: also the server's CPU per request (its processes' CPU
    seconds over the measured requests, warm-up included in neither)."""
    cpu: list[float] = []

    def mark() -> None:
        if server_pid is not None:
            cpu.append(tree_cpu(server_pid))

    result = asyncio.run(_load(urls, headers, concurrency, seconds, mark))
    if len(cpu) == 2 and result["requests"]:
        result["cpu_ms_per_request"] = round((cpu[1] - cpu[0]) * 1000 / result["requests"], 3)
    return result


class BareServer:
    """tests/bench/bare_app.py in its own uvicorn process."""

    def __init__(self, database_url: str, port: int) -> None:
        self.database_url = database_url
        self.port = port
        self.base = f"http://127.0.0.1:{port}/bare"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BareServer:
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.bench.bare_app:app", "--port",
             str(self.port), "--log-level", "warning", "--workers",
             os.environ.get("EHR_BENCH_SERVER_WORKERS", "1")],
            cwd=root,
            env={**os.environ, "EHR_DATABASE_URL": self.database_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.get(f"{self.base}/Patient/none", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("bare endpoint did not start")

    def __exit__(self, *_exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=30)
