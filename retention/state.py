"""Where retention keeps its files: the XDG base directories, computed in one place.

Pure: every function takes the environment as an `env` mapping; no file is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

APP = "retention"


def xdg_home(env: Mapping[str, str], variable: str, default: str) -> Path:
    """`$variable` when it is an absolute path, else `$HOME/<default>` (XDG Base Directory spec:
    an empty or relative value is ignored)."""
    base = env.get(variable, "")
    if not base or not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, default)
    return Path(base)


def state_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/retention`, or `~/.local/state/retention`."""
    return xdg_home(env, "XDG_STATE_HOME", os.path.join(".local", "state")) / APP


def cache_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/retention`, or `~/.cache/retention`."""
    return xdg_home(env, "XDG_CACHE_HOME", ".cache") / APP


def digest_cache_dir(env: Mapping[str, str]) -> Path:
    """The digest cache's folder (retention/cache.py)."""
    return cache_dir(env) / "digests"


def journal_dir(env: Mapping[str, str]) -> Path:
    """The apply journals' folder (retention/journal.py)."""
    return state_dir(env) / "journal"


def locks_dir(env: Mapping[str, str]) -> Path:
    """The per-policy lock files' folder (retention/schedule.py)."""
    return state_dir(env) / "locks"


def history_path(env: Mapping[str, str]) -> Path:
    """The default run history (retention/runlog.py)."""
    return state_dir(env) / "history.jsonl"
