"""The walk's single-flight: one call per key however many threads ask, outcomes remembered."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from retention.inventory import _SingleFlight


def test_concurrent_callers_share_one_call() -> None:
    flight: _SingleFlight[str] = _SingleFlight()
    calls: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def fetch() -> str:
        calls.append("config")
        started.set()
        release.wait(10)
        return "parsed"

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(flight.get, "sha256:aa", fetch)
        assert started.wait(10)
        # seven more ask while the first call is still running
        waiting = [pool.submit(flight.get, "sha256:aa", fetch) for _ in range(7)]
        release.set()
        results = [first.result(10), *(w.result(10) for w in waiting)]
    assert results == ["parsed"] * 8
    assert calls == ["config"]
    # and once finished, later callers get the remembered value without a call
    assert flight.get("sha256:aa", fetch) == "parsed"
    assert calls == ["config"]


def test_keys_are_independent() -> None:
    flight: _SingleFlight[int] = _SingleFlight()
    assert flight.get("a", lambda: 1) == 1
    assert flight.get("b", lambda: 2) == 2
    assert flight.get("a", lambda: 3) == 1


def test_a_failure_is_remembered_not_retried() -> None:
    flight: _SingleFlight[int] = _SingleFlight()
    calls = 0

    def fetch() -> int:
        nonlocal calls
        calls += 1
        raise LookupError("missing")

    for _ in range(3):
        with pytest.raises(LookupError, match="missing"):
            flight.get("k", fetch)
    assert calls == 1


def test_none_is_a_value_too() -> None:
    flight: _SingleFlight[int | None] = _SingleFlight()
    calls = 0

    def fetch() -> None:
        nonlocal calls
        calls += 1

    assert flight.get("k", fetch) is None
    assert flight.get("k", fetch) is None
    assert calls == 1


def test_callers_waiting_on_a_failing_call_get_its_failure() -> None:
    flight: _SingleFlight[str] = _SingleFlight()
    started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def fetch() -> str:
        calls.append("config")
        started.set()
        release.wait(10)
        raise LookupError("gone")

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(flight.get, "k", fetch)
        assert started.wait(10)
        waiting = [pool.submit(flight.get, "k", fetch) for _ in range(3)]
        release.set()
        for future in [first, *waiting]:
            with pytest.raises(LookupError, match="gone"):
                future.result(10)
    assert calls == ["config"]
