"""Escaping of registry-sourced strings before people read them (retention/text.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.text import json_safe, untrusted

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
