"""PURE `${VAR}` expansion: every string under `registry:` takes its variables from an `env`
mapping the caller passes; `${` anywhere else is literal text, with a warning.

Never reads `os.environ`. The rules are in docs/decisions.md, "`${VAR}`".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from retention.policy.report import SECRET_PATHS, PathKey, Report, short

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_env(
    data: Any, *, env: Mapping[str, str], require_env: bool, report: Report
) -> tuple[Any, frozenset[PathKey]]:
    """`data` with `${VAR}` expanded in every string under `registry:`, and the paths of the
    strings that still hold an unset variable (kept as written; an error with `require_env`,
    else a warning)."""
    expander = _Expander(env, require_env, report)
    if not isinstance(data, dict):
        return data, frozenset()
    expanded = {}
    for key, value in data.items():
        if key == "registry":
            expanded[key] = expander.tree(value, ("registry",))
        else:
            expander.literal_vars(value, (key,))
            expanded[key] = value
    return expanded, frozenset(expander.unresolved)


class _Expander:
    def __init__(self, env: Mapping[str, str], require_env: bool, report: Report) -> None:
        self.env = env
        self.require_env = require_env
        self.report = report
        self.unresolved: set[PathKey] = set()  # strings with an unset ${VAR}, validate mode

    def tree(self, value: Any, path: PathKey) -> Any:
        if isinstance(value, dict):
            return {k: self.tree(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            return self.expand(value, path)
        return value

    def expand(self, text: str, path: PathKey) -> str:
        out: list[str] = []
        i = 0
        unset: list[str] = []
        while i < len(text):
            if text.startswith("$${", i):  # escape: `$${` is a literal `${`
                out.append("${")
                i += 3
            elif text.startswith("${", i):
                end = text.find("}", i + 2)
                name = text[i + 2 : end] if end >= 0 else ""
                if end < 0 or not _VAR_NAME.fullmatch(name):
                    self.malformed_var(text, i, path)
                    return text
                if name in self.env:
                    out.append(self.env[name])
                else:
                    unset.append(name)
                    out.append(text[i : end + 1])
                i = end + 1
            else:
                out.append(text[i])
                i += 1
        for name in dict.fromkeys(unset):
            self.unset_var(name, path)
        if unset:
            self.unresolved.add(path)
        return "".join(out)

    def malformed_var(self, text: str, at: int, path: PathKey) -> None:
        end = text.find("}", at + 2)
        shown = (
            "the value"
            if path in SECRET_PATHS
            else f"`{short(text[at : end + 1 if end >= 0 else None], 40)}`"
        )
        inner = text[at + 2 : end] if end >= 0 else ""
        hint = "write ${NAME} (letters, digits and _), or $${ for a literal ${"
        if ":-" in inner or ":?" in inner or "-" in inner:
            hint = "defaults such as ${VAR:-x} are not supported; " + hint
        reason = "has no closing }" if end < 0 else "is not a variable reference"
        self.report.error(path, None, f"malformed ${{VAR}}: {shown} {reason}", hint)

    def unset_var(self, name: str, path: PathKey) -> None:
        message = f"environment variable `{name}` is not set"
        if self.require_env:
            self.report.error(path, None, message, "set it before running plan, apply or schedule")
        else:
            self.report.warning(
                path,
                None,
                message,
                "validate only warns; plan, apply and schedule fail until it is set",
            )

    def literal_vars(self, value: Any, path: PathKey) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self.literal_vars(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.literal_vars(v, (*path, i))
        elif isinstance(value, str) and "${" in value:
            self.report.warning(
                path,
                None,
                "`${...}` is expanded only inside `registry:`; here it is literal text",
            )
