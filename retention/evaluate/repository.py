"""PURE evaluation of one repository, phase by phase: tag states and ranking
(retention/evaluate/tags.py), untagged manifests (untagged.py), grounded deletions and the keep
closure (graph.py), then the untags (untags.py). What it decides, `Decided`, is what the plan's
entries (entries.py) and the verdicts of `retention explain` (explain.py) are both made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retention.evaluate.context import Context, TagState, Untagged
from retention.evaluate.graph import Graph, links, seeds
from retention.evaluate.tags import rank_tags, tag_states
from retention.evaluate.untagged import former_tags, rank_untagged, untagged_roots
from retention.evaluate.untags import Dangling, dangling_tags, mark_untags
from retention.model import Image, Repository


@dataclass(slots=True)
class Decided:
    """One repository after phases 1 to 3: every tag's state, every manifest deleted or kept."""

    repo: Repository
    images: dict[str, Image]
    parents: dict[str, list[str]]  # child -> parent indexes
    referrers: dict[str, list[str]]  # subject -> referrers
    attached: dict[str, list[str]]  # subject -> manifests whose tags follow it
    states: list[TagState]
    by_digest: dict[str, list[TagState]]
    roots: dict[str, Untagged]  # the untagged manifests
    owners: set[int]  # the rules that own a tag or an untagged manifest here
    unknown_age: set[str]  # owned by a rule with an age condition, of unknown age
    missing: int
    orphans: int
    deleted: set[str]
    kept: set[str]
    unselected: list[str] = field(default_factory=list)  # untagged, kept: no rule selects them
    freeable: list[str] = field(default_factory=list)  # what deleting those would delete
    dangling: list[Dangling] = field(default_factory=list)  # listed, their manifest gone


def decide(repo: Repository, ctx: Context) -> Decided:
    """Decide every tag and every manifest of one repository."""
    images: dict[str, Image] = {i.digest: i for i in repo.images}
    rules = ctx.rules_for(repo.name)
    parents, referrers = links(images)
    tags = tag_states(repo, images, rules, ctx)  # 1. tag states
    unknown = rank_tags(tags, images, ctx)  # ranking, per rule, of the images it owns
    roots = untagged_roots(repo, images, tags.by_digest, parents, rules, ctx)
    unknown |= rank_untagged(roots, images, ctx, former_tags(repo.history))
    start = seeds(tags.by_digest, roots)
    graph = Graph(images, tags.by_digest, referrers, start, ctx.policy.protect_digests)
    deleted, kept = graph.decide(start.queue, start.pending)  # 2. and 3.
    unselected = [d for d, r in roots.items() if r.unselected]
    freeable: list[str] = []
    if unselected:  # what an untagged rule could free, for the plan's warning
        more, _ = graph.decide(start.queue + unselected, start.pending)
        freeable = sorted(more - deleted)
    mark_untags(tags.by_digest, deleted, ctx)  # settings.untag: after D and K, changing neither
    dangling = dangling_tags(repo, ctx)
    return Decided(
        repo=repo,
        images=images,
        parents=parents,
        referrers=referrers,
        attached=start.attached,
        states=tags.states,
        by_digest=tags.by_digest,
        roots=roots,
        owners=set(tags.owned)
        | {r.rule for r in roots.values() if r.rule is not None}
        | {t.rule for t in dangling if t.rule is not None},
        unknown_age=unknown,
        missing=tags.missing,
        orphans=tags.orphans,
        deleted=deleted,
        kept=kept,
        unselected=unselected,
        freeable=freeable,
        dangling=dangling,
    )
