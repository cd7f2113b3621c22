"""PURE evaluation: a policy and an inventory, at a given `now`, become a `Plan`; and the per-tag
verdicts behind `retention explain`.

No I/O and no clock (`now` is a parameter). DESIGN §2 is the contract; what it leaves open is
recorded in docs/decisions.md (Evaluate and plan).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from retention import oci
from retention.errors import InventoryError
from retention.model import Image, Inventory, Repository, TagEvent
from retention.plan import Entry, Plan, Summary, human_bytes
from retention.policy.model import Policy, Rule

log = logging.getLogger(__name__)

Decision = Literal["kept", "deleted"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_NAMES_IN_WARNING = 10
# A `created` more than this after the evaluation time is a wrong clock or a forgery, not a build
# time: the image's age is unknown (docs/decisions.md, "Dates in the future"). The slack allows
# for clock skew between the build host and the machine that evaluates.
FUTURE_SLACK = timedelta(days=1)
# An untagged manifest pushed less than this before the inventory was taken may be the first half
# of a multi-platform push (platform manifests go up before their index): always kept.
IN_FLIGHT = timedelta(hours=1)

# A tag's state before manifests are decided (see `_evaluate_repository`).
_KEEP = 0  # kept on its own: protected, selected by no rule, or kept by its rule
_DELETE = 1  # its owning rule does not keep it
_FOLLOW = 2  # an attachment whose subject exists: it follows that subject

_COSIGN_NOUNS = {".sig": "signature", ".att": "attestation", ".sbom": "SBOM"}


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
        """`kept: among the 5 most recent (rank 3)`."""
        return f"{self.decision}: {self.reason}"


def evaluate(policy: Policy, inventory: Inventory, now: datetime) -> Plan:
    """Evaluate `policy` against `inventory` as of `now` (an aware datetime; naive means UTC)."""
    now = _aware(now)
    ctx = _Context(policy, now, inventory)
    deletions: list[Entry] = []
    kept: list[Entry] = []
    owning: set[int] = set()
    unmatched: list[str] = []
    unknown_age = orphans = missing = 0
    future: list[str] = []
    unselected: list[str] = []
    freeable: list[tuple[str, str]] = []  # what deleting the unselected untagged would delete
    repositories = sorted(inventory.repositories, key=lambda r: r.name)
    for repo in repositories:
        out = _evaluate_repository(repo, ctx, want_verdicts=False)
        deletions.extend(out.deletions)
        kept.extend(out.kept)
        owning |= out.owning
        unknown_age += out.unknown_age
        orphans += out.orphans
        missing += out.missing
        future.extend(out.future)
        unselected.extend(out.unselected)
        freeable.extend((repo.name, d) for d in out.freeable)
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
            f"{_count(len(unselected), 'untagged manifest')} "
            f"({human_bytes(would - reclaimable)}) kept: {why}"
        )
    warnings.extend(_future_warning(future))
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
        complete=inventory.complete,
    )
    return Plan(
        generated_at=_aware(inventory.taken_at),  # when the inventory was taken (wall clock)
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
    )


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
    out = _evaluate_repository(repo, _Context(policy, _aware(now), inventory), want_verdicts=True)
    if digest is not None:
        found = [v for v in out.verdicts if v.digest == digest]
        if not found:
            raise InventoryError(
                f"manifest {digest} is not in repository {repository!r}",
                hint=f"list its manifests with `retention inventory -p POLICY -r {repository}`",
            )
        return found
    verdicts = [v for v in out.verdicts if not v.untagged]
    if tag is not None:
        verdicts = [v for v in verdicts if v.tag == tag]
        if not verdicts:
            raise InventoryError(
                f"tag {tag!r} is not in repository {repository!r}",
                hint=f"list its tags with `retention explain -p POLICY {repository}`",
            )
    return verdicts


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


# --- the per-repository evaluation --------------------------------------------------------------


class _Context:
    """The policy with its regex results cached per name: a 100,000-tag registry repeats names."""

    def __init__(self, policy: Policy, now: datetime, inventory: Inventory) -> None:
        self.policy = policy
        self.now = now
        self.taken_at = _aware(inventory.taken_at)
        self.complete = inventory.complete
        self._inventory = inventory
        self._holders: dict[str, list[str]] | None = None  # digest -> repositories
        self.oldest = policy.settings.unknown_age == "oldest"
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
        """The first of `rules` whose match selects `tag` (DESIGN §2: the first rule owns it)."""
        for i in rules:
            hits = self._tag_hits[i]
            hit = hits.get(tag)
            if hit is None:
                hit = hits[tag] = self.policy.rules[i].match.selects_tag(tag)
            if hit:
                return i
        return None


class _TagState:
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
        self.state = _KEEP
        self.rule: int | None = None
        self.rank: int | None = None
        self.reason = ""
        self.protected_by: str | None = None
        self.subject: str | None = None  # _FOLLOW: the digest it follows
        self.noun: str | None = None  # "signature", "attestation", "SBOM", "referrer"
        self.orphan_of: str | None = None  # an orphan attachment: its missing subject
        self.subject_in: str | None = None  # not an orphan: the repository of its subject


@dataclass(slots=True)
class _RepoOutcome:
    deletions: list[Entry]
    kept: list[Entry]
    verdicts: list[TagVerdict]
    owning: set[int]
    unknown_age: int
    orphans: int
    missing: int
    future: list[str]  # `repo@digest (created ...)` of images dated past now + FUTURE_SLACK
    unselected: list[str] = field(default_factory=list)  # untagged, kept: no rule selects them
    freeable: list[str] = field(default_factory=list)  # what deleting those would delete


@dataclass(slots=True)
class _Untagged:
    """The decision on one untagged manifest (a root: no tag, no index, no present subject)."""

    digest: str
    reason: str = ""
    rule: int | None = None
    rank: int | None = None
    delete: bool = False
    protected: bool = False
    unselected: bool = False


def _evaluate_repository(repo: Repository, ctx: _Context, *, want_verdicts: bool) -> _RepoOutcome:
    """Decide every tag and every manifest of one repository.

    1. Each tag gets a state: protected / unselected / kept by its rule (_KEEP), not kept by its
       rule (_DELETE), or an attachment following an existing subject (_FOLLOW).
    2. D, the grounded deletions, is the least set closed under: a tagged manifest all of whose
       tags are _DELETE or _FOLLOW a subject in D; an untagged platform manifest of an index in
       D; an untagged referrer of a subject in D.
    3. K, the kept manifests, is everything else, closed under "a kept X keeps Y": index →
       children, artifact → subject, subject → its attachments and referrers. Every grounding
       step of D has a keep edge the same way round, so D - K is still grounded.
    """
    now, policy = ctx.now, ctx.policy
    images: dict[str, Image] = {i.digest: i for i in repo.images}
    rules = ctx.rules_for(repo.name)
    parents, referrers = _graph(images)

    # 1. tag states
    states: list[_TagState] = []
    by_digest: dict[str, list[_TagState]] = defaultdict(list)
    owned: dict[int, dict[str, str]] = defaultdict(dict)  # rule -> digest -> smallest owned tag
    missing = orphans = 0
    for tag in sorted(repo.tags, key=lambda t: t.name):
        st = _TagState(tag.name, tag.digest)
        states.append(st)
        image = images.get(tag.digest)
        if image is None:
            # unknown => keep (registry-facts rule 4): nothing to rank, nothing to delete
            st.reason = "its manifest is missing from the inventory"
            missing += 1
            continue
        by_digest[tag.digest].append(st)
        _classify_attachment(st, image, images)
        if tag.digest in policy.protect_digests:
            st.protected_by = tag.digest
            st.reason = "its digest is protected (`protect.digests`)"
            continue
        st.protected_by = ctx.protected_by(tag.name)
        if st.protected_by is not None:
            # protect wins; a protected attachment still keeps its subject (closure below)
            st.reason = f"protected by pattern `{st.protected_by}`"
            continue
        if st.subject is not None:
            st.state = _FOLLOW
            continue
        if st.orphan_of is not None:
            # Its subject is not in this repository. Alive in another one, or possibly outside
            # a partial inventory: not an orphan, or not known to be one. Kept, owned by no rule.
            st.subject_in = ctx.holder(st.orphan_of, repo.name)
            if st.subject_in is not None:
                st.reason = (
                    f"{st.noun} of {_short(st.orphan_of)} in repository {st.subject_in}: kept "
                    "while its subject exists"
                )
                continue
            if not ctx.complete:
                st.reason = (
                    f"{st.noun} of {_short(st.orphan_of)}, which is not in the inventory: it "
                    "covers only part of the registry, so the subject may exist elsewhere"
                )
                continue
            orphans += 1
        owner = ctx.owner(rules, tag.name)
        if owner is None:
            st.reason = _orphan_prefix(st, "no rule selects this tag")
            continue
        st.rule = owner
        owned[owner].setdefault(tag.digest, tag.name)  # tags are sorted: the first is smallest

    # ranking, per rule, of the images it owns (DESIGN §2 "most recent")
    unknown_digests: set[str] = set()
    verdict_of: dict[tuple[int, str], tuple[bool, int | None, str]] = {}
    for ri, digests in owned.items():
        rule = policy.rules[ri]
        known: list[tuple[int, str, str]] = []
        unknown: list[tuple[str, str]] = []
        for digest, first_tag in digests.items():
            created = dated(images[digest].created, now)
            if created is None:
                unknown.append((first_tag, digest))
            else:
                known.append((-((created - _EPOCH) // _MICRO), first_tag, digest))
        known.sort()
        unknown.sort()
        if not rule.keep.all:  # age matters to this rule: report what it cannot rank
            unknown_digests.update(d for _, d in unknown)
        ranked = [d for _, _, d in known]
        if ctx.oldest:
            ranked.extend(d for _, d in unknown)
        else:
            for _, digest in unknown:
                verdict_of[ri, digest] = _unknown_kept(rule, images[digest], now)
        for rank, digest in enumerate(ranked, 1):
            verdict_of[ri, digest] = _rank_verdict(rule, images[digest], rank, now)
    for st in states:
        if st.rule is not None:
            keep, st.rank, reason = verdict_of[st.rule, st.digest]
            st.state = _KEEP if keep else _DELETE
            st.reason = _orphan_prefix(st, reason, policy.rules[st.rule])

    roots = _untagged_roots(repo, images, by_digest, parents, rules, ctx)
    unknown_digests |= _rank_untagged(roots, images, ctx, _former_tags(repo.history))

    # 2. grounded deletions, by a worklist over the subject/index edges
    pending: dict[str, int] = {}
    follow_deps: dict[str, list[str]] = defaultdict(list)  # subject -> manifests following it
    attached: dict[str, list[str]] = defaultdict(list)  # same, for every manifest: keep edges
    queue: list[str] = []
    for digest in sorted(by_digest):
        sts = by_digest[digest]
        for st in sts:
            if st.subject is not None:
                attached[st.subject].append(digest)
        if any(st.state == _KEEP for st in sts):
            continue
        follows = [st.subject for st in sts if st.state == _FOLLOW and st.subject is not None]
        for subject in follows:
            follow_deps[subject].append(digest)
        if follows:
            pending[digest] = len(follows)
        else:
            queue.append(digest)
    queue.extend(d for d, r in roots.items() if r.delete)
    graph = _Graph(images, by_digest, referrers, follow_deps, attached, policy.protect_digests)
    deleted, kept = graph.decide(queue, pending)

    unselected = [d for d, r in roots.items() if r.unselected]
    freeable: list[str] = []
    if unselected:  # what an untagged rule could free, for the plan's warning
        more, _ = graph.decide(queue + unselected, pending)
        freeable = sorted(more - deleted)

    # 4. entries and verdicts
    owners = set(owned) | {r.rule for r in roots.values() if r.rule is not None}
    out = _RepoOutcome(
        [], [], [], owners, len(unknown_digests), orphans, missing, [], unselected, freeable
    )
    out.future.extend(
        f"{repo.name}@{_short(d)} (created {oci.format_time(c)})"
        for d in sorted(unknown_digests)
        if (c := images[d].created) is not None
    )
    names = [r.name for r in policy.rules]
    for digest in sorted(images):
        image = images[digest]
        sts = by_digest.get(digest, [])
        parent = min(parents[digest]) if digest in parents else None
        rule_name: str | None = None
        if digest in deleted:
            reasons: dict[str, list[str]] = {}
            for st in sts:
                if st.state == _FOLLOW:
                    st.reason = f"{st.noun} of deleted image {_short(st.subject)}"
                reasons.setdefault(st.reason, []).append(st.name)
            rule_name = next((names[st.rule] for st in sts if st.rule is not None), None)
            root = roots.get(digest)
            if root is not None:
                reason = root.reason
                rule_name = names[root.rule] if root.rule is not None else None
            elif sts:
                reason = _joined(reasons)
            elif parent is not None:
                reason = f"{_platform(image)} of deleted index {_short(parent)}"
            else:
                reason = f"referrer of deleted image {_short(image.subject)}"
            out.deletions.append(_entry(repo.name, image, sts, parent, rule_name, reason))
            continue
        for st in sts:
            if st.state == _FOLLOW:
                st.reason = f"{st.noun} of kept image {_short(st.subject)}"
        decisive = next((st for st in sts if st.state != _DELETE), None)
        if decisive is not None:
            for st in sts:
                if st.state == _DELETE:
                    protected = " (protected)" if decisive.protected_by is not None else ""
                    st.reason = f"shares digest with `{decisive.name}`{protected}"
            reason = decisive.reason if len(sts) == 1 else f"`{decisive.name}`: {decisive.reason}"
            if decisive.state == _KEEP and decisive.rule is not None:
                rule_name = names[decisive.rule]
        elif (root := roots.get(digest)) is not None and root.reason:
            rule_name = names[root.rule] if root.rule is not None else None
            if root.delete:  # kept by what it is the subject of
                reason = _closure_reason(
                    image, images, parents, referrers, attached, kept, by_digest
                )
                root.reason = reason = f"{reason}; its rule alone would delete it ({root.reason})"
            else:
                reason = root.reason
        else:
            reason = _closure_reason(image, images, parents, referrers, attached, kept, by_digest)
            for st in sts:
                st.reason = f"{reason}; its rule alone would delete it ({st.reason})"
        out.kept.append(_entry(repo.name, image, sts, parent, rule_name, reason))

    if want_verdicts:
        former = _former_tags(repo.history)
        for entry in [*out.deletions, *out.kept]:
            if entry.tags:
                continue
            image = images[entry.digest]
            root = roots.get(entry.digest)
            out.verdicts.append(
                TagVerdict(
                    repository=repo.name,
                    tag="",
                    digest=entry.digest,
                    rule=entry.rule,
                    rank=root.rank if root is not None else None,
                    age=now - image.created if image.created is not None else None,
                    created=image.created,
                    created_raw=image.created_raw,
                    decision="deleted" if entry.digest in deleted else "kept",
                    reason=entry.reason,
                    protected=entry.digest in policy.protect_digests,
                    untagged=True,
                    pushed_at=image.pushed_at,
                    former_tags=tuple(former.get(entry.digest, ())),
                )
            )
        for st in states:
            image = images.get(st.digest)
            created = image.created if image is not None else None
            usable = dated(created, now)
            out.verdicts.append(
                TagVerdict(
                    repository=repo.name,
                    tag=st.name,
                    digest=st.digest,
                    rule=names[st.rule] if st.rule is not None else None,
                    rank=st.rank,
                    age=now - usable if usable is not None else None,
                    created=created,
                    created_raw=image.created_raw if image is not None else None,
                    decision="deleted" if st.digest in deleted else "kept",
                    reason=st.reason,
                    protected=st.protected_by is not None,
                )
            )
    return out


class _Graph:
    """Steps 2 and 3 of `_evaluate_repository` over one repository's manifests."""

    def __init__(
        self,
        images: dict[str, Image],
        by_digest: dict[str, list[_TagState]],
        referrers: dict[str, list[str]],
        follow_deps: dict[str, list[str]],
        attached: dict[str, list[str]],
        protected: frozenset[str],
    ) -> None:
        self.images = images
        self.by_digest = by_digest
        self.referrers = referrers
        self.follow_deps = follow_deps
        self.attached = attached
        self.protected = protected

    def decide(self, seeds: list[str], waiting: dict[str, int]) -> tuple[set[str], set[str]]:
        """(deleted, kept): the grounded deletions from `seeds`, less the keep closure."""
        images, by_digest = self.images, self.by_digest
        pending = dict(waiting)
        queue = list(seeds)
        deleted: set[str] = set()
        i = 0
        while i < len(queue):
            digest = queue[i]
            i += 1
            if digest in deleted:
                continue
            deleted.add(digest)
            queue.extend(c for c in images[digest].children if c in images and c not in by_digest)
            for dep in self.follow_deps.get(digest, ()):
                pending[dep] -= 1
                if pending[dep] == 0:
                    queue.append(dep)
            queue.extend(r for r in self.referrers.get(digest, ()) if r not in by_digest)
        # protect.digests wins over every rule; the closure keeps their children and referrers
        deleted -= self.protected

        # 3. keep closure
        kept = set(images) - deleted
        stack = sorted(kept)
        while stack:
            digest = stack.pop()
            image = images[digest]
            targets: list[str] = [c for c in image.children if c in images]
            if image.subject is not None and image.subject in images:
                targets.append(image.subject)
            targets.extend(st.subject for st in by_digest.get(digest, ()) if st.subject is not None)
            targets.extend(self.referrers.get(digest, ()))
            targets.extend(self.attached.get(digest, ()))
            for target in targets:
                if target not in kept:
                    kept.add(target)
                    stack.append(target)
        return deleted - kept, kept


