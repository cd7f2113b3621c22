"""The flags several commands share, and the parsing of their values.

A value argparse cannot check by itself (a date, a pattern, a shard) is parsed when the command
runs and refused with a `UsageError` (exit 1): argparse would exit 2, which
`plan --detailed-exitcode` means "changes present".
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta

import re2

from retention.errors import InventoryError, UsageError
from retention.inventory import Shard
from retention.policy.load import compile_pattern
from retention.policy.model import Pattern
from retention.text import DURATION_UNITS

# --shard K/N: N workers (a Kubernetes Indexed Job) each plan and apply their share of the
# repositories, split by a stable hash of the name (retention.inventory.in_shard; docs/sharding.md)

_SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job
_SHARD_HINT = (
    "--shard K/N takes shard K (0 <= K < N) of N; --shard N or --shard auto/N takes K from "
    f"${_SHARD_INDEX_ENV}, which a Kubernetes Indexed Job sets"
)


def add_shard_option(parser: argparse.ArgumentParser) -> None:
    """`--shard K/N`, for the commands that walk the registry."""
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="only this worker's share of the repositories: shard K (0-based) of N, split by a "
        f"hash of the name; N alone or auto/N takes K from ${_SHARD_INDEX_ENV}",
    )


def shard_of(args: argparse.Namespace) -> Shard | None:
    """`--shard K/N`, `--shard N` or `--shard auto/N` as a Shard; None without the option."""
    text: str | None = getattr(args, "shard", None)
    if text is None:
        return None
    index_text, slash, count_text = text.strip().rpartition("/")
    if not slash or index_text == "auto":
        index_text = os.environ.get(_SHARD_INDEX_ENV, "")
        if not index_text:
            raise UsageError(
                f"--shard {text}: ${_SHARD_INDEX_ENV} is not set, so this worker's index is "
                "unknown",
                hint=_SHARD_HINT,
            )
    if not (index_text.isdigit() and count_text.isdigit()):
        raise UsageError(f"--shard {text}: not K/N, N or auto/N", hint=_SHARD_HINT)
    try:
        return Shard(int(index_text), int(count_text))
    except InventoryError as exc:
        raise UsageError(f"--shard {text}: {exc.message}", hint=_SHARD_HINT) from exc


def add_source_option(parser: argparse.ArgumentParser) -> None:
    """`--inventory-source api|storage` (retention.workflow.inventory_source picks the default)."""
    parser.add_argument(
        "--inventory-source",
        choices=("api", "storage"),
        help="where the inventory comes from: the registry's API, or its storage "
        "(registry.storage.filesystem; the default when the policy sets it)",
    )


def evaluation_time(as_of: str | None) -> datetime:
    """`--as-of` as an aware UTC time, else the clock.

    Parsed here, not by argparse: argparse exits 2 on a bad value, and 2 means "changes present"
    to a `plan --detailed-exitcode` caller; a bad date is an error (exit 1).
    """
    if as_of is None:
        return datetime.now(UTC)
    try:
        return _iso_time(as_of).astimezone(UTC)
    except ValueError as exc:
        raise UsageError(
            f"--as-of {as_of!r} is not a date",
            hint="use 2026-01-31 or 2026-01-31T12:00:00Z (UTC unless an offset is given)",
        ) from exc


def repository_pattern(text: str) -> Pattern:
    """`--repository REGEX` compiled as policies compile theirs (RE2, the whole name)."""
    try:
        return compile_pattern(text)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):  # google-re2 gives RE2's reason as bytes
            reason = reason.decode("utf-8", "replace")
        raise UsageError(
            f"--repository {text!r} is not a valid RE2 pattern: {reason}",
            hint="it is matched against the whole repository name, e.g. 'apps/.*'",
        ) from exc


_DURATION_RE = re.compile(r"(\d+)([" + "".join(DURATION_UNITS) + "])")


def duration_arg(text: str) -> timedelta:
    """An argparse type: `24h`, `90m`, `7d` (the units of the policy language)."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 24h, 90m or 7d")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def positive_float(text: str) -> float:
    """An argparse type: seconds, more than 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def instant(text: str) -> datetime:
    """An argparse type: an ISO 8601 time, its offset kept; without one it is UTC."""
    try:
        return _iso_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2024-10-27T01:00:00+02:00)"
        ) from exc


def _iso_time(text: str) -> datetime:
    """An aware time from ISO 8601 (`Z` accepted); UTC when no offset is given. ValueError."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when
