"""/docs and /redoc work on a closed network: every script, style and icon their
HTML names is on the service's own origin, and answers with JavaScript, CSS or an
image from the packaged asset bundle (no CDN, no web fonts)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from ehr_service.app import create_app
from ehr_service.interactions.context import Services


class _Links(HTMLParser):
    """Every URL an element loads or links to, and Swagger UI's spec URL."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "spec-url"} and value is not None:
                self.urls.append((tag, value))

    def handle_data(self, data: str) -> None:
        self.urls += [("script", url) for url in re.findall(r"url: '([^']*)'", data)]


def _anonymous(services: Services, **options: str) -> TestClient:
    return TestClient(create_app(services=services), raise_server_exceptions=False, **options)


def _urls(html: str) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


EXPECTED = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}


@pytest.mark.parametrize(("page", "needs"), [("/docs", {".js", ".css", ".json"}),
                                             ("/redoc", {".js", ".json"})])  # fmt: skip
def test_the_pages_load_only_same_origin_assets(
    services: Services, page: str, needs: set[str]
) -> None:
    with _anonymous(services) as client:  # no token: the pages are public, like discovery
        response = client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert "http://" not in html and "https://" not in html, html  # no absolute URL
        urls = _urls(html)
        kinds = {url[url.rfind(".") :] for _, url in urls}
        assert needs <= kinds, urls
        for _, url in urls:
            assert url.startswith("/") and not url.startswith("//"), url  # same origin
            asset = client.get(url)
            assert asset.status_code == 200, url
            suffix = url[url.rfind(".") :]
            assert EXPECTED[suffix] in asset.headers["content-type"], (url, asset.headers)
            assert len(asset.content) > 1000, url  # the real bundle, not a stub


def test_swagger_ui_calls_no_outside_validator(services: Services) -> None:
    with _anonymous(services) as client:
        html = client.get("/docs").text
    assert '"validatorUrl": null' in html
    assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in html
    with _anonymous(services) as client:
        assert client.get("/docs/oauth2-redirect").status_code == 200


def test_behind_a_path_prefix_the_urls_keep_it(services: Services) -> None:
    with _anonymous(services, root_path="/ehr") as client:
        for page in ("/docs", "/redoc"):
            urls = [url for _, url in _urls(client.get(page).text)]
            assert urls and all(url.startswith("/ehr/") for url in urls), urls


def test_an_unknown_asset_is_a_404(services: Services) -> None:
    with _anonymous(services) as client:
        assert client.get("/docs/assets/nothing.js").status_code == 404
        assert client.get("/docs/assets/../../../etc/passwd").status_code == 404
