"""`settings.timeouts` (issue 13, item 3): loaded as values with defaults, durations like the
policy's others (s m h d w), `run: null` unbounded; a wrong value is a located diagnostic."""

from __future__ import annotations

from datetime import timedelta

import pytest

from retention.errors import PolicyError
from retention.policy.load import load_policy_text
from retention.policy.model import Timeouts

BASE = "version: 1\nregistry:\n  url: http://127.0.0.1:5000\nSETTINGS"
BASE += "rules:\n  - name: all\n    match: {}\n    keep: all\n"


def _load(settings: str) -> Timeouts:
    text = BASE.replace("SETTINGS", settings)
    policy, _ = load_policy_text(text, "p.yaml", env={}, require_env=True)
    return policy.settings.timeouts


S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("", Timeouts(10 * S, 60 * S, 120 * S, None)),
        ("settings: {timeouts: {}}\n", Timeouts(10 * S, 60 * S, 120 * S, None)),
        ("settings: {timeouts: {request: 5s}}\n", Timeouts(10 * S, 60 * S, 5 * S, None)),
        (
            "settings: {timeouts: {connect: 3s, read: 2m, request: 1h, run: 2h}}\n",
            Timeouts(3 * S, 120 * S, 3600 * S, 7200 * S),
        ),
        ("settings: {timeouts: {run: null}}\n", Timeouts(10 * S, 60 * S, 120 * S, None)),
        ("settings: {timeouts: {run: 1d}}\n", Timeouts(10 * S, 60 * S, 120 * S, 86400 * S)),
    ],
    ids=["absent", "empty", "request-only", "all-four", "run-null", "run-a-day"],
)
def test_timeouts_load_as_values(settings: str, expected: Timeouts) -> None:
    assert _load(settings) == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("settings: {timeouts: {request: 5}}\n", "expected a duration such as 120s"),
        ("settings: {timeouts: {run: 2x}}\n", "expected a duration such as 120s"),
        ("settings: {timeouts: {read: 0s}}\n", "is not a duration"),
        ("settings: {timeouts: {total: 5s}}\n", "unknown key `total`"),
    ],
    ids=["integer", "bad-unit", "zero", "unknown-key"],
)
def test_a_wrong_timeout_is_a_located_error(settings: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        _load(settings)
    text = caught.value.diagnostics()
    assert "$.settings.timeouts." in text and message in text, text
