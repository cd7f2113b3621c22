"""Untagged manifests (docs/policy.md, "Untagged manifests"): which manifests are untagged, how
an `untagged: true` rule ranks them, the in-flight floor, `protect.digests`, reasons and warnings.

Every scene is a hand-built storage inventory; images are named by what they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from retention.errors import InventoryError
from retention.evaluate import evaluate, explain
from retention.model import Image, Inventory, Kind
from retention.plan import Plan
from retention.policy.model import Policy
from tests.unit.evalkit import NOW, D, ago, image, index, inventory, policy, repo, rule

OLD = ago(30)  # pushed long before the inventory


def old(name: str, days: float | None, **kw: object) -> Image:
    """An image created `days` ago (None: unknown), pushed 30 days ago unless said."""
    kw.setdefault("pushed_at", OLD)
    return image(name, ago(days) if days is not None else None, **kw)  # type: ignore[arg-type]


def idx(name: str, days: float, children: list[str]) -> Image:
    """An index created `days` ago, pushed 30 days ago."""
    return replace(index(name, ago(days), children), pushed_at=OLD)


UNTAGGED = rule("untagged", untagged=True, last=2)
TAGS_ALL = rule("tags", last=0)  # a catch-all tag rule that deletes every tag it can

# latest -> CUR; U1..U4 are earlier pushes of latest, newest first
RELEASES = [
    old("CUR", 1),
    old("U1", 2),
    old("U2", 3),
    old("U3", 4),
    old("U4", 5),
]


def storage(*repos: object, taken_at: datetime = NOW) -> Inventory:
    return inventory(*repos, source="storage", taken_at=taken_at)  # type: ignore[arg-type]


@dataclass
class Scene:
    policy: Policy
    inventory: Inventory
    deleted: set[str]  # image names
    kept_reasons: dict[str, str] = field(default_factory=dict)  # name -> reason (substring)
    deleted_reasons: dict[str, str] = field(default_factory=dict)
    warnings: list[str] | None = None  # substrings of plan warnings, in order, or None: unchecked
    now: datetime = NOW


SCENES = [
    pytest.param(
        Scene(
            policy(rule("tags", keep_all=True)),
            storage(repo("r", {"latest": "CUR"}, RELEASES)),
            deleted=set(),
            kept_reasons={"U1": "untagged and not referenced by any index or subject"},
            warnings=["4 untagged manifests (2.0 KiB) kept: no rule selects untagged manifests"],
        ),
        id="no-untagged-rule-keeps-them-and-says-so",
    ),
    pytest.param(
        Scene(
            policy(rule("tags", keep_all=True)),
            inventory(repo("r", {"latest": "CUR"}, RELEASES)),
            deleted=set(),
            warnings=[],
        ),
        id="api-inventory-no-untagged-count",
    ),
    pytest.param(
        Scene(
            policy(UNTAGGED),
            storage(repo("r", {"latest": "CUR"}, RELEASES)),
            deleted={"U3", "U4"},
            kept_reasons={
                "U1": "untagged, rule `untagged`: among the 2 most recent (rank 1)",
                "CUR": "no rule selects this tag",
            },
            deleted_reasons={"U3": "untagged, rule `untagged`: rank 3 > 2"},
            warnings=[],
        ),
        id="last-2-by-created",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, newer_than="4d")),
            storage(repo("r", {"latest": "CUR"}, RELEASES)),
            deleted={"U3", "U4"},
            kept_reasons={"U2": "younger than 4d (3 days old)"},
        ),
        id="newer-than",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(repo("r", {}, [old("B", 3), old("A", 3)])),
            deleted={"A", "B"},
        ),
        id="last-0-deletes-all",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=1)),
            storage(repo("r", {}, [old("B", 3), old("A", 3)])),
            # same created: ties by digest, the smaller digest ranks first
            deleted={"A", "B"} - {min(("A", "B"), key=D)},
        ),
        id="ties-by-digest",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(repo("r", {}, [old("NODATE", None), old("A", 3)])),
            deleted={"A"},
            kept_reasons={"NODATE": "age unknown (no created date)"},
            warnings=["1 image owned by a rule with unknown created date"],
        ),
        id="unknown-age-kept",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=1), unknown_age="oldest"),
            storage(repo("r", {}, [old("NODATE", None), old("A", 3)])),
            deleted={"NODATE"},
        ),
        id="unknown-age-oldest-ranks-last",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(
                repo(
                    "r",
                    {},
                    [
                        old("FRESH", 40, pushed_at=NOW - timedelta(minutes=10)),
                        old("HOUR", 40, pushed_at=NOW - timedelta(minutes=61)),
                    ],
                )
            ),
            deleted={"HOUR"},
            kept_reasons={
                "FRESH": "pushed 10 minutes before the inventory was taken, kept (a push may be "
                "in flight for an hour)"
            },
        ),
        id="in-flight-floor",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(repo("r", {}, [old("FRESH", 40, pushed_at=NOW - timedelta(minutes=10))])),
            deleted=set(),
            kept_reasons={"FRESH": "pushed 10 minutes before the inventory was taken"},
            now=NOW + timedelta(days=30),  # --as-of does not move the floor
        ),
        id="in-flight-floor-is-wall-clock-not-as-of",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(repo("r", {}, [old("NOPUSH", 40, pushed_at=None)])),
            deleted=set(),
            kept_reasons={"NOPUSH": "push time unknown, kept"},
        ),
        id="unknown-push-time-kept",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(
                repo(
                    "r",
                    {},
                    [
                        idx("IDX", 9, ["AMD", "ARM"]),
                        old("AMD", 9, platform="linux/amd64"),
                        old("ARM", 9, platform="linux/arm64"),
                        old("SIG", 8, kind=Kind.ARTIFACT, subject="IDX"),
                    ],
                ),
            ),
            deleted={"IDX", "AMD", "ARM", "SIG"},
            deleted_reasons={
                "AMD": "platform linux/amd64 of deleted index",
                "SIG": "referrer of deleted image",
            },
        ),
        id="untagged-index-takes-children-and-referrers",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(
                repo(
                    "r",
                    {"v1": "IDX"},
                    [
                        idx("IDX", 9, ["AMD"]),
                        old("AMD", 9, platform="linux/amd64"),
                        old("SIG", 8, kind=Kind.ARTIFACT, subject="IDX"),
                    ],
                ),
            ),
            deleted=set(),
            kept_reasons={"AMD": "of kept index", "SIG": "referrer of kept image"},
        ),
        id="children-and-referrers-of-a-tagged-index-are-not-untagged",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(repo("r", {}, [old("ORPHAN", 9, kind=Kind.ARTIFACT, subject="GONE")])),
            deleted={"ORPHAN"},
        ),
        id="referrer-of-a-missing-subject-is-untagged",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(
                repo("r", {}, [old("ORPHAN", 9, kind=Kind.ARTIFACT, subject="ELSEWHERE")]),
                repo("s", {"v1": "ELSEWHERE"}, [old("ELSEWHERE", 9)]),
            ),
            deleted=set(),
            kept_reasons={"ORPHAN": "in repository s: kept while its subject exists"},
        ),
        id="referrer-of-a-subject-in-another-repository-is-kept",
    ),
    pytest.param(
        Scene(
            policy(TAGS_ALL),
            storage(repo("r", {"latest": "CUR"}, RELEASES)),
            deleted={"CUR"},
            kept_reasons={"U4": "no rule selects it"},
        ),
        id="tag-rule-selects-no-untagged",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(repo("r", {"latest": "CUR"}, RELEASES)),
            deleted={"U1", "U2", "U3", "U4"},
            kept_reasons={"CUR": "no rule selects this tag"},
        ),
        id="untagged-rule-selects-no-tag",
    ),
    pytest.param(
        Scene(
            policy(
                rule("apps", untagged=True, last=0, repos=["apps/.*"]),
                rule("rest", untagged=True, keep_all=True),
            ),
            storage(repo("apps/web", {}, [old("W", 9)]), repo("lib", {}, [old("L", 9)])),
            deleted={"W"},
            kept_reasons={"L": "untagged, rule `rest`: rule `rest` keeps all"},
        ),
        id="repositories-and-first-untagged-rule-owns",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0, exclude_repos=["lib"])),
            storage(repo("apps", {}, [old("W", 9)]), repo("lib", {}, [old("L", 9)])),
            deleted={"W"},
            warnings=[
                "1 untagged manifest (500 B) kept: no untagged rule selects their repositories"
            ],
        ),
        id="exclude-repositories",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0), protect_digests=["IDX"]),
            storage(
                repo(
                    "r",
                    {},
                    [
                        idx("IDX", 9, ["AMD"]),
                        old("AMD", 9, platform="linux/amd64"),
                        old("SIG", 8, kind=Kind.ARTIFACT, subject="IDX"),
                        old("OTHER", 9),
                    ],
                ),
            ),
            deleted={"OTHER"},
            kept_reasons={
                "IDX": "untagged; its digest is protected (`protect.digests`)",
                "AMD": "of kept index",
                "SIG": "referrer of kept image",
            },
        ),
        id="protect-digests-untagged-index-with-children-and-referrers",
    ),
    pytest.param(
        Scene(
            policy(TAGS_ALL, protect_digests=["CUR"]),
            storage(repo("r", {"latest": "CUR", "old": "U1"}, RELEASES[:2])),
            deleted={"U1"},
            kept_reasons={"CUR": "its digest is protected (`protect.digests`)"},
        ),
        id="protect-digests-tagged-image",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0), protect_digests=["AMD"]),
            storage(
                repo(
                    "r",
                    {},
                    [idx("IDX", 9, ["AMD"]), old("AMD", 9, platform="linux/amd64")],
                ),
            ),
            deleted={"IDX"},
        ),
        id="protect-digests-child-of-a-deleted-index-is-kept",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=0)),
            storage(
                repo(
                    "r",
                    {"latest": "CUR"},
                    RELEASES[:3],
                    history=[
                        ("latest", "U2", ago(3)),
                        ("latest", "U1", datetime(2024, 5, 30, 8, 0, tzinfo=NOW.tzinfo)),
                        ("latest", "CUR", datetime(2024, 5, 31, 9, 0, tzinfo=NOW.tzinfo)),
                        ("main", "U1", ago(10)),
                        ("main", "U2", ago(9)),
                    ],
                )
            ),
            deleted={"U1", "U2"},
            deleted_reasons={
                "U1": "untagged (was `latest` until 2024-05-31, `main` until 2024-05-23), "
                "rule `u`: rank 1 > 0",
                "U2": "untagged (was `latest` until 2024-05-30), rule `u`",
            },
        ),
        id="reason-names-former-tags",
    ),
    pytest.param(
        Scene(
            policy(rule("u1", untagged=True, last=1, repos=["a"]), rule("u2", untagged=True)),
            inventory(repo("r", {"latest": "CUR"}, RELEASES[:1])),
            deleted=set(),
            warnings=[
                "untagged rules `u1`, `u2` select nothing: the inventory comes from the "
                "registry API, which lists tags only; set registry.storage.filesystem"
            ],
        ),
        id="api-inventory-warns-once",
    ),
    pytest.param(
        Scene(
            policy(rule("u", untagged=True, last=1, repos=["nothing"])),
            storage(repo("r", {}, [])),
            deleted=set(),
            warnings=["rule `u` owns no untagged manifest in the inventory"],
        ),
        id="storage-untagged-rule-owning-nothing",
    ),
]

NAMES = [
    "CUR", "U1", "U2", "U3", "U4", "A", "B", "NODATE", "FRESH", "HOUR", "NOPUSH", "IDX", "AMD",
    "ARM", "SIG", "ORPHAN", "ELSEWHERE", "W", "L", "OTHER",
]  # fmt: skip
BY_DIGEST = {D(n): n for n in NAMES}


@pytest.mark.parametrize("scene", SCENES)
def test_untagged_scene(scene: Scene) -> None:
    plan = evaluate(scene.policy, scene.inventory, scene.now)
    deleted = {BY_DIGEST[e.digest] for e in plan.deletions}
    assert deleted == scene.deleted
    entries = {BY_DIGEST[e.digest]: e for e in (*plan.deletions, *plan.kept)}
    for name, reason in scene.kept_reasons.items():
        assert reason in entries[name].reason, entries[name].reason
        assert entries[name] in plan.kept
    for name, reason in scene.deleted_reasons.items():
        assert reason in entries[name].reason, entries[name].reason
    for e in plan.deletions:
        if not any(t.digest == e.digest for r in scene.inventory for t in r.tags):
            assert e.tags == ()
    if scene.warnings is not None:
        _check_warnings(plan, scene.warnings)


def _check_warnings(plan: Plan, expected: list[str]) -> None:
    untagged = [w for w in plan.warnings if "untagged" in w or "unknown created" in w]
    assert len(untagged) == len(expected), plan.warnings
    for got, want in zip(untagged, expected, strict=True):
        assert want in got


def test_deleted_untagged_entries_name_their_rule_and_parent() -> None:
    inv = storage(repo("r", {}, [idx("IDX", 9, ["AMD"]), old("AMD", 9, platform="linux/amd64")]))
    plan = evaluate(policy(rule("u", untagged=True, last=0)), inv, NOW)
    by_name = {BY_DIGEST[e.digest]: e for e in plan.deletions}
    assert by_name["IDX"].rule == "u" and by_name["IDX"].parent is None
    assert by_name["AMD"].parent == D("IDX") and by_name["AMD"].tags == ()
    assert plan.summary.images_deleted == 2 and plan.summary.tags_deleted == 0


def test_bytes_count_only_blobs_no_kept_manifest_uses() -> None:
    shared, own = ("layer-shared", 1000), ("layer-own", 300)
    inv = storage(
        repo(
            "r",
            {"latest": "CUR"},
            [old("CUR", 1, blobs=[shared]), old("U1", 2, blobs=[shared, own])],
        )
    )
    plan = evaluate(policy(rule("u", untagged=True, last=0)), inv, NOW)
    assert plan.summary.bytes_reclaimable == 500 + 300  # U1's manifest and its own layer
    kept = evaluate(policy(rule("tags", keep_all=True)), inv, NOW)
    assert "1 untagged manifest (800 B) kept" in kept.warnings[-1]


def test_explain_untagged_digest() -> None:
    inv = storage(
        repo(
            "r",
            {"latest": "CUR"},
            RELEASES[:2],
            history=[("latest", "U1", ago(2)), ("latest", "CUR", ago(1))],
        )
    )
    p = policy(rule("u", untagged=True, last=0))
    (verdict,) = explain(p, inv, NOW, "r", digest=D("U1"))
    assert verdict.untagged and verdict.tag == ""
    assert verdict.decision == "deleted" and verdict.rule == "u" and verdict.rank == 1
    assert verdict.pushed_at == OLD
    assert verdict.former_tags == ((("latest", ago(1)),))
    assert verdict.age == timedelta(days=2)
    (tagged,) = explain(p, inv, NOW, "r", digest=D("CUR"))
    assert tagged.tag == "latest" and not tagged.untagged
    assert [v.tag for v in explain(p, inv, NOW, "r")] == ["latest"]  # tags only, as before
    with pytest.raises(InventoryError, match="not in repository"):
        explain(p, inv, NOW, "r", digest=D("nowhere"))
