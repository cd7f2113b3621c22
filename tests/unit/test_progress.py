"""Progress lines, rate and ETA (retention/progress.py) with an injected clock, and the CLI's sink
in each mode (terminal, JSON events, off)."""

from __future__ import annotations

import io
import itertools
import json

import pytest

from retention.cli.console import ProgressDisplay
from retention.progress import Meter, Update, event, format_duration, format_rate, line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (None, "-/s"),
        (0.0, "0.0/s"),
        (0.25, "0.2/s"),
        (9.96, "10.0/s"),
        (152.4, "152/s"),
        (999.4, "999/s"),
        (1234.0, "1.2k/s"),
    ],
    ids=["unknown", "zero", "slow", "almost-ten", "hundreds", "under-a-thousand", "thousands"],
)
def test_format_rate(rate: float | None, text: str) -> None:
    assert format_rate(rate) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (0.0, "0s"), (9.4, "9s"), (59.6, "1m00s"), (245.0, "4m05s"), (7380.0, "2h03m")],
    ids=["unknown", "zero", "seconds", "rounds-up-to-a-minute", "minutes", "hours"],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


LINES = [
    ("under-way", Update("tags", 608, 2000, 4.0, False), "tags: 608/2000 (30%), 152/s, ETA 9s"),
    ("no-time-yet", Update("tags", 0, 2000, 0.0, False), "tags: 0/2000 (0%), -/s, ETA ?"),
    ("stalled", Update("images", 0, 10, 3.0, False), "images: 0/10 (0%), 0.0/s, ETA ?"),
    (
        "final",
        Update("repositories", 20, 20, 2.0, True),
        "repositories: 20/20 (100%), 10/s, done in 2s",
    ),
    ("empty-phase", Update("deletions", 0, 0, 0.0, True), "deletions: 0/0 (100%), -/s, done in 0s"),
]


@pytest.mark.parametrize(("update", "text"), [c[1:] for c in LINES], ids=[c[0] for c in LINES])
def test_line(update: Update, text: str) -> None:
    assert line(update) == text


def test_the_meter_shows_at_most_one_update_per_interval_and_every_final() -> None:
    clock = Clock()
    meter = Meter(clock, interval=0.1)
    shown = []
    for i in range(1, 101):  # 100 reports 10 ms apart: one second
        clock.now += 0.01
        update = meter.report("tags", i, 100)
        if update is not None:
            shown.append(update)
    assert 9 <= len(shown) <= 11
    times = [u.elapsed for u in shown]
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(times[:-1]))
    assert shown[-1].final and shown[-1].done == 100
    assert meter.report("tags", 100, 100) is None  # the final is shown once


def test_a_phase_starts_when_the_one_before_last_reported() -> None:
    clock = Clock()
    meter = Meter(clock)  # made at 100: the first phase starts then
    clock.now += 1
    repositories = meter.report("repositories", 4, 4)
    clock.now += 5
    tags = meter.report("tags", 0, 10)
    clock.now += 2
    later = meter.report("tags", 7, 10)
    assert repositories is not None and repositories.elapsed == 1 and repositories.rate == 4.0
    assert tags is not None and tags.elapsed == 5
    assert later is not None and later.elapsed == 7 and later.rate == 1.0 and later.eta == 3.0


def test_an_unchanged_count_is_not_redrawn() -> None:
    clock = Clock()
    meter = Meter(clock)
    assert meter.report("tags", 3, 10) is not None
    clock.now += 1
    assert meter.report("tags", 3, 10) is None


def test_the_terminal_sink_redraws_one_line_per_phase() -> None:
    clock = Clock()
    out = io.StringIO()
    sink = ProgressDisplay("tty", stream=out, clock=clock)
    clock.now += 1
    sink("repositories", 2, 2)
    for i in range(0, 11):
        clock.now += 0.2
        sink("tags", i, 10)
    text = out.getvalue()
    assert text.count("\n") == 2  # one finished line per phase
    assert text.startswith("\r\x1b[Krepositories: 2/2 (100%), 2.0/s, done in 1s\n")
    assert text.endswith("tags: 10/10 (100%), 4.5/s, done in 2s\n")
    assert "\r\x1b[Ktags: 5/10 (50%), 4.2/s, ETA 1s" in text


def test_close_ends_an_unfinished_line() -> None:
    out = io.StringIO()
    sink = ProgressDisplay("tty", stream=out, clock=Clock())
    sink("tags", 1, 10)
    sink.close()
    sink.close()
    assert out.getvalue().endswith("ETA ?\n") and out.getvalue().count("\n") == 1


def test_json_events_are_periodic() -> None:
    clock = Clock()
    out = io.StringIO()
    sink = ProgressDisplay("json", stream=out, clock=clock)
    for i in range(0, 13):
        clock.now += 0.25
        sink("images", i, 12)
    events = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [e["done"] for e in events] == [0, 4, 8, 12]
    assert events[-1]["final"] is True and events[-1]["eta_seconds"] == 0.0
    assert events[1]["phase"] == "images" and events[1]["total"] == 12
    assert events[1]["rate_per_second"] == 3.2  # 4 in 1.25 s: the phase began with the sink
    assert events[1]["message"] == events[1]["message"].strip() and "ETA 2s" in events[1]["message"]
    assert set(events[0]) == set(event(Update("images", 0, 12, 0.0, False)))
    assert {e["event"] for e in events} == {"progress"}


def test_off_writes_nothing() -> None:
    out = io.StringIO()
    sink = ProgressDisplay("off", stream=out, clock=Clock())
    sink("tags", 1, 1)
    sink.close()
    assert out.getvalue() == ""
