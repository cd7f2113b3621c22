"""Pure text helpers for what people read: escaping of untrusted (registry-sourced) strings,
counts with plurals, duration units, UTC time stamps and the first line of an error.

Imports nothing of ours and does no I/O. Every string that came from a registry goes through
`untrusted()` before a terminal, a plan text or a Markdown plan sees it (docs/decisions.md,
"What is trusted"), and JSON that carries such strings goes through `json_safe()`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

# Bidi controls (Unicode TR9) that reorder what a terminal shows: overrides, embeddings,
# isolates and the implicit marks. None of them is ever needed in a registry name or message.
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Line and paragraph separators move the cursor like LF in some terminals and renderers.
_SEPARATORS: Final = frozenset("\u2028\u2029\u0085")


def _dangerous(char: str) -> bool:
    """True for what is not plainly printable: C0/C1 controls, DEL, format characters (bidi
    among them), separators other than space, surrogates, private-use and unassigned points."""
    return char in _BIDI or char in _SEPARATORS or not char.isprintable()


def _escape_char(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def untrusted(text: str) -> str:
    """`text` with every control, C1, bidi and format character shown as `\\x..`/`\\u....`.

    A backslash is doubled, so an escaped ESC (`\\x1b`) can never be confused with the four
    characters a registry sent. Printable text, including non-ASCII letters, is unchanged.
    """
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to do
    return _escaped(text, backslash="\\\\")


def message(text: str) -> str:
    """A composed message (a plan reason, a warning, an error line) with every control, C1,
    bidi and format character escaped as `untrusted()` does, but its backslashes left alone.

    A message mixes our words, policy text (a protect pattern such as `v\\d+`, shown as the
    user wrote it) and registry strings; it cannot hold a raw control character, so no line can
    be forged, but a backslash is not doubled. LF is escaped too: call it per line when the
    message has lines of its own.
    """
    if text.isascii() and text.isprintable():
        return text
    return _escaped(text, backslash="\\")


def _escaped(text: str, *, backslash: str) -> str:
    out: list[str] = []
    for char in text:
        if char == "\\":
            out.append(backslash)
        elif _dangerous(char):
            out.append(_escape_char(char))
        else:
            out.append(char)
    return "".join(out)


def json_safe(encoded: str) -> str:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) with C1, bidi and separator
    characters written as `\\uXXXX` escapes; it decodes to the same value.

    C0 controls are already escaped by `json.dumps`; the rest are kept raw by `ensure_ascii=False`
    and would reach a terminal that `cat`s the file. They only ever occur inside JSON strings,
    so replacing each with its escape is exact.
    """
    if encoded.isascii():
        return encoded
    return "".join(_json_escape(c) if ord(c) > 0x7E and _dangerous(c) else c for c in encoded)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON writes an astral character as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# The duration suffixes of the policy language (`24h`, `30d`) and the timedelta field of each.
DURATION_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# UTC to the second with a `Z`: journal records, plan times (docs/decisions.md, "Journal").
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def plural(n: int, noun: str, plural: str | None = None) -> str:
    """`1 tag`, `2 tags`; `plural` for an irregular one (`repository`, `repositories`)."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def format_time(when: datetime) -> str:
    """`when` in UTC as `2024-05-02T03:30:00Z` (aware datetimes; fractions dropped)."""
    return when.astimezone(UTC).strftime(TIME_FORMAT)


def first_line(text: str) -> str:
    """The first line of a multi-line message (an error's `diagnostics()`); "" for no text."""
    lines = text.splitlines()
    return lines[0] if lines else ""
