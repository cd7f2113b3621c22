"""What one apply did, as values: an outcome per planned deletion and per planned untag, the
progress events, the report; and the verdicts of re-verification (`Verified`, `Skip`,
`NotManifest`) the steps of a run pass to each other. PURE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from retention import oci
from retention.errors import RetentionError
from retention.journal import Key, TagKey
from retention.plan import Entry, Untag
from retention.text import first_line

OutcomeKind = Literal["deleted", "gone", "stale", "kept", "failed", "resumed"]

KEPT_PREFIX = "the policy keeps it now: "


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    """What happened to one planned deletion.

    deleted: this run deleted it. gone: it was already gone (404). stale: skipped because the
    registry changed since the plan (a tag moved, a new tag points at it, its index was kept).
    kept: skipped because the policy, evaluated again before the first DELETE, keeps it (an entry
    added to the plan by hand, a plan from another policy, a registry that changed).
    failed: not deleted because of an error; a re-run retries it. resumed: an earlier run of this
    plan deleted it, says the journal.
    """

    entry: Entry
    kind: OutcomeKind
    reason: str | None = None
    repaired: bool = False  # a dangling tag was repaired (manifest re-PUT, then deleted)

    @property
    def key(self) -> Key:
        return (self.entry.repository, self.entry.digest)


UntagKind = Literal["untagged", "gone", "stale", "kept", "failed", "resumed"]


@dataclass(frozen=True, slots=True)
class UntagOutcome:
    """What happened to one planned untag (retention/apply/untag.py).

    untagged: this run removed the tag. gone: the tag was already gone. stale: skipped, the tag
    moved (or was pushed to) since the plan. kept: skipped, the policy evaluated again does not
    plan it. failed: not done because of an error (a refused push among them); a re-run
    retries it. resumed: an earlier run of this plan removed it, says the journal.
    """

    untag: Untag
    kind: UntagKind
    reason: str | None = None
    method: str | None = None  # "delete-tag" or "throw-away", once one was tried

    @property
    def key(self) -> TagKey:
        return (self.untag.repository, self.untag.tag)


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One entry reached its final state; `done` of `total` entries are final now."""

    outcome: EntryOutcome
    done: int
    total: int


OnOutcome = Callable[[ProgressEvent], None]  # called as each entry reaches its final state


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcomes: tuple[EntryOutcome, ...]  # one per planned deletion, sorted by (repository, digest)
    bytes_reclaimable: int  # what the plan said the entries now gone free (an upper bound)
    error: RetentionError | None = None  # set when apply stopped early (deletion disabled, ...)
    untags: tuple[UntagOutcome, ...] = ()  # one per planned untag, sorted by (repository, tag)

    def count(self, kind: OutcomeKind) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    def untag_count(self, kind: UntagKind) -> int:
        return sum(1 for o in self.untags if o.kind == kind)

    def of_kind(self, kind: OutcomeKind) -> tuple[EntryOutcome, ...]:
        return tuple(o for o in self.outcomes if o.kind == kind)

    @property
    def complete(self) -> bool:
        """Every planned deletion is gone from the registry, every planned untag too, and
        nothing stopped the run."""
        return (
            self.error is None
            and all(o.kind in ("deleted", "gone", "resumed") for o in self.outcomes)
            and all(o.kind in ("untagged", "gone", "resumed") for o in self.untags)
        )


@dataclass(frozen=True, slots=True)
class Verified:
    """An entry proven to be a manifest of its repository, ready to be deleted."""

    raw: bytes = field(repr=False)
    media_type: str
    manifest: oci.Manifest
    tags: tuple[str, ...]  # planned tags that still point at the digest
    repair: bool = False  # dangling tag: re-PUT `raw` before the DELETE


@dataclass(frozen=True, slots=True)
class Skip:
    """An entry left alone, and why: gone already, stale, kept by the policy, or failed."""

    kind: Literal["gone", "stale", "kept", "failed"]
    reason: str


@dataclass(frozen=True, slots=True)
class NotManifest:
    """A planned digest the registry does not serve as a manifest: the plan is refused."""

    reason: str


Check = Verified | Skip | NotManifest


def reason_of(exc: RetentionError) -> str:
    """The first line of an error's diagnostics: the reason an outcome gives."""
    return first_line(exc.diagnostics())
