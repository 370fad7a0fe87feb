"""The operations dashboard's page, assets and JSON: operator scopes, figures equal to
$recognition-stats, exchange and audit from /metrics, bad periods refused."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from ehr_service.interactions.context import Services
from tests.api.cds_helpers import GLUCOSE, call, day, draft, hook_request, resident
from tests.helpers import bearer

FEEDBACK = "/cds-services/recognition-order-sign/feedback"


def decide(client: TestClient, ids: dict[str, str], n: int, suggestion: int) -> None:
    body = hook_request("order-sign", ids["patient"], [draft(f"o{n}", GLUCOSE, ids["patient"])])
    (card,) = call(client, "order-sign", body).json()["cards"]
    chosen = card["suggestions"][suggestion]["uuid"]
    entry = {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": chosen}],
             "outcomeTimestamp": "2026-12-01T00:00:00Z"}  # fmt: skip
    assert client.post(FEEDBACK, json={"feedback": [entry]}).status_code == 200


def test_the_page_and_its_assets_are_served_offline(client: TestClient) -> None:
    page = client.get("/dashboard", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "/dashboard/assets/plotly.min.js" in page.text and "https://" not in page.text
    plotly = client.get("/dashboard/assets/plotly.min.js", headers={"Authorization": ""})
    assert plotly.status_code == 200 and b"plotly.js" in plotly.content[:2000]
    assert plotly.headers["content-type"].startswith("text/javascript")
    script = client.get("/dashboard/assets/dashboard.js").text
    assert "sessionStorage" in script and "document.cookie" not in script
    assert client.get("/dashboard/assets/../app.py").status_code == 404
    assert client.get("/dashboard/assets/other.js").status_code == 404


def test_recognition_figures_are_the_stats(client: TestClient, services: Services) -> None:
    ids = resident(client)
    decide(client, ids, 1, 0)  # reused
    decide(client, ids, 2, 1)  # re-test: condition changed
    operator = bearer(services.settings, "ehr/operations")
    period = {"from": day(-6), "to": day(0)}
    response = client.get("/dashboard/api/recognition", params=period, headers=operator)
    assert response.status_code == 200, response.text
    figures: dict[str, Any] = response.json()
    stats = client.get("/fhir/$recognition-stats", params={**period, "groupBy": "item"}).json()
    (group,) = [g for g in stats["parameter"] if g["name"] == "group"]
    parts = {p["name"]: p for p in group["part"]}
    (item,) = figures["item"]
    assert item["group"] == "LAB-GLU" == parts["group"]["valueString"]
    assert item["offered"] == parts["offered"]["valueInteger"] == 1
    assert item["accepted"] == parts["accepted"]["valueInteger"] == 1
    assert item["retested"] == parts["retested"]["valueInteger"] == 1
    assert item["costAvoided"] == parts["costAvoided"]["valueMoney"]["value"] == 4.0
    assert item["rate"] == 1.0 and item["reasons"] == {"condition-changed": 1}
    # a re-test is of no institution's result (as with $recognition-decision)
    assert {r["group"] for r in figures["institution"]} == {"Organization/q1", "unknown"}
    assert figures["total"]["accepted"] == 1 and len(figures["daily"]) == 7
    assert figures["daily"][-1]["accepted"] == 1 and figures["daily"][0]["offered"] == 0
    earlier = {"from": day(-20), "to": day(-10)}
    before = client.get("/dashboard/api/recognition", params=earlier, headers=operator).json()
    assert before["item"] == [] and before["total"]["offered"] == 0


def test_operations_figures(client: TestClient, services: Services) -> None:
    admin = bearer(services.settings, "ehr/admin")
    client.get("/fhir/metadata")
    response = client.get("/dashboard/api/operations", headers=admin)
    assert response.status_code == 200, response.text
    figures = response.json()
    assert figures["requests"]["total"] >= 1 and "2xx" in figures["requests"]["byStatus"]
    assert {"chain_length", "unsealed_events"} <= set(figures["audit"])
    assert figures["deadLetters"] == 0 and figures["partners"] == []


def test_operator_scopes_and_bad_periods(client: TestClient, services: Services) -> None:
    url = "/dashboard/api/recognition"
    assert client.get(url, headers={"Authorization": ""}).status_code == 401
    for scopes in ("system/*.cruds", "user/Task.rs"):
        assert client.get(url, headers=bearer(services.settings, scopes)).status_code == 403
    citizen = bearer(services.settings, "patient/*.rs ehr/operations", patient="p1")
    assert client.get(url, headers=citizen).status_code == 403
    system = bearer(services.settings, "system/*.cruds")
    assert client.get("/dashboard/api/operations", headers=system).status_code == 403
    operator = bearer(services.settings, "ehr/operations")
    for period in ({"from": "2026-13-01"}, {"from": day(0), "to": day(-1)},
                   {"from": day(-100), "to": day(0)}, {"to": "yesterday"}):  # fmt: skip
        response = client.get(url, params=period, headers=operator)
        assert response.status_code == 400, (period, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
