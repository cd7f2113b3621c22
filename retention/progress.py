"""Progress of long work, one phase at a time: done/total, rate and time left, throttled.

Pure: the clock is a parameter and nothing is written here; `ProgressDisplay`
(retention/cli/console.py) draws the lines on a terminal or emits the events as JSON log lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Update:
    """The state of one phase worth showing now."""

    phase: str
    done: int
    total: int
    elapsed: float  # seconds since the phase's first report
    final: bool  # the phase is complete (done >= total)

    @property
    def rate(self) -> float | None:
        """Items a second over the whole phase so far; None before any time has passed."""
        return self.done / self.elapsed if self.elapsed > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None while the rate is unknown or zero."""
        if self.final:
            return 0.0
        rate = self.rate
        if not rate:
            return None
        return max(0, self.total - self.done) / rate


class Meter:
    """Turns a stream of `(phase, done, total)` reports into at most one `Update` every
    `interval` seconds, plus each phase's final one (which is never dropped)."""

    def __init__(self, clock: Callable[[], float], *, interval: float = 0.1) -> None:
        self._clock = clock
        self._interval = interval
        self._phase: str | None = None
        # Phases run one after another and report only while under way: a phase began when the
        # one before it last reported (the first when the meter was made).
        self._last_report = clock()
        self._started = self._last_report
        self._last_emit: float | None = None
        self._last_done = -1
        self._finished = False

    def report(self, phase: str, done: int, total: int) -> Update | None:
        now, began = self._clock(), self._last_report
        self._last_report = now
        if phase != self._phase:
            self._phase, self._started = phase, began
            self._last_done, self._finished = -1, False
            self._last_emit = None
        final = done >= total
        if self._finished:
            return None  # a phase's final update is shown once
        due = self._last_emit is None or now - self._last_emit >= self._interval
        if not final and (not due or done == self._last_done):
            return None
        self._last_emit, self._last_done, self._finished = now, done, final
        return Update(phase, done, total, now - self._started, final)


def format_rate(rate: float | None) -> str:
    """`0.5/s`, `12/s`, `1.2k/s`; `-/s` while unknown."""
    if rate is None:
        return "-/s"
    if rate < 10:
        return f"{rate:.1f}/s"
    if rate < 1000:
        return f"{rate:.0f}/s"
    return f"{rate / 1000:.1f}k/s"


def format_duration(seconds: float | None) -> str:
    """`9s`, `4m05s`, `2h03m`; `?` while unknown."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def line(update: Update) -> str:
    """`tags: 608/2000 (30%), 152/s, ETA 9s`; a finished phase says how long it took."""
    percent = 100 * update.done // update.total if update.total else 100
    head = f"{update.phase}: {update.done}/{update.total} ({percent}%), {format_rate(update.rate)}"
    if update.final:
        return f"{head}, done in {format_duration(update.elapsed)}"
    return f"{head}, ETA {format_duration(update.eta)}"


def event(update: Update) -> dict[str, Any]:
    """The update as a JSON log event (`--log-format json`)."""
    rate, eta = update.rate, update.eta
    return {
        "level": "info",
        "logger": "retention.progress",
        "event": "progress",
        "message": line(update),
        "phase": update.phase,
        "done": update.done,
        "total": update.total,
        "elapsed_seconds": round(update.elapsed, 3),
        "rate_per_second": None if rate is None else round(rate, 3),
        "eta_seconds": None if eta is None else round(eta, 3),
        "final": update.final,
    }
