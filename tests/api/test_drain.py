"""The shutdown drain's middleware, at the ASGI level: a request runs in the task
that called it (no task and no wait of its own per request), is registered while it
runs, and is cancelled at the drain's deadline and answered with a 503
OperationOutcome if its response had not started. The same against a real server
is in test_http_limits.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from ehr_service.api import server as server_module
from ehr_service.api.server import Drain, DrainMiddleware

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def statuses(self) -> list[int]:
        return [m["status"] for m in self.messages if m["type"] == "http.response.start"]


@pytest.fixture
def drain(monkeypatch: pytest.MonkeyPatch) -> Drain:
    fresh = Drain()
    monkeypatch.setattr(server_module, "DRAIN", fresh)
    return fresh


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_request_runs_in_its_callers_task_and_is_registered_meanwhile(drain: Drain) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["task"] = asyncio.current_task()
        seen["registered"] = asyncio.current_task() in drain.running
        await _ok(scope, receive, send)

    async def call() -> None:
        sent = Sent()
        await DrainMiddleware(app)(SCOPE, _receive, sent)
        assert seen["task"] is asyncio.current_task()
        assert sent.statuses == [200]

    asyncio.run(call())
    assert seen["registered"] and not drain.running and not drain.cut


def test_the_deadline_answers_requests_still_running_with_a_503(drain: Drain) -> None:
    finished: list[str] = []

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            finished.append("cleaned up")  # the app unwinds before the answer

    async def call() -> Sent:
        sent = Sent()
        request = asyncio.ensure_future(DrainMiddleware(slow, retry_after=7)(SCOPE, _receive, sent))
        await asyncio.sleep(0.01)
        drain.start(0.5)  # the deadline: at once (a second before the drain's end)
        await asyncio.wait_for(request, 5)
        assert not request.cancelled() and request.cancelling() == 0
        return sent

    sent = asyncio.run(call())
    assert finished == ["cleaned up"]
    assert sent.statuses == [503]
    headers = dict(sent.messages[0]["headers"])
    assert headers[b"retry-after"] == b"7" and headers[b"connection"] == b"close"
    outcome = json.loads(sent.messages[1]["body"])
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert not drain.running and not drain.cut


def test_a_response_already_started_is_not_answered_twice(drain: Drain) -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[", "more_body": True})
        await asyncio.sleep(10)

    async def call() -> Sent:
        sent = Sent()
        request = asyncio.ensure_future(DrainMiddleware(streaming)(SCOPE, _receive, sent))
        await asyncio.sleep(0.01)
        drain.start(0.0)
        await asyncio.wait_for(request, 5)
        return sent

    assert asyncio.run(call()).statuses == [200]


def test_other_cancellations_go_on_and_drain_time_requests_are_refused(drain: Drain) -> None:
    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(10)

    async def call() -> Sent:
        sent = Sent()
        request = asyncio.ensure_future(DrainMiddleware(slow)(SCOPE, _receive, sent))
        await asyncio.sleep(0.01)
        request.cancel()  # the server gave up on it, not the drain
        with pytest.raises(asyncio.CancelledError):
            await request
        assert not drain.running
        drain.start(30.0)
        late = Sent()
        await DrainMiddleware(slow)(SCOPE, _receive, late)  # answered at once
        assert late.statuses == [503]
        return sent

    assert asyncio.run(call()).messages == []
