"""`make bench`: ingest and read benchmarks on SQLite and PostgreSQL, side by side.

Prints a table and writes ``bench-results/bench-<time>.json``. Figures are
ratios against work measured in the same run (docs/architecture.md §10): transaction
ingest against the validation-only rate of the same resources, and read
latency of a real server process over loopback.

PostgreSQL: ``EHR_BENCH_DATABASE_URL`` (default: a database ``ehr_bench`` on
127.0.0.1:5432, created if missing); skipped with a note if unreachable.
Citus: ``EHR_BENCH_CITUS_URL``, a coordinator database with its workers added
(tests/citus_cluster.py); when set, the HTTP and import sections also run on
databases laid out by ``migrate --citus``, beside the other backends.
Samples: the Synthea bundles of ``EHR_SAMPLES_DIR`` (or ../shared), plus the
copy kept in tests/data.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B import get_fhir_model_class  # noqa: E402

from ehr_service.storage.database import normalise_url  # noqa: E402
from tests.bench import load_bench  # noqa: E402
from tests.conftest import sample_bundles  # noqa: E402

ROUNDS = int(os.environ.get("EHR_BENCH_ROUNDS", "2"))
READS = int(os.environ.get("EHR_BENCH_READS", "2000"))
# Server processes (the service's and the bare endpoint's), and bundles posted at once.
SERVER_WORKERS = int(os.environ.get("EHR_BENCH_SERVER_WORKERS", "1"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def validation_rate(bundles: list[bytes]) -> tuple[int, float]:
    """Resources/s of fhir.resources validation alone, in this process."""
    resources = [e["resource"] for raw in bundles for e in orjson.loads(raw)["entry"]]
    models = [get_fhir_model_class(r["resourceType"]) for r in resources]
    for model, resource in list(zip(models, resources, strict=True))[:300]:  # warm up
        model.model_validate(resource)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        for model, resource in zip(models, resources, strict=True):
            model.model_validate(resource)
    elapsed = time.perf_counter() - started
    return len(resources) * ROUNDS, len(resources) * ROUNDS / elapsed


def parse_cost(bundles: list[bytes]) -> tuple[float, float]:
    """Seconds per round to parse the bundles: the fast parser (floats) and the
    exact one (fhir.jsonio, numbers as written), in this process."""
    from ehr_service.fhir import jsonio

    timings = []
    for parse in (orjson.loads, jsonio.loads):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for raw in bundles:
                parse(raw)
        timings.append((time.perf_counter() - started) / ROUNDS)
    return timings[0], timings[1]


def _pg_url(url: str | None = None) -> str | None:
    url = url or os.environ.get(
        "EHR_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ehr_bench"
    )
    parsed = make_url(normalise_url(url))
    try:
        admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
        admin.dispose()
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL not reachable, skipped: {exc.__class__.__name__}")
        return None
    return parsed.render_as_string(hide_password=False)


class Server:
    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.port = _free_port()
        self.env = {
            **os.environ,
            "EHR_DATABASE_URL": database_url,
            "EHR_DATA_DIR": str(data_dir),
            "EHR_LOG_LEVEL": "WARNING",
            "EHR_MAX_BODY_BYTES": str(64 * 1024 * 1024),
            "EHR_RATE_LIMIT_PER_MINUTE": "0",
        }
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        exe = [sys.executable, "-m", "ehr_service.cli"]
        subprocess.run([*exe, "migrate"], env=self.env, check=True, capture_output=True)
        self.process = subprocess.Popen(
            [*exe, "serve", "--port", str(self.port), "--workers", str(SERVER_WORKERS)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/metadata", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def auth(self) -> dict[str, str]:
        """A token the server trusts (development settings trust their own tokens)."""
        from ehr_service.config import Settings
        from ehr_service.security.tokens import TokenClaims, mint

        settings = Settings(data_dir=Path(self.env["EHR_DATA_DIR"]))
        token = mint(settings, TokenClaims("bench", "system/*.cruds", ttl_seconds=86_400))
        return {"Authorization": f"Bearer {token}"}

    def __exit__(self, *_exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=30)


def bench_backend(name: str, database_url: str, bundles: list[bytes]) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Server(database_url, Path(tmp)) as server,
        httpx.Client(timeout=300) as client,
    ):
        headers = {
            "Content-Type": "application/fhir+json",
            "Prefer": "return=minimal",
            **server.auth(),
        }
        locations: list[str] = []

        def post(raw: bytes) -> list[str]:
            response = client.post(server.base, content=raw, headers=headers)
            response.raise_for_status()
            return [
                e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]
            ]

        assert server.process is not None
        pid = server.process.pid
        started, cpu_before = time.perf_counter(), load_bench.tree_cpu(pid)
        with ThreadPoolExecutor(SERVER_WORKERS) as pool:  # one bundle in flight per process
            for written in pool.map(post, [raw for _ in range(ROUNDS) for raw in bundles]):
                locations += written
        count = len(locations)
        ingest_seconds = time.perf_counter() - started
        ingest_cpu = load_bench.tree_cpu(pid) - cpu_before
        latencies = []
        targets = [locations[(i * 7919) % len(locations)] for i in range(READS)]
        read_started = time.perf_counter()
        for target in targets:
            t0 = time.perf_counter()
            response = client.get(f"{server.base}/{target}", headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        read_seconds = time.perf_counter() - read_started
        # Under concurrent load: the service, then the bare endpoint (the ceiling).
        auth = server.auth()
        patients = [t for t in locations if t.startswith("Patient/")]
        print(f"  {name}: read and search under load ({load_bench.CONCURRENCY} in flight)")
        read_load = load_bench.load(
            lambda n: f"{server.base}/{targets[n % len(targets)]}", auth, server_pid=pid
        )
        search_load = load_bench.load(
            lambda n: (
                f"{server.base}/Observation?patient={patients[n % len(patients)]}"
                "&category=laboratory&_count=20"
            ),
            auth,
            server_pid=pid,
        )
        search_no_total = load_bench.load(
            lambda n: (
                f"{server.base}/Observation?patient={patients[n % len(patients)]}"
                "&category=laboratory&_count=20&_total=none"
            ),
            auth,
            server_pid=pid,
        )
        export = export_everything(client, server.base, auth, pid)
    with load_bench.BareServer(database_url, _free_port()) as bare:
        assert bare.process is not None
        bare_load = load_bench.load(
            lambda n: f"{bare.base}/{targets[n % len(targets)]}", {}, server_pid=bare.process.pid
        )
    return {
        "backend": name,
        "server_workers": SERVER_WORKERS,
        "ingested_resources": count,
        "ingest_seconds": round(ingest_seconds, 3),
        "ingest_resources_per_s": round(count / ingest_seconds, 1),
        "ingest_cpu_ms_per_resource": round(ingest_cpu * 1000 / count, 3),
        "reads": READS,
        "read_p50_ms": round(_percentile(latencies, 50), 3),
        "read_p95_ms": round(_percentile(latencies, 95), 3),
        "read_p99_ms": round(_percentile(latencies, 99), 3),
        "reads_per_s_sequential": round(READS / read_seconds, 1),
        "load_concurrency": load_bench.CONCURRENCY,
        "read_under_load": read_load,
        "search_under_load": search_load,
        "search_without_total_under_load": search_no_total,
        "bare_read_under_load": bare_load,
        "read_to_ceiling_ratio": round(
            read_load["requests_per_s"] / bare_load["requests_per_s"], 3
        ),
        "export": export,
    }


def export_everything(
    client: httpx.Client, base: str, auth: dict[str, str], pid: int
) -> dict[str, Any]:
    """System ``$export`` of everything ingested: resources/s from kick-off to the
    complete manifest, and the server's CPU per exported resource."""
    headers = {**auth, "Accept": "application/fhir+json", "Prefer": "respond-async"}
    started, cpu_before = time.perf_counter(), load_bench.tree_cpu(pid)
    kickoff = client.get(f"{base}/$export", headers=headers)
    assert kickoff.status_code == 202, kickoff.text
    status_url = kickoff.headers["Content-Location"]
    while True:
        status = client.get(status_url, headers=auth)
        if status.status_code == 200:
            break
        assert status.status_code == 202, status.text
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    cpu = load_bench.tree_cpu(pid) - cpu_before
    exported = sum(int(item.get("count", 0)) for item in status.json()["output"])
    return {
        "resources": exported,
        "seconds": round(seconds, 3),
        "resources_per_s": round(exported / seconds, 1),
        "cpu_ms_per_resource": round(cpu * 1000 / max(exported, 1), 4),
    }


