"""PURE semantic checks of a policy document, after the schema: RE2 patterns, the registry URL,
cron and time zone, rule names, rules no tag can reach, and rules for untagged manifests
(docs/decisions.md, "Semantic checks").

Cron expressions are checked from a fixed date, never from the clock.
"""

from __future__ import annotations

import difflib
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from croniter import CroniterError, croniter
from yaml.nodes import ScalarNode

from retention.policy.model import Pattern, is_catch_all
from retention.policy.nodes import Document
from retention.policy.patterns import BadPattern, try_compile
from retention.policy.report import PathKey, Report, did_you_mean, short

_PATTERN_LISTS = ("repositories", "exclude_repositories", "tags", "exclude_tags")
_CRON_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
_URL_EXAMPLE = "e.g. https://registry.example.com or http://127.0.0.1:5000"
_CRON_HINT = 'five fields: minute hour day-of-month month day-of-week, e.g. "30 3 * * *"'


def check_semantics(
    document: Document, unresolved: frozenset[PathKey], report: Report
) -> dict[PathKey, Pattern]:
    """Report what the schema cannot see; return every pattern that compiled, by its path.

    `unresolved` are the strings that still hold an unset `${VAR}` (retention/policy/env.py):
    the URL checks skip such a URL.
    """
    checks = _Checks(document, unresolved, report)
    data = document.data if isinstance(document.data, dict) else {}
    checks.patterns_of(data)
    checks.registry(data.get("registry"))
    checks.schedule(data.get("schedule"))
    checks.rules(data.get("rules"))
    return checks.patterns


class _Checks:
    def __init__(self, document: Document, unresolved: frozenset[PathKey], report: Report) -> None:
        self.document = document
        self.unresolved = unresolved
        self.report = report
        self.patterns: dict[PathKey, Pattern] = {}

    # -- patterns ----------------------------------------------------------------------------

    def patterns_of(self, data: Mapping[str, Any]) -> None:
        protect = data.get("protect")
        if isinstance(protect, dict):
            self.compile_list(protect.get("tags"), ("protect", "tags"))
        rules = data.get("rules")
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            match = rule.get("match") if isinstance(rule, dict) else None
            if isinstance(match, dict):
                for key in _PATTERN_LISTS:
                    self.compile_list(match.get(key), ("rules", i, "match", key))

    def compile_list(self, items: Any, path: PathKey) -> None:
        for i, source in enumerate(items if isinstance(items, list) else []):
            if isinstance(source, str) and source:
                self.compile((*path, i), source)

    def compile(self, path: PathKey, source: str) -> None:
        compiled = try_compile(source)
        if isinstance(compiled, BadPattern):
            message = f"invalid RE2 pattern `{short(source)}`: {compiled.reason}"
            self.report.error(path, None, message, compiled.hint)
        else:
            self.patterns[path] = compiled

    # -- registry ----------------------------------------------------------------------------

    def registry(self, registry: Any) -> None:
        if not isinstance(registry, dict):
            return
        url = registry.get("url")
        if isinstance(url, str) and url and ("registry", "url") not in self.unresolved:
            self.url(url)
        auth = registry.get("auth")
        if isinstance(auth, dict) and isinstance(auth.get("password"), str):
            node = self.document.node(("registry", "auth", "password"))
            written = node.value if isinstance(node, ScalarNode) else ""
            if written and "${" not in written:
                self.report.warning(
                    ("registry", "auth", "password"),
                    None,
                    "the password is written in the policy file",
                    "write `${REGISTRY_PASSWORD}` and set it in the environment",
                )

    def url(self, url: str) -> None:
        problem = _url_problem(url)
        if problem is not None:
            message, hint = problem
            self.report.error(("registry", "url"), None, message, hint)

    # -- schedule ----------------------------------------------------------------------------

    def schedule(self, schedule: Any) -> None:
        if not isinstance(schedule, dict):
            return
        cron = schedule.get("cron")
        if isinstance(cron, str) and cron.strip():
            self.cron(cron)
        tz = schedule.get("timezone")
        if isinstance(tz, str) and tz:
            self.timezone(tz)

    def cron(self, cron: str) -> None:
        path: PathKey = ("schedule", "cron")
        expr = cron.strip()
        if expr.startswith("@"):
            if expr not in _CRON_ALIASES:
                self.report.error(
                    path,
                    None,
                    f"unknown cron shortcut `{short(expr, 20)}`",
                    did_you_mean(expr, _CRON_ALIASES) or "one of " + ", ".join(_CRON_ALIASES),
                )
            return
        fields = expr.split()
        if len(fields) != 5:
            message = f"a cron expression has 5 fields, this one has {len(fields)}"
            self.report.error(path, None, message, _CRON_HINT)
            return
        try:
            itr = croniter(expr, datetime(2000, 1, 1, tzinfo=UTC))
            itr.get_next(datetime)
        except CroniterError as exc:
            if type(exc).__name__ == "CroniterBadDateError":
                message = f"the cron expression `{short(expr)}` never fires"
            else:
                message = f"invalid cron expression `{short(expr)}`: {exc}"
            self.report.error(path, None, message, _CRON_HINT)
        except (ValueError, KeyError, IndexError, OverflowError) as exc:
            message = f"invalid cron expression `{short(expr)}`: {exc}"
            self.report.error(path, None, message, _CRON_HINT)

    def timezone(self, tz: str) -> None:
        if tz == "UTC" or _is_time_zone(tz):
            return
        by_lower = {z.lower(): z for z in _time_zones()}
        if tz.lower() in by_lower:
            hint = f"did you mean `{by_lower[tz.lower()]}`?"
        else:
            close = difflib.get_close_matches(tz.lower(), list(by_lower), n=1, cutoff=0.75)
            hint = (
                f"did you mean `{by_lower[close[0]]}`?"
                if close
                else ("an IANA time zone name such as UTC or Europe/Berlin")
            )
        message = f"unknown time zone `{short(tz, 40)}`"
        self.report.error(("schedule", "timezone"), None, message, hint)

    # -- rules -------------------------------------------------------------------------------

    def rules(self, rules: Any) -> None:
        if not isinstance(rules, list):
            return
        names: dict[str, int] = {}
        # tag rules and untagged rules select disjoint things: each kind has its own catch-all
        catch_alls: dict[bool, tuple[int, str]] = {}
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            name = rule.get("name")
            label = f"`{short(name, 40)}`" if isinstance(name, str) else f"#{i + 1}"
            match = rule.get("match")
            untagged = isinstance(match, dict) and match.get("untagged") is True
            if untagged and isinstance(match, dict):
                self.untagged_rule(i, label, match)
            if isinstance(name, str):
                self.unique_name(i, name, names)
            catch_all = catch_alls.get(untagged)
            if catch_all is not None:
                self.unreachable(i, label, catch_all, untagged=untagged)
            elif _selects_everything(match):
                catch_alls[untagged] = (i, label)
            self.keep_last_zero(i, label, rule.get("keep"))

    def unique_name(self, i: int, name: str, names: dict[str, int]) -> None:
        if name not in names:
            names[name] = i
            return
        line = self.document.position(("rules", names[name]))[0]
        self.report.error(
            ("rules", i, "name"),
            None,
            f"duplicate rule name `{short(name, 40)}` (first at line {line})",
            "rule names must be unique; plans and explain name the rule",
        )

    def unreachable(
        self, i: int, label: str, catch_all: tuple[int, str], *, untagged: bool
    ) -> None:
        other_index, other_label = catch_all
        line = self.document.position(("rules", other_index))[0]
        what = "an untagged manifest" if untagged else "a tag"
        every = "every untagged manifest" if untagged else "everything"
        self.report.error(
            ("rules", i),
            None,
            f"rule {label} can never own {what}: rule {other_label} (line {line}) "
            f"before it selects {every}",
            f"move it above rule {other_label}, or narrow the match of rule {other_label}",
        )

    def keep_last_zero(self, i: int, label: str, keep: Any) -> None:
        if (
            isinstance(keep, dict)
            and keep.get("last") == 0
            and not isinstance(keep.get("last"), bool)
            and "newer_than" not in keep
        ):
            self.report.warning(
                ("rules", i, "keep", "last"),
                None,
                f"`last: 0` without `newer_than` deletes every image rule {label} owns",
                "that is allowed; add `newer_than` to keep recent images",
            )

    def untagged_rule(self, i: int, label: str, match: Mapping[str, Any]) -> None:
        for key in ("tags", "exclude_tags"):
            if key in match:
                self.report.error(
                    ("rules", i, "match", key),
                    None,
                    f"rule {label} selects untagged manifests (`untagged: true`): `{key}` "
                    "cannot narrow it, untagged manifests have no tag",
                    f"remove `{key}`, or write a separate rule for tags",
                )
        data = self.document.data
        registry = data.get("registry") if isinstance(data, dict) else None
        if isinstance(registry, dict) and "storage" not in registry:
            self.report.warning(
                ("rules", i, "match", "untagged"),
                None,
                f"rule {label} selects nothing unless `registry.storage` is set: the registry "
                "API lists tags only, and untagged manifests are seen in the storage",
                "set `registry.storage.filesystem` to the registry's storage root "
                "(see docs/policy.md)",
            )