def _untagged_roots(
    repo: Repository,
    images: dict[str, Image],
    by_digest: dict[str, list[_TagState]],
    parents: dict[str, list[str]],
    rules: tuple[int, ...],
    ctx: _Context,
) -> dict[str, _Untagged]:
    """The untagged manifests of `repo` (docs/policy.md, "Untagged manifests"), each with its
    owning rule, or the reason it is kept whatever the rules say. Ranking is `_rank_untagged`."""
    policy = ctx.policy
    untagged_rules = [i for i in rules if policy.rules[i].match.untagged]
    out: dict[str, _Untagged] = {}
    for digest in sorted(images):
        image = images[digest]
        if digest in by_digest or digest in parents:
            continue
        subject = image.subject
        if subject is not None and subject != digest and subject in images:
            continue  # a referrer follows its subject
        root = out[digest] = _Untagged(digest)
        if digest in policy.protect_digests:
            root.protected = True
            root.reason = "untagged; its digest is protected (`protect.digests`)"
            continue
        if subject is not None and subject != digest:
            holder = ctx.holder(subject, repo.name)
            if holder is not None:
                root.reason = (
                    f"referrer of {_short(subject)} in repository {holder}: kept while its "
                    "subject exists"
                )
                continue
            if not ctx.complete:
                root.reason = (
                    f"referrer of {_short(subject)}, which is not in the inventory: it covers "
                    "only part of the registry, so the subject may exist elsewhere"
                )
                continue
        if not untagged_rules:
            root.unselected = True
            continue  # the closure reason says it: untagged, no rule selects it
        root.rule = untagged_rules[0]  # the first untagged rule selecting the repository owns it
    return out


