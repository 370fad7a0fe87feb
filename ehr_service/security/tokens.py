"""Bearer tokens (docs/architecture.md §9): JWTs verified against a JWKS, with an algorithm
allow-list and required ``exp iat iss aud``.

Trusted keys come from ``EHR_JWKS_FILE`` / ``EHR_JWKS_URL`` (fetched and cached,
selected by ``kid``), and, in development and test settings or when
``EHR_TRUST_OWN_TOKENS`` is set, from the service's own token key, which
``ehr-service token mint`` signs development tokens with. The key never comes
from the token itself (no ``jwk``/``jku`` header is honoured), ``none`` and HMAC
are never accepted, and a ``kid`` is only ever a dictionary key.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from ehr_service.config import Settings
from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import Category, FhirError, Issue
from ehr_service.security.caller import Caller
from ehr_service.security.fieldcrypto import write_private
from ehr_service.security.scopes import admin_roles, parse_scopes, role_conflict

ALLOWED_ALGORITHMS = ["ES256", "EdDSA", "Ed25519", "RS256"]
OWN_KEY_FILE = "token-signing.jwk.json"
MAX_CLAIM_CHARS = 255  # what the audit trail records of a caller
MAX_TOKEN_BYTES = 8192
VERIFIED_CACHE_SIZE = 10_000  # tokens remembered per process, by SHA-256 digest
JWKS_REFETCH_SECONDS = 60.0
logger = logging.getLogger(__name__)


class InvalidToken(FhirError):  # noqa: N818 - a FHIR error category, not a Python error name
    """401 with the ``WWW-Authenticate`` challenge of RFC 6750."""

    @classmethod
    def because(cls, reason: str) -> InvalidToken:
        return cls(
            Category.UNAUTHORIZED,
            (Issue(f"Bearer token rejected: {reason}", "login"),),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def missing_token() -> FhirError:
    return FhirError(
        Category.UNAUTHORIZED,
        (Issue("This endpoint needs a bearer token (Authorization: Bearer ...)", "login"),),
        headers={"WWW-Authenticate": 'Bearer realm="ehr-service"'},
    )


def own_key(settings: Settings) -> ECKey:
    """The service's own token key (ES256), created on first use, owner-only."""
    path = settings.data_dir / "keys" / OWN_KEY_FILE
    if path.exists():
        key = ECKey.import_key(jsonio.loads(path.read_bytes()))
        return key
    key = ECKey.generate_key("P-256", auto_kid=True, private=True)
    write_private(path, jsonio.dumps(key.as_dict(private=True)))
    return key


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    scopes: str
    patient: str | None = None
    organization: str | None = None
    client_id: str | None = None
    ttl_seconds: int = 3600
    region: str | None = None
    purpose: str | None = None  # purpose_of_use, a v3 ActReason code


def mint(settings: Settings, claims: TokenClaims) -> str:
    """A development token signed with the service's own key. Scopes no one may hold
    together (two administrator roles, the audit administrator with other rights)
    are refused: ``ValueError``."""
    conflict = role_conflict(claims.scopes)
    if conflict is not None:
        raise ValueError(conflict)
    if admin_roles(claims.scopes.split()) and claims.patient:
        raise ValueError("administrator roles are not for patient-bound tokens")
    key = own_key(settings)
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": settings.own_token_issuer,
        "aud": settings.token_audience,
        "sub": claims.subject,
        "iat": now,
        "exp": now + claims.ttl_seconds,
        "scope": claims.scopes,
        "client_id": claims.client_id or claims.subject,
    }
    if claims.patient:
        payload["patient"] = claims.patient
    if claims.organization:
        payload["org"] = claims.organization
    if claims.region:
        payload["region"] = claims.region
    if claims.purpose:
        payload["purpose_of_use"] = claims.purpose
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, payload, key)


