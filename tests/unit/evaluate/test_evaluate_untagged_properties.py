"""Invariants of untagged rules over random storage inventories (docs/policy.md, "Untagged
manifests"): untagged manifests never cost a tagged image, the in-flight floor always holds, and
`protect.digests` always wins."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from retention.evaluate import IN_FLIGHT, evaluate
from retention.model import Image, Inventory, Kind, Repository
from retention.oci import cosign_subject
from retention.policy.model import Policy
from tests.unit.evalkit import NOW, D, image, rule
from tests.unit.evaluate.test_evaluate_properties import COMMON, POOL, inventories, policies

EXTRA = [f"u{i}" for i in range(6)]  # the untagged manifests a storage inventory adds


@st.composite
def pushed(draw: st.DrawFn) -> datetime | None:
    which = draw(st.integers(0, 5))
    if which == 0:
        return None
    if which == 1:  # around the in-flight floor
        return NOW - timedelta(minutes=draw(st.integers(-5, 90)))
    return NOW - timedelta(hours=draw(st.integers(2, 24 * 60)))


@st.composite
def untagged_images(draw: st.DrawFn) -> list[Image]:
    out = []
    for name in EXTRA:
        kind = draw(st.sampled_from([Kind.IMAGE, Kind.IMAGE, Kind.INDEX, Kind.ARTIFACT]))
        created = draw(st.none() | st.integers(-10, 24 * 90))
        when = NOW - timedelta(hours=created) if created is not None else None
        others = [n for n in [*EXTRA, *POOL] if n != name]
        children: list[str] = []
        subject = None
        if kind is Kind.INDEX:
            children = draw(st.lists(st.sampled_from(others), max_size=3, unique=True))
        elif kind is Kind.ARTIFACT:
            subject = draw(st.sampled_from([*others, "gone"]))
        blobs = draw(st.lists(st.sampled_from(["b1", "b2", "x1", "x2"]), max_size=2, unique=True))
        out.append(
            image(
                name,
                when,
                kind=kind,
                children=children,
                subject=subject,
                blobs=[(b, 1000 + len(b)) for b in blobs],
                pushed_at=draw(pushed()),
            )
        )
    return out


@st.composite
def scenes(draw: st.DrawFn) -> tuple[Policy, Inventory, Inventory, datetime]:
    """(policy, the storage inventory without untagged additions, with them, now)."""
    base = draw(inventories())
    base = replace(
        base,
        source="storage",
        repositories=tuple(
            Repository(
                r.name,
                r.tags,
                tuple(replace(i, pushed_at=NOW - timedelta(days=40)) for i in r.images),
            )
            for r in base.repositories
        ),
    )
    extra = draw(untagged_images())
    repos = []
    for r in base.repositories:
        added = draw(st.lists(st.sampled_from(extra), max_size=len(extra), unique_by=str))
        have = {i.digest for i in r.images}
        images = [*r.images, *(i for i in added if i.digest not in have)]
        repos.append(Repository(r.name, r.tags, tuple(sorted(images, key=lambda i: i.digest))))
    with_untagged = replace(base, repositories=tuple(repos))
    p = draw(policies())
    if draw(st.booleans()):
        keep = draw(st.sampled_from(["last", "newer", "both", "all"]))
        u = rule(
            "untagged",
            untagged=True,
            repos=draw(st.sampled_from([(), (), ("apps/.*",), ("lib",)])),
            keep_all=keep == "all",
            last=draw(st.integers(0, 2)) if keep in ("last", "both") else None,
            newer_than=draw(st.sampled_from(["1d", "10d"])) if keep in ("newer", "both") else None,
        )
        at = draw(st.integers(0, len(p.rules)))
        p = replace(p, rules=(*p.rules[:at], u, *p.rules[at:]))
    protected = draw(st.lists(st.sampled_from([*EXTRA, *POOL]), max_size=3, unique=True))
    p = replace(p, protect_digests=frozenset(D(n) for n in protected))
    now = NOW + timedelta(days=draw(st.sampled_from([0, 0, 1, 30])))  # --as-of moves `now` only
    return p, base, with_untagged, now


def _deleted_tagged(p: Policy, inv: Inventory, now: datetime) -> set[tuple[str, str]]:
    tagged = {(r.name, t.digest) for r in inv for t in r.tags}
    return {(e.repository, e.digest) for e in evaluate(p, inv, now).deletions} & tagged


def _following_roots(inv: Inventory) -> set[tuple[str, str]]:
    """Tagged images that follow, transitively, an untagged manifest the inventory already has
    (a cosign tag or `subject` naming it): they go with it, so the untagged additions that move
    it down its rule's `last` may delete them too. The property is about every other one."""
    out: set[tuple[str, str]] = set()
    for r in inv:
        follows: dict[str, set[str]] = {}  # subject -> what follows it
        for i in r.images:
            if i.subject is not None:
                follows.setdefault(i.subject, set()).add(i.digest)
        for t in r.tags:
            if (subject := cosign_subject(t.name)) is not None:
                follows.setdefault(subject, set()).add(t.digest)
        stack = sorted(_roots(r))
        seen = set(stack)
        while stack:
            for d in follows.get(stack.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        out.update((r.name, d) for d in seen)
    return out


@COMMON
@given(scenes())
def test_untagged_additions_never_delete_more_tagged_images(
    scene: tuple[Policy, Inventory, Inventory, datetime],
) -> None:
    p, base, with_untagged, now = scene
    more = _deleted_tagged(p, with_untagged, now) - _deleted_tagged(p, base, now)
    assert more <= _following_roots(base)


def _roots(r: Repository) -> set[str]:
    """The untagged manifests of `r`, by the definition, computed independently of evaluate."""
    tagged = {t.digest for t in r.tags}
    present = {i.digest for i in r.images}
    children = {c for i in r.images for c in i.children if c != i.digest}
    return {
        i.digest
        for i in r.images
        if i.digest not in tagged
        and i.digest not in children
        and not (i.subject is not None and i.subject != i.digest and i.subject in present)
    }


@COMMON
@given(scenes())
def test_no_untagged_manifest_pushed_within_the_hour_is_deleted(
    scene: tuple[Policy, Inventory, Inventory, datetime],
) -> None:
    p, _, inv, now = scene
    deleted = {(e.repository, e.digest) for e in evaluate(p, inv, now).deletions}
    for r in inv:
        for digest in _roots(r):
            img = r.image(digest)
            assert img is not None
            young = img.pushed_at is None or inv.taken_at - img.pushed_at < IN_FLIGHT
            if young:
                assert (r.name, digest) not in deleted


@COMMON
@given(scenes())
def test_protect_digests_always_wins(
    scene: tuple[Policy, Inventory, Inventory, datetime],
) -> None:
    p, _, inv, now = scene
    deleted = {(e.repository, e.digest) for e in evaluate(p, inv, now).deletions}
    for r in inv:
        for img in r.images:
            if img.digest not in p.protect_digests:
                continue
            assert (r.name, img.digest) not in deleted
            for child in img.children:
                assert (r.name, child) not in deleted
            for other in r.images:
                if other.subject == img.digest:
                    assert (r.name, other.digest) not in deleted


@COMMON
@given(scenes())
def test_untagged_rules_delete_only_untagged_manifests_and_what_follows(
    scene: tuple[Policy, Inventory, Inventory, datetime],
) -> None:
    p, _, inv, now = scene
    plan = evaluate(p, inv, now)
    by_repo = {r.name: r for r in inv}
    untagged_rules = {rule.name for rule in p.rules if rule.match.untagged}
    for e in plan.deletions:
        if e.rule in untagged_rules:
            assert e.tags == ()
            assert e.digest in _roots(by_repo[e.repository])
