"""`retention init --storage`: the starter policy reads the storage and proposes an untagged
rule (keep 3, newer than 7 days) with the counts found."""

from __future__ import annotations

import pytest

from retention.policy.load import load_policy_text
from retention.starter import UntaggedSeen, starter_policy

TAGS = {"apps/web": ["latest", "v1.0.0", "main-abc1234"]}
URL = "https://registry.example.com"


@pytest.mark.parametrize(
    ("seen", "comment"),
    [
        (
            UntaggedSeen("/var/lib/registry", manifests=41, repositories=3, size=3 * 1024**3),
            "41 untagged manifests in 3 repositories, 3.0 GiB with shared layers",
        ),
        (
            UntaggedSeen("/srv/reg", manifests=1, repositories=1, size=700),
            "1 untagged manifest in 1 repository, 700 B with shared layers",
        ),
        (UntaggedSeen("/srv/reg"), "pushes by digest): none yet"),
    ],
    ids=["many", "one", "none"],
)
def test_starter_with_storage_has_an_untagged_rule(seen: UntaggedSeen, comment: str) -> None:
    text = starter_policy(TAGS, url=URL, untagged=seen)
    assert comment in text
    policy, diagnostics = load_policy_text(text, "<init>", env={}, require_env=False)
    assert [d for d in diagnostics if d.severity == "error"] == []
    assert [d.message for d in diagnostics] == []  # storage is set: no "selects nothing"
    assert policy.registry.storage_path == seen.storage
    (rule,) = [r for r in policy.rules if r.match.untagged]
    assert (rule.name, rule.keep.last, rule.keep.newer_than_text) == ("untagged", 3, "7d")
    assert not rule.match.repositories


def test_a_storage_path_with_a_dollar_brace_stays_literal() -> None:
    text = starter_policy(TAGS, url=URL, untagged=UntaggedSeen("/srv/${odd}"))
    policy, _ = load_policy_text(text, "<init>", env={}, require_env=False)
    assert policy.registry.storage_path == "/srv/${odd}"


def test_starter_without_storage_has_no_untagged_rule() -> None:
    text = starter_policy(TAGS, url=URL)
    assert "untagged" not in text and "storage" not in text
