"""PURE working state of an evaluation: the policy with its regex results cached per name, and
the mutable state of one tag and of one untagged manifest while their repository is decided.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from retention.evaluate.words import aware
from retention.model import Inventory
from retention.policy.model import Policy

# A tag's state before manifests are decided (retention/evaluate/repository.py).
KEEP = 0  # kept on its own: protected, selected by no rule, or kept by its rule
DELETE = 1  # its owning rule does not keep it
FOLLOW = 2  # an attachment whose subject exists: it follows that subject
UNTAG = 3  # DELETE on a manifest that stays, with settings.untag: removed alone (untags.py)


class Context:
    """The policy with its regex results cached per name: a 100,000-tag registry repeats names."""

    def __init__(self, policy: Policy, now: datetime, inventory: Inventory) -> None:
        self.policy = policy
        self.now = now
        self.taken_at = aware(inventory.taken_at)
        self.complete = inventory.complete
        self._inventory = inventory
        self._holders: dict[str, list[str]] | None = None  # digest -> repositories
        self.oldest = policy.settings.unknown_age == "oldest"
        self.names = [r.name for r in policy.rules]
        self._protect: dict[str, str | None] = {}
        self._tag_hits: list[dict[str, bool]] = [{} for _ in policy.rules]
        self._repo_rules: dict[str, tuple[int, ...]] = {}

    def protected_by(self, tag: str) -> str | None:
        """The source of the first protect pattern matching `tag`, else None."""
        try:
            return self._protect[tag]
        except KeyError:
            found = None
            for pattern in self.policy.protect_tags:
                if pattern.matches(tag):
                    found = pattern.source
                    break
            self._protect[tag] = found
            return found

    def holder(self, digest: str, besides: str) -> str | None:
        """The first repository other than `besides` whose manifests include `digest`, or None.

        cosign can store signatures in another repository (COSIGN_REPOSITORY): a subject that is
        not in the attachment's repository may well be alive in another one.
        """
        if self._holders is None:
            self._holders = defaultdict(list)
            for repo in sorted(self._inventory.repositories, key=lambda r: r.name):
                for image in repo.images:
                    self._holders[image.digest].append(repo.name)
        return next((name for name in self._holders.get(digest, ()) if name != besides), None)

    def rules_for(self, repository: str) -> tuple[int, ...]:
        """Indexes of the rules whose match selects `repository`, in policy order."""
        try:
            return self._repo_rules[repository]
        except KeyError:
            found = tuple(
                i
                for i, rule in enumerate(self.policy.rules)
                if rule.match.selects_repository(repository)
            )
            self._repo_rules[repository] = found
            return found

    def owner(self, rules: tuple[int, ...], tag: str) -> int | None:
        """The first of `rules` whose match selects `tag`: the first rule owns it
        (docs/policy.md)."""
        for i in rules:
            hits = self._tag_hits[i]
            hit = hits.get(tag)
            if hit is None:
                hit = hits[tag] = self.policy.rules[i].match.selects_tag(tag)
            if hit:
                return i
        return None


class TagState:
    """Mutable working state of one tag while its repository is evaluated."""

    __slots__ = (
        "digest",
        "name",
        "noun",
        "orphan_of",
        "protected_by",
        "rank",
        "reason",
        "rule",
        "state",
        "subject",
        "subject_in",
    )

    def __init__(self, name: str, digest: str) -> None:
        self.name = name
        self.digest = digest
        self.state = KEEP
        self.rule: int | None = None
        self.rank: int | None = None
        self.reason = ""
        self.protected_by: str | None = None
        self.subject: str | None = None  # FOLLOW: the digest it follows
        self.noun: str | None = None  # "signature", "attestation", "SBOM", "referrer"
        self.orphan_of: str | None = None  # an orphan attachment: its missing subject
        self.subject_in: str | None = None  # not an orphan: the repository of its subject


@dataclass(slots=True)
class Untagged:
    """The decision on one untagged manifest (a root: no tag, no index, no present subject)."""

    digest: str
    reason: str = ""
    rule: int | None = None
    rank: int | None = None
    delete: bool = False
    protected: bool = False
    unselected: bool = False