class TokenVerifier:
    """Verifies bearer tokens; one per process. Remote JWKS are cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._remote: KeySet | None = None
        self._remote_at = 0.0
        self._local: list[Any] = []
        self.issuers = set(settings.token_issuers)
        self._verified: dict[bytes, tuple[Caller, float]] = {}
        if settings.jwks_file is not None:
            self._local.extend(_load_jwks(settings.jwks_file).keys)
        if settings.trusts_own_tokens:
            self._local.append(own_key(settings))
            self.issuers.add(settings.own_token_issuer)

    def _keys(self, refresh: bool = False) -> KeySet:
        keys = list(self._local)
        url = self.settings.jwks_url
        if url:
            with self._lock:
                age = time.monotonic() - self._remote_at
                stale = age > self.settings.jwks_cache_seconds
                # an unknown kid refetches, but at most once a minute (forged kids)
                if self._remote is None or stale or (refresh and age > JWKS_REFETCH_SECONDS):
                    try:
                        response = httpx.get(url, timeout=5.0)
                        response.raise_for_status()
                        self._remote = KeySet.import_key_set(response.json())
                        self._remote_at = time.monotonic()
                    except (httpx.HTTPError, ValueError, JoseError) as exc:
                        logger.warning("JWKS at %s could not be fetched: %s", url, exc)
                if self._remote is not None:
                    keys.extend(self._remote.keys)
        return KeySet(keys)

    @property
    def may_fetch(self) -> bool:
        """Can verifying a new token wait on the network (a remote JWKS)?"""
        return bool(self.settings.jwks_url)

    def cached(self, token: str) -> Caller | None:
        """The caller of a token verified before and not expired since."""
        entry = self._verified.get(hashlib.sha256(token.encode()).digest())
        if entry is None:
            return None
        caller, until = entry
        if time.time() >= until:
            return None
        return caller

    def verify(self, token: str) -> Caller:
        """Verify ``token`` (signature and claims); remembered by its digest until
        it expires, or the key set may have changed (JWKS cache time), whichever
        comes first. A token that fails is never remembered."""
        caller, expires = self._verify(token)
        until = min(expires + self.settings.token_clock_skew_seconds,
                    time.time() + max(self.settings.jwks_cache_seconds, 0))  # fmt: skip
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # a flood of distinct tokens: start again
        self._verified[hashlib.sha256(token.encode()).digest()] = (caller, until)
        return caller

    def _verify(self, token: str) -> tuple[Caller, float]:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken.because("too long")
        keys = self._keys()
        try:
            decoded = jwt.decode(token, keys, algorithms=ALLOWED_ALGORITHMS)
        except JoseError as exc:
            if "kid" in str(exc).lower() and self.settings.jwks_url:  # maybe rotated: refetch
                try:
                    decoded = jwt.decode(
                        token, self._keys(refresh=True), algorithms=ALLOWED_ALGORITHMS
                    )
                except JoseError as again:
                    raise InvalidToken.because(_reason(again)) from None
            else:
                raise InvalidToken.because(_reason(exc)) from None
        except (ValueError, TypeError):
            raise InvalidToken.because("malformed") from None
        return self._caller(decoded.claims), float(decoded.claims["exp"])

    def _caller(self, claims: dict[str, Any]) -> Caller:
        now = time.time()
        skew = self.settings.token_clock_skew_seconds
        for name in ("exp", "iat", "iss", "aud", "sub"):
            if name not in claims:
                raise InvalidToken.because(f"the claim '{name}' is required")
        exp, iat = claims["exp"], claims["iat"]
        if not (_numeric_date(exp) and _numeric_date(iat)):
            raise InvalidToken.because("exp and iat must be numeric dates")
        if exp <= now - skew:
            raise InvalidToken.because("expired")
        if iat > now + skew:
            raise InvalidToken.because("issued in the future")
        if "nbf" in claims and (not _numeric_date(claims["nbf"]) or claims["nbf"] > now + skew):
            raise InvalidToken.because("not yet valid")
        if not isinstance(claims["iss"], str) or claims["iss"] not in self.issuers:
            raise InvalidToken.because("unknown issuer")
        audience = claims["aud"]
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.token_audience not in audiences:
            raise InvalidToken.because("wrong audience")
        subject = claims["sub"]
        scope = claims.get("scope", "")
        if not isinstance(subject, str) or not isinstance(scope, str):
            raise InvalidToken.because("sub and scope must be strings")
        patient = claims.get("patient")
        organization = claims.get("org") or claims.get("organization")
        client_id = claims.get("client_id") or claims.get("azp")
        scopes = parse_scopes(scope)
        if patient is not None and not isinstance(patient, str):
            raise InvalidToken.because("patient must be a string")
        if any(len(str(v)) > MAX_CLAIM_CHARS for v in (subject, organization, client_id, patient)):
            raise InvalidToken.because(
                f"sub, org, client_id and patient are at most {MAX_CLAIM_CHARS} characters"
            )
        if any(s.context == "patient" for s in scopes) and not patient:
            raise InvalidToken.because("patient/ scopes need a patient claim")
        conflict = role_conflict(scope)
        if conflict is not None:  # a valid token, but one no one may hold: 403, not 401
            raise FhirError.of(Category.FORBIDDEN, f"Token refused: {conflict}", code="forbidden")
        if admin_roles(scope.split()) and any(s.context == "patient" for s in scopes):
            raise FhirError.of(
                Category.FORBIDDEN,
                "Token refused: administrator roles are not for patient-bound tokens",
                code="forbidden",
            )
        return Caller(
            subject=subject,
            client_id=str(client_id) if client_id else None,
            organization=str(organization) if organization else None,
            scopes=frozenset(scope.split()),
            grants=scopes,
            patient=patient if any(s.context == "patient" for s in scopes) else None,
            sees_id_numbers=not any(s.context == "patient" for s in scopes),
            authenticated=True,
            purpose=_purpose(claims.get("purpose_of_use")),
            region=str(claims["region"]) if isinstance(claims.get("region"), str) else None,
        )


def _numeric_date(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def purpose_code(value: Any) -> str | None:
    """The v3 ActReason code a token's ``purpose_of_use`` names, or None if malformed."""
    if isinstance(value, str) and value.isascii() and value.isalnum() and len(value) <= 16:
        return value.upper()
    return None


def _purpose(value: Any) -> str:
    """A v3 ActReason code from the token (TREAT when absent or malformed)."""
    return purpose_code(value) or "TREAT"


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("unsupported_algorithm", "bad_signature", "missing_key", "invalid_key", "decode"):
        if known in text:
            return known.replace("_", " ")
    return "invalid"


def _load_jwks(path: Path) -> KeySet:
    return KeySet.import_key_set(jsonio.loads(path.read_bytes()))
