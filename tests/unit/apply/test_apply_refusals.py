"""Refusals before the first request: registry, format, limits, age, consistency (DESIGN §5)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from retention import oci
from retention.apply import check_plan, deletion_limit, parse_max_deletions
from retention.errors import ApplyRefused, PlanError, RetentionError
from retention.plan import Plan
from retention.policy.model import (
    MaxDeletions,
    Pattern,
    Policy,
    RegistryConfig,
    Settings,
)
from tests.support.plans import NOW, REGISTRY, entry, image_raw, index_raw, make_plan

A, B, C = image_raw("a"), image_raw("b"), image_raw("c")
INDEX = index_raw([A, B])


_DEFAULT_LIMIT = MaxDeletions(count=500)


def _policy(max_deletions: MaxDeletions = _DEFAULT_LIMIT, protect: str = "") -> Policy:
    patterns = (Pattern(protect, re.compile(protect)),) if protect else ()
    return Policy(
        registry=RegistryConfig(url=REGISTRY),
        rules=(),
        protect_tags=patterns,
        settings=Settings(max_deletions=max_deletions),
    )


def _plain(n: int = 3, **kw: object) -> Plan:
    dels = [entry("app", image_raw(f"img{i}"), tags=[f"v{i}"]) for i in range(n)]
    return make_plan(dels, [entry("app", image_raw("kept"), tags=["latest"])], **kw)  # type: ignore[arg-type]


Case = tuple[Callable[[], Plan], Policy | None, type[RetentionError], str]

REFUSALS: dict[str, Case] = {
    "other-registry": (
        lambda: _plain(registry="https://other.example.com"),
        None,
        ApplyRefused,
        "made for registry https://other.example.com",
    ),
    "format-version-2": (lambda: _plain(format_version=2), None, ApplyRefused, "format version 2"),
    "over-plan-limit": (
        lambda: _plain(3, max_deletions="2"),
        None,
        ApplyRefused,
        "deletes 3 images",
    ),
    "over-plan-percent": (
        lambda: _plain(3, max_deletions="50%"),  # 50% of 4 images in scope = 2
        None,
        ApplyRefused,
        "plan max_deletions 50% of 4 images in scope",
    ),
    "policy-stricter": (
        lambda: _plain(3, max_deletions="500"),
        _policy(MaxDeletions(count=1)),
        ApplyRefused,
        "more than the 1 allowed by policy max_deletions 1",
    ),
    "policy-percent-stricter": (
        lambda: _plain(3, max_deletions="10"),
        _policy(MaxDeletions(percent=25)),
        ApplyRefused,
        "policy max_deletions 25% of 4 images",
    ),
    "too-old": (
        lambda: _plain(generated_at=NOW - timedelta(hours=25)),
        None,
        ApplyRefused,
        "made 1d1h ago, longer than the maximum plan age 1d",
    ),
    "malformed-digest": (
        lambda: make_plan([entry("app", "sha256:xyz", tags=["a"])]),
        None,
        PlanError,
        "malformed digest",
    ),
    "layer-media-type": (
        lambda: make_plan(
            [entry("app", A, media_type="application/vnd.oci.image.layer.v1.tar+gzip")]
        ),
        None,
        PlanError,
        "not an image manifest or index",
    ),
    "child-of-kept-index": (
        lambda: make_plan(
            [entry("app", A, parent=oci.sha256_digest(INDEX))],
            [entry("app", INDEX, tags=["multi"])],
        ),
        None,
        PlanError,
        "a platform manifest of a kept index must never be deleted",
    ),
    "parent-not-an-index": (
        lambda: make_plan(
            [entry("app", B, tags=["b"]), entry("app", A, parent=oci.sha256_digest(B))]
        ),
        None,
        PlanError,
        "which is not an index",
    ),
    "deleted-and-kept": (
        lambda: make_plan([entry("app", A, tags=["a"])], [entry("app", A, tags=["b"])]),
        None,
        PlanError,
        "both as a deletion and as kept",
    ),
    "tag-deleted-and-kept": (
        lambda: make_plan([entry("app", A, tags=["a"])], [entry("app", B, tags=["a"])]),
        None,
        PlanError,
        "tag app:a is listed both as deleted and as kept",
    ),
    "listed-twice": (
        lambda: make_plan([entry("app", A, tags=["a"]), entry("app", A, tags=["b"])]),
        None,
        PlanError,
        "listed twice",
    ),
    "artifact-of-kept-subject": (
        lambda: make_plan(
            [entry("app", C, tags=[f"sha256-{oci.sha256_digest(A)[7:]}.sig"])],
            [entry("app", A, tags=["a"])],
        ),
        None,
        PlanError,
        "an artifact follows its subject",
    ),
    "subject-of-kept-artifact": (
        lambda: make_plan(
            [entry("app", A, tags=["a"])],
            [entry("app", C, tags=[f"sha256-{oci.sha256_digest(A)[7:]}.sig"])],
        ),
        None,
        PlanError,
        "never the subject of a kept artifact",
    ),
    "protected-now": (
        lambda: _plain(3),
        _policy(protect=r"v1"),
        ApplyRefused,
        "1 tag(s) the policy now protects: app:v1",
    ),
    "summary-edited": (
        lambda: _plain(3, images_deleted=1),
        None,
        PlanError,
        "its summary says 1 images are deleted, but it lists 3",
    ),
    "bad-max-deletions": (lambda: _plain(max_deletions="lots"), None, PlanError, "'lots'"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_before_any_request(name: str) -> None:
    build, policy, error, text = REFUSALS[name]
    with pytest.raises(error) as caught:
        check_plan(build(), registry_url=REGISTRY, now=NOW, policy=policy)
    assert text in caught.value.diagnostics()
    assert caught.value.hint  # every refusal says what to do


@pytest.mark.parametrize(
    ("plan_limit", "policy_limit", "images", "allowed"),
    [
        ("3", None, 3, 3),
        ("500", MaxDeletions(count=3), 3, 3),
        ("75%", None, 3, 3),  # 75% of 4 in scope
        ("500", MaxDeletions(percent=100), 3, 4),
    ],
    ids=["plan-exact", "policy-exact", "percent-exact", "percent-all"],
)
def test_limit_at_the_boundary_passes(
    plan_limit: str, policy_limit: MaxDeletions | None, images: int, allowed: int
) -> None:
    policy = _policy(policy_limit) if policy_limit else None
    pre = check_plan(
        _plain(images, max_deletions=plan_limit), registry_url=REGISTRY, now=NOW, policy=policy
    )
    assert (pre.images, pre.limit.allowed) == (images, allowed)


def test_platform_manifests_count_as_images_like_the_plan_summary() -> None:
    index = entry("app", INDEX, tags=["multi"])
    children = [entry("app", raw, parent=index.digest) for raw in (A, B)]
    plan = make_plan([index, *children], max_deletions="3")
    pre = check_plan(plan, registry_url=REGISTRY, now=NOW)
    assert (pre.images, pre.manifests, plan.summary.images_deleted) == (3, 3, 3)
    with pytest.raises(ApplyRefused, match="deletes 3 images"):
        check_plan(replace(plan, max_deletions="2"), registry_url=REGISTRY, now=NOW)


def test_an_inflated_summary_cannot_loosen_a_percentage() -> None:
    plan = _plain(3, max_deletions="50%", images=1000)  # 50% of the 4 entries listed, not of 1000
    with pytest.raises(ApplyRefused, match="50% of 4 images in scope"):
        check_plan(plan, registry_url=REGISTRY, now=NOW)


def test_registry_urls_compare_normalised() -> None:
    plan = _plain(registry="HTTP://127.0.0.1:5000/")
    assert check_plan(plan, registry_url=REGISTRY, now=NOW).manifests == 3


def test_max_plan_age_can_be_raised_or_disabled() -> None:
    old = _plain(generated_at=NOW - timedelta(days=3))
    assert check_plan(old, registry_url=REGISTRY, now=NOW, max_plan_age=timedelta(days=4))
    assert check_plan(old, registry_url=REGISTRY, now=NOW, max_plan_age=None)


def test_future_plan_warns() -> None:
    plan = _plain(generated_at=NOW + timedelta(hours=1))
    pre = check_plan(plan, registry_url=REGISTRY, now=NOW)
    assert pre.warnings == ("the plan is dated 1h in the future: check the clocks",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500", MaxDeletions(count=500)),
        ("25%", MaxDeletions(percent=25)),
        ("0", MaxDeletions(count=0)),
    ],
    ids=["count", "percent", "zero"],
)
def test_parse_max_deletions(text: str, expected: MaxDeletions) -> None:
    assert parse_max_deletions(text) == expected


@pytest.mark.parametrize(
    "text", ["-1", "101%", "", "x%"], ids=["negative", "over-100", "empty", "junk"]
)
def test_parse_max_deletions_rejects(text: str) -> None:
    with pytest.raises(PlanError):
        parse_max_deletions(text)


def test_stricter_limit_names_its_source() -> None:
    plan = replace(_plain(2, max_deletions="10%"))
    limit = deletion_limit(plan, MaxDeletions(count=5))
    assert (limit.allowed, limit.source) == (0, "plan max_deletions 10% of 3 images in scope")
