"""DESIGN §2 semantics of `evaluate` and `explain`, one table row per rule of the contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from retention.errors import InventoryError
from retention.evaluate import TagVerdict, evaluate, explain
from retention.model import Image, Kind
from retention.policy.model import Policy
from tests.unit.evalkit import NOW, D, ago, image, index, inventory, policy, repo, rule, sig


@dataclass(frozen=True)
class Case:
    id: str
    policy: Policy
    images: list[Image]
    tags: dict[str, str]  # tag -> image name
    # tag -> (decision, text the reason must contain)
    expect: dict[str, tuple[str, str]]
    # image names the plan deletes (None: exactly those whose tags are all deleted)
    deleted: set[str] | None = None
    repository: str = "apps/web"
    extra: dict[str, object] = field(default_factory=dict)


def by_name(images: list[Image]) -> dict[str, str]:
    return {i.digest: i.digest for i in images}


CASES = [
    Case(
        "unselected-tag-is-kept",
        policy(rule("ci", tags=[r"ci-.*"], last=1)),
        [image("A", ago(100))],
        {"release": "A"},
        {"release": ("kept", "no rule selects this tag")},
        deleted=set(),
    ),
    Case(
        "owned-and-not-kept-is-deleted",
        policy(rule("all", last=1)),
        [image("A", ago(1)), image("B", ago(50))],
        {"a": "A", "b": "B"},
        {"a": ("kept", "the most recent (rank 1)"), "b": ("deleted", "rank 2 > 1")},
        deleted={"B"},
    ),
    Case(
        "pattern-matches-whole-tag-name",
        policy(rule("ci", tags=["ci"], last=0)),
        [image("A", ago(100)), image("B", ago(100))],
        {"ci-1": "A", "ci": "B"},
        {"ci-1": ("kept", "no rule selects"), "ci": ("deleted", "rank 1 > 0")},
        deleted={"B"},
    ),
    Case(
        "pattern-matches-whole-repository-name",
        policy(rule("apps", repos=["apps"], last=0)),
        [image("A", ago(100))],
        {"x": "A"},
        {"x": ("kept", "no rule selects")},
        deleted=set(),
    ),
    Case(
        "first-matching-rule-owns-the-tag",
        policy(
            rule("rc", tags=[r".*-rc\d+"], keep_all=True),
            rule("rest", last=1),
        ),
        [image("A", ago(1)), image("B", ago(90)), image("C", ago(95))],
        {"main": "A", "v1-rc1": "B", "old": "C"},
        {
            "v1-rc1": ("kept", "rule `rc` keeps all"),
            "main": ("kept", "rank 1"),
            "old": ("deleted", "rank 2 > 1"),
        },
    ),
    Case(
        "rule-for-other-repositories-does-not-own",
        policy(rule("other", repos=["other/.*"], last=0)),
        [image("A", ago(100))],
        {"x": "A"},
        {"x": ("kept", "no rule selects")},
    ),
    Case(
        "exclude-tags-and-exclude-repositories",
        policy(
            rule("skip-repo", exclude_repos=["apps/web"], last=0),
            rule("skip-tag", exclude_tags=["keep-.*"], last=0),
        ),
        [image("A", ago(100)), image("B", ago(100))],
        {"keep-me": "A", "drop": "B"},
        {"keep-me": ("kept", "no rule selects"), "drop": ("deleted", "rank 1 > 0")},
    ),
    Case(
        "most-recent-orders-by-created-newest-first",
        policy(rule("all", last=2)),
        [image("A", ago(30)), image("B", ago(10)), image("C", ago(20))],
        {"a": "A", "b": "B", "c": "C"},
        {"b": ("kept", "rank 1"), "c": ("kept", "rank 2"), "a": ("deleted", "rank 3 > 2")},
    ),
    Case(
        "ties-broken-by-smallest-tag-name",
        policy(rule("all", last=1)),
        [image("A", ago(10)), image("B", ago(10))],
        {"zz": "A", "bb": "B", "aa": "A"},
        {"aa": ("kept", "rank 1"), "zz": ("kept", "rank 1"), "bb": ("deleted", "rank 2 > 1")},
    ),
    Case(
        "last-counts-images-not-tags",
        policy(rule("all", last=2)),
        [image("A", ago(1)), image("B", ago(2)), image("C", ago(3))],
        {"a1": "A", "a2": "A", "a3": "A", "b": "B", "c": "C"},
        {
            "a1": ("kept", "rank 1"),
            "a3": ("kept", "rank 1"),
            "b": ("kept", "rank 2"),
            "c": ("deleted", "rank 3 > 2"),
        },
    ),
    Case(
        "newer-than-keeps-younger-images",
        policy(rule("young", newer_than="30d")),
        [image("A", ago(12)), image("B", ago(41))],
        {"a": "A", "b": "B"},
        {"a": ("kept", "younger than 30d (12 days old)"), "b": ("deleted", "41 days old >= 30d")},
    ),
    Case(
        "newer-than-is-strict-age-equal-is-old",
        policy(rule("young", newer_than="30d")),
        [image("A", ago(30))],
        {"a": "A"},
        {"a": ("deleted", "30 days old >= 30d")},
    ),
    Case(
        "last-or-newer-than-either-keeps",
        policy(rule("both", last=1, newer_than="7d")),
        [image("A", ago(20)), image("B", ago(3)), image("C", ago(30)), image("D", ago(2))],
        {"a": "A", "b": "B", "c": "C", "d": "D"},
        {
            "d": ("kept", "the most recent (rank 1)"),
            "b": ("kept", "younger than 7d (3 days old)"),
            "a": ("deleted", "rank 3 > 1 and 20 days old >= 7d"),
            "c": ("deleted", "rank 4 > 1 and 30 days old >= 7d"),
        },
    ),
    Case(
        "unknown-age-is-kept-and-takes-no-place-in-last",
        policy(rule("all", last=1)),
        [image("U", None, created_raw="1970-01-01T00:00:00Z"), image("A", ago(50))],
        {"u": "U", "a": "A"},
        {
            "u": ("kept", "age unknown (created 1970-01-01T00:00:00Z)"),
            "a": ("kept", "the most recent (rank 1)"),
        },
        deleted=set(),
    ),
    Case(
        "unknown-age-without-a-created-field",
        policy(rule("young", newer_than="1d")),
        [image("U", None)],
        {"u": "U"},
        {"u": ("kept", "age unknown (no created date)")},
    ),
    Case(
        "unknown-age-oldest-ranks-after-known",
        policy(rule("all", last=1), unknown_age="oldest"),
        [image("U", None), image("A", ago(400))],
        {"u": "U", "a": "A"},
        {"a": ("kept", "rank 1"), "u": ("deleted", "rank 2 > 1 and age unknown (ranked oldest)")},
    ),
    Case(
        "unknown-age-oldest-counts-as-old",
        policy(rule("young", newer_than="1000d"), unknown_age="oldest"),
        [image("U", None)],
        {"u": "U"},
        {"u": ("deleted", "age unknown (counted as oldest)")},
    ),
    Case(
        "unknown-age-oldest-ties-by-tag-name",
        policy(rule("all", last=1), unknown_age="oldest"),
        [image("U", None), image("V", None)],
        {"v": "U", "u": "V"},
        {"u": ("kept", "rank 1"), "v": ("deleted", "rank 2 > 1")},
    ),
    Case(
        "keep-all-keeps-unknown-age-too",
        policy(rule("everything-else", keep_all=True)),
        [image("U", None), image("A", ago(999))],
        {"u": "U", "a": "A"},
        {"u": ("kept", "rule `everything-else` keeps all"), "a": ("kept", "keeps all")},
    ),
    Case(
        "created-within-a-day-in-the-future-is-young",
        policy(rule("young", newer_than="1d")),
        [image("A", ago(-0.5))],
        {"a": "A"},
        {"a": ("kept", "younger than 1d (created 12 hours in the future)")},
    ),
    Case(
        "created-more-than-a-day-in-the-future-is-unknown-age",
        policy(rule("young", newer_than="1d")),
        [image("A", ago(-2))],
        {"a": "A"},
        {"a": ("kept", "age unknown (created 2024-06-03T12:00:00Z is in the future)")},
    ),
    Case(
        "protect-wins-over-every-rule",
        policy(rule("all", last=0), protect=["latest", r"v?\d+\.\d+\.\d+"]),
        [image("A", ago(500)), image("B", ago(500))],
        {"latest": "A", "v1.2.3": "B"},
        {
            "latest": ("kept", "protected by pattern `latest`"),
            "v1.2.3": ("kept", r"protected by pattern `v?\d+\.\d+\.\d+`"),
        },
        deleted=set(),
    ),
    Case(
        "protected-tag-is-owned-by-no-rule-so-it-takes-no-rank",
        policy(rule("all", last=1), protect=["latest"]),
        [image("A", ago(1)), image("B", ago(2))],
        {"latest": "A", "b": "B"},
        {"latest": ("kept", "protected"), "b": ("kept", "the most recent (rank 1)")},
    ),
    Case(
        "shared-digest-with-protected-tag-is-kept",
        policy(rule("all", last=0), protect=["stable"]),
        [image("A", ago(90))],
        {"build-17": "A", "stable": "A"},
        {
            "build-17": ("kept", "shares digest with `stable` (protected)"),
            "stable": ("kept", "protected"),
        },
        deleted=set(),
    ),
    Case(
        "shared-digest-names-the-smallest-kept-tag",
        policy(rule("rel", tags=["rel-.*"], keep_all=True), rule("ci", last=0)),
        [image("A", ago(90))],
        {"ci-1": "A", "rel-2": "A", "rel-1": "A", "zz-unselected": "A"},
        {"ci-1": ("kept", "shares digest with `rel-1`"), "rel-2": ("kept", "keeps all")},
        deleted=set(),
    ),
    Case(
        "shared-digest-with-unselected-tag",
        policy(rule("ci", tags=["ci-.*"], last=0)),
        [image("A", ago(90))],
        {"ci-1": "A", "manual": "A"},
        {"ci-1": ("kept", "shares digest with `manual`")},
        deleted=set(),
    ),
    Case(
        "all-tags-deleted-deletes-the-manifest",
        policy(rule("ci", last=0)),
        [image("A", ago(90))],
        {"ci-1": "A", "ci-2": "A"},
        {"ci-1": ("deleted", "rank 1 > 0"), "ci-2": ("deleted", "rank 1 > 0")},
        deleted={"A"},
    ),
    Case(
        "deleted-index-takes-its-platform-manifests",
        policy(rule("all", last=0)),
        [
            index("I", ago(50), ["I-amd64", "I-arm64"]),
            image("I-amd64", ago(50), platform="linux/amd64"),
            image("I-arm64", ago(51), platform="linux/arm64"),
        ],
        {"v1": "I"},
        {"v1": ("deleted", "rank 1 > 0")},
        deleted={"I", "I-amd64", "I-arm64"},
    ),
    Case(
        "tagged-platform-manifest-is-treated-by-its-own-tags",
        policy(rule("ci", tags=["v.*"], last=0)),
        [
            index("I", ago(50), ["I-amd64", "I-arm64"]),
            image("I-amd64", ago(50), platform="linux/amd64"),
            image("I-arm64", ago(51), platform="linux/arm64"),
        ],
        {"v1": "I", "amd64-only": "I-amd64"},
        {"v1": ("deleted", "rank 1 > 0"), "amd64-only": ("kept", "no rule selects")},
        deleted={"I", "I-arm64"},
    ),
    Case(
        "platform-manifest-shared-with-a-kept-index-is-kept",
        policy(rule("all", last=1)),
        [
            index("NEW", ago(1), ["shared", "new-arm"]),
            index("OLD", ago(50), ["shared", "old-arm"]),
            image("shared", ago(60), platform="linux/amd64"),
            image("new-arm", ago(1), platform="linux/arm64"),
            image("old-arm", ago(50), platform="linux/arm64"),
        ],
        {"new": "NEW", "old": "OLD"},
        {"new": ("kept", "rank 1"), "old": ("deleted", "rank 2 > 1")},
        deleted={"OLD", "old-arm"},
    ),
    Case(
        "platform-manifest-of-kept-index-is-kept-even-if-its-own-tag-is-not",
        policy(rule("idx", tags=["v.*"], keep_all=True), rule("ci", last=0)),
        [
            index("I", ago(50), ["I-amd64"]),
            image("I-amd64", ago(50), platform="linux/amd64"),
        ],
        {"v1": "I", "ci-amd64": "I-amd64"},
        {
            "v1": ("kept", "keeps all"),
            "ci-amd64": ("kept", "platform linux/amd64 of kept index sha256:"),
        },
        deleted=set(),
    ),
    Case(
        "signature-is-deleted-with-its-subject",
        policy(rule("all", last=1)),
        [image("A", ago(1)), image("B", ago(50)), image("SIG-B", ago(0), kind=Kind.ARTIFACT)],
        {"a": "A", "b": "B", sig("B"): "SIG-B"},
        {sig("B"): ("deleted", f"signature of deleted image {D('B')[:19]}")},
        deleted={"B", "SIG-B"},
    ),
    Case(
        "signature-of-kept-image-is-kept-and-takes-no-rank",
        policy(rule("all", last=1)),
        [image("A", ago(1)), image("B", ago(50)), image("SIG-A", ago(0), kind=Kind.ARTIFACT)],
        {"a": "A", "b": "B", sig("A"): "SIG-A"},
        {
            sig("A"): ("kept", f"signature of kept image {D('A')[:19]}"),
            "a": ("kept", "rank 1"),
            "b": ("deleted", "rank 2 > 1"),
        },
    ),
    Case(
        "attestation-and-sbom-follow-their-subject",
        policy(rule("all", last=0)),
        [image("A", ago(50)), image("ATT", None), image("SBOM", None)],
        {"a": "A", sig("A", "att"): "ATT", sig("A", "sbom"): "SBOM"},
        {
            sig("A", "att"): ("deleted", "attestation of deleted image"),
            sig("A", "sbom"): ("deleted", "SBOM of deleted image"),
        },
        deleted={"A", "ATT", "SBOM"},
    ),
    Case(
        "orphan-signature-not-selected-is-kept",
        policy(rule("ci", tags=["ci-.*"], last=0)),
        [image("SIG", None)],
        {sig("GONE"): "SIG"},
        {sig("GONE"): ("kept", "orphan signature (subject sha256:")},
        deleted=set(),
    ),
    Case(
        "orphan-signature-selected-by-a-rule-is-deleted",
        policy(rule("x", newer_than="7d")),
        [image("SIG", ago(30))],
        {sig("GONE"): "SIG"},
        {
            sig("GONE"): (
                "deleted",
                f"orphan signature (subject {D('GONE')[:19]} no longer exists), "
                "selected by rule `x`: 30 days old >= 7d",
            )
        },
        deleted={"SIG"},
    ),
    Case(
        "tagged-referrer-follows-its-subject",
        policy(rule("all", last=0)),
        [image("A", ago(50)), image("SBOM", ago(1), kind=Kind.ARTIFACT, subject="A")],
        {"a": "A", "sbom-a": "SBOM"},
        {"sbom-a": ("deleted", "referrer of deleted image")},
        deleted={"A", "SBOM"},
    ),
    Case(
        "untagged-referrer-is-deleted-with-its-subject",
        policy(rule("all", last=0)),
        [image("A", ago(50)), image("REF", None, kind=Kind.ARTIFACT, subject="A")],
        {"a": "A"},
        {"a": ("deleted", "rank 1 > 0")},
        deleted={"A", "REF"},
    ),
    Case(
        "untagged-referrer-of-kept-image-is-kept",
        policy(rule("all", last=1)),
        [image("A", ago(50)), image("REF", None, kind=Kind.ARTIFACT, subject="A")],
        {"a": "A"},
        {"a": ("kept", "rank 1")},
        deleted=set(),
    ),
    Case(
        "orphan-referrer-tag-selected-by-rule-is-deleted",
        policy(rule("all", last=0)),
        [image("REF", ago(10), kind=Kind.ARTIFACT, subject="GONE")],
        {"ref": "REF"},
        {"ref": ("deleted", "orphan referrer (subject")},
        deleted={"REF"},
    ),
    Case(
        "protected-signature-keeps-its-subject",
        policy(rule("all", last=0), protect=[r".*\.sig"]),
        [image("A", ago(50)), image("SIG", None)],
        {"a": "A", sig("A"): "SIG"},
        {"a": ("kept", "subject of kept attachment"), sig("A"): ("kept", "protected")},
        deleted=set(),
    ),
    Case(
        "signature-of-a-deleted-platform-manifest-is-deleted",
        policy(rule("all", last=0)),
        [
            index("I", ago(50), ["I-amd64"]),
            image("I-amd64", ago(50), platform="linux/amd64"),
            image("SIG", None),
        ],
        {"v1": "I", sig("I-amd64"): "SIG"},
        {sig("I-amd64"): ("deleted", "signature of deleted image")},
        deleted={"I", "I-amd64", "SIG"},
    ),
    Case(
        "tag-whose-manifest-is-missing-is-kept",
        policy(rule("all", last=0)),
        [],
        {"ghost": "NOWHERE"},
        {"ghost": ("kept", "missing from the inventory")},
        deleted=set(),
    ),
]


def _run(case: Case) -> tuple[dict[str, TagVerdict], set[str]]:
    inv = inventory(repo(case.repository, case.tags, case.images))
    plan = evaluate(case.policy, inv, NOW)
    verdicts = {v.tag: v for v in explain(case.policy, inv, NOW, case.repository)}
    return verdicts, {e.digest for e in plan.deletions}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_semantics(case: Case) -> None:
    verdicts, deleted = _run(case)
    assert set(verdicts) == set(case.tags)
    for tag, (decision, text) in case.expect.items():
        v = verdicts[tag]
        assert (v.decision, text in v.reason) == (decision, True), f"{tag}: {v.line()}"
    if case.deleted is not None:
        assert deleted == {D(n) for n in case.deleted}
    # a manifest is deleted exactly when every tag on it is
    for v in verdicts.values():
        assert (v.digest in deleted) == (v.decision == "deleted"), v


def test_verdict_carries_rank_age_created_and_rule() -> None:
    p = policy(rule("ci", last=1))
    inv = inventory(
        repo(
            "r",
            {"a": "A", "b": "B", "u": "U"},
            [image("A", ago(2)), image("B", ago(41)), image("U", None, created_raw="0001-01-01")],
        )
    )
    a, b, u = explain(p, inv, NOW, "r")
    assert (a.tag, a.rule, a.rank, a.age, a.created) == ("a", "ci", 1, timedelta(days=2), ago(2))
    assert (b.rank, b.decision, b.line()) == (2, "deleted", "deleted: rank 2 > 1")
    assert (u.rank, u.age, u.created, u.created_raw) == (None, None, None, "0001-01-01")
    assert u.line() == "kept: age unknown (created 0001-01-01)"


def test_explain_one_tag() -> None:
    p = policy(rule("ci", last=1))
    inv = inventory(repo("r", {"a": "A", "b": "B"}, [image("A", ago(2)), image("B", ago(4))]))
    [only] = explain(p, inv, NOW, "r", "b")
    assert (only.tag, only.decision) == ("b", "deleted")


@pytest.mark.parametrize(
    ("repository", "tag", "message"),
    [
        ("nope", None, "repository 'nope' is not in the inventory"),
        ("r", "nope", "tag 'nope' is not in repository 'r'"),
    ],
    ids=["unknown-repository", "unknown-tag"],
)
def test_explain_refuses_unknown_names(repository: str, tag: str | None, message: str) -> None:
    inv = inventory(repo("r", {"a": "A"}, [image("A", ago(2))]))
    with pytest.raises(InventoryError, match=message):
        explain(policy(rule("ci", last=1)), inv, NOW, repository, tag)


def test_platform_entries_name_their_index_and_platform() -> None:
    p = policy(rule("all", last=0))
    inv = inventory(
        repo(
            "r",
            {"v1": "I"},
            [index("I", ago(5), ["amd"]), image("amd", ago(5), platform="linux/amd64")],
        )
    )
    plan = evaluate(p, inv, NOW)
    child = next(e for e in plan.deletions if e.digest == D("amd"))
    parent = next(e for e in plan.deletions if e.digest == D("I"))
    assert (child.tags, child.parent, child.rule) == ((), D("I"), None)
    assert child.reason == f"platform linux/amd64 of deleted index {D('I')[:19]}"
    assert (parent.tags, parent.parent, parent.rule, parent.reason) == (
        ("v1",),
        None,
        "all",
        "rank 1 > 0",
    )


def test_untagged_referrer_entry() -> None:
    p = policy(rule("all", last=0))
    inv = inventory(
        repo("r", {"a": "A"}, [image("A", ago(5)), image("REF", None, subject="A")]),
    )
    ref = next(e for e in evaluate(p, inv, NOW).deletions if e.digest == D("REF"))
    assert (ref.tags, ref.parent, ref.rule) == ((), None, None)
    assert ref.reason == f"referrer of deleted image {D('A')[:19]}"


def test_kept_entry_reasons() -> None:
    p = policy(rule("ci", tags=["ci-.*"], last=0), protect=["latest"])
    inv = inventory(
        repo(
            "r",
            {"latest": "A", "ci-1": "A", "manual": "B"},
            [image("A", ago(5)), image("B", ago(5)), image("LOOSE", ago(5))],
        ),
    )
    kept = {e.digest: e for e in evaluate(p, inv, NOW).kept}
    assert kept[D("A")].reason == "`latest`: protected by pattern `latest`"
    assert kept[D("A")].rule is None
    assert kept[D("B")].reason == "no rule selects this tag"
    assert kept[D("LOOSE")].reason.startswith("untagged and not referenced")


def test_deleted_entry_with_tags_of_two_rules_gives_both_reasons() -> None:
    p = policy(rule("rc", tags=[".*-rc"], last=0), rule("rest", newer_than="1d"))
    inv = inventory(repo("r", {"v-rc": "A", "old": "A"}, [image("A", ago(5))]))
    [entry] = evaluate(p, inv, NOW).deletions
    assert entry.rule == "rest"  # the rule of the smallest tag name
    assert entry.reason == "`old`: 5 days old >= 1d; `v-rc`: rank 1 > 0"


def test_warnings() -> None:
    p = policy(
        rule("apps", repos=["apps/.*"], last=1),
        rule("never", repos=["apps/.*"], tags=["nothing-matches"], last=1),
    )
    inv = inventory(
        repo("apps/web", {"a": "A", "u": "U"}, [image("A", ago(1)), image("U", None)]),
        repo("lib/one", {"x": "X"}, [image("X", ago(1))]),
        repo("lib/two", {"x": "X"}, [image("X", ago(1))]),
        complete=False,
    )
    warnings = evaluate(p, inv, NOW).warnings
    assert warnings == (
        "rule `never` owns no tag in the inventory",
        "2 repositories are matched by no rule (all their tags are kept): lib/one, lib/two",
        "1 image owned by a rule with unknown created date: kept, taking no place in `last` "
        "(settings.unknown_age: keep)",
        "the inventory covers only part of the registry: bytes_reclaimable is an upper bound",
    )


@pytest.mark.parametrize(
    ("complete", "warned"), [(True, True), (False, False)], ids=["whole-registry", "narrowed"]
)
def test_a_rule_outside_a_narrowed_inventory_is_not_said_to_own_nothing(
    complete: bool, warned: bool
) -> None:
    p = policy(rule("web", repos=["web/.*"], last=1), rule("api", repos=["api/.*"], last=1))
    inv = inventory(repo("api/one", {"x": "X"}, [image("X", ago(1))]), complete=complete)
    warnings = evaluate(p, inv, NOW).warnings
    assert ("rule `web` owns no tag in the inventory" in warnings) is warned


def test_unmatched_repository_warning_is_bounded() -> None:
    inv = inventory(*(repo(f"r{i:02}", {}, []) for i in range(13)))
    [warning] = evaluate(policy(rule("x", repos=["none"], last=1)), inv, NOW).warnings[1:]
    assert warning.endswith("r08, r09 and 3 more")


def test_summary_and_metadata() -> None:
    p = policy(rule("all", last=1))
    inv = inventory(
        repo("a", {"new": "N", "old": "O", "old2": "O"}, [image("N", ago(1)), image("O", ago(9))]),
        repo("b", {"x": "X"}, [index("X", ago(3), ["C"]), image("C", ago(3))]),
    )
    plan = evaluate(p, inv, NOW)
    s = plan.summary
    assert (s.repositories, s.tags, s.images, s.tags_deleted, s.images_deleted, s.complete) == (
        2,
        4,
        4,
        2,
        1,
        True,
    )
    assert (plan.generated_at, plan.registry, plan.policy_path, plan.max_deletions) == (
        NOW,
        inv.registry,
        "policies/test.yaml",
        "500",
    )


@pytest.mark.parametrize(
    ("repos", "expected"),
    [
        pytest.param(
            [
                repo(
                    "r",
                    {"old": "O", "new": "N"},
                    [image("N", ago(1)), image("O", ago(9), blobs=[("cfg", 10), ("layer", 1000)])],
                )
            ],
            500 + 10 + 1000,
            id="manifest-config-and-layers",
        ),
        pytest.param(
            [
                repo(
                    "r",
                    {"old": "O", "new": "N"},
                    [
                        image("N", ago(1), blobs=[("cfg-n", 10), ("base", 1000)]),
                        image("O", ago(9), blobs=[("cfg-o", 20), ("base", 1000)]),
                    ],
                )
            ],
            500 + 20,
            id="layer-shared-with-kept-image-is-not-freed",
        ),
        pytest.param(
            [
                repo("r", {"old": "O", "new": "N"}, [image("N", ago(1)), image("O", ago(9))]),
                repo(
                    "s",
                    {"keep": "K"},
                    [image("K", ago(9), manifest_size=77, blobs=[("layer", 1000)])],
                ),
            ],
            500,
            id="kept-in-another-repository-is-not-freed",
        ),
        pytest.param(
            [
                repo(
                    "r",
                    {"old1": "O1", "old2": "O2", "new": "N"},
                    [
                        image("N", ago(1)),
                        image("O1", ago(8), blobs=[("shared", 1000)]),
                        image("O2", ago(9), blobs=[("shared", 1000)]),
                    ],
                )
            ],
            500 + 500 + 1000,
            id="blob-counted-once",
        ),
        pytest.param(
            [
                repo(
                    "r",
                    {"old": "I", "new": "N"},
                    [
                        image("N", ago(1)),
                        index("I", ago(9), ["C"]),
                        image("C", ago(9), manifest_size=300, blobs=[("layer", 1000)]),
                    ],
                )
            ],
            500 + 300 + 1000,
            id="index-children-included",
        ),
        pytest.param(
            [
                repo("r", {"old": "O", "new": "N"}, [image("N", ago(1)), image("O", ago(9))]),
                repo("s", {"new": "N2", "same": "O"}, [image("N2", ago(1)), image("O", ago(9))]),
            ],
            0,
            id="same-manifest-kept-in-another-repository",
        ),
    ],
)
def test_bytes_reclaimable(repos: list[object], expected: int) -> None:
    p = policy(rule("all", repos=["r"], last=1))
    plan = evaluate(p, inventory(*repos), NOW)  # type: ignore[arg-type]
    assert plan.summary.bytes_reclaimable == expected


def test_naive_now_is_utc() -> None:
    p = policy(rule("young", newer_than="7d"))
    inv = inventory(repo("r", {"a": "A"}, [image("A", ago(3))]))
    assert evaluate(p, inv, NOW.replace(tzinfo=None)) == evaluate(p, inv, NOW)
