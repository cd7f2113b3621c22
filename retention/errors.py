"""The one error tree of retention; every error that crosses a module boundary is one of these.

Imports nothing of ours. Each error carries context fields and renders a human `diagnostics()`.

    RetentionError
    ├── UsageError           a command line that cannot run as given (flags, arguments, files)
    ├── PolicyError          invalid policy file(s): a list of located Diagnostic
    ├── RegistryError        the registry answered something we cannot use
    │   ├── AuthError            401/403, bad credentials, token flow failures
    │   │   └── RedirectRefused      a redirect target answered 401 (never a challenge)
    │   ├── DeleteDisabledError  405 UNSUPPORTED on DELETE
    │   ├── ProtocolError        malformed answer: digest mismatch, schema1, pagination loop
    │   └── TransportError       connection failures, timeouts, retries exhausted
    ├── InventoryError       the registry walk could not complete
    ├── CacheError           the on-disk cache is unusable
    ├── PlanError            a plan file that is malformed or does not fit
    ├── ApplyRefused         apply stopped before the first DELETE (limits, wrong registry, ...)
    ├── JournalError         the apply journal is unreadable or unwritable
    └── ScheduleError        schedule problems, including LockHeld
        └── LockHeld
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located problem in an input file, rendered as `FILE:LINE:COL: $.path: message`."""

    file: str
    line: int  # 1-based; 0 when the problem has no position (e.g. an unreadable file)
    column: int  # 1-based; 0 when unknown
    path: str  # JSON path such as `$.rules[0].keep`
    message: str
    hint: str | None = None
    severity: Severity = "error"

    def render(self) -> str:
        where = self.file if self.line <= 0 else f"{self.file}:{self.line}:{self.column}"
        prefix = "" if self.severity == "error" else "warning: "
        text = f"{where}: {self.path}: {prefix}{self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class RetentionError(Exception):
    """Base of every error retention raises on purpose; `diagnostics()` is what users read."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class UsageError(RetentionError):
    """The command line cannot run as given: a bad flag value, a missing argument, an output file
    that is in the way. Exits 1 like every other error (`plan --detailed-exitcode` keeps 2)."""


class PolicyError(RetentionError):
    """One or more policy files are invalid; holds every located problem found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        errors = [d for d in diagnostics if d.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in policy")
        self.items = diagnostics

    def diagnostics(self) -> str:
        return "\n".join(d.render() for d in self.items)


class RegistryError(RetentionError):
    """The registry answered something we cannot use."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status
        self.code = code

    def diagnostics(self) -> str:
        parts = [self.message]
        if self.status is not None or self.url:
            ctx = " ".join(
                p for p in (str(self.status or ""), self.code or "", self.url or "") if p
            )
            parts[0] += f" [{ctx}]"
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class AuthError(RegistryError):
    """Authentication or authorisation failed (401/403, token endpoint errors)."""


class RedirectRefused(AuthError):
    """A redirect target (another origin than the registry) answered 401. Its challenge is never
    answered: credentials and tokens belong to the registry's own origin (docs/decisions.md,
    "What is trusted")."""


class DeleteDisabledError(RegistryError):
    """The registry refuses DELETE (405 UNSUPPORTED): deletion disabled, read-only or a cache."""


class ProtocolError(RegistryError):
    """A malformed or inconsistent answer: digest mismatch, schema1, a pagination loop."""


class TransportError(RegistryError):
    """Connection failure, timeout, or retries exhausted."""


class InventoryError(RetentionError):
    """The registry walk could not complete; nothing is planned from a partial walk."""


class CacheError(RetentionError):
    """The on-disk cache cannot be read or written."""


class PlanError(RetentionError):
    """A plan file that is malformed, hand-edited into an invalid state, or does not fit."""


class ApplyRefused(RetentionError):
    """Apply stopped before the first DELETE: limits, another registry, a stale plan."""


class JournalError(RetentionError):
    """The apply journal cannot be read or written."""


class ScheduleError(RetentionError):
    """A scheduled run cannot proceed."""


class LockHeld(ScheduleError):
    """Another scheduler or apply holds the lock for this policy."""
