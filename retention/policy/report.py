"""PURE diagnostics of one policy file: the `Report` every loading step adds to, and the wording
they share (JSON paths, values shown in messages, "did you mean").

Holds no policy rules of its own; it never reads a file or the environment.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Protocol

import yaml
from yaml.nodes import Node

from retention.errors import Diagnostic

# A value's place in the document: `("rules", 0, "keep")` is `$.rules[0].keep`.
PathKey = tuple[str | int, ...]
# Values whose text no message may show, expanded or not (docs/decisions.md, "`${VAR}`").
SECRET_PATHS = frozenset({("registry", "auth", "password")})

# Where a diagnostic points: a YAML node, a YAML mark, a (line, column) pair, or None for "at the
# node of its path".
Where = Node | yaml.Mark | tuple[int, int] | None


def render_path(path: Sequence[str | int]) -> str:
    """`("rules", 0, "keep")` → `$.rules[0].keep`."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}"
        else:
            out += "[" + json.dumps(part, ensure_ascii=False) + "]"
    return out


def quote(text: str) -> str:
    """`text` quoted as YAML would need it, for "quote it: '1.10'"."""
    if "'" not in text and "\n" not in text:
        return f"'{text}'"
    return json.dumps(text, ensure_ascii=False)


def short(text: str, limit: int = 60) -> str:
    """`text` for a message: control characters escaped (no terminal escapes), long text cut.

    Python's `unicode_escape` spelling (`\\t`, `\\x1b`); retention/text.py's `message()` spells a
    tab `\\x09`, so it is not used here: messages keep the spelling they always had.
    """
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def yaml_value(value: object) -> str:
    """A value as YAML would write it, for 'YAML reads `on` as the boolean true'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return repr(value) if isinstance(value, float) else str(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


class Locator(Protocol):
    """What places a diagnostic that names only its path (retention/policy/nodes.py's
    `Document`)."""

    def position(self, path: PathKey, *, key: bool = False) -> tuple[int, int]: ...


class Report:
    """The diagnostics of one file, in the order they were found.

    Until `locator` is set (the document is read), a diagnostic without a position is placed at
    line 1, column 1.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.locator: Locator | None = None
        self._found: list[Diagnostic] = []

    def error(self, path: PathKey, where: Where, message: str, hint: str | None = None) -> None:
        self._add("error", path, where, message, hint)

    def warning(self, path: PathKey, where: Where, message: str, hint: str | None = None) -> None:
        self._add("warning", path, where, message, hint)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self._found)

    def sorted(self) -> list[Diagnostic]:
        """Every diagnostic once, by position; the sort is stable, so those at one position
        keep the order they were found in."""
        unique = list(dict.fromkeys(self._found))
        return sorted(unique, key=lambda d: (d.line, d.column))

    def _add(
        self, severity: str, path: PathKey, where: Where, message: str, hint: str | None
    ) -> None:
        if isinstance(where, Node):
            line, column = where.start_mark.line + 1, where.start_mark.column + 1
        elif isinstance(where, yaml.Mark):
            line, column = where.line + 1, where.column + 1
        elif isinstance(where, tuple):
            line, column = where
        elif self.locator is not None:
            line, column = self.locator.position(path)
        else:
            line, column = 1, 1
        self._found.append(
            Diagnostic(
                file=self.name,
                line=line,
                column=column,
                path=render_path(path),
                message=message,
                hint=hint,
                severity="warning" if severity == "warning" else "error",
            )
        )