def _rank_untagged(
    roots: dict[str, _Untagged],
    images: dict[str, Image],
    ctx: _Context,
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
        head = f"untagged{_was(former.get(digest, ()))}, rule `{rule.name}`"
        if pushed is None:
            root.reason = f"{head}: push time unknown, kept (a push may be in flight)"
        elif (since := ctx.taken_at - _aware(pushed)) < IN_FLIGHT:
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
                known.append((-((created - _EPOCH) // _MICRO), d))
        known.sort()
        if not rule.keep.all:
            unknown_digests.update(unknown)
        ranked = [d for _, d in known]
        verdicts: dict[str, tuple[bool, int | None, str]] = {}
        if ctx.oldest:
            ranked.extend(unknown)
        else:
            for d in unknown:
                verdicts[d] = _unknown_kept(rule, images[d], ctx.now)
        for place, d in enumerate(ranked, 1):
            verdicts[d] = _rank_verdict(rule, images[d], place, ctx.now)
        for d, (keep, rank, reason) in verdicts.items():
            root = roots[d]
            root.rank, root.delete = rank, not keep
            root.reason = f"untagged{_was(former.get(d, ()))}, rule `{rule.name}`: {reason}"
    return unknown_digests


def _former_tags(history: Iterable[TagEvent]) -> dict[str, list[tuple[str, datetime]]]:
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


def _was(former: Iterable[tuple[str, datetime]]) -> str:
    """` (was `latest` until 2026-11-30, `main` until 2026-11-28)`, or ""."""
    parts = [f"`{tag}` until {_aware(until).date().isoformat()}" for tag, until in former]
    return f" (was {', '.join(parts)})" if parts else ""


def _graph(images: dict[str, Image]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """child -> parent indexes, and subject -> untagged-or-not referrers, all within the repo."""
    parents: dict[str, set[str]] = defaultdict(set)
    referrers: dict[str, list[str]] = defaultdict(list)
    for digest in sorted(images):
        image = images[digest]
        for child in image.children:
            if child in images and child != digest:
                parents[child].add(digest)
        if image.subject is not None and image.subject in images and image.subject != digest:
            referrers[image.subject].append(digest)
    return {c: sorted(p) for c, p in parents.items()}, dict(referrers)


def _classify_attachment(st: _TagState, image: Image, images: dict[str, Image]) -> None:
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


def _orphan_prefix(st: _TagState, reason: str, rule: Rule | None = None) -> str:
    if st.orphan_of is None:
        return reason
    head = f"orphan {st.noun} (subject {_short(st.orphan_of)} no longer exists)"
    if rule is None:
        return f"{head}; {reason}"
    return f"{head}, selected by rule `{rule.name}`: {reason}"


def dated(created: datetime | None, now: datetime) -> datetime | None:
    """`created` when it is a usable build time as of `now`; None when it is unknown or more
    than FUTURE_SLACK after `now` (such an image has an unknown age: it never ranks first)."""
    if created is None or created - now > FUTURE_SLACK:
        return None
    return created


def unknown_age_words(image: Image, now: datetime) -> str:
    """Why `image` has no usable age: `created 9999-01-01T00:00:00Z is in the future`,
    `created yesterday-ish` (the unparseable value as the registry wrote it), `no created date`.
    """
    if image.created is not None and dated(image.created, now) is None:
        return f"created {oci.format_time(image.created)} is in the future"
    if image.created_raw:
        return f"created {image.created_raw}"
    return "no created date"


def _unknown_kept(rule: Rule, image: Image, now: datetime) -> tuple[bool, int | None, str]:
    if rule.keep.all:
        return True, None, f"rule `{rule.name}` keeps all"
    return True, None, f"age unknown ({unknown_age_words(image, now)})"


def _rank_verdict(rule: Rule, image: Image, rank: int, now: datetime) -> tuple[bool, int, str]:
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
    newer = keep.newer_than_text or _duration(keep.newer_than)
    if keep.newer_than is not None and age is not None and age < keep.newer_than:
        return True, rank, f"younger than {newer} ({_age_phrase(age)})"
    parts = []
    if keep.last is not None:
        parts.append(f"rank {rank} > {keep.last}")
    if keep.newer_than is not None:
        if age is None:
            parts.append(f"{unknown} (counted as oldest)")
        else:
            parts.append(f"{_age_phrase(age)} >= {newer}")
    elif age is None:
        parts.append(f"{unknown} (ranked oldest)")
    return False, rank, " and ".join(parts)


def _closure_reason(
    image: Image,
    images: dict[str, Image],
    parents: dict[str, list[str]],
    referrers: dict[str, list[str]],
    attached: dict[str, list[str]],
    kept: set[str],
    by_digest: dict[str, list[_TagState]],
) -> str:
    """Why a manifest none of whose own tags keeps it is kept: what kept thing reaches it."""
    digest = image.digest
    kept_parents = [p for p in parents.get(digest, ()) if p in kept]
    if kept_parents:
        return f"{_platform(image)} of kept index {_short(kept_parents[0])}"
    if image.subject is not None and image.subject in kept:
        return f"referrer of kept image {_short(image.subject)}"
    kept_refs = sorted(
        {r for r in referrers.get(digest, ()) if r in kept}
        | {a for a in attached.get(digest, ()) if a in kept}
    )
    if kept_refs:
        return f"subject of kept attachment {_short(kept_refs[0])}"
    if not by_digest.get(digest):
        if image.subject is not None and image.subject not in images:
            return (
                f"orphan referrer (subject {_short(image.subject)} no longer exists), untagged: "
                "no rule can select it"
            )
        return "untagged and not referenced by any index or subject: no rule selects it"
    return "its attachments form a cycle with no deciding tag"  # unreachable for real digests


def _entry(
    repository: str,
    image: Image,
    sts: list[_TagState],
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


# --- plan-wide figures --------------------------------------------------------------------------


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
    ctx: _Context,
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
            f"{_count(unknown_age, 'image')} owned by a rule with unknown created date: {what}"
        )
    if orphans:
        out.append(
            f"{_count(orphans, 'orphan attachment tag')} (their subject no longer exists): "
            "deleted only where a rule selects them"
        )
    if missing:
        out.append(f"{_count(missing, 'tag')} point at manifests missing from the inventory: kept")
    if not inventory.complete:
        out.append(
            "the inventory covers only part of the registry: bytes_reclaimable is an upper bound"
        )
    return out


def _future_warning(future: list[str]) -> list[str]:
    if not future:
        return []
    names = ", ".join(future[:_NAMES_IN_WARNING])
    more = len(future) - _NAMES_IN_WARNING
    if more > 0:
        names += f" and {more} more"
    return [
        f"{_count(len(future), 'image')} created more than {age_words(FUTURE_SLACK)} after the "
        f"evaluation time, so of unknown age (never ranked most recent): {names}"
    ]


# --- words --------------------------------------------------------------------------------------


def _aware(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _short(digest: str | None) -> str:
    """`sha256:0123456789ab`: enough to find the image, short enough to read."""
    if digest is None:
        return "?"
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}"


def _platform(image: Image) -> str:
    return f"platform {image.platform}" if image.platform else "platform manifest"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "?"
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def age_words(age: timedelta) -> str:
    """`41 days`, `1 day`, `5 hours`, `3 minutes`, `12 seconds` (rounded down)."""
    seconds = int(age.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return _count(seconds // size, unit)
    return _count(max(seconds, 0), "second")


def _age_phrase(age: timedelta) -> str:
    if age < timedelta(0):
        return f"created {age_words(-age)} in the future"
    return f"{age_words(age)} old"
