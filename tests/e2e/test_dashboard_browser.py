"""The operations dashboard in a real browser: headless Chromium (the system's
chromium and chromedriver, driven by Selenium) against a live server with generated
data. The figures on the page must equal $recognition-stats for the same period.
Screenshots go to test-output/ (git-ignored)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ehr_service.config import PROJECT_ROOT
from ehr_service.recognition.rules import RETEST_SYSTEM
from tests.api.cds_helpers import ALT, GLUCOSE, SERVICE, draft, hook_request, resident
from tests.e2e.test_two_regions import Server, _free_port
from tests.helpers import make_id_number

OUTPUT = PROJECT_ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        reason = "the dashboard browser test needs chromium and chromedriver " \
                 "(apt-get install chromium chromium-driver)"  # fmt: skip
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,2600", "--lang=zh-CN"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server("chongqing", _free_port(), tmp_path_factory.mktemp("dashboard"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def generate(server: Server) -> None:
    """Residents with recognisable results, offered through CDS Hooks and decided:
    reused, re-tested for a national reason, overridden with a reason."""
    staff = {"Authorization": f"Bearer {server.staff}"}
    with httpx.Client(base_url=server.url, headers=staff, timeout=30) as client:
        for n, answers in enumerate([(0, 0), (0, 4), ("critical-decision", 0)]):
            number = make_id_number(sequence=f"{201 + 2 * n}")
            ids = resident(client, number)  # type: ignore[arg-type]  # an httpx client serves
            pid = ids["patient"]
            body = hook_request("order-sign", pid, [draft(f"g{n}", GLUCOSE, pid),
                                                    draft(f"a{n}", ALT, pid)],
                                fhir_server=f"{server.url}/fhir")  # fmt: skip
            response = client.post(f"/cds-services/{SERVICE['order-sign']}", json=body)
            assert response.status_code == 200, response.text
            (card,) = response.json()["cards"]
            first, _ = answers
            if isinstance(first, str):
                reason = {"system": RETEST_SYSTEM, "code": first}
                entry: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden",
                                         "overrideReason": {"reason": reason}}  # fmt: skip
            else:
                chosen = card["suggestions"][answers[1]]["uuid"]
                entry = {"card": card["uuid"], "outcome": "accepted",
                         "acceptedSuggestions": [{"id": chosen}]}  # fmt: skip
            entry["outcomeTimestamp"] = "2026-12-01T00:00:00Z"
            sent = client.post(f"/cds-services/{SERVICE['order-sign']}/feedback",
                               json={"feedback": [entry]})  # fmt: skip
            assert sent.status_code == 200, sent.text


def stats_totals(server: Server, start: str, end: str) -> dict[str, Any]:
    response = server.fhir("GET", "/$recognition-stats",
                           params={"from": start, "to": end, "groupBy": "item"})  # fmt: skip
    assert response.status_code == 200, response.text
    totals: dict[str, Any] = {"offered": 0, "accepted": 0, "retested": 0, "testsAvoided": 0,
                              "cost": 0.0, "items": {}}  # fmt: skip
    for group in response.json()["parameter"]:
        if group["name"] != "group":
            continue
        parts = {p["name"]: p for p in group["part"]}
        row = {k: parts[k]["valueInteger"] for k in ("offered", "accepted", "retested")}
        for name in ("offered", "accepted", "retested"):
            totals[name] += row[name]
        totals["testsAvoided"] += parts["testsAvoided"]["valueInteger"]
        totals["cost"] += parts["costAvoided"]["valueMoney"]["value"]
        totals["items"][parts["group"]["valueString"]] = row
    return totals


def test_the_dashboard_shows_the_recognition_stats(browser: Any, live: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    generate(live)
    operator = live.cli("token", "mint", "--scope", "ehr/operations").strip()
    browser.get(f"{live.url}/dashboard")
    browser.find_element(By.ID, "token").send_keys(operator)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    start = browser.find_element(By.ID, "from").get_attribute("value")
    end = browser.find_element(By.ID, "to").get_attribute("value")
    expected = stats_totals(live, start, end)
    assert expected["accepted"] == 1 and expected["retested"] == 2  # the data generated

    def shown(element_id: str) -> str:
        return str(browser.find_element(By.ID, element_id).text)

    assert shown("kpi-offered") == str(expected["offered"])
    assert shown("kpi-accepted") == str(expected["accepted"])
    assert shown("kpi-retested") == str(expected["retested"])
    assert shown("kpi-avoided") == str(expected["testsAvoided"])
    assert shown("kpi-cost") == f"{expected['cost']:.2f}"
    assert shown("kpi-rate") == f"{expected['accepted'] / expected['offered'] * 100:.1f}%"
    table = {}
    for line in browser.find_elements(By.CSS_SELECTOR, "#table-item tbody tr"):
        cells = {c.get_attribute("class"): c.text for c in line.find_elements(By.TAG_NAME, "td")}
        table[cells["group"]] = {k: int(cells[k]) for k in ("offered", "accepted", "retested")}
    assert table == expected["items"]
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-daily .main-svg")  # plotly drew
    assert shown("kpi-chain") != "-"
    OUTPUT.mkdir(exist_ok=True)
    titles = {"区域运行监控": "zh", "Regional operations": "en"}
    first = titles[browser.find_element(By.TAG_NAME, "h1").text]  # the browser's language
    shots = [OUTPUT / f"dashboard-{first}.png"]
    assert browser.save_screenshot(str(shots[0]))
    browser.find_element(By.ID, "lang").click()  # the switch: the other language
    other = next(title for title, lang in titles.items() if lang != first)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "h1").text == other)
    assert shown("kpi-accepted") == str(expected["accepted"])
    shots.append(OUTPUT / f"dashboard-{titles[other]}.png")
    assert browser.save_screenshot(str(shots[1]))
    assert all(Path(shot).stat().st_size > 10_000 for shot in shots)
    print("screenshots:", *shots)  # where the run left them
