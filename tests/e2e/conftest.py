"""A live server for the client suites, on SQLite, with its own data directory
and port and a staff token from ``token mint``.

One per test session (so one per xdist worker that runs any of these tests,
started when the first of them needs it): starting a server costs seconds, and
each test makes the resources it checks, so they share it safely.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.test_two_regions import Server, _free_port


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server("chongqing", _free_port(), tmp_path_factory.mktemp("live"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
