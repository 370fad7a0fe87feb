"""Every exchanged message, kept for proof (docs/architecture.md §8): the exact bytes (sealed
at rest with the data key, AES-256-GCM or SM4-GCM by the suite: they carry resident
ID numbers), the detached JWS, and what the receiver answered. ``ehr-service exchange
verify`` checks them again, years later, against the key history of the partner or
of this region; ``reseal_archive`` seals them again after a data key rotation. A
message of several suites is kept with its signature set (``exchange/suites.py``):
each of its signatures must verify again."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from ehr_service.exchange import envelope as jws
from ehr_service.exchange import suites
from ehr_service.exchange.envelope import Envelope, EnvelopeError, VerifyKey
from ehr_service.exchange.keys import SigningKeys
from ehr_service.exchange.partners import PartnerError, PartnerRegistry
from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import utc_now
from ehr_service.security.fieldcrypto import Keyring, SealError
from ehr_service.security.sm2 import DEFAULT_ID
from ehr_service.storage import exchange as store
from ehr_service.storage.unit_of_work import UnitOfWork


@dataclass(frozen=True, slots=True)
class Reply:
    """A signed answer: the status, the exact body bytes and their JWS."""

    status: int
    body: bytes
    signature: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    issuer: str
    jti: str
    direction: str
    ok: bool
    reason: str


class Archive:
    def __init__(
        self,
        unit: UnitOfWork,
        keyring: Keyring,
        keys: SigningKeys,
        partners: PartnerRegistry,
        exchange_id: str,
        *,
        crypto_suite: str = suites.INTERNATIONAL,
        sm2_id: bytes = DEFAULT_ID,
    ) -> None:
        self.unit = unit
        self.keyring = keyring
        self.keys = keys
        self.partners = partners
        self.exchange_id = exchange_id
        self.crypto_suite = crypto_suite
        self.sm2_id = sm2_id

    @staticmethod
    def _associated(issuer: str, jti: str) -> str:
        return f"exchange-message:{issuer}/{jti}"

    # -- signing ---------------------------------------------------------------------
    def suites_for(self, partner_id: str) -> tuple[str, ...]:
        """The suites of messages between this region and the partner."""
        try:
            theirs = self.partners.get(partner_id).suite
        except PartnerError:
            theirs = self.crypto_suite  # an unknown sender is refused by its key
        shared = suites.common(self.crypto_suite, theirs)
        if not shared:
            raise FhirError.of(
                Category.FORBIDDEN,
                f"This region signs with the {self.crypto_suite} cryptographic suite and "
                f"{partner_id} is registered for the {theirs} one: they share none [suite]",
                code="security",
            )
        return shared

    def sign(
        self, body: bytes, *, aud: str, htm: str, htu: str, suites_used: tuple[str, ...]
    ) -> tuple[str, str]:
        """(signature set, jti) over ``body``: one JWS per suite, each with this region's
        active key of that suite, all with the same claims."""
        jti, now = str(uuid.uuid4()), time.time()
        signatures = {}
        for suite in suites_used:
            active = self.keys.active(suite)
            if active is None:
                raise FhirError.of(
                    Category.UNAVAILABLE,
                    f"This region has no active signing key of the {suite} suite "
                    f"(ehr-service keys generate --alg {suites.DEFAULT_ALG[suite]})",
                    code="exception",
                )
            info, key = active
            signatures[suite] = jws.sign(
                body, key, kid=info.kid, alg=info.alg, iss=self.exchange_id, aud=aud, htm=htm,
                htu=htu, jti=jti, now=now, sm2_id=self.sm2_id,
            )  # fmt: skip
        return suites.join(signatures), jti

    # -- storing ---------------------------------------------------------------------
    def claim(
        self,
        conn: Connection,
        envelope: Envelope,
        body: bytes,
        signature: str,
        digest: str,
        direction: str,
        *,
        partner_id: str | None = None,
    ) -> bool:
        """Store a message; False when its (issuer, jti) is taken (a replay)."""
        return store.claim_message(
            conn,
            {
                "issuer": envelope.iss,
                "jti": envelope.jti,
                "direction": direction,
                "partner_id": partner_id or envelope.iss,
                "kid": envelope.kid,
                "alg": envelope.alg,
                "issued": datetime.fromtimestamp(envelope.iat, UTC),
                "recorded": utc_now(),
                "body_sha256": digest,
                "body": self.keyring.seal_bytes(body, self._associated(envelope.iss, envelope.jti)),
                "signature": signature,
                "status": 0,
            },
        )

    def answer(
        self, conn: Connection, envelope: Envelope, status: int, body: bytes, *, signature: bool
    ) -> Reply:
        """Record (and sign) the answer to a received message."""
        signed = None
        if signature:
            signed, _ = self.sign(
                body, aud=envelope.iss, htm=envelope.htm, htu=envelope.htu,
                suites_used=self.suites_for(envelope.iss),
            )  # fmt: skip
        store.set_response(conn, envelope.iss, envelope.jti, status, body, signed)
        return Reply(status, body, signed)

    def record_response(
        self, conn: Connection, issuer: str, jti: str, status: int, body: bytes, signature: str
    ) -> None:
        store.set_response(conn, issuer, jti, status, body, signature)

    def earlier_reply(self, envelope: Envelope, digest: str) -> Reply | None:
        """The first answer to this message id, signed afresh; a 409 when the same
        id came with other bytes (a replay, not a retry)."""
        with self.unit.read() as conn:
            row = store.get_message(conn, envelope.iss, envelope.jti)
        if row is None:
            return None
        if row["body_sha256"] != digest:
            raise FhirError.of(
                Category.CONFLICT,
                "This message id was already used for other content [replay]",
                code="duplicate",
            )
        body = bytes(row["response"] or b"")
        signed, _ = self.sign(
            body, aud=envelope.iss, htm=envelope.htm, htu=envelope.htu,
            suites_used=self.suites_for(envelope.iss),
        )  # fmt: skip
        return Reply(int(row["status"]), body, signed)

    def body_of(self, row: dict[str, Any]) -> bytes:
        return self.keyring.open_bytes(
            bytes(row["body"]), self._associated(row["issuer"], row["jti"])
        )

    # -- verifying again ---------------------------------------------------------------
    def _key(self, issuer: str, kid: str) -> VerifyKey | None:
        if issuer == self.exchange_id:
            return self.keys.verification_key(kid)
        return self.partners.key(issuer, kid, signing=False)

    def verify_row(self, row: dict[str, Any]) -> Verdict:
        """Verify one stored message against the key history (not its age)."""
        issuer, jti = row["issuer"], row["jti"]

        def verdict(ok: bool, reason: str) -> Verdict:
            return Verdict(issuer, jti, row["direction"], ok, reason)

        try:
            body = self.body_of(row)
        except SealError as error:
            return verdict(False, f"stored bytes cannot be opened: {error}")
        if hashlib.sha256(body).hexdigest() != row["body_sha256"]:
            return verdict(False, "stored bytes differ from their digest")
        try:
            signatures = list(suites.split(row["signature"]).values())
            if not signatures:
                raise EnvelopeError("malformed", "no signature is stored")
            for signature in signatures:  # each suite's signature verifies alone
                header = jws.protected_header(signature)
                jws.verify(
                    body,
                    signature,
                    key_for=self._key,
                    audience=str(header.get("aud")),
                    htm=str(header.get("htm")),
                    htu=str(header.get("htu")),
                    now=float(header["iat"]) if isinstance(header.get("iat"), int) else 0.0,
                    sm2_id=self.sm2_id,
                )
                if header.get("iss") != issuer or header.get("jti") != jti:
                    return verdict(False, "the signature names another message")
        except EnvelopeError as error:
            if error.reason == "unknown-key":
                return verdict(False, "the signing key is unknown or has been revoked")
            return verdict(False, f"{error.reason}: {error}")
        return verdict(True, "verified")

    def walk(
        self, *, issuer: str | None = None, jti: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stored messages, one (issuer and jti), one issuer's, or all."""
        if issuer is not None and jti is not None:
            with self.unit.read() as conn:
                row = store.get_message(conn, issuer, jti)
            if row is not None:
                yield row
            return
        after: tuple[str, str] | None = None
        while True:
            with self.unit.read() as conn:
                page = store.messages(conn, after=after)
            for row in page:
                if issuer is None or row["issuer"] == issuer:
                    yield row
            if not page:
                return
            after = (page[-1]["issuer"], page[-1]["jti"])

    def verify_all(
        self, *, issuer: str | None = None, jti: str | None = None,
        on_result: Callable[[Verdict], None] | None = None,
    ) -> list[Verdict]:  # fmt: skip
        verdicts = []
        for row in self.walk(issuer=issuer, jti=jti):
            result = self.verify_row(row)
            verdicts.append(result)
            if on_result:
                on_result(result)
        return verdicts


def reseal_archive(unit: UnitOfWork, keyring: Keyring, batch: int = 200) -> tuple[int, int]:
    """Seal again, with the active data key, every stored message an older key (or
    another suite's cipher) sealed: (re-sealed, unopenable). The bytes within are
    the same bytes, so their digest and signature still verify."""
    resealed = unopenable = 0
    after: tuple[str, str] | None = None
    while True:
        with unit.write() as conn:
            page = store.messages(conn, after=after, limit=batch)
            for row in page:
                sealed = bytes(row["body"])
                if keyring.key_id_of_bytes(sealed) == keyring.active.kid:
                    continue
                associated = Archive._associated(row["issuer"], row["jti"])
                try:
                    body = keyring.open_bytes(sealed, associated)
                except SealError:
                    unopenable += 1  # left as it is: exchange verify names it
                    continue
                store.replace_body(
                    conn, row["issuer"], row["jti"], keyring.seal_bytes(body, associated)
                )
                resealed += 1
        if len(page) < batch:
            return resealed, unopenable
        after = (page[-1]["issuer"], page[-1]["jti"])
