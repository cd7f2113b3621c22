"""PURE phase 1 of a repository's evaluation: each tag's state (protected, selected by no rule,
kept or not kept by its owning rule, or an attachment that follows its subject), and the ranking
of each rule's images by `created` that decides `keep.last` and `keep.newer_than`
(docs/policy.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from retention import oci
from retention.evaluate.context import DELETE, FOLLOW, KEEP, Context, TagState
from retention.evaluate.words import age_phrase, dated, duration, short, unknown_age_words
from retention.model import Image, Repository
from retention.policy.model import Rule

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_COSIGN_NOUNS = {".sig": "signature", ".att": "attestation", ".sbom": "SBOM"}

Verdict = tuple[bool, int | None, str]  # (keep, rank, reason)


@dataclass(slots=True)
class TagStates:
    """Every tag of one repository with its state; which rule owns which digests."""

    states: list[TagState] = field(default_factory=list)  # sorted by tag name
    by_digest: dict[str, list[TagState]] = field(default_factory=lambda: defaultdict(list))
    owned: dict[int, dict[str, str]] = field(  # rule -> digest -> smallest owned tag
        default_factory=lambda: defaultdict(dict)
    )
    missing: int = 0  # tags whose manifest is not in the inventory
    orphans: int = 0  # attachment tags whose subject no longer exists


def tag_states(
    repo: Repository, images: dict[str, Image], rules: tuple[int, ...], ctx: Context
) -> TagStates:
    """Phase 1 before ranking: protected and unselected tags are kept, attachments of an
    existing subject follow it, every other tag goes to its owning rule."""
    out = TagStates()
    for tag in sorted(repo.tags, key=lambda t: t.name):
        st = TagState(tag.name, tag.digest)
        out.states.append(st)
        image = images.get(tag.digest)
        if image is None:
            # unknown means keep (docs/decisions.md): nothing to rank, nothing to delete
            st.reason = "its manifest is missing from the inventory"
            out.missing += 1
            continue
        out.by_digest[tag.digest].append(st)
        _classify_attachment(st, image, images)
        if not _owned_by_a_rule(st, repo, ctx, out):
            continue
        owner = ctx.owner(rules, tag.name)
        if owner is None:
            st.reason = orphan_prefix(st, "no rule selects this tag")
            continue
        st.rule = owner
        out.owned[owner].setdefault(tag.digest, tag.name)  # tags are sorted: the first is smallest
    return out


def _owned_by_a_rule(st: TagState, repo: Repository, ctx: Context, out: TagStates) -> bool:
    """False when `st` is decided without a rule: protected, following its subject, or an
    attachment whose subject may be alive elsewhere."""
    if st.digest in ctx.policy.protect_digests:
        st.protected_by = st.digest
        st.reason = "its digest is protected (`protect.digests`)"
        return False
    st.protected_by = ctx.protected_by(st.name)
    if st.protected_by is not None:
        # protect wins; a protected attachment still keeps its subject (the keep closure)
        st.reason = f"protected by pattern `{st.protected_by}`"
        return False
    if st.subject is not None:
        st.state = FOLLOW
        return False
    if st.orphan_of is not None:
        # Its subject is not in this repository. Alive in another one, or possibly outside
        # a partial inventory: not an orphan, or not known to be one. Kept, owned by no rule.
        st.subject_in = ctx.holder(st.orphan_of, repo.name)
        if st.subject_in is not None:
            st.reason = (
                f"{st.noun} of {short(st.orphan_of)} in repository {st.subject_in}: kept "
                "while its subject exists"
            )
            return False
        if not ctx.complete:
            st.reason = (
                f"{st.noun} of {short(st.orphan_of)}, which is not in the inventory: it "
                "covers only part of the registry, so the subject may exist elsewhere"
            )
            return False
        out.orphans += 1
    return True


def rank_tags(tags: TagStates, images: dict[str, Image], ctx: Context) -> set[str]:
    """Rank each rule's images (newest first, ties by smallest tag) and decide every owned tag;
    returns the digests of unknown age that a rule with an age condition owns."""
    policy, now = ctx.policy, ctx.now
    unknown_digests: set[str] = set()
    verdict_of: dict[tuple[int, str], Verdict] = {}
    for ri, digests in tags.owned.items():
        rule = policy.rules[ri]
        known: list[tuple[int, str, str]] = []
        unknown: list[tuple[str, str]] = []
        for digest, first_tag in digests.items():
            created = dated(images[digest].created, now)
            if created is None:
                unknown.append((first_tag, digest))
            else:
                known.append((sort_key(created), first_tag, digest))
        known.sort()
        unknown.sort()
        if not rule.keep.all:  # age matters to this rule: report what it cannot rank
            unknown_digests.update(d for _, d in unknown)
        ranked = [d for _, _, d in known]
        if ctx.oldest:
            ranked.extend(d for _, d in unknown)
        else:
            for _, digest in unknown:
                verdict_of[ri, digest] = unknown_kept(rule, images[digest], now)
        for rank, digest in enumerate(ranked, 1):
            verdict_of[ri, digest] = rank_verdict(rule, images[digest], rank, now)
    for st in tags.states:
        if st.rule is not None:
            keep, st.rank, reason = verdict_of[st.rule, st.digest]
            st.state = KEEP if keep else DELETE
            st.reason = orphan_prefix(st, reason, policy.rules[st.rule])
    return unknown_digests


def sort_key(created: datetime) -> int:
    """Newest first: microseconds since the epoch, negated."""
    return -((created - _EPOCH) // _MICRO)


def _classify_attachment(st: TagState, image: Image, images: dict[str, Image]) -> None:
    """Mark `st` as following an existing subject, or as an orphan attachment, or neither."""
    cosign = oci.cosign_subject(st.name) if st.name.startswith("sha256-") else None
    noun = None
    if cosign is not None:
        # `sha256-<hex>` without a suffix is the OCI 1.1 referrers tag-schema fallback index
        dot = st.name.rfind(".")
        noun = _COSIGN_NOUNS[st.name[dot:]] if dot >= 0 else "referrers index"
    subject = image.subject
    if cosign is not None and cosign != image.digest and cosign in images:
        st.subject, st.noun = cosign, noun
    elif subject is not None and subject != image.digest and subject in images:
        st.subject, st.noun = subject, "referrer"
    elif cosign is not None and cosign not in images:
        st.orphan_of, st.noun = cosign, noun
    elif subject is not None and subject not in images:
        st.orphan_of, st.noun = subject, "referrer"


def orphan_prefix(st: TagState, reason: str, rule: Rule | None = None) -> str:
    if st.orphan_of is None:
        return reason
    head = f"orphan {st.noun} (subject {short(st.orphan_of)} no longer exists)"
    if rule is None:
        return f"{head}; {reason}"
    return f"{head}, selected by rule `{rule.name}`: {reason}"


def unknown_kept(rule: Rule, image: Image, now: datetime) -> Verdict:
    if rule.keep.all:
        return True, None, f"rule `{rule.name}` keeps all"
    return True, None, f"age unknown ({unknown_age_words(image, now)})"


def rank_verdict(rule: Rule, image: Image, rank: int, now: datetime) -> tuple[bool, int, str]:
    keep = rule.keep
    if keep.all:
        return True, rank, f"rule `{rule.name}` keeps all"
    if keep.last is None and keep.newer_than is None:
        # the schema requires a condition; a Keep without one keeps, never deletes by accident
        return True, rank, f"rule `{rule.name}` sets no keep condition"
    if keep.last is not None and rank <= keep.last:
        most = "the most recent" if keep.last == 1 else f"among the {keep.last} most recent"
        return True, rank, f"{most} (rank {rank})"
    created = dated(image.created, now)
    age = now - created if created is not None else None
    unknown = "age unknown"
    if created is None and image.created is not None:  # dated in the future
        unknown += f", {unknown_age_words(image, now)}"
    newer = keep.newer_than_text or duration(keep.newer_than)
    if keep.newer_than is not None and age is not None and age < keep.newer_than:
        return True, rank, f"younger than {newer} ({age_phrase(age)})"
    parts = []
    if keep.last is not None:
        parts.append(f"rank {rank} > {keep.last}")
    if keep.newer_than is not None:
        if age is None:
            parts.append(f"{unknown} (counted as oldest)")
        else:
            parts.append(f"{age_phrase(age)} >= {newer}")
    elif age is None:
        parts.append(f"{unknown} (ranked oldest)")
    return False, rank, " and ".join(parts)
