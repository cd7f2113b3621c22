"""Escaping of registry-sourced strings before people read them, and the small wording helpers
(plurals, duration units, UTC stamps, first lines) of retention/text.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.text import (
    DURATION_UNITS,
    first_line,
    format_time,
    json_safe,
    message,
    plural,
    untrusted,
)

CASES = [
    ("plain", "latest", "latest"),
    ("unicode-letters-kept", "café-ß", "café-ß"),
    ("esc", "a\x1b[2Jb", "a\\x1b[2Jb"),
    ("cr-forges-a-line", "x\rlatest", "x\\x0dlatest"),
    ("lf", "a\nb", "a\\x0ab"),
    ("nul", "a\x00", "a\\x00"),
    ("del", "a\x7f", "a\\x7f"),
    ("c1-csi", "a\u009b2J", "a\\x9b2J"),
    ("bidi-override", "\u202egnp.exe", "\\u202egnp.exe"),
    ("bidi-isolate", "a\u2066b", "a\\u2066b"),
    ("zero-width-format", "a\u200bb", "a\\u200bb"),
    ("line-separator", "a\u2028b", "a\\u2028b"),
    ("backslash-doubled", "a\\x1b", "a\\\\x1b"),
]


@pytest.mark.parametrize(("raw", "shown"), [(r, s) for _, r, s in CASES], ids=[c[0] for c in CASES])
def test_untrusted_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert untrusted(raw) == shown


@given(st.text())
def test_untrusted_output_is_printable_and_never_holds_a_control(text: str) -> None:
    shown = untrusted(text)
    assert all(c.isprintable() for c in shown)
    assert "\u202e" not in shown


@given(st.text())
def test_json_safe_decodes_to_the_same_value_and_holds_no_raw_c1_or_bidi(text: str) -> None:
    encoded = json_safe(json.dumps({"k": text}, ensure_ascii=False))
    assert json.loads(encoded) == {"k": text}
    assert not any(c in encoded for c in "\u009b\u202e\u2066\u2028\u0085")


MESSAGE_CASES = [
    ("plain", "kept: the most recent (rank 1)", "kept: the most recent (rank 1)"),
    ("policy-pattern-backslash-kept", r"pattern `v\d+`", r"pattern `v\d+`"),
    ("esc-in-a-platform", "platform linux/\x1b[2Jamd64", "platform linux/\\x1b[2Jamd64"),
    ("lf-cannot-start-a-line", "a\n- latest  sha256:", "a\\x0a- latest  sha256:"),
    ("cr", "a\rb", "a\\x0db"),
    ("c1", "a\u009bb", "a\\x9bb"),
    ("bidi", "a\u202eb", "a\\u202eb"),
]


@pytest.mark.parametrize(
    ("raw", "shown"), [(r, s) for _, r, s in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES]
)
def test_message_escapes_controls_but_keeps_backslashes(raw: str, shown: str) -> None:
    assert message(raw) == shown


@given(st.text())
def test_message_output_is_printable_and_equals_untrusted_without_backslashes(text: str) -> None:
    shown = message(text)
    assert all(c.isprintable() for c in shown)
    if "\\" not in text:
        assert shown == untrusted(text)


@pytest.mark.parametrize(
    ("n", "noun", "irregular", "expected"),
    [
        (0, "tag", None, "0 tags"),
        (1, "tag", None, "1 tag"),
        (2, "tag", None, "2 tags"),
        (1, "repository", "repositories", "1 repository"),
        (3, "repository", "repositories", "3 repositories"),
        (1000, "day", None, "1000 days"),
    ],
    ids=["zero", "one", "two", "irregular-one", "irregular-many", "no-separators"],
)
def test_plural(n: int, noun: str, irregular: str | None, expected: str) -> None:
    assert plural(n, noun, irregular) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2024, 5, 2, 3, 30, tzinfo=UTC), "2024-05-02T03:30:00Z"),
        (
            datetime(2024, 5, 2, 5, 30, 7, 999999, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-02T03:30:07Z",
        ),
    ],
    ids=["utc", "offset-converted-fraction-dropped"],
)
def test_format_time(when: datetime, expected: str) -> None:
    assert format_time(when) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("one", "one"), ("first\nhint: more", "first"), ("", ""), ("a\r\nb", "a")],
    ids=["single", "multi", "empty", "crlf"],
)
def test_first_line(text: str, expected: str) -> None:
    assert first_line(text) == expected


def test_duration_units_name_timedelta_fields() -> None:
    assert {k: timedelta(**{v: 1}) for k, v in DURATION_UNITS.items()} == {
        "s": timedelta(seconds=1),
        "m": timedelta(minutes=1),
        "h": timedelta(hours=1),
        "d": timedelta(days=1),
        "w": timedelta(weeks=1),
    }
