"""The figures of the regional operations dashboard (``/dashboard``), as JSON.

Nothing here queries anew: recognition comes from ``$recognition-stats`` (its
Parameters, read back into rows, per item, institution and region for the period
and per day for the trend), exchange, audit and traffic from the Prometheus
samples of ``/metrics`` and the partner registry, which the caller hands in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection

from ehr_service.fhir.errors import Category, FhirError
from ehr_service.fhir.primitives import utc_now
from ehr_service.interactions.context import RequestContext
from ehr_service.interactions.recognition import stats_parameters
from ehr_service.recognition.rules import local_day, parse_day
from ehr_service.security.policy import require_operator

MAX_DAYS = 92  # the trend's longest period (one stats query a day)
DEFAULT_DAYS = 30


def _period(query: dict[str, list[str]]) -> tuple[date, date]:
    today = local_day(utc_now())
    days = []
    for name, default in (("from", today - timedelta(days=DEFAULT_DAYS - 1)), ("to", today)):
        value = (query.get(name) or [""])[0]
        day = parse_day(value) if value and len(value) == 10 else None
        if value and day is None:
            raise FhirError.of(Category.INCORRECT, f"{name} must be a date (YYYY-MM-DD)",
                               code="value", expression=[name])  # fmt: skip
        days.append(day or default)
    start, end = days
    if end < start or (end - start).days >= MAX_DAYS:
        raise FhirError.of(Category.INCORRECT,
                           f"from..to must be a period of 1 to {MAX_DAYS} days",
                           code="value", expression=["from"])  # fmt: skip
    return start, end


def rows(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """The groups of a ``$recognition-stats`` Parameters as plain rows."""
    out = []
    for group in parameters["parameter"]:
        if group["name"] != "group":
            continue
        row: dict[str, Any] = {"reasons": {}}
        for part in group["part"]:
            if part["name"] == "retestReason":
                reason, count = part["part"]
                row["reasons"][reason["valueCoding"]["code"]] = count["valueInteger"]
            elif part["name"] == "costAvoided":
                row["costAvoided"] = part["valueMoney"]["value"]
            else:
                row[part["name"]] = next(v for k, v in part.items() if k.startswith("value"))
        row["rate"] = _rate(row)
        out.append(row)
    return sorted(out, key=lambda r: (-r["offered"], str(r["group"])))


def _rate(row: dict[str, Any]) -> float | None:
    """Recognition rate: results reused of those offered (None when none was offered)."""
    return round(row["accepted"] / row["offered"], 4) if row["offered"] else None


def _totals(groups: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"offered": 0, "accepted": 0, "retested": 0, "testsAvoided": 0,
                             "costAvoided": 0.0, "reasons": defaultdict(int)}  # fmt: skip
    for row in groups:
        for name in ("offered", "accepted", "retested", "testsAvoided"):
            total[name] += row[name]
        total["costAvoided"] = round(total["costAvoided"] + row["costAvoided"], 2)
        for reason, count in row["reasons"].items():
            total["reasons"][reason] += count
    total["reasons"] = dict(sorted(total["reasons"].items()))
    total["rate"] = _rate(total)
    return total


def recognition(conn: Connection, ctx: RequestContext, query: dict[str, list[str]]) -> Any:
    """The period's figures by item, institution and region, totals and the daily trend."""
    require_operator(ctx.caller)
    start, end = _period(query)
    period = {"from": [start.isoformat()], "to": [end.isoformat()]}
    out: dict[str, Any] = {"from": start.isoformat(), "to": end.isoformat()}
    for group_by in ("item", "institution", "region"):
        out[group_by] = rows(stats_parameters(conn, {**period, "groupBy": [group_by]}))
    out["total"] = _totals(out["region"])
    daily = []
    day = start
    while day <= end:
        one = {"from": [day.isoformat()], "to": [day.isoformat()], "groupBy": ["region"]}
        daily.append({"day": day.isoformat(), **_totals(rows(stats_parameters(conn, one)))})
        day += timedelta(days=1)
    out["daily"] = daily
    return out


Sample = tuple[str, dict[str, str], float]  # metric sample: name, labels, value


def operations(samples: Iterable[Sample], partners: list[dict[str, Any]]) -> dict[str, Any]:
    """Exchange outbox by partner and state, dead letters, partner keys, the audit
    chain and the request and ingest counters (the page turns counters into rates)."""
    outbox: dict[str, dict[str, float]] = defaultdict(dict)
    requests: dict[str, float] = defaultdict(float)
    statuses: dict[str, float] = defaultdict(float)
    writes: dict[str, float] = defaultdict(float)
    audit: dict[str, float] = {}
    for name, labels, value in samples:
        if name == "ehr_exchange_outbox_rows":
            outbox[labels.get("partner", "-")][labels.get("state", "-")] = value
        elif name == "ehr_http_requests_total":
            requests[labels.get("interaction", "-")] += value
            statuses[labels.get("status", "-")[:1] + "xx"] += value
        elif name == "ehr_resource_writes_total":
            writes[labels.get("resource_type", "-")] += value
        elif name in ("ehr_audit_chain_length", "ehr_audit_unsealed_events",
                      "ehr_audit_unsealed_oldest_seconds"):  # fmt: skip
            audit[name.removeprefix("ehr_audit_")] = value
    dead = sum(states.get("dead", 0) for states in outbox.values())
    return {
        "outbox": {partner: dict(states) for partner, states in sorted(outbox.items())},
        "deadLetters": int(dead),
        "partners": partners,
        "audit": audit,
        "requests": {"total": sum(requests.values()), "byStatus": dict(sorted(statuses.items())),
                     "byInteraction": dict(sorted(requests.items(), key=lambda i: -i[1])[:12])},
        "writes": {"total": sum(writes.values()), "byType": dict(sorted(writes.items()))},
    }  # fmt: skip
