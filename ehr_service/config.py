"""Typed settings, one place: every knob is an ``EHR_*`` environment variable."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ehr_service.locations import shipped_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default_data_dir() -> Path:
    return Path.cwd() / "data"


class Settings(BaseSettings):
    """Service settings. Defaults suit development on one machine."""

    model_config = SettingsConfigDict(env_prefix="EHR_", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: a SQLite file ehr.sqlite3 under data_dir",
    )
    database_pool_size: int = Field(default=20, ge=1, le=200)
    # How long to wait on PostgreSQL (docs/architecture.md §10); 0: no limit.
    database_connect_timeout_s: float = Field(
        default=5.0, ge=0, description="connection set-up, TCP and authentication (min 2)"
    )
    database_checkout_timeout_s: float = Field(
        default=5.0, ge=0, description="waiting for a free pooled connection"
    )
    database_keepalive_s: float = Field(
        default=10.0, ge=0, description="TCP keepalive idle time; a lost network breaks at 2x"
    )
    database_stall_s: float = Field(
        default=20.0,
        ge=0,
        description="a statement with no answer this long has its connection dropped "
        "(a stalled server); keep it above the statement timeout",
    )
    export_retention_hours: float = Field(
        default=24.0, ge=0, description="finished exports are deleted after this (0: kept)"
    )
    min_free_disk_mb: int = Field(
        default=512, ge=0, description="/readyz is not ready with less free in the data directory"
    )
    # HTTP limits below the application (ehr_service/api/server.py).
    http_max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="request line and headers; larger: 431"
    )
    http_max_headers: int = Field(default=100, ge=8, description="header lines; more: 431")
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, description="a request head must arrive within this; else 408"
    )
    http_body_timeout_s: float = Field(
        default=30.0, gt=0, description="longest gap between two bytes of a request body"
    )
    http_keep_alive_s: float = Field(default=5.0, gt=0, description="idle keep-alive connections")
    http_max_connections: int = Field(
        default=1000, ge=1, description="open connections per worker; more: 503"
    )
    shutdown_drain_s: float = Field(
        default=30.0, ge=1, description="on shutdown, running requests get this long (then 503)"
    )
    retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After of 503 answers (database unavailable)"
    )
    readiness_timeout_s: float = Field(
        default=2.0, gt=0, description="longest /readyz waits for its checks"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    base_url: str | None = Field(
        default=None,
        description="public base URL of the FHIR endpoint; default: taken from each request",
    )
    demo_data: bool = Field(default=False, description="load demo residents into an empty database")

    # Limits against exhaustion (docs/architecture.md §9): all answered with an OperationOutcome.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_bundle_entries: int = Field(default=10_000, ge=1)
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=1_000, ge=1)
    search_total: Literal["when-known", "accurate"] = Field(
        default="when-known",
        description="Bundle.total when a search has no _total: 'when-known' gives it when "
        "the first page holds every match (no COUNT query; clients that need it ask "
        "_total=accurate, or _count=0 / _summary=count), 'accurate' counts on every first page",
    )
    max_include_depth: int = Field(default=3, ge=1, description="_include:iterate rounds")
    max_include_count: int = Field(default=1_000, ge=1, description="included resources a page")
    statement_timeout_ms: int = Field(
        default=15_000, ge=0, description="longest a database statement may run (0: no limit)"
    )
    rate_limit_per_minute: int = Field(
        default=6_000, ge=0, description="requests per minute per client (0: no limit)"
    )
    rate_limit_burst: int = Field(default=1_000, ge=1, description="requests a client may burst")

    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to call the service (CORS, with preflight); "
        'empty: none (JSON list, e.g. ["https://app.example"])',
    )

    # Bearer tokens (docs/architecture.md §9).
    token_audience: str = Field(default="ehr-service", description="the aud tokens must carry")
    token_issuers: list[str] = Field(
        default_factory=list, description="issuers (iss) whose tokens are accepted"
    )
    jwks_file: Path | None = Field(default=None, description="JWKS file of trusted token keys")
    jwks_url: str | None = Field(default=None, description="JWKS URL of trusted token keys")
    jwks_cache_seconds: int = Field(default=300, ge=0)
    trust_own_tokens: bool | None = Field(
        default=None,
        description="accept tokens minted by `ehr-service token mint` "
        "(default: only in development and test environments)",
    )
    token_endpoint: str | None = Field(
        default=None, description="the authorization server's token endpoint (SMART discovery)"
    )
    authorization_endpoint: str | None = Field(
        default=None,
        description="the authorization server's authorize endpoint: with it, SMART discovery "
        "offers standalone patient launch (authorization code with PKCE)",
    )
    own_token_issuer: str = "ehr-service-dev"  # noqa: S105 - an issuer name, not a secret
    token_clock_skew_seconds: int = Field(default=60, ge=0, le=600)

    # Resident identity (docs/architecture.md §6).
    field_keys_file: Path | None = Field(
        default=None,
        description="key file of the blind index and data keys; "
        "default: keys/field-keys.json under data_dir, created on first run",
    )
    record_number_system: str = Field(
        default="urn:ehr-service:lifelong-record-number",
        description="identifier system of the private record numbers assigned before the "
        "national health-record numbers; records keep theirs as an identifier of use old",
    )
    record_division_code: str = Field(
        default="500000",
        pattern=r"^[0-9]{6}([0-9]{3}([0-9]{3})?)?$",
        description="administrative division of new health-record numbers (WS 365): the "
        "6-digit county-level code (GB/T 2260), optionally with the 3-digit township and "
        "3-digit village codes (000 when not given); a Patient address's division code "
        "in that county gives its own township and village",
    )

    # Signed cross-region exchange (docs/architecture.md §8).
    exchange_id: str = Field(
        default="ehr-service",
        pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$",
        description="this region's exchange id: the iss of its messages, as partners "
        "registered it, and the aud partners' messages must carry",
    )
    exchange_clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    exchange_push_batch: int = Field(default=100, ge=1, le=1000, description="results a push")
    exchange_max_attempts: int = Field(
        default=8, ge=1, description="push attempts before a result is dead-lettered"
    )
    exchange_retry_seconds: float = Field(
        default=30.0, gt=0, description="first retry delay; doubled each attempt (max 1 h)"
    )
    exchange_feed_settle_seconds: float = Field(
        default=0.0,
        ge=0,
        description="the feed also holds back results younger than this (PostgreSQL "
        "already holds back those of transactions still open)",
    )
    exchange_push_interval_seconds: float = Field(
        default=0.0, ge=0, description="in-process push worker period (0: off; use exchange push)"
    )
    # The cryptographic suite (GB/T 39786-2021, docs/architecture.md §6, §8, §9):
    # international = ES256/Ed25519 signatures, AES-256-GCM, HMAC-SHA-256 and SHA-256;
    # national = SM2 with SM3 signatures, SM4-GCM, HMAC-SM3 and SM3; both = signatures of
    # both suites, the national ciphers and hashes for new data. Every suite reads what
    # the others wrote.
    crypto_suite: Literal["international", "national", "both"] = Field(
        default="international",
        description="international (ES256, AES-256-GCM, SHA-256), national (SM2SM3, SM4-GCM, "
        "SM3) or both; partners are each registered for their signatures' suite",
    )
    sm2_distinguishing_id: str = Field(
        default="1234567812345678",
        min_length=1,
        max_length=1024,
        description="the SM2 signer identifier (GB/T 35276 default); partners must agree",
    )
    audit_anchors_file: Path | None = Field(
        default=None,
        description="where sealers append each signed block statement, outside the database "
        "(default: audit/anchors.jsonl in the data directory); audit verify checks the "
        "database against it",
    )
    audit_seal_seconds: float = Field(
        default=1.0,
        ge=0,
        description="how often each server process seals committed audit events into a "
        "signed block (0: never in the server; use ehr-service audit seal)",
    )
    audit_archive_dir: Path | None = Field(
        default=None,
        description="where archived audit segments are written (default: audit/segments in "
        "the data directory); audit verify reads them",
    )
    audit_online_days: float = Field(
        default=0,
        ge=0,
        description="signed audit blocks older than this are archived to segment files by "
        "the server once an hour (0: only by ehr-service audit archive)",
    )

    # Mutual recognition of results (docs/architecture.md §7).
    region: str = Field(
        default="chongqing", description="this service's region (results of its institutions)"
    )
    regions: list[str] = Field(
        default_factory=lambda: ["chongqing", "sichuan"],
        description="the regions of the recognition zone: an institution or a development "
        "token names one of these, EHR_REGION or a registered partner's region",
    )
    sharing_policy: Literal["opt-out", "consent-required"] = Field(
        default="opt-out",
        description="cross-region sharing: opt-out (every resident's results cross unless "
        "they refused the region) or consent-required (only residents with an active "
        "permit Consent for the other region: outbox, feed, inbound and its callers' "
        "queries alike; PIPL separate consent)",
    )
    health_card_verifier: Literal["none", "local-test"] = Field(
        default="none",
        description="who verifies scanned e-health card QR codes: none (resolution not "
        "offered) or local-test, a TEST DOUBLE of the national platform (refused in "
        "production)",
    )
    health_card_test_secret: str | None = Field(
        default=None, description="the local-test verifier's HMAC key (tests only)"
    )
    recognition_mark: str = Field(
        default="川渝HR", description="the tag recognisable results carry when served"
    )
    cds_fhir_servers: list[str] = Field(
        default_factory=list,
        description="FHIR servers of CDS clients this service may fetch from with the "
        "fhirAuthorization token a CDS Hooks request carries (base URLs, JSON list); "
        "any other fhirServer is refused (this service's own base is always read locally)",
    )
    cds_fetch_timeout_s: float = Field(
        default=3.0, gt=0, le=30, description="longest a CDS Hooks fetch from fhirServer may take"
    )
    dashboard_session_seconds: int = Field(
        default=900, ge=60, le=86_400,
        description="how long a dashboard session cookie stays valid",
    )  # fmt: skip

    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description="gen-0 garbage collection threshold of the server process (0: Python's)",
    )
    profiles_dir: Path = Field(default_factory=lambda: shipped_dir("fhir_profiles"))
    migrations_dir: Path = Field(default_factory=lambda: shipped_dir("migrations"))
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one object per line (request id, client, ...)"
    )

    @model_validator(mode="after")
    def _page_sizes_consistent(self) -> Settings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
        return self

    @model_validator(mode="after")
    def _no_test_double_in_production(self) -> Settings:
        if self.health_card_verifier == "local-test" and self.environment == "production":
            raise ValueError("the local-test e-health card verifier is a test double")
        return self

    @property
    def effective_audit_anchors_file(self) -> Path:
        return self.audit_anchors_file or self.data_dir / "audit" / "anchors.jsonl"

    @property
    def effective_audit_archive_dir(self) -> Path:
        return self.audit_archive_dir or self.data_dir / "audit" / "segments"

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'ehr.sqlite3'}"

    @property
    def signing_keys_dir(self) -> Path:
        return self.data_dir / "keys" / "signing"

    @property
    def trusts_own_tokens(self) -> bool:
        if self.trust_own_tokens is not None:
            return self.trust_own_tokens
        return self.environment in {"development", "test"}

    @property
    def effective_field_keys_file(self) -> Path:
        return self.field_keys_file or self.data_dir / "keys" / "field-keys.json"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")
