"""Apply's refusals before the first request: the plan's format and consistency, its registry,
its age, protected tags and the deletion limit; and what a fresh evaluation of the policy says of
the planned deletions. PURE: no registry, no clock (`now` is a parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from retention import oci
from retention.errors import ApplyRefused, PlanError
from retention.journal import Key, TagKey
from retention.plan import FORMAT_VERSION, Entry, Plan
from retention.policy.model import MaxDeletions, Policy
from retention.urls import registry_key

DEFAULT_MAX_PLAN_AGE = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Limit:
    """The deletion limit apply enforces: the stricter of the plan's and the policy's."""

    images: int  # images (entries without a parent) the plan deletes
    allowed: int
    source: str  # human text, e.g. "policy max_deletions 25% of 40 images in scope"


@dataclass(frozen=True, slots=True)
class Preflight:
    """The result of the checks that need no registry: what apply is about to do."""

    images: int
    manifests: int
    repositories: int
    bytes_reclaimable: int
    limit: Limit
    plan_age: timedelta
    warnings: tuple[str, ...]


def parse_max_deletions(text: str) -> MaxDeletions:
    """The plan's `max_deletions` as the policy wrote it: "500" or "25%"."""
    value = text.strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent <= 100:
                raise ValueError(value)
            return MaxDeletions(percent=percent)
        count = int(value)
        if count < 0:
            raise ValueError(value)
        return MaxDeletions(count=count)
    except ValueError as exc:
        raise PlanError(
            f"plan max_deletions {text!r} is neither a count nor a percentage",
            hint="make a new plan; do not edit plan files by hand",
        ) from exc


def _limit_text(where: str, limit: MaxDeletions, in_scope: int) -> str:
    if limit.percent is not None:
        return f"{where} max_deletions {limit} of {in_scope} images in scope"
    return f"{where} max_deletions {limit}"


def deletion_limit(plan: Plan, policy_limit: MaxDeletions | None) -> Limit:
    """The stricter of the plan's and the policy's `max_deletions` for this plan.

    Counts images as the plan's summary does: every manifest, platform manifests included. A
    percentage is of the images in scope: the summary's count, or the entries the plan lists
    when those are fewer (a summary edited upwards cannot loosen the limit).
    """
    images = len(plan.deletions)
    in_scope = min(plan.summary.images, len(plan.deletions) + len(plan.kept))
    candidates = [("plan", parse_max_deletions(plan.max_deletions))]
    if policy_limit is not None:
        candidates.append(("policy", policy_limit))
    allowed, source = min(
        (
            (limit.limit(in_scope), _limit_text(where, limit, in_scope))
            for where, limit in candidates
        ),
        key=lambda pair: pair[0],
    )
    return Limit(images=images, allowed=allowed, source=source)


def _bad_plan(message: str) -> PlanError:
    return PlanError(
        f"the plan is inconsistent: {message}",
        hint="make a new plan with `retention plan -p POLICY -o plan.json`; "
        "plan files must not be edited by hand",
    )


def check_consistency(plan: Plan) -> None:
    """Structural checks a schema cannot express; each failure means a corrupt or edited plan."""
    if plan.format_version != FORMAT_VERSION:
        raise ApplyRefused(
            f"plan format version {plan.format_version} is not supported "
            f"(this retention applies version {FORMAT_VERSION})",
            hint="make the plan again with this retention release",
        )
    deletions: dict[Key, Entry] = {}
    deleted_tags: dict[tuple[str, str], str] = {}
    for e in plan.deletions:
        where = f"{e.repository}@{e.digest}"
        if not oci.is_repository(e.repository):
            raise _bad_plan(f"{e.repository!r} is not a repository name")
        if not oci.is_digest(e.digest):
            raise _bad_plan(f"deletion {e.repository}@{e.digest!r} has a malformed digest")
        if e.media_type not in oci.MANIFEST_TYPES:
            raise _bad_plan(
                f"deletion {where} has media type {e.media_type!r}, not an image manifest or "
                "index (a layer or config digest must never be deleted as a manifest)"
            )
        if e.size < 0:
            raise _bad_plan(f"deletion {where} has a negative size")
        if (e.repository, e.digest) in deletions:
            raise _bad_plan(f"{where} is listed twice in deletions")
        deletions[(e.repository, e.digest)] = e
        for tag in e.tags:
            if not oci.is_tag(tag):
                raise _bad_plan(f"deletion {where} lists {tag!r}, which is not a tag name")
            other = deleted_tags.setdefault((e.repository, tag), e.digest)
            if other != e.digest:
                raise _bad_plan(f"tag {e.repository}:{tag} is listed under two digests")
    if plan.summary.images_deleted != len(plan.deletions):
        raise _bad_plan(
            f"its summary says {plan.summary.images_deleted} images are deleted, but it lists "
            f"{len(plan.deletions)}"
        )
    kept_keys = {(k.repository, k.digest) for k in plan.kept}
    kept_tags = {(k.repository, t) for k in plan.kept for t in k.tags}
    for key, e in deletions.items():
        where = f"{e.repository}@{e.digest}"
        if key in kept_keys:
            raise _bad_plan(f"{where} is listed both as a deletion and as kept")
        for tag in e.tags:
            if (e.repository, tag) in kept_tags:
                raise _bad_plan(f"tag {e.repository}:{tag} is listed both as deleted and as kept")
            subject = oci.cosign_subject(tag)
            if subject is not None and (e.repository, subject) in kept_keys:
                raise _bad_plan(
                    f"{where} is an artifact ({tag}) of {subject}, which the plan keeps "
                    "(an artifact follows its subject)"
                )
        if e.parent is not None:
            parent = deletions.get((e.repository, e.parent))
            if parent is None:
                raise _bad_plan(
                    f"platform manifest {where} names index {e.parent}, which the plan does not "
                    "delete (a platform manifest of a kept index must never be deleted)"
                )
            if parent.media_type not in oci.INDEX_TYPES:
                raise _bad_plan(f"{where} names parent {e.parent}, which is not an index")
    for k in plan.kept:
        for tag in k.tags:
            subject = oci.cosign_subject(tag)
            if subject is not None and (k.repository, subject) in deletions:
                raise _bad_plan(
                    f"{k.repository}@{subject} is deleted while its artifact {tag} is kept "
                    "(never the subject of a kept artifact)"
                )


