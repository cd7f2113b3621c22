"""PURE untagged manifests of a repository (docs/policy.md, "Untagged manifests"): which they
are, the rule that owns each or why it is kept whatever the rules say, and the ranking that
decides the owned ones; the tags each used to carry, from the storage's tag history.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from retention.evaluate.context import Context, TagState, Untagged
from retention.evaluate.tags import Verdict, rank_verdict, sort_key, unknown_kept
from retention.evaluate.words import age_words, aware, dated, short
from retention.model import Image, Repository, TagEvent

# An untagged manifest pushed less than this before the inventory was taken may be the first half
# of a multi-platform push (platform manifests go up before their index): always kept.
IN_FLIGHT = timedelta(hours=1)


def untagged_digests(repo: Repository) -> frozenset[str]:
    """The untagged manifests of `repo`: no tag names them, no other manifest of the repository
    lists them, and their `subject`, if any, is not in the repository (docs/policy.md)."""
    present = {i.digest for i in repo.images}
    tagged = {t.digest for t in repo.tags}
    listed = {c for i in repo.images for c in i.children if c != i.digest}
    return frozenset(
        i.digest
        for i in repo.images
        if i.digest not in tagged
        and i.digest not in listed
        and (i.subject is None or i.subject == i.digest or i.subject not in present)
    )


def untagged_roots(
    repo: Repository,
    images: dict[str, Image],
    by_digest: dict[str, list[TagState]],
    parents: dict[str, list[str]],
    rules: tuple[int, ...],
    ctx: Context,
) -> dict[str, Untagged]:
    """The untagged manifests of `repo` (docs/policy.md, "Untagged manifests"), each with its
    owning rule, or the reason it is kept whatever the rules say. Ranking is `rank_untagged`."""
    policy = ctx.policy
    untagged_rules = [i for i in rules if policy.rules[i].match.untagged]
    out: dict[str, Untagged] = {}
    for digest in sorted(images):
        image = images[digest]
        if digest in by_digest or digest in parents:
            continue
        subject = image.subject
        if subject is not None and subject != digest and subject in images:
            continue  # a referrer follows its subject
        root = out[digest] = Untagged(digest)
        if digest in policy.protect_digests:
            root.protected = True
            root.reason = "untagged; its digest is protected (`protect.digests`)"
            continue
        if subject is not None and subject != digest:
            holder = ctx.holder(subject, repo.name)
            if holder is not None:
                root.reason = (
                    f"referrer of {short(subject)} in repository {holder}: kept while its "
                    "subject exists"
                )
                continue
            if not ctx.complete:
                root.reason = (
                    f"referrer of {short(subject)}, which is not in the inventory: it covers "
                    "only part of the registry, so the subject may exist elsewhere"
                )
                continue
        if not untagged_rules:
            root.unselected = True
            continue  # the closure reason says it: untagged, no rule selects it
        root.rule = untagged_rules[0]  # the first untagged rule selecting the repository owns it
    return out


def rank_untagged(
    roots: dict[str, Untagged],
    images: dict[str, Image],
    ctx: Context,
    former: dict[str, list[tuple[str, datetime]]],
) -> set[str]:
    """Decide the owned untagged manifests, rule by rule, by `created` (newest first, ties by
    digest); returns the digests of unknown age that a rule with an age condition owns.

    One pushed within IN_FLIGHT of the inventory, or at an unknown time, is kept and takes no
    place in `last` (docs/decisions.md, "Untagged manifests").
    """
    policy = ctx.policy
    by_rule: dict[int, list[str]] = defaultdict(list)
    unknown_digests: set[str] = set()
    for digest, root in roots.items():
        if root.rule is None:
            continue
        rule = policy.rules[root.rule]
        pushed = images[digest].pushed_at
        head = f"untagged{was(former.get(digest, ()))}, rule `{rule.name}`"
        if pushed is None:
            root.reason = f"{head}: push time unknown, kept (a push may be in flight)"
        elif (since := ctx.taken_at - aware(pushed)) < IN_FLIGHT:
            root.reason = (
                f"{head}: pushed {age_words(max(since, timedelta(0)))} before the inventory "
                "was taken, kept (a push may be in flight for an hour)"
            )
        else:
            by_rule[root.rule].append(digest)
    for ri, digests in by_rule.items():
        rule = policy.rules[ri]
        known: list[tuple[int, str]] = []
        unknown: list[str] = []
        for d in sorted(digests):
            created = dated(images[d].created, ctx.now)  # a future date is an unknown age
            if created is None:
                unknown.append(d)
            else:
                known.append((sort_key(created), d))
        known.sort()
        if not rule.keep.all:
            unknown_digests.update(unknown)
        ranked = [d for _, d in known]
        verdicts: dict[str, Verdict] = {}
        if ctx.oldest:
            ranked.extend(unknown)
        else:
            for d in unknown:
                verdicts[d] = unknown_kept(rule, images[d], ctx.now)
        for place, d in enumerate(ranked, 1):
            verdicts[d] = rank_verdict(rule, images[d], place, ctx.now)
        for d, (keep, rank, reason) in verdicts.items():
            root = roots[d]
            root.rank, root.delete = rank, not keep
            root.reason = f"untagged{was(former.get(d, ()))}, rule `{rule.name}`: {reason}"
    return unknown_digests


def former_tags(history: Iterable[TagEvent]) -> dict[str, list[tuple[str, datetime]]]:
    """digest -> [(tag, until)]: the tags a manifest carried, each until its next event."""
    by_tag: dict[str, list[TagEvent]] = defaultdict(list)
    for event in history:
        by_tag[event.tag].append(event)
    out: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for tag in sorted(by_tag):
        events = sorted(by_tag[tag], key=lambda e: (e.at, e.digest))
        for event, following in itertools.pairwise(events):
            if following.digest != event.digest:
                out[event.digest].append((tag, following.at))
    return out


def was(former: Iterable[tuple[str, datetime]]) -> str:
    """` (was `latest` until 2026-11-30, `main` until 2026-11-28)`, or ""."""
    parts = [f"`{tag}` until {aware(until).date().isoformat()}" for tag, until in former]
    return f" (was {', '.join(parts)})" if parts else ""
