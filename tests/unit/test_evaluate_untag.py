"""`settings.untag` in evaluation (docs/policy.md, docs/decisions.md "Untag: policy and plan"): a
tag its rule does not keep, on an image that must stay, is planned as an untag; so is a dangling
tag a rule selects and does not keep all; protected and kept tags never are."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from retention.evaluate import evaluate, explain
from retention.model import Inventory, Kind
from retention.plan import Plan
from retention.policy.model import Policy
from tests.unit.evalkit import NOW, D, ago, image, index, inventory, policy, repo, rule, sig

R = "apps/web"


@dataclass(frozen=True)
class Case:
    policy: Policy
    inventory: Inventory
    deleted: set[str]  # image names the plan deletes
    # (tag, image name or None for a dangling tag, rule, the reason)
    untags: list[tuple[str, str | None, str | None, str]] = field(default_factory=list)


def _web(
    tags: dict[str, str], *images: tuple[str, float], dangling: list[str] | None = None
) -> Inventory:
    return inventory(
        repo(R, tags, [image(n, ago(days)) for n, days in images], dangling=dangling or [])
    )


CASES = {
    "shared-with-a-protected-tag": Case(
        policy(rule("ci", tags=["build-.*"], last=1), protect=["latest"], untag=True),
        _web({"latest": "A", "build-1": "A", "build-2": "B"}, ("A", 9), ("B", 1)),
        deleted=set(),
        untags=[
            (
                "build-1",
                "A",
                "ci",
                "its image is kept by `latest` (protected); rule `ci`: rank 2 > 1",
            )
        ],
    ),
    "shared-with-a-tag-another-rule-keeps": Case(
        policy(
            rule("releases", tags=["release-.*"], keep_all=True),
            rule("main", tags=["main-.*"], last=1),
            untag=True,
        ),
        _web({"release-1": "A", "main-old": "A", "main-new": "B"}, ("A", 9), ("B", 1)),
        deleted=set(),
        untags=[
            ("main-old", "A", "main", "its image is kept by `release-1`; rule `main`: rank 2 > 1")
        ],
    ),
    "keep-last-counts-images-shared-digests-go-together": Case(
        policy(rule("all", last=2), untag=True),
        _web({"a1": "A", "a2": "A", "b": "B", "c1": "C", "c2": "C"}, ("A", 1), ("B", 2), ("C", 3)),
        deleted={"C"},  # both of C's tags are doomed: the image goes, nothing to untag
    ),
    "keep-last-one-tag-of-the-oldest-protected": Case(
        policy(rule("all", last=2), protect=["c2"], untag=True),
        _web({"a1": "A", "a2": "A", "b": "B", "c1": "C", "c2": "C"}, ("A", 1), ("B", 2), ("C", 3)),
        deleted=set(),
        untags=[
            ("c1", "C", "all", "its image is kept by `c2` (protected); rule `all`: rank 3 > 2")
        ],
    ),
    "a-kept-tag-is-never-untagged": Case(
        policy(rule("all", last=1), untag=True),
        _web({"new": "A", "also-new": "A", "old": "B"}, ("A", 1), ("B", 5)),
        deleted={"B"},
    ),
    "dangling-selected": Case(
        policy(rule("all", last=1), untag=True),
        _web({"new": "A"}, ("A", 1), dangling=["ghost"]),
        deleted=set(),
        untags=[
            (
                "ghost",
                None,
                "all",
                "a dangling tag (listed, its manifest gone); rule `all` selects it",
            )
        ],
    ),
    "dangling-of-a-keep-all-rule-stays": Case(
        policy(rule("all", keep_all=True), untag=True),
        _web({"new": "A"}, ("A", 1), dangling=["ghost"]),
        deleted=set(),
    ),
    "dangling-selected-by-no-rule-stays": Case(
        policy(rule("ci", tags=["build-.*"], last=1), untag=True),
        _web({"build-1": "A"}, ("A", 1), dangling=["ghost"]),
        deleted=set(),
    ),
    "dangling-protected-stays": Case(
        policy(rule("all", last=1), protect=["ghost"], untag=True),
        _web({"new": "A"}, ("A", 1), dangling=["ghost"]),
        deleted=set(),
    ),
    "protect-digests-wins": Case(
        policy(rule("all", last=1), protect_digests=["B"], untag=True),
        _web({"new": "A", "old": "B", "older": "B"}, ("A", 1), ("B", 5)),
        deleted=set(),
    ),
    "attachment-of-an-untagged-image-stays-with-it": Case(
        policy(rule("ci", tags=["build-.*"], last=1), protect=["latest"], untag=True),
        inventory(
            repo(
                R,
                {"latest": "A", "build-1": "A", "build-2": "B", sig("A"): "S"},
                [
                    image("A", ago(9)),
                    image("B", ago(1)),
                    image("S", None, kind=Kind.ARTIFACT),
                ],
            )
        ),
        deleted=set(),
        untags=[
            (
                "build-1",
                "A",
                "ci",
                "its image is kept by `latest` (protected); rule `ci`: rank 2 > 1",
            )
        ],
    ),
    "attachment-of-a-deleted-image-goes-with-it": Case(
        policy(rule("ci", tags=["build-.*"], last=1), untag=True),
        inventory(
            repo(
                R,
                {"build-1": "A", "build-2": "B", sig("A"): "S"},
                [image("A", ago(9)), image("B", ago(1)), image("S", None, kind=Kind.ARTIFACT)],
            )
        ),
        deleted={"A", "S"},
    ),
    "platform-manifest-of-a-kept-index": Case(
        policy(rule("all", last=1), untag=True),
        inventory(
            repo(
                R,
                {"multi": "I", "amd64-old": "K"},
                [
                    index("I", ago(1), ["K"]),
                    image("K", ago(5), platform="linux/amd64"),
                ],
            )
        ),
        deleted=set(),
        untags=[
            (
                "amd64-old",
                "K",
                "all",
                f"its image stays (platform linux/amd64 of kept index sha256:{D('I')[7:19]}); "
                "rule `all`: rank 2 > 1",
            )
        ],
    ),
}


def _untags(plan: Plan) -> list[tuple[str, str | None, str | None, str]]:
    names = {D(n): n for n in "ABCIKS"}
    return [
        (u.tag, names[u.digest] if u.digest is not None else None, u.rule, u.reason)
        for u in plan.untags
    ]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_untag_outcomes(case: Case) -> None:
    plan = evaluate(case.policy, case.inventory, NOW)
    names = {D(n): n for n in "ABCIKS"}
    assert {names[e.digest] for e in plan.deletions} == case.deleted
    assert _untags(plan) == case.untags
    assert plan.summary.tags_untagged == len(case.untags)
    untagged = {u.tag for u in plan.untags}
    for e in plan.kept:  # each tag is in one place: a kept image's tags, or an untag
        assert untagged.isdisjoint(e.tags)


def _off(p: Policy) -> Policy:
    return replace(p, settings=replace(p.settings, untag=False))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_without_untag_nothing_is_untagged_and_deletions_are_the_same(case: Case) -> None:
    with_untag = evaluate(case.policy, case.inventory, NOW)
    plan = evaluate(_off(case.policy), case.inventory, NOW)
    assert plan.untags == () and plan.summary.tags_untagged == 0
    assert plan.deletions == with_untag.deletions
    assert plan.summary.bytes_reclaimable == with_untag.summary.bytes_reclaimable


def test_untag_off_keeps_a_shared_tag_as_before() -> None:
    case = CASES["shared-with-a-protected-tag"]
    plan = evaluate(_off(case.policy), case.inventory, NOW)
    [kept] = [e for e in plan.kept if e.digest == D("A")]
    assert kept.tags == ("build-1", "latest")
    [v] = explain(_off(case.policy), case.inventory, NOW, R, "build-1")
    assert v.line() == "kept: shares digest with `latest` (protected)"


def test_untag_off_leaves_dangling_tags_with_a_warning() -> None:
    case = CASES["dangling-selected"]
    plan = evaluate(_off(case.policy), case.inventory, NOW)
    assert plan.untags == ()
    assert (
        "1 dangling tag (listed, its manifest gone) left alone: `settings.untag: true` "
        "would remove it"
    ) in plan.warnings


def test_a_kept_entry_lists_the_tags_that_stay() -> None:
    case = CASES["shared-with-a-protected-tag"]
    plan = evaluate(case.policy, case.inventory, NOW)
    [kept] = [e for e in plan.kept if e.digest == D("A")]
    assert kept.tags == ("latest",)
    assert kept.reason == "protected by pattern `latest`"


def test_explain_says_untagged() -> None:
    case = CASES["shared-with-a-protected-tag"]
    [v] = explain(case.policy, case.inventory, NOW, R, "build-1")
    assert v.decision == "untagged"
    assert v.line() == (
        "untagged (its image is kept by `latest` (protected); rule `ci`: rank 2 > 1)"
    )
    assert v.rule == "ci" and v.rank == 2


def test_explain_a_dangling_tag() -> None:
    case = CASES["dangling-selected"]
    [v] = explain(case.policy, case.inventory, NOW, R, "ghost")
    assert v.decision == "untagged" and v.digest == ""
    assert (
        v.line() == "untagged (a dangling tag (listed, its manifest gone); rule `all` selects it)"
    )
    [kept] = explain(_off(case.policy), case.inventory, NOW, R, "ghost")
    assert kept.line() == (
        "kept: a dangling tag (listed, its manifest gone); rule `all` selects it, "
        "but settings.untag is false"
    )