def _fresh_citus(name: str) -> str | None:
    """A new database on the Citus cluster of EHR_BENCH_CITUS_URL, migrated and laid
    out for Citus (None when no cluster is configured)."""
    base = os.environ.get("EHR_BENCH_CITUS_URL")
    if not base:
        return None
    from ehr_service.config import PROJECT_ROOT
    from ehr_service.storage.database import Database
    from ehr_service.storage.migrate import distribute_database, upgrade
    from tests import citus_cluster

    parsed = make_url(normalise_url(base))
    citus_cluster.create(parsed, name)
    url = parsed.set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    upgrade(database, PROJECT_ROOT / "migrations")
    distribute_database(database)
    database.dispose()
    return url


def _fresh_pg(name: str) -> str | None:
    base = os.environ.get("EHR_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/x")
    return _pg_url(
        make_url(normalise_url(base)).set(database=name).render_as_string(hide_password=False)
    )


def bench_growth(
    name: str, url: str, sizes: list[int], bench: Any, per_item: int, unit: str
) -> list[dict[str, Any]]:
    """Load ``bench`` data in steps up to each size and measure its queries there.

    ``bench`` is a module with ``load(services, first, count)`` and
    ``measure(services, count)``; one item stands for ``per_item`` resources."""
    if not sizes:
        return []
    from ehr_service.app import build_services
    from ehr_service.config import Settings
    from ehr_service.storage.migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(Settings(database_url=url, data_dir=Path(tmp)))
        upgrade(services.database, services.settings.migrations_dir)
        rows: list[dict[str, Any]] = []
        loaded = 0
        try:
            for size in sizes:
                items = size // per_item
                started = time.perf_counter()
                bench.load(services, loaded, items - loaded)
                load_seconds = time.perf_counter() - started
                loaded = items
                figures = bench.measure(services, items)
                rows.append(
                    {
                        "backend": name,
                        unit: size,
                        f"load_{unit}_per_s": round(
                            (size - (rows[-1][unit] if rows else 0)) / load_seconds
                        ),
                        **{f"{q}_{k}": v for q, f in figures.items() for k, v in f.items()},
                    }
                )
                print(
                    f"  {name} {size:>9,} {unit}: "
                    + ", ".join(f"{q} p95 {f['p95_ms']:.2f} ms" for q, f in figures.items()),
                    flush=True,
                )
        finally:
            services.database.dispose()
    base = rows[0]
    for row in rows:
        for query in figures:
            row[f"{query}_p95_growth"] = round(row[f"{query}_p95_ms"] / base[f"{query}_p95_ms"], 2)
    return rows


