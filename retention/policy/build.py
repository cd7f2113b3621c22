"""PURE build of the frozen `Policy` from a document that passed every check: defaults filled in,
durations parsed, patterns taken as compiled by the checks.

Called only when there is no error, so it trusts the shapes the schema checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from retention.policy.model import (
    Auth,
    Gc,
    Keep,
    Match,
    MaxDeletions,
    Pattern,
    Policy,
    RegistryConfig,
    Rule,
    Schedule,
    Settings,
    Timeouts,
    Tls,
)
from retention.policy.nodes import Document
from retention.policy.report import PathKey
from retention.text import DURATION_UNITS


def build_policy(
    document: Document, patterns: Mapping[PathKey, Pattern], *, name: str, sha256: str
) -> Policy:
    """The policy of a checked `document`; `patterns` are the compiled patterns by path."""
    builder = _Builder(document, patterns)
    data: dict[str, Any] = document.data
    registry = data["registry"]
    auth = registry.get("auth")
    tls = registry.get("tls", {})
    schedule = data.get("schedule")
    gc = data.get("gc")
    return Policy(
        registry=RegistryConfig(
            url=registry["url"],
            auth=Auth(auth["username"], auth["password"]) if auth else None,
            tls=Tls(verify=tls.get("verify", True), ca_file=tls.get("ca_file")),
            storage_path=registry.get("storage", {}).get("filesystem"),
        ),
        rules=tuple(builder.rule(i, rule) for i, rule in enumerate(data["rules"])),
        protect_tags=builder.pattern_tuple(("protect", "tags")),
        protect_digests=frozenset(data.get("protect", {}).get("digests", ())),
        settings=_settings(data.get("settings", {})),
        schedule=(
            Schedule(cron=schedule["cron"].strip(), timezone=schedule.get("timezone", "UTC"))
            if schedule is not None
            else None
        ),
        gc=(
            Gc(command=tuple(gc["command"]), storage_path=gc.get("storage_path"))
            if gc is not None
            else None
        ),
        path=name,
        sha256=sha256,
        version=data["version"],
    )


def _parse_duration(text: str) -> timedelta:
    """`30d` → 30 days (units s m h d w); the schema has already checked the shape."""
    number, unit = int(text[:-1]), text[-1]
    return timedelta(**{DURATION_UNITS[unit]: number})


def _settings(settings: Mapping[str, Any]) -> Settings:
    max_del = settings.get("max_deletions", 500)
    return Settings(
        concurrency=settings.get("concurrency", 8),
        max_deletions=(
            MaxDeletions(percent=float(max_del[:-1]))
            if isinstance(max_del, str)
            else MaxDeletions(count=max_del)
        ),
        unknown_age=settings.get("unknown_age", "keep"),
        timeouts=_timeouts(settings.get("timeouts", {})),
        untag=settings.get("untag", False),
    )


def _timeouts(data: Mapping[str, Any]) -> Timeouts:
    """`settings.timeouts` (already checked by the schema) as values, defaults filled in."""
    default = Timeouts()
    run = data.get("run")
    return Timeouts(
        connect=_parse_duration(data["connect"]) if "connect" in data else default.connect,
        read=_parse_duration(data["read"]) if "read" in data else default.read,
        request=_parse_duration(data["request"]) if "request" in data else default.request,
        run=_parse_duration(run) if run is not None else None,
    )


class _Builder:
    def __init__(self, document: Document, patterns: Mapping[PathKey, Pattern]) -> None:
        self.document = document
        self.patterns = patterns

    def pattern_tuple(self, path: PathKey) -> tuple[Pattern, ...]:
        out = []
        i = 0
        while (*path, i) in self.patterns:
            out.append(self.patterns[(*path, i)])
            i += 1
        return tuple(out)

    def rule(self, index: int, rule: Mapping[str, Any]) -> Rule:
        base: PathKey = ("rules", index, "match")
        keep_raw = rule["keep"]
        if keep_raw == "all":
            keep = Keep(all=True)
        else:
            text = keep_raw.get("newer_than")
            keep = Keep(
                last=keep_raw.get("last"),
                newer_than=_parse_duration(text) if text is not None else None,
                newer_than_text=text,
            )
        match = Match(
            repositories=self.pattern_tuple((*base, "repositories")),
            exclude_repositories=self.pattern_tuple((*base, "exclude_repositories")),
            tags=self.pattern_tuple((*base, "tags")),
            exclude_tags=self.pattern_tuple((*base, "exclude_tags")),
            untagged=rule["match"].get("untagged", False) is True,
        )
        return Rule(
            name=rule["name"],
            match=match,
            keep=keep,
            line=self.document.position(("rules", index))[0],
        )
