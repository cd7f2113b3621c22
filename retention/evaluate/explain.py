"""PURE verdicts behind `retention explain`: why each tag (or untagged manifest) of one
repository is kept or deleted, made from the same phases as the plan
(retention/evaluate/repository.py, entries.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from retention.errors import InventoryError
from retention.evaluate.context import UNTAG, Context
from retention.evaluate.entries import RepoEntries, entries
from retention.evaluate.repository import Decided, decide
from retention.evaluate.untagged import former_tags
from retention.evaluate.words import aware, dated
from retention.model import Inventory
from retention.policy.model import Policy

Decision = Literal["kept", "deleted", "untagged"]


@dataclass(frozen=True, slots=True)
class TagVerdict:
    """Why one tag is kept or deleted: everything `retention explain` shows.

    `rule` and `rank` are the owning rule and the image's rank among that rule's images in the
    repository (None when no rule owns the tag, or the image takes no place in `last`).
    `reason` is the decisive reason in words, without the decision; `line()` adds it.
    """

    repository: str
    tag: str
    digest: str
    rule: str | None
    rank: int | None
    age: timedelta | None
    created: datetime | None
    created_raw: str | None
    decision: Decision
    reason: str
    protected: bool = False
    # an untagged manifest (`tag` is ""): when it was pushed, and the tags it used to carry
    untagged: bool = False
    pushed_at: datetime | None = None
    former_tags: tuple[tuple[str, datetime], ...] = ()

    def line(self) -> str:
        """`kept: among the 5 most recent (rank 3)`; `untagged (its image is kept by `latest`;
        ...)` for a tag removed alone (`digest` is "" for a dangling tag)."""
        if self.decision == "untagged":
            return f"untagged ({self.reason})"
        return f"{self.decision}: {self.reason}"


def explain(
    policy: Policy,
    inventory: Inventory,
    now: datetime,
    repository: str,
    tag: str | None = None,
    digest: str | None = None,
) -> list[TagVerdict]:
    """The verdict on every tag of `repository` (or on `tag` alone), sorted by tag name; or, with
    `digest`, on that manifest: its tags' verdicts, or one verdict (`untagged`) when no tag
    points at it.

    Raises InventoryError when the repository, the tag or the digest is not in the inventory.
    """
    repo = next((r for r in inventory.repositories if r.name == repository), None)
    if repo is None:
        raise InventoryError(
            f"repository {repository!r} is not in the inventory of {inventory.registry}",
            hint="check the name with `retention inventory -p POLICY`",
        )
    ctx = Context(policy, aware(now), inventory)
    decided = decide(repo, ctx)
    found = verdicts(decided, entries(decided, ctx), ctx)
    if digest is not None:
        found = [v for v in found if v.digest == digest]
        if not found:
            raise InventoryError(
                f"manifest {digest} is not in repository {repository!r}",
                hint=f"list its manifests with `retention inventory -p POLICY -r {repository}`",
            )
        return found
    found = [v for v in found if not v.untagged]
    if tag is not None:
        found = [v for v in found if v.tag == tag]
        if not found:
            raise InventoryError(
                f"tag {tag!r} is not in repository {repository!r}",
                hint=f"list its tags with `retention explain -p POLICY {repository}`",
            )
    return found


def verdicts(d: Decided, made: RepoEntries, ctx: Context) -> list[TagVerdict]:
    """One verdict per untagged manifest (in entry order), then one per tag (by name). Call
    after `entries`, which settles each tag's final reason."""
    now, name = ctx.now, d.repo.name
    former = former_tags(d.repo.history)
    out: list[TagVerdict] = []
    for entry in [*made.deletions, *made.kept]:
        if entry.tags or d.by_digest.get(entry.digest):  # (a kept one may have lost them all)
            continue
        image = d.images[entry.digest]
        root = d.roots.get(entry.digest)
        out.append(
            TagVerdict(
                repository=name,
                tag="",
                digest=entry.digest,
                rule=entry.rule,
                rank=root.rank if root is not None else None,
                age=now - image.created if image.created is not None else None,
                created=image.created,
                created_raw=image.created_raw,
                decision="deleted" if entry.digest in d.deleted else "kept",
                reason=entry.reason,
                protected=entry.digest in ctx.policy.protect_digests,
                untagged=True,
                pushed_at=image.pushed_at,
                former_tags=tuple(former.get(entry.digest, ())),
            )
        )
    for st in d.states:
        found = d.images.get(st.digest)
        created = found.created if found is not None else None
        usable = dated(created, now)
        out.append(
            TagVerdict(
                repository=name,
                tag=st.name,
                digest=st.digest,
                rule=ctx.names[st.rule] if st.rule is not None else None,
                rank=st.rank,
                age=now - usable if usable is not None else None,
                created=created,
                created_raw=found.created_raw if found is not None else None,
                decision=(
                    "deleted"
                    if st.digest in d.deleted
                    else "untagged"
                    if st.state == UNTAG
                    else "kept"
                ),
                reason=st.reason,
                protected=st.protected_by is not None,
            )
        )
    untag = ctx.policy.settings.untag
    out.extend(
        TagVerdict(
            repository=name,
            tag=t.tag,
            digest="",  # it points at nothing there is
            rule=ctx.names[t.rule] if t.rule is not None else None,
            rank=None,
            age=None,
            created=None,
            created_raw=None,
            decision="untagged" if t.doomed and untag else "kept",
            reason=t.reason,
            protected=t.protected,
        )
        for t in d.dangling
    )
    out.sort(key=lambda v: (not v.untagged, v.tag))  # stable: manifests keep entry order
    return out