def growth_on_both(
    name: str, bench: Any, per_item: int, unit: str, sqlite: tuple[str, str], pg: tuple[str, str]
) -> list[dict[str, Any]]:
    """``bench_growth`` on SQLite, then on a fresh PostgreSQL database if reachable;
    sizes from the environment variable of each pair, or its default."""
    rows = bench_growth(
        "sqlite", f"sqlite:///{tempfile.mkdtemp()}/{name}.sqlite3", _sizes(*sqlite), bench,
        per_item, unit,
    )  # fmt: skip
    url = _fresh_pg(f"ehr_bench_{name}")
    if url:
        rows += bench_growth("postgresql", url, _sizes(*pg), bench, per_item, unit)
    return rows


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Print rows as a table: (header, key, format spec) per column, the first
    left-aligned."""
    widths = [
        max(len(h), *(len(format(r[k], f)) for r in rows)) + 2 if rows else len(h) + 2
        for h, k, f in columns
    ]
    cells = [[h for h, _, _ in columns]] + [[format(r[k], f) for _, k, f in columns] for r in rows]
    print()
    for n, line in enumerate(cells):
        print("".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ))  # fmt: skip
        if n == 0:
            print("-" * sum(widths))


def _sizes(variable: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(variable, default).split(",") if v]


SECTIONS = (
    "http",
    "search",
    "identity",
    "recognition",
    "signatures",
    "exchange",
    "crypto",
    "audit",
    "import",
)


def _wanted(section: str) -> bool:
    """EHR_BENCH_SECTIONS=http,import runs only those (default: all)."""
    chosen = os.environ.get("EHR_BENCH_SECTIONS", "")
    return not chosen or section in chosen.split(",")


def main() -> None:
    paths = sample_bundles()
    bundles = [p.read_bytes() for p in paths]
    validated, rate = validation_rate(bundles)
    print(f"samples: {len(paths)} bundles, {validated // ROUNDS} resources, {ROUNDS} rounds")
    print(f"validation only (fhir.resources R4B, 1 process): {rate:,.0f} resources/s")
    fast, exact = parse_cost(bundles)
    print(f"parse per round: orjson {fast * 1000:.1f} ms, exact decimals {exact * 1000:.1f} ms")
    backends = [("sqlite", f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3")]
    pg = _pg_url()
    if pg:
        backends.append(("postgresql", pg))
    citus = _fresh_citus("ehr_bench_citus")
    if citus:
        backends.append(("citus", citus))
    results: list[dict[str, Any]] = []
    search_rows: list[dict[str, Any]] = []
    mpi_rows: list[dict[str, Any]] = []
    recognition_rows: list[dict[str, Any]] = []
    exchange_rows: list[dict[str, Any]] = []
    import_rows: list[dict[str, Any]] = []
    if _wanted("http"):
        for name, url in backends:
            result = bench_backend(name, url, bundles)
            result["validation_only_resources_per_s"] = round(rate, 1)
            result["ingest_to_validation_ratio"] = round(result["ingest_resources_per_s"] / rate, 3)
            # What keeping decimals exact adds, as a share of this backend's ingest time.
            per_round = result["ingest_seconds"] / ROUNDS
            result["exact_parse_share"] = round((exact - fast) / per_round, 4)
            results.append(result)
        _table(results, [
            ("backend", "backend", ""), ("procs", "server_workers", "d"),
            ("ingest res/s", "ingest_resources_per_s", ",.0f"),
            ("valid. res/s", "validation_only_resources_per_s", ",.0f"),
            ("ratio", "ingest_to_validation_ratio", ".2f"),
            ("CPU ms/res", "ingest_cpu_ms_per_resource", ".3f"),
            ("exact parse", "exact_parse_share", ".1%"), ("read p50 ms", "read_p50_ms", ".2f"),
            ("read p95 ms", "read_p95_ms", ".2f"), ("read p99 ms", "read_p99_ms", ".2f"),
            ("reads/s", "reads_per_s_sequential", ",.0f"),
        ])  # fmt: skip
        loads = [
            {"what": f"{r['backend']} {label}", **r[key]}
            for r in results
            for label, key in (
                ("read", "read_under_load"),
                ("bare read (ceiling)", "bare_read_under_load"),
                ("patient search", "search_under_load"),
                ("patient search, _total=none", "search_without_total_under_load"),
            )
        ]
        _table(loads, [
            ("under load", "what", ""), ("req/s", "requests_per_s", ",.0f"),
            ("p50 ms", "p50_ms", ".2f"), ("p95 ms", "p95_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"),
            ("CPU ms/req", "cpu_ms_per_request", ".2f"), ("failed", "failures", "d"),
        ])  # fmt: skip
        for r in results:
            print(f"{r['backend']} read / ceiling: {r['read_to_ceiling_ratio']:.2f}")
        exports = [{"backend": r["backend"], **r["export"]} for r in results]
        _table(exports, [
            ("system $export", "backend", ""), ("resources", "resources", ",d"),
            ("res/s", "resources_per_s", ",.0f"), ("CPU ms/res", "cpu_ms_per_resource", ".4f"),
        ])  # fmt: skip

    if _wanted("search"):
        print("\nsearch latency as the database grows (in-process, no HTTP):", flush=True)
        from tests.bench import search_bench

        search_rows = growth_on_both(
            "search", search_bench, search_bench.PER_PATIENT, "resources",
            ("EHR_BENCH_SQLITE_SIZES", "10000,100000"),
            ("EHR_BENCH_PG_SIZES", "10000,100000,1000000"),
        )  # fmt: skip
        _table(search_rows, [
            ("backend", "backend", ""), ("resources", "resources", ","),
            ("load res/s", "load_resources_per_s", ","),
            ("pat+code+date p50", "patient+code+date_p50_ms", ".2f"),
            ("p95", "patient+code+date_p95_ms", ".2f"),
            ("growth", "patient+code+date_p95_growth", ".2f"),
            ("identifier p95", "identifier_p95_ms", ".2f"),
            ("$everything p95", "$everything_p95_ms", ".2f"),
            ("growth", "$everything_p95_growth", ".2f"),
        ])  # fmt: skip

    if _wanted("identity"):
        print("\nresident identity as the register grows (in-process, no HTTP):", flush=True)
        from tests.bench import mpi_bench

        mpi_rows = growth_on_both(
            "mpi", mpi_bench, 1, "residents",
            ("EHR_BENCH_SQLITE_RESIDENTS", "10000,100000"),
            ("EHR_BENCH_PG_RESIDENTS", "100000,1000000"),
        )  # fmt: skip
        _table(mpi_rows, [
            ("backend", "backend", ""), ("residents", "residents", ","),
            ("load/s", "load_residents_per_s", ","),
            ("identifier p50", "identifier_p50_ms", ".2f"), ("p95", "identifier_p95_ms", ".2f"),
            ("$match id p50", "$match id_p50_ms", ".2f"), ("p95", "$match id_p95_ms", ".2f"),
            ("$match demogr. p50", "$match demographics_p50_ms", ".2f"),
            ("p95", "$match demographics_p95_ms", ".2f"),
            ("found@1", "$match demographics_found_at_1", ".2f"),
        ])  # fmt: skip

    if _wanted("recognition"):
        print("\n$recognizable-results as stored results grow (in-process, no HTTP):", flush=True)
        from tests.bench import recognition_bench

        recognition_rows = growth_on_both(
            "recognition", recognition_bench, recognition_bench.PER_PATIENT, "results",
            ("EHR_BENCH_SQLITE_RESULTS", "10000,100000"),
            ("EHR_BENCH_PG_RESULTS", "10000,100000,1000000"),
        )  # fmt: skip
        _table(recognition_rows, [
            ("backend", "backend", ""), ("results", "results", ","),
            ("load res/s", "load_results_per_s", ","),
            ("p50 ms", "$recognizable-results_p50_ms", ".2f"),
            ("p95 ms", "$recognizable-results_p95_ms", ".2f"),
            ("growth", "$recognizable-results_p95_growth", ".2f"),
        ])  # fmt: skip

    signature_rows: list[dict[str, Any]] = []
    if _wanted("signatures"):
        print("\nexchange signatures, one message of 20 KiB (in-process):", flush=True)
        from tests.bench import signature_bench

        signature_rows = signature_bench.run()
        _table(signature_rows, [
            ("alg", "alg", ""), ("sign/s", "sign_per_s", ","), ("verify/s", "verify_per_s", ","),
            ("sign vs ES256", "sign_vs_es256", ".2f"),
            ("verify vs ES256", "verify_vs_es256", ".2f"),
        ])  # fmt: skip

    if _wanted("exchange"):
        print("\nsigned exchange ingest (in-process, no HTTP):", flush=True)
        from tests.bench import exchange_bench

        messages = int(os.environ.get("EHR_BENCH_EXCHANGE_MESSAGES", "200"))
        for suite in ("international", "national"):
            exchange_rows.append(exchange_bench.run(
                "sqlite", f"sqlite:///{tempfile.mkdtemp()}/exchange.sqlite3", messages,
                suite=suite,
            ))  # fmt: skip
            pg_exchange = _fresh_pg(f"ehr_bench_exchange_{suite}")
            if pg_exchange:
                exchange_rows.append(
                    exchange_bench.run("postgresql", pg_exchange, messages, suite=suite)
                )
        _table(exchange_rows, [
            ("backend", "backend", ""), ("suite", "suite", ""), ("messages", "messages", "d"),
            ("KiB/msg", "message_kib", ".1f"), ("msg/s", "messages_per_s", ".1f"),
            ("results/s", "results_per_s", ","), ("written res/s", "stored_resources_per_s", ","),
            ("verify ms", "verify_ms_per_message", ".3f"),
            ("verify share", "verify_share_of_ingest", ".1%"),
            ("sign ms", "sign_ms_per_message", ".3f"),
        ])  # fmt: skip

    crypto_rows: list[dict[str, Any]] = []
    if _wanted("crypto"):
        print("\ncryptographic suites (in-process): international (AES-256-GCM, HMAC-SHA-256,"
              " SHA-256) beside national (SM4-GCM, HMAC-SM3, SM3):", flush=True)  # fmt: skip
        from tests.bench import crypto_bench

        crypto_rows = crypto_bench.run()
        _table(crypto_rows, [
            ("operation", "operation", ""), ("international /s", "international_per_s", ",.0f"),
            ("national /s", "national_per_s", ",.0f"),
            ("national/international", "national_over_international", ".2f"),
        ])  # fmt: skip

    audit_rows: list[dict[str, Any]] = []
    if _wanted("audit"):
        print("\naudit size and retention (in-process, a mix of creates, reads and searches):",
              flush=True)  # fmt: skip
        from tests.bench import audit_bench

        audited = int(os.environ.get("EHR_BENCH_AUDIT_REQUESTS", "3000"))
        audit_rows = [
            audit_bench.run("sqlite", f"sqlite:///{tempfile.mkdtemp()}/audit.sqlite3", audited)
        ]
        pg_audit = _fresh_pg("ehr_bench_audit")
        if pg_audit:
            audit_rows.append(audit_bench.run("postgresql", pg_audit, audited))
        _table(audit_rows, [
            ("backend", "backend", ""), ("events", "events", ","),
            ("JSON B/event", "json_bytes_per_event", ","),
            ("online B/event", "online_bytes_per_event", ","),
            ("archived B/event", "archived_bytes_per_event", ","),
            ("seal ev/s", "seal_events_per_s", ","), ("archive ev/s", "archive_events_per_s", ","),
            ("verify ev/s", "verify_events_per_s", ","),
        ])  # fmt: skip

    if _wanted("import"):
        print("\nbulk import of generated records (ehr-service import):", flush=True)
        from tests.bench import import_bench

        residents = int(os.environ.get("EHR_BENCH_IMPORT_RESIDENTS", "1000"))
        import_rows = [import_bench.run("sqlite", None, residents)]
        pg_import = _fresh_pg("ehr_bench_import")
        if pg_import:
            import_rows.append(import_bench.run("postgresql", pg_import, residents))
        citus_import = _fresh_citus("ehr_bench_citus_import")
        if citus_import:
            import_rows.append(import_bench.run("citus", citus_import, residents))
        _table(import_rows, [
            ("backend", "backend", ""), ("resources", "resources", ","),
            ("workers", "workers", "d"), ("import res/s", "import_resources_per_s", ","),
            ("valid. res/s", "validation_only_resources_per_s", ",.0f"),
            ("seconds", "import_seconds", ".1f"), ("re-run s", "rerun_seconds", ".1f"),
            ("peak MB", "peak_rss_mb", ","), ("bytes/res", "storage_bytes_per_resource", ","),
        ])  # fmt: skip
        _table(import_rows, [
            ("backend", "backend", ""), ("largest record", "largest_record_resources", ","),
            ("$everything pages", "everything_pages", "d"),
            ("page p50 ms", "everything_page_p50_ms", ".2f"),
            ("page max ms", "everything_page_max_ms", ".2f"),
            ("all once", "everything_complete", ""),
            ("duplicates", "everything_duplicates", "d"),
        ])  # fmt: skip

    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "date": stamp,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "results": results,
        "search": search_rows,
        "identity": mpi_rows,
        "signatures": signature_rows,
        "exchange": exchange_rows,
        "recognition": recognition_rows,
        "import": import_rows,
        "crypto": crypto_rows,
        "audit": audit_rows,
    }
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
