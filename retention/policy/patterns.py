"""PURE RE2 patterns of a policy: compiled for whole-name matching, and the wording of a pattern
RE2 refuses (RE2 guarantees linear time, so it has no look-around or back-references).

The only module of ours that imports the RE2 engine for policies; the values (`Pattern`) live
in retention/policy/model.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

from retention.policy.model import Pattern


@dataclass(frozen=True, slots=True)
class BadPattern:
    """Why RE2 refused a pattern, in RE2's words, and a hint when the cause is a known one."""

    reason: str
    hint: str | None


def compile_pattern(source: str) -> Pattern:
    """Compile an RE2 pattern for whole-name matching; raises `re2.error` with RE2's reason.

    RE2 logs compile errors from C++ straight to fd 2 unless `log_errors` is off, so it is off.
    """
    options = re2.Options()
    options.log_errors = False
    return Pattern(source=source, compiled=re2.compile(source, options))


def try_compile(source: str) -> Pattern | BadPattern:
    """The compiled pattern, or why RE2 refuses it."""
    try:
        return compile_pattern(source)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return BadPattern(reason=reason, hint=_hint(source, reason))


def _hint(source: str, reason: str) -> str | None:
    if "(?=" in reason or "(?!" in reason:
        return "RE2 has no look-ahead (it guarantees linear time); use exclude_tags"
    if "(?<=" in reason or "(?<!" in reason:
        return "RE2 has no look-behind (it guarantees linear time); use exclude_tags"
    if re.search(r"invalid escape sequence: \\[1-9]", reason) or "(?P=" in source:
        return "RE2 has no back-references (it guarantees linear time)"
    return None
