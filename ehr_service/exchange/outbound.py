"""Sending results to partner regions (docs/architecture.md §8).

The outbox rows are written with the results themselves (see
:mod:`ehr_service.exchange.sharing`). Here they leave:

- **push**: due rows of a partner are leased, built into one signed collection
  Bundle (each result with its resident's Patient), POSTed to the partner's
  endpoint, and marked sent when the partner's signed receipt verifies. Failures
  back off exponentially; after the last attempt a row is dead-lettered, visible
  in ``ehr-service exchange status`` and revived with ``exchange retry``;
- **feed**: a partner pulls a signed Bundle of what changed for it after a cursor;
- **pull**: this region reads a partner's feed and ingests it like a push.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from ehr_service.exchange import suites
from ehr_service.exchange.archive import Archive
from ehr_service.exchange.envelope import Envelope, EnvelopeError
from ehr_service.exchange.inbound import Inbound, refused
from ehr_service.exchange.partners import Partner, PartnerError, PartnerRegistry
from ehr_service.exchange.sharing import shared_with
from ehr_service.fhir import jsonio
from ehr_service.fhir.errors import FhirError
from ehr_service.fhir.primitives import format_instant, new_id, utc_now
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.results import Result
from ehr_service.recognition.marks import performer_of
from ehr_service.security.caller import Caller
from ehr_service.security.scopes import parse_scopes
from ehr_service.storage import exchange as store
from ehr_service.storage import partners as partner_store
from ehr_service.storage import unit_of_work

logger = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)  # a pusher's hold on the rows it is sending
MAX_BACKOFF = timedelta(hours=1)
FEED_PATH = "/exchange/v1/feed"
BUNDLES_PATH = "/exchange/v1/bundles"


@dataclass(slots=True)
class PushReport:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def feed_url_of(endpoint: str) -> str:
    """A partner's feed, beside its push endpoint."""
    parts = urlsplit(endpoint)
    root = parts.path[: -len(BUNDLES_PATH)] if parts.path.endswith(BUNDLES_PATH) else ""
    return f"{parts.scheme}://{parts.netloc}{root}{FEED_PATH}"


