"""Apply's checks of a plan's untags that need no registry: a tag the current policy protects is
refused before anything (like a deletion), and the policy, evaluated again, must still plan each
untag (invariant 8; `policy_untag_keeps`)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from retention.apply import check_plan, policy_untag_keeps
from retention.errors import ApplyRefused
from retention.plan import Untag
from retention.policy.model import Pattern, Policy, RegistryConfig
from tests.support.plans import NOW, REGISTRY, entry, image_raw, make_plan

SHARED = image_raw("shared")
DIGEST = entry("app", SHARED).digest


def _untag(tag: str) -> Untag:
    return Untag("app", tag, DIGEST, "builds", "shares its image with stable")


def test_a_protected_untag_is_refused_before_anything() -> None:
    plan = replace(make_plan([]), untags=(_untag("v1.2.3"),))
    policy = Policy(
        registry=RegistryConfig(url=REGISTRY),
        rules=(),
        protect_tags=(Pattern(r"v\d+\.\d+\.\d+", re.compile(r"v\d+\.\d+\.\d+")),),
    )
    with pytest.raises(ApplyRefused, match=r"1 tag\(s\) the policy now protects: app:v1\.2\.3"):
        check_plan(plan, registry_url=REGISTRY, now=NOW, policy=policy)
    assert check_plan(replace(plan, untags=(_untag("build-1"),)), registry_url=REGISTRY, now=NOW)


@pytest.mark.parametrize(
    ("fresh_untags", "kept_tags", "deleted_tags", "expected"),
    [
        ([_untag("build-1")], [], [], {}),
        ([], ["build-1", "stable"], [], {("app", "build-1"): "one of the last 5"}),
        ([], [], ["build-1"], {("app", "build-1"): "its image is deleted now"}),
        ([], [], [], {("app", "build-1"): "it is not planned any more"}),
    ],
    ids=["still-planned", "kept-now", "image-deleted-now", "gone-from-the-plan"],
)
def test_an_untag_the_fresh_evaluation_does_not_plan_is_kept(
    fresh_untags: list[Untag],
    kept_tags: list[str],
    deleted_tags: list[str],
    expected: dict[tuple[str, str], str],
) -> None:
    plan = replace(make_plan([]), untags=(_untag("build-1"),))
    kept = [entry("app", SHARED, tags=kept_tags, reason="one of the last 5")] if kept_tags else []
    deleted = [entry("app", SHARED, tags=deleted_tags)] if deleted_tags else []
    fresh = replace(make_plan(deleted, kept), untags=tuple(fresh_untags))
    assert policy_untag_keeps(plan, fresh) == expected
