"""retention/state.py: every XDG path from one `env` mapping."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from retention.state import (
    cache_dir,
    digest_cache_dir,
    history_path,
    journal_dir,
    locks_dir,
    state_dir,
)

HOME = {"HOME": "/home/u"}


@pytest.mark.parametrize(
    ("function", "env", "expected"),
    [
        (state_dir, {**HOME, "XDG_STATE_HOME": "/var/lib"}, "/var/lib/retention"),
        (state_dir, HOME, "/home/u/.local/state/retention"),
        (state_dir, {**HOME, "XDG_STATE_HOME": ""}, "/home/u/.local/state/retention"),
        (state_dir, {**HOME, "XDG_STATE_HOME": "rel"}, "/home/u/.local/state/retention"),
        (cache_dir, {**HOME, "XDG_CACHE_HOME": "/c"}, "/c/retention"),
        (cache_dir, HOME, "/home/u/.cache/retention"),
        (cache_dir, {**HOME, "XDG_CACHE_HOME": ""}, "/home/u/.cache/retention"),
        (cache_dir, {**HOME, "XDG_CACHE_HOME": "rel"}, "/home/u/.cache/retention"),
        (digest_cache_dir, {**HOME, "XDG_CACHE_HOME": "/c"}, "/c/retention/digests"),
        (journal_dir, {**HOME, "XDG_STATE_HOME": "/s"}, "/s/retention/journal"),
        (locks_dir, HOME, "/home/u/.local/state/retention/locks"),
        (history_path, {**HOME, "XDG_STATE_HOME": "/s"}, "/s/retention/history.jsonl"),
        (state_dir, {"XDG_STATE_HOME": "/s"}, "/s/retention"),  # no HOME needed
    ],
    ids=[
        "state-xdg",
        "state-home",
        "state-empty-ignored",
        "state-relative-ignored",
        "cache-xdg",
        "cache-home",
        "cache-empty-ignored",
        "cache-relative-ignored",
        "digests",
        "journal",
        "locks",
        "history",
        "state-xdg-without-home",
    ],
)
def test_paths_follow_xdg(
    function: Callable[[Mapping[str, str]], Path], env: dict[str, str], expected: str
) -> None:
    assert function(env) == Path(expected)


def test_only_the_env_argument_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/from/os/environ")
    monkeypatch.setenv("XDG_CACHE_HOME", "/from/os/environ")
    assert state_dir(HOME) == Path("/home/u/.local/state/retention")
    assert cache_dir(HOME) == Path("/home/u/.cache/retention")
