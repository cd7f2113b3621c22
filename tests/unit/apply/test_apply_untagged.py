"""Untagged planned deletions must be held by something the plan deletes, as their own bytes
say: a platform manifest listed by its named (deleted) index, or a referrer whose subject the
plan deletes. Anything else is an edited or corrupt plan, refused before the first DELETE —
even with kept tags trusted (DESIGN §6 invariant 2). In-memory stand-in: ordering logic only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from retention import oci
from retention.apply import ApplyReport, apply_plan
from retention.errors import ApplyRefused, RegistryError
from retention.journal import Journal
from retention.plan import Plan
from tests.support.orderfake import Fetched, OrderFake
from tests.support.plans import entry, image_raw, index_raw, make_plan


def _apply(plan: Plan, fake: OrderFake, path: Path, *, verify_kept: bool = False) -> ApplyReport:
    with Journal(path, registry=fake.url).open(plan_sha256="ab" * 32, policy_path="p") as journal:
        return apply_plan(plan, fake, journal, verify_kept=verify_kept)


def _kept_index(fake: OrderFake) -> tuple[bytes, bytes]:
    """`keep` -> index of one platform manifest; returns (index, child)."""
    child = image_raw("kept-amd64")
    fake.add("app", child)
    index = index_raw([child])
    fake.add("app", index, "keep")
    return index, child


def _old_index(fake: OrderFake) -> bytes:
    kid = image_raw("old-amd64")
    fake.add("app", kid)
    index = index_raw([kid])
    fake.add("app", index, "old")
    return index


@pytest.mark.parametrize(
    ("parent", "reason"),
    [("none", "no tags, no index and no subject"), ("old", "does not list it")],
    ids=["listed-without-parent", "listed-under-an-index-that-does-not-list-it"],
)
def test_a_platform_manifest_of_a_kept_index_is_refused_whatever_parent_it_claims(
    tmp_path: Path, parent: str, reason: str
) -> None:
    fake = OrderFake()
    index, child = _kept_index(fake)
    old = _old_index(fake)
    claimed = oci.sha256_digest(old) if parent == "old" else None
    plan = make_plan(
        [entry("app", old, tags=["old"]), entry("app", child, parent=claimed)],
        [entry("app", index, tags=["keep"])],
    )
    with pytest.raises(ApplyRefused, match=reason):
        _apply(plan, fake, tmp_path / "j")
    assert fake.count("DELETE") == 0


def test_a_referrer_whose_subject_the_plan_keeps_is_refused(tmp_path: Path) -> None:
    fake = OrderFake()
    subject = image_raw("s")
    sd = fake.add("app", subject, "v1")
    ref = image_raw("ref", subject=(sd, len(subject)))
    fake.add("app", ref)
    plan = make_plan([entry("app", ref)], [entry("app", subject, tags=["v1"])])
    with pytest.raises(ApplyRefused, match="is not deleted by the plan"):
        _apply(plan, fake, tmp_path / "j")
    assert fake.count("DELETE") == 0


def test_what_evaluate_plans_still_applies(tmp_path: Path) -> None:
    fake = OrderFake()
    kids = [image_raw("a"), image_raw("b")]
    for kid in kids:
        fake.add("app", kid)
    index = index_raw(kids)
    idx = fake.add("app", index, "old")
    ref = image_raw("ref", subject=(idx, len(index)))
    fake.add("app", ref)
    plan = make_plan(
        [
            entry("app", index, tags=["old"]),
            *(entry("app", kid, parent=idx) for kid in kids),
            entry("app", ref),
        ]
    )
    report = _apply(plan, fake, tmp_path / "j")
    assert report.complete and fake.count("DELETE") == 4


def test_a_platform_manifest_whose_index_an_earlier_run_deleted_is_checked_in_the_journal(
    tmp_path: Path,
) -> None:
    fake = OrderFake()
    kid = image_raw("a")
    fake.add("app", kid)
    index = index_raw([kid])
    idx = fake.add("app", index, "old")
    plan = make_plan([entry("app", index, tags=["old"]), entry("app", kid, parent=idx)])

    class FailKid(OrderFake):
        def get_manifest(self, repo: str, reference: str) -> Fetched | None:
            if reference == oci.sha256_digest(kid):
                raise RegistryError("manifest: HTTP 503", status=503)
            return super().get_manifest(repo, reference)

    flaky = FailKid()
    flaky.manifests, flaky.tags = fake.manifests, fake.tags
    first = _apply(plan, flaky, tmp_path / "j")
    assert [o.kind for o in first.outcomes if o.entry.digest == idx] == ["deleted"]
    assert not first.complete

    second = _apply(plan, fake, tmp_path / "j")  # the index is gone; the journal holds it
    assert second.complete and ("app", oci.sha256_digest(kid)) in fake.deleted


def test_a_platform_manifest_whose_index_is_gone_without_a_trace_is_stale(tmp_path: Path) -> None:
    fake = OrderFake()
    kid = image_raw("a")
    fake.add("app", kid)
    idx = oci.sha256_digest(index_raw([kid]))  # never pushed: deleted by someone else
    plan = make_plan(
        [entry("app", idx, tags=[], media_type=oci.OCI_INDEX), entry("app", kid, parent=idx)]
    )
    report = _apply(plan, fake, tmp_path / "j")
    kinds = {o.entry.digest: (o.kind, o.reason) for o in report.outcomes}
    assert kinds[oci.sha256_digest(kid)] == (
        "stale",
        f"its index {idx} is gone and could not be checked",
    )
    assert fake.count("DELETE") == 0


@pytest.mark.parametrize(
    ("source", "owned", "applied"),
    [
        ("storage", True, True),
        ("storage", False, False),
        ("api", True, False),
        ("api", False, False),
    ],
    ids=[
        "storage-plan-owned-by-an-untagged-rule-now-is-deleted",
        "storage-plan-owned-by-no-rule-now-is-refused",
        "api-plan-is-refused-whatever-the-policy-says",
        "api-plan-owned-by-no-rule-is-refused",
    ],
)
def test_an_untagged_manifest_alone_is_applied_only_from_a_storage_plan_a_rule_owns(
    tmp_path: Path, source: str, owned: bool, applied: bool
) -> None:
    fake = OrderFake()
    old = image_raw("old-latest")
    fake.add("app", old)  # untagged: `latest` moved on
    new = image_raw("new-latest")
    fake.add("app", new, "latest")
    key = ("app", oci.sha256_digest(old))
    plan = make_plan([entry("app", old)], [entry("app", new, tags=["latest"])])
    plan = replace(plan, inventory_source=source)
    with Journal(tmp_path / "j", registry=fake.url).open(
        plan_sha256="ab" * 32, policy_path="p"
    ) as journal:
        if applied:
            report = apply_plan(plan, fake, journal, policy_untagged={key} if owned else set())
            assert report.complete and fake.deleted == [key]
        else:
            with pytest.raises(ApplyRefused, match="no tags, no index and no subject"):
                apply_plan(plan, fake, journal, policy_untagged={key} if owned else set())
            assert fake.count("DELETE") == 0


def test_an_untagged_manifest_the_policy_keeps_now_is_skipped_as_kept(tmp_path: Path) -> None:
    fake = OrderFake()
    old = image_raw("old-latest")
    fake.add("app", old)
    key = ("app", oci.sha256_digest(old))
    plan = replace(make_plan([entry("app", old)]), inventory_source="storage")
    with Journal(tmp_path / "j", registry=fake.url).open(
        plan_sha256="ab" * 32, policy_path="p"
    ) as journal:
        report = apply_plan(
            plan, fake, journal, policy_untagged={key}, policy_keeps={key: "rank 1 <= 1"}
        )
    assert [(o.kind, o.reason) for o in report.outcomes] == [
        ("kept", "the policy keeps it now: rank 1 <= 1")
    ]
    assert fake.count("DELETE") == 0
