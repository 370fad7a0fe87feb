"""Audit events of concurrent reads share one transaction (group commit), and each
caller returns only once its own event has been written."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ehr_service.audit.events import GroupCommit


def test_concurrent_events_are_written_once_in_shared_groups() -> None:
    groups: list[list[Any]] = []
    written: set[Any] = set()
    lock = threading.Lock()

    def write(events: list[Any]) -> None:
        time.sleep(0.02)  # a commit takes a while: others queue meanwhile
        with lock:
            groups.append(list(events))
            written.update(events)

    group = GroupCommit(write)

    def submit(n: int) -> bool:
        group.submit(n)  # type: ignore[arg-type]
        with lock:
            return n in written  # already committed when submit returns

    with ThreadPoolExecutor(16) as pool:
        seen = list(pool.map(submit, range(200)))
    assert all(seen)
    assert sorted(e for g in groups for e in g) == list(range(200))  # each exactly once
    assert len(groups) < 100  # shared: far fewer transactions than events


def test_a_failed_group_fails_each_of_its_callers_and_the_next_group_goes_on() -> None:
    fail = threading.Event()
    fail.set()
    started = threading.Event()

    def write(events: list[Any]) -> None:
        started.set()
        time.sleep(0.05)
        if fail.is_set() and 0 in events:
            raise RuntimeError("database down")

    group = GroupCommit(write)
    errors: list[BaseException] = []

    def submit(n: int) -> None:
        try:
            group.submit(n)  # type: ignore[arg-type]
        except RuntimeError as exc:
            errors.append(exc)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    started.wait()
    others = [threading.Thread(target=submit, args=(n,)) for n in (1, 2, 3)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert len(errors) == 1  # only event 0's group failed; 1-3 went in the next one
    fail.clear()
    group.submit(0)  # type: ignore[arg-type]
    assert len(errors) == 1  # and no caller was left waiting


def test_an_error_reaches_the_caller() -> None:
    def broken(events: list[Any]) -> None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        GroupCommit(broken).submit(1)  # type: ignore[arg-type]