def check_plan(
    plan: Plan,
    *,
    registry_url: str,
    now: datetime,
    max_plan_age: timedelta | None = DEFAULT_MAX_PLAN_AGE,
    policy: Policy | None = None,
) -> Preflight:
    """Every refusal that needs no registry: format, consistency, registry, age, limits.

    Raises ApplyRefused or PlanError; nothing is contacted. `registry_url` is the registry the
    credentials are for (the policy's); `policy`, when given, adds its `max_deletions` and its
    `protect` patterns (a tag the current policy protects is never deleted).
    """
    check_consistency(plan)
    warnings: list[str] = []
    if registry_key(plan.registry) != registry_key(registry_url):
        raise ApplyRefused(
            f"the plan was made for registry {registry_key(plan.registry)}, but the policy names "
            f"{registry_key(registry_url)}",
            hint="apply a plan with the policy it was made from (-p POLICY), or make a new plan",
        )
    age = now - plan.generated_at
    if max_plan_age is not None and age > max_plan_age:
        raise ApplyRefused(
            f"the plan was made {_duration(age)} ago, longer than the maximum plan age "
            f"{_duration(max_plan_age)}: the registry has likely changed since",
            hint="make a new plan, or pass --max-plan-age to accept an older one",
        )
    if age < -timedelta(minutes=5):
        warnings.append(f"the plan is dated {_duration(-age)} in the future: check the clocks")
    if policy is not None:
        protected = sorted(
            [
                f"{e.repository}:{t}"
                for e in plan.deletions
                for t in e.tags
                if policy.is_protected(t)
            ]
            + [f"{u.repository}:{u.tag}" for u in plan.untags if policy.is_protected(u.tag)]
        )
        if protected:
            raise ApplyRefused(
                f"the plan deletes {len(protected)} tag(s) the policy now protects: "
                + ", ".join(protected[:5])
                + (" ..." if len(protected) > 5 else ""),
                hint="the policy changed since the plan was made: make a new plan",
            )
    limit = deletion_limit(plan, policy.settings.max_deletions if policy is not None else None)
    if limit.images > limit.allowed:
        raise ApplyRefused(
            f"the plan deletes {limit.images} images, more than the {limit.allowed} allowed by "
            f"{limit.source}; nothing was deleted",
            hint="review the plan; if it is right, raise settings.max_deletions in the policy "
            "and make a new plan",
        )
    return Preflight(
        images=limit.images,
        manifests=len(plan.deletions),
        repositories=len({e.repository for e in plan.deletions}),
        bytes_reclaimable=plan.summary.bytes_reclaimable,
        limit=limit,
        plan_age=age,
        warnings=tuple(warnings),
    )


def policy_keeps(plan: Plan, fresh: Plan) -> dict[Key, str]:
    """The planned deletions that `fresh` (the plan's policy evaluated again, now, on a fresh
    inventory of the repositories the plan touches) keeps, each with the reason it gives.

    A planned deletion `fresh` does not list at all is not here: it is gone from the registry,
    or unreachable from any tag, and the checks of `apply_plan` decide (gone, stale, refused).
    """
    planned = {(e.repository, e.digest) for e in plan.deletions}
    keeps: dict[Key, str] = {}
    for e in fresh.kept:
        key = (e.repository, e.digest)
        if key in planned:
            rule = e.rule and f"rule `{e.rule}`"
            keeps[key] = e.reason if not rule or rule in e.reason else f"{rule}: {e.reason}"
    return keeps


def untagged_owned(fresh: Plan) -> frozenset[Key]:
    """The untagged manifests a rule owns in `fresh` (deleted or kept by it): entries with no
    tags and no index that name a rule. Only an untagged rule owns such an entry."""
    return frozenset(
        (e.repository, e.digest)
        for e in (*fresh.deletions, *fresh.kept)
        if not e.tags and e.parent is None and e.rule is not None
    )


def _duration(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    text = "".join(parts)
    return text or f"{seconds}s"


def policy_untag_keeps(plan: Plan, fresh: Plan) -> dict[TagKey, str]:
    """Invariant 8 for untags: each untag of `plan` that `fresh` (the policy evaluated again on a
    fresh inventory) does not also plan, with the reason `fresh` gives for the tag."""
    again = {(u.repository, u.tag) for u in fresh.untags}
    reasons: dict[TagKey, str] = {}
    for entry in fresh.kept:
        for tag in entry.tags:
            reasons.setdefault((entry.repository, tag), entry.reason)
    for entry in fresh.deletions:
        for tag in entry.tags:
            reasons.setdefault((entry.repository, tag), "its image is deleted now")
    return {
        (u.repository, u.tag): reasons.get((u.repository, u.tag), "it is not planned any more")
        for u in plan.untags
        if (u.repository, u.tag) not in again
    }
