"""PURE words of evaluation: short digests, platforms, counts, durations, ages, and when a
`created` date is usable at all (docs/decisions.md, "Dates in the future").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from retention import oci
from retention.model import Image

# A `created` more than this after the evaluation time is a wrong clock or a forgery, not a build
# time: the image's age is unknown (docs/decisions.md, "Dates in the future"). The slack allows
# for clock skew between the build host and the machine that evaluates.
FUTURE_SLACK = timedelta(days=1)


def aware(now: datetime) -> datetime:
    """`now` in UTC; a naive datetime is taken as UTC."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def short(digest: str | None) -> str:
    """`sha256:0123456789ab`: enough to find the image, short enough to read."""
    if digest is None:
        return "?"
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}"


def platform(image: Image) -> str:
    return f"platform {image.platform}" if image.platform else "platform manifest"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def duration(value: timedelta | None) -> str:
    """A policy duration as written: `2w`, `30d`, `12h`, `90m`, `45s`."""
    if value is None:
        return "?"
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def age_words(age: timedelta) -> str:
    """`41 days`, `1 day`, `5 hours`, `3 minutes`, `12 seconds` (rounded down)."""
    seconds = int(age.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return count(seconds // size, unit)
    return count(max(seconds, 0), "second")


def age_phrase(age: timedelta) -> str:
    if age < timedelta(0):
        return f"created {age_words(-age)} in the future"
    return f"{age_words(age)} old"


def dated(created: datetime | None, now: datetime) -> datetime | None:
    """`created` when it is a usable build time as of `now`; None when it is unknown or more
    than FUTURE_SLACK after `now` (such an image has an unknown age: it never ranks first)."""
    if created is None or created - now > FUTURE_SLACK:
        return None
    return created


def unknown_age_words(image: Image, now: datetime) -> str:
    """Why `image` has no usable age: `created 9999-01-01T00:00:00Z is in the future`,
    `created yesterday-ish` (the unparseable value as the registry wrote it), `no created date`.
    """
    if image.created is not None and dated(image.created, now) is None:
        return f"created {oci.format_time(image.created)} is in the future"
    if image.created_raw:
        return f"created {image.created_raw}"
    return "no created date"
