"""The walk's fan-out: every item once, results in order, the first failure stops the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.inventory import _fan_out


def run(
    work: Callable[[int], object], items: list[int], concurrency: int = 4
) -> tuple[list[object], list[tuple[str, int, int]]]:
    reports: list[tuple[str, int, int]] = []
    with ThreadPoolExecutor(concurrency) as pool:
        results = _fan_out(
            pool,
            concurrency,
            lambda phase, done, total: reports.append((phase, done, total)),
            "tags",
            work,
            items,
        )
    return results, reports


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(), max_size=200), st.integers(1, 9))
def test_results_are_in_item_order_whatever_the_concurrency(
    items: list[int], concurrency: int
) -> None:
    results, reports = run(lambda n: n * 2, items, concurrency)
    assert results == [n * 2 for n in items]
    if items:
        assert reports[-1] == ("tags", len(items), len(items))
    else:
        assert reports == []


def test_each_item_is_worked_exactly_once_across_threads() -> None:
    seen: list[int] = []
    threads: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(4, timeout=10)

    def work(n: int) -> int:
        if n < 4:
            barrier.wait()  # the first four items are in four workers at once
        with lock:
            seen.append(n)
            threads.add(threading.get_ident())
        return n

    results, _ = run(work, list(range(500)))
    assert results == list(range(500))
    assert sorted(seen) == list(range(500))
    assert len(threads) == 4


def test_the_first_failure_is_raised_and_no_new_item_is_started() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        if n == 3:
            raise LookupError("item 3 failed")
        time.sleep(0.001)  # a request's worth of waiting, not a timing assertion
        return n

    with pytest.raises(LookupError, match="item 3 failed"):
        run(work, list(range(10_000)), concurrency=2)
    # the other worker finishes the item in hand and stops: far fewer than 10,000 started
    assert 3 in started
    assert len(started) < 500


def test_progress_is_reported_while_a_phase_runs() -> None:
    release = threading.Event()

    def work(n: int) -> int:
        if n == 0:
            release.wait(10)
        return n

    reports: list[tuple[str, int, int]] = []

    def progress(phase: str, done: int, total: int) -> None:
        reports.append((phase, done, total))
        if len(reports) == 2:
            release.set()  # two reports came while item 0 was still being worked

    with ThreadPoolExecutor(2) as pool:
        assert _fan_out(pool, 2, progress, "images", work, [0, 1, 2]) == [0, 1, 2]
    assert reports[0][0] == "images"
    assert reports[0][1] < 3
    assert reports[-1] == ("images", 3, 3)
