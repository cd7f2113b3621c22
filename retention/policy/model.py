"""PURE policy values: frozen `Policy`, `Rule`, `Match`, `Keep`, `Settings`, `Schedule`.

Built only by `policy.load`, which compiles every pattern with RE2; this module never parses text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, Protocol


class CompiledPattern(Protocol):
    """What we use of a compiled RE2 pattern (kept abstract so this module imports no engine)."""

    def fullmatch(self, string: str) -> object | None: ...


@dataclass(frozen=True, slots=True)
class Pattern:
    """A regular expression matched against the whole name."""

    source: str
    compiled: CompiledPattern = field(compare=False, repr=False)

    def matches(self, name: str) -> bool:
        return self.compiled.fullmatch(name) is not None


def _any(patterns: tuple[Pattern, ...], name: str) -> bool:
    return any(p.matches(name) for p in patterns)


# Patterns whose whole-name match selects every tag or repository name (names are never empty
# and never contain a newline). Regexes are not analysed further: `[^/]*` is not recognised, so
# a catch-all can be missed but never invented (docs/decisions.md, "Semantic checks").
MATCH_ALL = frozenset({".*", ".+", "(.*)", "(.+)", "^.*$", "^.+$"})


def _selects_every_name(include: Sequence[object]) -> bool:
    """Whether an include list (pattern sources as written) selects every name: it is empty, or
    one of its patterns is in `MATCH_ALL`."""
    return not include or not MATCH_ALL.isdisjoint(s for s in include if isinstance(s, str))


def is_catch_all(repositories: Sequence[object], tags: Sequence[object], *, excludes: bool) -> bool:
    """The one definition of a match that selects everything, shared by `Match` and the
    loader's check for rules no tag can reach (retention/policy/checks.py): no exclude list,
    and each include list selects every name."""
    return not excludes and _selects_every_name(repositories) and _selects_every_name(tags)


@dataclass(frozen=True, slots=True)
class Match:
    """Which repositories and tags a rule selects; an empty include list selects everything."""

    repositories: tuple[Pattern, ...] = ()
    exclude_repositories: tuple[Pattern, ...] = ()
    tags: tuple[Pattern, ...] = ()
    exclude_tags: tuple[Pattern, ...] = ()
    # `untagged: true`: the rule selects untagged manifests only, never a tag
    untagged: bool = False

    def selects_repository(self, name: str) -> bool:
        if self.repositories and not _any(self.repositories, name):
            return False
        return not _any(self.exclude_repositories, name)

    def selects_tag(self, name: str) -> bool:
        if self.untagged:
            return False
        if self.tags and not _any(self.tags, name):
            return False
        return not _any(self.exclude_tags, name)

    @property
    def selects_everything(self) -> bool:
        """True when no exclude list is set and each include list is empty or holds a pattern
        that matches any name (`.*`): a catch-all rule, of tags or, with `untagged`, of
        untagged manifests."""
        return is_catch_all(
            [p.source for p in self.repositories],
            [p.source for p in self.tags],
            excludes=bool(self.exclude_repositories or self.exclude_tags),
        )


@dataclass(frozen=True, slots=True)
class Keep:
    """What a rule keeps of what it owns: everything, or the last N images plus the young ones."""

    all: bool = False
    last: int | None = None
    newer_than: timedelta | None = None
    newer_than_text: str | None = None  # as written, e.g. "30d", for messages


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    keep: Keep
    line: int = 0  # where the rule starts in the policy file, for messages


@dataclass(frozen=True, slots=True)
class MaxDeletions:
    """`max_deletions`: an absolute number of images, or a percentage of the images in scope."""

    count: int | None = None
    percent: float | None = None

    def limit(self, images_in_scope: int) -> int:
        if self.percent is not None:
            return int(images_in_scope * self.percent / 100)
        return self.count if self.count is not None else images_in_scope

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        return str(self.count)


UnknownAge = Literal["keep", "oldest"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """`settings.timeouts`: how long one connection, one silence, one request and one command
    may take (docs/decisions.md, "What is trusted"). `run` None is unbounded."""

    connect: timedelta = timedelta(seconds=10)
    read: timedelta = timedelta(seconds=60)
    request: timedelta = timedelta(seconds=120)
    run: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    concurrency: int = 8
    max_deletions: MaxDeletions = MaxDeletions(count=500)
    unknown_age: UnknownAge = "keep"
    timeouts: Timeouts = Timeouts()
    # remove a doomed tag alone when its image must stay, and dangling tags (docs/policy.md)
    untag: bool = False


@dataclass(frozen=True, slots=True)
class Auth:
    """Credentials from the policy; the password never appears in a repr."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Auth(username={self.username!r}, password='***')"


@dataclass(frozen=True, slots=True)
class Tls:
    verify: bool = True
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    url: str
    auth: Auth | None = None
    tls: Tls = Tls()
    # `registry.storage.filesystem`: the storage root the storage inventory reads (None: the API)
    storage_path: str | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    cron: str
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Gc:
    """The garbage-collection step run after a scheduled run that deleted something."""

    command: tuple[str, ...]
    storage_path: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy. `path` and `sha256` identify the file a plan was made from."""

    registry: RegistryConfig
    rules: tuple[Rule, ...]
    protect_tags: tuple[Pattern, ...] = ()
    protect_digests: frozenset[str] = frozenset()
    settings: Settings = Settings()
    schedule: Schedule | None = None
    gc: Gc | None = None
    path: str = "<policy>"
    sha256: str = ""
    version: int = 1

    def is_protected(self, tag: str) -> bool:
        return _any(self.protect_tags, tag)

    @property
    def has_untagged_rule(self) -> bool:
        return any(rule.match.untagged for rule in self.rules)
