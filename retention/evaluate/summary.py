"""PURE evaluation of a whole inventory: every repository decided (retention/evaluate/
repository.py), their entries gathered into a `Plan` with its summary, the bytes garbage
collection would free, and the warnings a reviewer reads. What the policy language leaves open is
recorded in docs/decisions.md (Evaluate and plan).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from retention.evaluate.context import Context
from retention.evaluate.entries import entries
from retention.evaluate.repository import decide
from retention.evaluate.words import FUTURE_SLACK, age_words, aware, count
from retention.model import Inventory, Repository
from retention.plan import Entry, Plan, Summary, Untag, human_bytes
from retention.policy.model import Policy

# The package's logger, as before the package was split: log records name `retention.evaluate`.
log = logging.getLogger("retention.evaluate")

_NAMES_IN_WARNING = 10


def evaluate(policy: Policy, inventory: Inventory, now: datetime) -> Plan:
    """Evaluate `policy` against `inventory` as of `now` (an aware datetime; naive means UTC)."""
    now = aware(now)
    ctx = Context(policy, now, inventory)
    deletions: list[Entry] = []
    kept: list[Entry] = []
    untags: list[Untag] = []
    dangling_left = 0  # dangling tags a rule dooms, left alone: settings.untag is false
    owning: set[int] = set()
    unmatched: list[str] = []
    unknown_age = orphans = missing = 0
    future: list[str] = []
    unselected: list[str] = []
    freeable: list[tuple[str, str]] = []  # what deleting the unselected untagged would delete
    repositories = sorted(inventory.repositories, key=lambda r: r.name)
    for repo in repositories:
        decided = decide(repo, ctx)
        made = entries(decided, ctx)
        deletions.extend(made.deletions)
        kept.extend(made.kept)
        untags.extend(made.untags)
        if not policy.settings.untag:
            dangling_left += sum(1 for t in decided.dangling if t.doomed)
        owning |= decided.owners
        unknown_age += len(decided.unknown_age)
        orphans += decided.orphans
        missing += decided.missing
        future.extend(made.future)
        unselected.extend(decided.unselected)
        freeable.extend((repo.name, d) for d in decided.freeable)
        if not ctx.rules_for(repo.name):
            unmatched.append(repo.name)
    deletions.sort(key=lambda e: (e.repository, e.digest))
    kept.sort(key=lambda e: (e.repository, e.digest))
    warnings = _warnings(policy, ctx, inventory, owning, unmatched, unknown_age, orphans, missing)
    reclaimable = _reclaimable(repositories, [(e.repository, e.digest) for e in deletions])
    if unselected and inventory.source == "storage":
        # what an untagged rule could free: the bytes only they (and what follows them) hold
        would = _reclaimable(repositories, [(e.repository, e.digest) for e in deletions] + freeable)
        why = (
            "no untagged rule selects their repositories"
            if policy.has_untagged_rule
            else "no rule selects untagged manifests"
        )
        warnings.append(
            f"{count(len(unselected), 'untagged manifest')} "
            f"({human_bytes(would - reclaimable)}) kept: {why}"
        )
    warnings.extend(_future_warning(future))
    warnings.extend(_dangling_warning(dangling_left))
    warnings[:0] = inventory.names_left_alone()  # the walk's names outside the grammar
    for w in warnings:
        log.debug("plan warning: %s", w)
    summary = Summary(
        repositories=len(repositories),
        tags=sum(len(r.tags) for r in repositories),
        images=sum(len(r.images) for r in repositories),
        tags_deleted=sum(len(e.tags) for e in deletions),
        images_deleted=len(deletions),
        bytes_reclaimable=reclaimable,
        tags_untagged=len(untags),
        complete=inventory.complete,
    )
    return Plan(
        generated_at=aware(inventory.taken_at),  # when the inventory was taken (wall clock)
        evaluated_at=now,  # what the policy was evaluated at: `--as-of`, else the same
        registry=inventory.registry,
        policy_path=policy.path,
        policy_sha256=policy.sha256,
        max_deletions=str(policy.settings.max_deletions),
        summary=summary,
        deletions=tuple(deletions),
        kept=tuple(kept),
        warnings=tuple(warnings),
        inventory_source=inventory.source,
        untags=tuple(sorted(untags, key=lambda u: (u.repository, u.tag))),
    )


def _reclaimable(repositories: Iterable[Repository], deletions: Iterable[tuple[str, str]]) -> int:
    """Bytes garbage collection frees: each blob once, only if no kept manifest anywhere uses it.

    Blob data is shared by every repository of the registry (GC marks per repository but sweeps
    the global store), so a layer still used by a kept image in another repository is not freed.
    """
    deleted: dict[str, set[str]] = defaultdict(set)
    for repository, digest in deletions:
        deleted[repository].add(digest)
    in_use: set[str] = set()
    freed: dict[str, int] = {}
    for repo in repositories:
        gone = deleted.get(repo.name, set())
        for image in repo.images:
            if image.digest in gone:
                freed[image.digest] = image.manifest_size
                for blob in image.blobs:
                    freed[blob.digest] = blob.size
            else:
                in_use.add(image.digest)
                in_use.update(b.digest for b in image.blobs)
    return sum(size for digest, size in freed.items() if digest not in in_use)


def _warnings(
    policy: Policy,
    ctx: Context,
    inventory: Inventory,
    owning: set[int],
    unmatched: list[str],
    unknown_age: int,
    orphans: int,
    missing: int,
) -> list[str]:
    # In a partial inventory (--repository, --shard) a rule whose repositories are all outside
    # it owns nothing for that reason alone: say so only of rules that had a chance.
    in_scope = (
        set(range(len(policy.rules)))
        if inventory.complete
        else {i for r in inventory.repositories for i in ctx.rules_for(r.name)}
    )
    api = inventory.source == "api"
    out = [
        f"rule `{rule.name}` owns no "
        f"{'untagged manifest' if rule.match.untagged else 'tag'} in the inventory"
        for i, rule in enumerate(policy.rules)
        if i not in owning and i in in_scope and not (api and rule.match.untagged)
    ]
    blind = [f"`{rule.name}`" for rule in policy.rules if api and rule.match.untagged]
    if blind:
        # said once, whatever the number of untagged rules (docs/policy.md, "Untagged manifests")
        out.append(
            f"untagged {'rule' if len(blind) == 1 else 'rules'} {', '.join(blind)} "
            "select nothing: the inventory comes from the registry API, which lists tags only; "
            "set registry.storage.filesystem (and leave out --inventory-source api) to see "
            "untagged manifests"
        )
    if unmatched:
        names = ", ".join(unmatched[:_NAMES_IN_WARNING])
        more = len(unmatched) - _NAMES_IN_WARNING
        if more > 0:
            names += f" and {more} more"
        noun = "repository is" if len(unmatched) == 1 else "repositories are"
        out.append(f"{len(unmatched)} {noun} matched by no rule (all their tags are kept): {names}")
    if unknown_age:
        what = (
            "ranked oldest and counted as old (settings.unknown_age: oldest)"
            if policy.settings.unknown_age == "oldest"
            else "kept, taking no place in `last` (settings.unknown_age: keep)"
        )
        out.append(
            f"{count(unknown_age, 'image')} owned by a rule with unknown created date: {what}"
        )
    if orphans:
        out.append(
            f"{count(orphans, 'orphan attachment tag')} (their subject no longer exists): "
            "deleted only where a rule selects them"
        )
    if missing:
        out.append(f"{count(missing, 'tag')} point at manifests missing from the inventory: kept")
    if not inventory.complete:
        out.append(
            "the inventory covers only part of the registry: bytes_reclaimable is an upper bound"
        )
    return out


def _dangling_warning(left: int) -> list[str]:
    """Dangling tags a rule does not keep, left alone because settings.untag is false."""
    if not left:
        return []
    its, them = ("its", "it") if left == 1 else ("their", "them")
    return [
        f"{count(left, 'dangling tag')} (listed, {its} manifest gone) left alone: "
        f"`settings.untag: true` would remove {them}"
    ]


def _future_warning(future: list[str]) -> list[str]:
    if not future:
        return []
    names = ", ".join(future[:_NAMES_IN_WARNING])
    more = len(future) - _NAMES_IN_WARNING
    if more > 0:
        names += f" and {more} more"
    return [
        f"{count(len(future), 'image')} created more than {age_words(FUTURE_SLACK)} after the "
        f"evaluation time, so of unknown age (never ranked most recent): {names}"
    ]