def _url_problem(url: str) -> tuple[str, str] | None:
    """What is wrong with a registry URL and a hint, or None: http(s), a host, no credentials
    (they would end up in plans and logs), no query or fragment (docs/decisions.md, "Semantic
    checks")."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        return "the registry URL is malformed (bad port or brackets)", _URL_EXAMPLE
    if parts.scheme not in ("http", "https"):
        if "://" in url:
            scheme = short(parts.scheme, 20)
            return f"the registry URL must use http or https, not `{scheme}`", _URL_EXAMPLE
        return "the registry URL must start with https:// or http://", _URL_EXAMPLE
    if parts.username is not None or parts.password is not None:
        return (
            "the registry URL must not contain credentials (they would be written to plans "
            "and logs)",
            "move them to registry.auth as ${VAR} references",
        )
    if not parts.hostname:
        return "the registry URL has no host", _URL_EXAMPLE
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "the registry URL must not have a query or fragment", _URL_EXAMPLE
    return None


def _selects_everything(match: Any) -> bool:
    """Whether a rule's `match`, as written, is a catch-all (retention/policy/model.py's
    `is_catch_all`, the one definition). With `untagged`, `tags` and `exclude_tags` are an
    error already and only the repositories count; an include that is not a list (a schema
    error already) never makes a catch-all."""
    if not isinstance(match, dict):
        return False
    if match.get("untagged") is True:
        match = {k: v for k, v in match.items() if k not in ("tags", "exclude_tags")}
    repositories = match.get("repositories") or []
    tags = match.get("tags") or []
    if not (isinstance(repositories, list) and isinstance(tags, list)):
        return False
    excludes = bool(match.get("exclude_repositories") or match.get("exclude_tags"))
    return is_catch_all(repositories, tags, excludes=excludes)


def _is_time_zone(tz: str) -> bool:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