class Outbound:
    def __init__(
        self,
        services: Any,
        partners: PartnerRegistry,
        archive: Archive,
        inbound: Inbound,
        client: httpx.Client | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.partners = partners
        self.archive = archive
        self.inbound = inbound
        self.client = client or httpx.Client(timeout=30.0)

    # -- what a message carries -------------------------------------------------------
    def shareable(self, partner_id: str, rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
        """(rows still to share, rows withdrawn): at send time the result must still be
        final and the resident must not have refused the partner since it was queued."""
        keep: list[dict[str, Any]] = []
        withdrawn: list[dict[str, Any]] = []
        with self.services.unit.read() as conn:
            contents = store.current_contents(conn, [(r["res_type"], r["res_id"]) for r in rows])
            for row in rows:
                found = contents.get((row["res_type"], row["res_id"]))
                ok = (
                    found is not None
                    and found[1] is not None
                    and partner_id
                    in shared_with(
                        conn,
                        row["res_type"],
                        jsonio.loads(found[1]),
                        row["patient_id"],
                        self.settings.sharing_policy,
                    )
                )
                (keep if ok else withdrawn).append(row)
        return keep, withdrawn

    def bundle(self, rows: list[dict[str, Any]]) -> bytes:
        """A collection Bundle of the current versions of the rows' results, each
        resident's Patient and each performing institution once (its quality control
        travels with it), ID numbers readable (the partner matches on them)."""
        keys = [(r["res_type"], r["res_id"]) for r in rows]
        keys += [("Patient", r["patient_id"]) for r in rows]
        with self.services.unit.read() as conn:
            contents = store.current_contents(conn, list(dict.fromkeys(keys)))
            performers = []
            for key, (_version, content) in contents.items():
                if content is not None and key[0] != "Patient":
                    performer = performer_of(key[0], jsonio.loads(content))
                    if performer is not None:
                        performers.append(("Organization", performer.partition("/")[2]))
            contents.update(store.current_contents(conn, list(dict.fromkeys(performers))))
        keys += performers
        protection = self.services.identity.protection
        entries = []
        order = {"Organization": 0, "Patient": 1}
        for key in sorted(dict.fromkeys(keys), key=lambda k: order.get(k[0], 2)):
            found = contents.get(key)
            if found is None or found[1] is None:
                continue  # deleted since: nothing to send
            resource = jsonio.loads(protection.present(found[1], reveal=True))
            entry: dict[str, Any] = {"resource": resource}
            if self.settings.base_url:
                entry["fullUrl"] = f"{self.settings.base_url.rstrip('/')}/{key[0]}/{key[1]}"
            entries.append(entry)
        return jsonio.dumps(
            {
                "resourceType": "Bundle",
                "id": new_id(),
                "meta": {"lastUpdated": format_instant(utc_now())},
                "type": "collection",
                "entry": entries,
            }
        )

    # -- push ------------------------------------------------------------------------
    def push(self, *, partner_id: str | None = None, now: datetime | None = None) -> PushReport:
        report = PushReport()
        for partner in self.partners.list():
            if partner.endpoint and partner_id in (None, partner.partner_id):
                while self._push_batch(partner, report, now or utc_now()):
                    pass
        return report

    def _push_batch(self, partner: Partner, report: PushReport, now: datetime) -> bool:
        with self.services.unit.write() as conn:
            rows = store.due(conn, partner.partner_id, now, self.settings.exchange_push_batch)
            store.mark(conn, [r["seq"] for r in rows], next_attempt=now + LEASE)
        if not rows:
            return False
        seqs = [r["seq"] for r in rows]
        assert partner.endpoint is not None
        try:
            rows, withdrawn = self.shareable(partner.partner_id, rows)
            if withdrawn:
                with self.services.unit.write() as conn:
                    store.mark(conn, [r["seq"] for r in withdrawn], state="withdrawn")
                seqs = [r["seq"] for r in rows]
            if not rows:
                return True
            body = self.bundle(rows)
            while len(body) > self.settings.max_body_bytes // 2 and len(rows) > 1:
                rows, later = rows[: len(rows) // 2], rows[len(rows) // 2 :]  # by size too
                with self.services.unit.write() as conn:
                    store.mark(conn, [r["seq"] for r in later], next_attempt=now)
                seqs = [r["seq"] for r in rows]
                body = self.bundle(rows)
            status, jti = self._deliver(partner, body)
        except (
            httpx.HTTPError,
            EnvelopeError,
            PartnerError,
            _UndeliveredError,
            ValueError,
            FhirError,
        ) as exc:
            self._failed(partner, rows, now, str(exc)[:1000], report)
            return False  # the partner is unwell: the rest waits for the next round
        with self.services.unit.write() as conn:
            store.mark(conn, seqs, state="sent", message_jti=jti, last_error=None)
            self._audit(conn, partner, status, rows)
        report.sent += len(rows)
        return True

    def _deliver(self, partner: Partner, body: bytes) -> tuple[int, str]:
        assert partner.endpoint is not None
        shared = self.archive.suites_for(partner.partner_id)
        signature, jti = self.archive.sign(
            body, aud=partner.audience, htm="POST", htu=partner.endpoint, suites_used=shared
        )
        response = self.client.post(
            partner.endpoint,
            content=body,
            headers={
                "Content-Type": "application/fhir+json",
                "Authorization": f"Bearer {self._token(partner)}",
                **suites.headers(signature),
            },
        )
        if response.status_code != 200:
            raise _UndeliveredError(f"HTTP {response.status_code}: {response.text[:300]}")
        signed = suites.from_headers(response.headers.get)
        if not signed:
            raise _UndeliveredError("the partner's answer is not signed")
        # The receipt: signed by the partner, to us, for the same method and URL, in
        # every suite we share.
        _, receipt = self._verified(partner, response.content, signed, shared, "POST",
                                    partner.endpoint)  # fmt: skip
        try:
            answered = jsonio.loads(response.content).get("identifier", {}).get("value")
        except (orjson.JSONDecodeError, AttributeError):
            answered = None
        if answered != f"{self.settings.exchange_id}/{jti}":
            raise _UndeliveredError("the receipt is for another message")
        alg, kid, iat = suites.summary(signature)
        envelope = Envelope(
            alg, kid, self.settings.exchange_id, partner.audience, iat, 0, jti, "POST",
            partner.endpoint,
        )  # fmt: skip
        with self.services.unit.write() as conn:
            self.archive.claim(
                conn, envelope, body, signature, hashlib.sha256(body).hexdigest(), "out",
                partner_id=partner.partner_id,
            )  # fmt: skip
            self.archive.record_response(
                conn, envelope.iss, jti, response.status_code, response.content, receipt
            )
        return response.status_code, jti

    def _verified(
        self, partner: Partner, body: bytes, signatures: dict[str, str],
        shared: tuple[str, ...], htm: str, htu: str,
    ) -> tuple[Envelope, str]:  # fmt: skip
        """A signed answer of the partner (a receipt, a feed page), in every suite."""
        return suites.verify_set(
            body,
            signatures,
            shared,
            key_for=lambda iss, kid: (
                self.partners.key(iss, kid, signing=True) if iss == partner.partner_id else None
            ),
            audience=self.settings.exchange_id,
            htm=htm,
            htu=htu,
            skew=self.settings.exchange_clock_skew_seconds,
            sm2_id=self.archive.sm2_id,
        )

    def _token(self, partner: Partner) -> str:
        path = self.settings.data_dir / "keys" / "partner-tokens" / f"{partner.partner_id}.jwt"
        try:
            return str(path.read_text()).strip()
        except OSError:
            raise _UndeliveredError(
                f"no bearer token for {partner.partner_id} "
                "(ehr-service partner token PARTNER --file TOKEN)"
            ) from None

    def _failed(
        self,
        partner: Partner,
        rows: list[dict[str, Any]],
        now: datetime,
        error: str,
        report: PushReport,
    ) -> None:
        logger.warning("push to %s failed: %s", partner.partner_id, error)
        report.errors.append(f"{partner.partner_id}: {error}")
        first = timedelta(seconds=self.settings.exchange_retry_seconds)
        with self.services.unit.write() as conn:
            for row in rows:
                attempts = row["attempts"] + 1
                if attempts >= self.settings.exchange_max_attempts:
                    store.mark(conn, [row["seq"]], state="dead", attempts=attempts,
                               last_error=error)  # fmt: skip
                    report.dead += 1
                    continue
                delay = min(first * (2 ** (attempts - 1)), MAX_BACKOFF)
                store.mark(conn, [row["seq"]], attempts=attempts, next_attempt=now + delay,
                           last_error=error)  # fmt: skip
                report.failed += 1

    def _audit(self, conn: Any, partner: Partner, status: int, rows: list[dict[str, Any]]) -> None:
        caller = Caller(subject=self.settings.exchange_id, organization=None, internal=False,
                        authenticated=True, region=partner.region)  # fmt: skip
        event = self.services.auditor.new_event(
            interaction="exchange_push",
            status=status,
            caller=caller,
            patients=frozenset(r["patient_id"] for r in rows),
            what=None,
            query=f"partner={partner.partner_id}",
        )
        unit_of_work.record(conn, event)

    # -- feed (a partner pulls) -----------------------------------------------------------
    def feed(
        self, ctx: RequestContext, *, after: int, since: datetime | None, count: int, url: str,
        next_url: str,
    ) -> tuple[bytes, str, Result]:  # fmt: skip
        partner = self.partner_of(ctx.caller)
        settle = timedelta(seconds=self.settings.exchange_feed_settle_seconds)
        with self.services.unit.read() as conn:
            rows = store.feed_rows(
                conn, partner.partner_id, after=after, since=since, before=utc_now() - settle,
                limit=count,
            )  # fmt: skip
        cursor = rows[-1]["seq"] if rows else after
        shared, _withdrawn = self.shareable(partner.partner_id, rows)
        document = jsonio.loads(self.bundle(shared)) if shared else _empty()
        document["link"] = [
            {"relation": "self", "url": url},
            {"relation": "next", "url": next_url.format(cursor=cursor)},
        ]
        body = jsonio.dumps(document)
        signature, _ = self.archive.sign(
            body, aud=partner.audience, htm="GET", htu=url,
            suites_used=self.archive.suites_for(partner.partner_id),
        )  # fmt: skip
        patients = frozenset(r["patient_id"] for r in shared)  # what was disclosed
        return body, signature, Result(200, body, patients=patients)

    def partner_of(self, caller: Caller) -> Partner:
        """The partner a bearer token belongs to (its client id is the partner id)."""
        if caller.kind == "system":
            for name in (caller.client_id, caller.subject):
                if name:
                    try:
                        return self.partners.get(name)
                    except PartnerError:
                        continue
        raise refused(403, "caller", "The feed is for registered partner systems only")

    # -- pull (we read a partner's feed) ----------------------------------------------------
    def pull(self, partner_id: str, ctx: RequestContext, *, count: int = 100) -> int:
        """Read the partner's feed from our cursor on; returns results ingested."""
        partner = self.partners.get(partner_id)
        if not partner.endpoint:
            raise PartnerError(f"partner {partner_id} has no endpoint to pull from")
        caller = Caller(
            subject=partner.partner_id,
            client_id=partner.partner_id,
            grants=parse_scopes(" ".join(f"system/{t}.cu" for t in partner.allowed_types)),
            authenticated=True,
            sees_id_numbers=True,
            region=partner.region,
        )
        pctx = replace(ctx, caller=caller, interaction="exchange_pull")
        ingested = 0
        while True:
            with self.services.unit.read() as conn:
                cursor = partner_store.feed_cursor(conn, partner_id)
            url = f"{feed_url_of(partner.endpoint)}?_cursor={cursor}&_count={count}"
            response = self.client.get(
                url, headers={"Authorization": f"Bearer {self._token(partner)}"}
            )
            if response.status_code != 200:
                raise PartnerError(f"the feed answered HTTP {response.status_code}")
            envelope, signature = self._verified(
                partner, response.content, suites.from_headers(response.headers.get),
                self.archive.suites_for(partner.partner_id), "GET", url,
            )  # fmt: skip
            document = jsonio.loads(response.content)
            entries = document.get("entry") or []
            if entries:
                self.inbound.ingest(pctx, envelope, response.content, signature, direction="pull")
                ingested += sum(
                    1 for e in entries if (e.get("resource") or {}).get("resourceType") != "Patient"
                )
            next_cursor = _cursor_of(document)
            if next_cursor is None or next_cursor == cursor:
                return ingested
            with self.services.unit.write() as conn:
                partner_store.set_feed_cursor(conn, partner_id, next_cursor)
            if len(entries) == 0:
                return ingested


class _UndeliveredError(Exception):
    """The partner did not take the message."""


def _empty() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": format_instant(utc_now())},
        "type": "collection",
    }


def _cursor_of(document: dict[str, Any]) -> int | None:
    for link in document.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next":
            values = parse_qs(urlsplit(str(link.get("url"))).query).get("_cursor")
            if values and values[0].isdigit():
                return int(values[0])
    return None
