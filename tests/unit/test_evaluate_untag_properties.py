"""Invariants of `settings.untag` over random inventories and policies (docs/policy.md): a tag
that is protected or kept is never untagged, an untag's image is never deleted by the same plan,
and turning untag on changes no deletion."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from retention.evaluate import evaluate, explain
from retention.model import Inventory
from retention.plan import from_json, to_json
from retention.policy.model import Policy
from tests.unit.evalkit import NOW
from tests.unit.test_evaluate_properties import COMMON, PLAIN_TAGS, inventories, policies


@st.composite
def with_dangling(draw: st.DrawFn) -> Inventory:
    """An inventory whose repositories may also list dangling tags (names no tag of theirs has)."""
    inv = draw(inventories())
    repos = []
    for repo in inv.repositories:
        taken = {t.name for t in repo.tags}
        free = [t for t in [*PLAIN_TAGS, "ghost", "ghost-2"] if t not in taken]
        dangling = draw(st.lists(st.sampled_from(free), max_size=2, unique=True))
        repos.append(replace(repo, dangling_tags=tuple(sorted(dangling))))
    return replace(inv, repositories=tuple(repos))


def _on(p: Policy) -> Policy:
    return replace(p, settings=replace(p.settings, untag=True))


@COMMON
@given(policies(), with_dangling())
def test_protected_and_kept_tags_are_never_untagged(p: Policy, inv: Inventory) -> None:
    p = _on(p)
    plan = evaluate(p, inv, NOW)
    for repo in inv.repositories:
        verdicts = {v.tag: v for v in explain(p, inv, NOW, repo.name)}
        untagged = {u.tag for u in plan.untags if u.repository == repo.name}
        for tag, v in verdicts.items():
            assert (tag in untagged) == (v.decision == "untagged"), v
            if tag in untagged:
                assert not v.protected, v
                assert not any(pattern.matches(tag) for pattern in p.protect_tags), v
                assert v.rule is not None, v  # a rule owns it and does not keep it


@COMMON
@given(policies(), with_dangling())
def test_an_untag_never_names_an_image_the_plan_deletes(p: Policy, inv: Inventory) -> None:
    plan = evaluate(_on(p), inv, NOW)
    deleted = {(e.repository, e.digest) for e in plan.deletions}
    for u in plan.untags:
        assert u.digest is None or (u.repository, u.digest) not in deleted, u
        if u.digest is None:
            repo = next(r for r in inv.repositories if r.name == u.repository)
            assert u.tag in repo.dangling_tags
        assert u.rule is not None


@COMMON
@given(policies(), with_dangling())
def test_untag_changes_no_deletion_and_each_tag_is_in_one_place(p: Policy, inv: Inventory) -> None:
    off = evaluate(p, inv, NOW)
    on = evaluate(_on(p), inv, NOW)
    assert off.untags == () and off.summary.tags_untagged == 0
    assert on.deletions == off.deletions
    assert on.summary.bytes_reclaimable == off.summary.bytes_reclaimable
    assert on.summary.tags_untagged == len(on.untags)
    places: dict[tuple[str, str], int] = {}
    for e in (*on.deletions, *on.kept):
        for tag in e.tags:
            places[e.repository, tag] = places.get((e.repository, tag), 0) + 1
    for u in on.untags:
        places[u.repository, u.tag] = places.get((u.repository, u.tag), 0) + 1
    assert all(n == 1 for n in places.values()), places
    # what untag removes from the kept entries is exactly what it untags
    kept_off = {(e.repository, t) for e in off.kept for t in e.tags}
    kept_on = {(e.repository, t) for e in on.kept for t in e.tags}
    assert kept_off - kept_on == {(u.repository, u.tag) for u in on.untags if u.digest}


@COMMON
@given(policies(), with_dangling())
def test_a_plan_with_untags_round_trips(p: Policy, inv: Inventory) -> None:
    plan = evaluate(_on(p), inv, NOW)
    text = to_json(plan)
    assert from_json(text, "plan.json") == plan
    assert to_json(from_json(text, "plan.json")) == text
