"""PURE phase 4 of a repository's evaluation: the plan's entries, each deleted or kept manifest
with its tags, its rule and the decisive reason in words. Also settles each tag's final reason,
which `retention explain` shows (retention/evaluate/explain.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retention import oci
from retention.evaluate.context import DELETE, FOLLOW, KEEP, UNTAG, Context, TagState
from retention.evaluate.repository import Decided
from retention.evaluate.words import platform, short
from retention.model import Image
from retention.plan import Entry, Untag


@dataclass(slots=True)
class RepoEntries:
    """What one repository adds to the plan."""

    deletions: list[Entry] = field(default_factory=list)
    kept: list[Entry] = field(default_factory=list)
    future: list[str] = field(default_factory=list)  # `repo@digest (created ...)`, unknown age
    untags: list[Untag] = field(default_factory=list)  # by tag name


def entries(d: Decided, ctx: Context) -> RepoEntries:
    """Phase 4: one entry per manifest of the repository, sorted by digest."""
    out = RepoEntries()
    out.future.extend(
        f"{d.repo.name}@{short(digest)} (created {oci.format_time(c)})"
        for digest in sorted(d.unknown_age)
        if (c := d.images[digest].created) is not None
    )
    for digest in sorted(d.images):
        image = d.images[digest]
        sts = d.by_digest.get(digest, [])
        parent = min(d.parents[digest]) if digest in d.parents else None
        if digest in d.deleted:
            rule_name, reason = _deleted_reason(d, ctx, image, sts, parent)
            out.deletions.append(_entry(d.repo.name, image, sts, parent, rule_name, reason))
        else:
            rule_name, reason = _kept_reason(d, ctx, image, sts)
            stay = [st for st in sts if st.state != UNTAG]  # each tag in one place of the plan
            out.kept.append(_entry(d.repo.name, image, stay, parent, rule_name, reason))
    out.untags.extend(
        Untag(d.repo.name, st.name, st.digest, ctx.names[st.rule], st.reason)
        for st in d.states
        if st.state == UNTAG and st.rule is not None
    )
    out.untags.extend(
        Untag(d.repo.name, t.tag, None, ctx.names[t.rule], t.reason)
        for t in d.dangling
        if t.doomed and t.rule is not None and ctx.policy.settings.untag
    )
    out.untags.sort(key=lambda u: u.tag)
    return out


def _deleted_reason(
    d: Decided, ctx: Context, image: Image, sts: list[TagState], parent: str | None
) -> tuple[str | None, str]:
    reasons: dict[str, list[str]] = {}
    for st in sts:
        if st.state == FOLLOW:
            st.reason = f"{st.noun} of deleted image {short(st.subject)}"
        reasons.setdefault(st.reason, []).append(st.name)
    rule_name = next((ctx.names[st.rule] for st in sts if st.rule is not None), None)
    root = d.roots.get(image.digest)
    if root is not None:
        return (ctx.names[root.rule] if root.rule is not None else None), root.reason
    if sts:
        return rule_name, _joined(reasons)
    if parent is not None:
        return rule_name, f"{platform(image)} of deleted index {short(parent)}"
    return rule_name, f"referrer of deleted image {short(image.subject)}"


def _kept_reason(
    d: Decided, ctx: Context, image: Image, sts: list[TagState]
) -> tuple[str | None, str]:
    for st in sts:
        if st.state == FOLLOW:
            st.reason = f"{st.noun} of kept image {short(st.subject)}"
    rule_name: str | None = None
    decisive = next((st for st in sts if st.state not in (DELETE, UNTAG)), None)
    if decisive is not None:
        protected = " (protected)" if decisive.protected_by is not None else ""
        for st in sts:
            if st.state == DELETE:
                st.reason = f"shares digest with `{decisive.name}`{protected}"
            elif st.state == UNTAG:
                st.reason = _untag_reason(ctx, st, f"is kept by `{decisive.name}`{protected}")
        stay = sum(1 for st in sts if st.state != UNTAG)
        reason = decisive.reason if stay == 1 else f"`{decisive.name}`: {decisive.reason}"
        if decisive.state == KEEP and decisive.rule is not None:
            rule_name = ctx.names[decisive.rule]
        return rule_name, reason
    root = d.roots.get(image.digest)
    if root is not None and root.reason:
        rule_name = ctx.names[root.rule] if root.rule is not None else None
        if root.delete:  # kept by what it is the subject of
            reason = _closure_reason(d, image)
            root.reason = reason = f"{reason}; its rule alone would delete it ({root.reason})"
        else:
            reason = root.reason
        return rule_name, reason
    reason = _closure_reason(d, image)
    for st in sts:
        if st.state == UNTAG:
            st.reason = _untag_reason(ctx, st, f"stays ({reason})")
        else:
            st.reason = f"{reason}; its rule alone would delete it ({st.reason})"
    return rule_name, reason


def _untag_reason(ctx: Context, st: TagState, stays: str) -> str:
    """`its image is kept by `latest`; rule `ci`: rank 3 > 2`: why the image stays, then the
    verdict of the tag's rule (which an orphan's reason already names)."""
    rule = f"rule `{ctx.names[st.rule]}`" if st.rule is not None else ""
    verdict = st.reason if rule in st.reason else f"{rule}: {st.reason}"
    return f"its image {stays}; {verdict}"


def _closure_reason(d: Decided, image: Image) -> str:
    """Why a manifest none of whose own tags keeps it is kept: what kept thing reaches it."""
    digest, kept = image.digest, d.kept
    kept_parents = [p for p in d.parents.get(digest, ()) if p in kept]
    if kept_parents:
        return f"{platform(image)} of kept index {short(kept_parents[0])}"
    if image.subject is not None and image.subject in kept:
        return f"referrer of kept image {short(image.subject)}"
    kept_refs = sorted(
        {r for r in d.referrers.get(digest, ()) if r in kept}
        | {a for a in d.attached.get(digest, ()) if a in kept}
    )
    if kept_refs:
        return f"subject of kept attachment {short(kept_refs[0])}"
    if not d.by_digest.get(digest):
        if image.subject is not None and image.subject not in d.images:
            return (
                f"orphan referrer (subject {short(image.subject)} no longer exists), untagged: "
                "no rule can select it"
            )
        return "untagged and not referenced by any index or subject: no rule selects it"
    return "its attachments form a cycle with no deciding tag"  # unreachable for real digests


def _entry(
    repository: str,
    image: Image,
    sts: list[TagState],
    parent: str | None,
    rule: str | None,
    reason: str,
) -> Entry:
    return Entry(
        repository=repository,
        digest=image.digest,
        media_type=image.media_type,
        tags=tuple(st.name for st in sts),
        parent=parent,
        created=image.created,
        size=image.size,
        rule=rule,
        reason=reason,
    )


def _joined(reasons: dict[str, list[str]]) -> str:
    """One reason, or each reason after the tags it applies to."""
    if len(reasons) == 1:
        return next(iter(reasons))
    return "; ".join(
        f"{', '.join(f'`{t}`' for t in tags)}: {reason}" for reason, tags in reasons.items()
    )
