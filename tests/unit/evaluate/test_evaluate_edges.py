"""Edge cases of DESIGN §2 the main table leaves out, found while reviewing for "it never deletes
what it must keep": the OCI referrers fallback tag, chains of attachments, shared platform
manifests, tags of one image owned by rules that disagree, and degenerate keeps."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.evaluate import evaluate, explain
from retention.model import Inventory, Kind, Repository
from retention.policy.model import Policy
from tests.unit.evalkit import (
    NOW,
    D,
    ago,
    hex_of,
    image,
    index,
    inventory,
    pat,
    policy,
    repo,
    rule,
    sig,
)
from tests.unit.evaluate.test_evaluate import Case, _run
from tests.unit.evaluate.test_evaluate_properties import COMMON, inventories, policies


def fallback(name: str) -> str:
    """The OCI 1.1 referrers tag-schema fallback tag of the image named `name`: no suffix."""
    return f"sha256-{hex_of(name)}"


CASES = [
    Case(
        "referrers-fallback-tag-is-deleted-with-its-subject",
        policy(rule("all", last=1)),
        [
            image("NEW", ago(1)),
            image("OLD", ago(50)),
            index("FB", None, ["REF"]),
            image("REF", None, kind=Kind.ARTIFACT, subject="OLD"),
        ],
        {"new": "NEW", "old": "OLD", fallback("OLD"): "FB"},
        {fallback("OLD"): ("deleted", f"referrers index of deleted image {D('OLD')[:19]}")},
        deleted={"OLD", "FB", "REF"},
    ),
    Case(
        "referrers-fallback-tag-of-a-kept-image-is-kept-and-takes-no-rank",
        policy(rule("all", last=1)),
        [image("NEW", ago(1)), index("FB", ago(0), ["REF"]), image("REF", None, subject="NEW")],
        {"new": "NEW", fallback("NEW"): "FB"},
        {
            fallback("NEW"): ("kept", "referrers index of kept image"),
            "new": ("kept", "rank 1"),
        },
        deleted=set(),
    ),
    Case(
        "orphan-referrers-fallback-tag-not-selected-is-kept",
        policy(rule("ci", tags=["ci-.*"], last=0)),
        [index("FB", None, [])],
        {fallback("GONE"): "FB"},
        {fallback("GONE"): ("kept", "orphan referrers index (subject sha256:")},
        deleted=set(),
    ),
    Case(
        "tags-of-one-image-owned-by-a-keeping-and-a-deleting-rule-keep-it",
        policy(rule("releases", tags=[r"v.*"], keep_all=True), rule("ci", last=0)),
        [image("A", ago(90))],
        {"v1": "A", "ci-1": "A"},
        {"v1": ("kept", "keeps all"), "ci-1": ("kept", "shares digest with `v1`")},
        deleted=set(),
    ),
    Case(
        "tag-on-a-platform-manifest-kept-by-its-own-tag-while-its-index-goes",
        policy(rule("all", last=0), protect=["pin-.*"]),
        [
            index("I", ago(50), ["I-amd64", "I-arm64"]),
            image("I-amd64", ago(50), platform="linux/amd64"),
            image("I-arm64", ago(50), platform="linux/arm64"),
        ],
        {"old": "I", "pin-amd64": "I-amd64"},
        {"old": ("deleted", "rank 1 > 0"), "pin-amd64": ("kept", "protected")},
        deleted={"I", "I-arm64"},
    ),
    Case(
        "platform-manifest-of-two-deleted-indexes-and-a-kept-one-is-kept",
        policy(rule("all", last=1)),
        [
            index("KEPT", ago(1), ["SHARED"]),
            index("OLD1", ago(50), ["SHARED", "ONLY-OLD"]),
            index("OLD2", ago(60), ["SHARED", "ONLY-OLD"]),
            image("SHARED", ago(60), platform="linux/amd64"),
            image("ONLY-OLD", ago(60), platform="linux/arm64"),
        ],
        {"new": "KEPT", "old1": "OLD1", "old2": "OLD2"},
        {"new": ("kept", "rank 1"), "old1": ("deleted", "rank 2"), "old2": ("deleted", "rank 3")},
        deleted={"OLD1", "OLD2", "ONLY-OLD"},
    ),
    Case(
        "signature-of-a-platform-manifest-of-a-kept-index-is-kept",
        policy(rule("all", last=1)),
        [
            index("I", ago(1), ["I-amd64"]),
            image("I-amd64", ago(1), platform="linux/amd64"),
            image("SIG", None, kind=Kind.ARTIFACT),
        ],
        {"v1": "I", sig("I-amd64"): "SIG"},
        {sig("I-amd64"): ("kept", "signature of kept image")},
        deleted=set(),
    ),
    Case(
        "signature-of-a-signature-goes-with-the-image",
        policy(rule("all", last=1)),
        [
            image("NEW", ago(1)),
            image("OLD", ago(50)),
            image("SIG", None, kind=Kind.ARTIFACT),
            image("SIGSIG", None, kind=Kind.ARTIFACT),
        ],
        {"new": "NEW", "old": "OLD", sig("OLD"): "SIG", sig("SIG"): "SIGSIG"},
        {
            sig("OLD"): ("deleted", "signature of deleted image"),
            sig("SIG"): ("deleted", f"signature of deleted image {D('SIG')[:19]}"),
        },
        deleted={"OLD", "SIG", "SIGSIG"},
    ),
    Case(
        "protected-signature-of-a-signature-keeps-the-whole-chain",
        policy(rule("all", last=0), protect=["sha256-.*"]),
        [image("OLD", ago(50)), image("SIG", None), image("SIGSIG", None)],
        {"old": "OLD", sig("OLD"): "SIG", sig("SIG"): "SIGSIG"},
        {"old": ("kept", "subject of kept attachment"), sig("SIG"): ("kept", "protected")},
        deleted=set(),
    ),
    Case(
        "last-0-with-newer-than-keeps-only-the-young",
        policy(rule("all", last=0, newer_than="7d")),
        [image("A", ago(1)), image("B", ago(6)), image("C", ago(8))],
        {"a": "A", "b": "B", "c": "C"},
        {
            "a": ("kept", "younger than 7d"),
            "b": ("kept", "younger than 7d"),
            "c": ("deleted", "rank 3 > 0 and 8 days old >= 7d"),
        },
        deleted={"C"},
    ),
    Case(
        "unknown-age-oldest-when-every-age-is-unknown-ranks-by-tag-name",
        policy(rule("all", last=1), unknown_age="oldest"),
        [image("A", None), image("B", None), image("C", None)],
        {"c": "C", "a": "A", "b": "B"},
        {
            "a": ("kept", "the most recent (rank 1)"),
            "b": ("deleted", "rank 2 > 1"),
            "c": ("deleted", "rank 3 > 1"),
        },
        deleted={"B", "C"},
    ),
    Case(
        "unknown-age-keep-when-every-age-is-unknown-deletes-nothing",
        policy(rule("all", last=0, newer_than="1d")),
        [image("A", None), image("B", None)],
        {"a": "A", "b": "B"},
        {"a": ("kept", "age unknown"), "b": ("kept", "age unknown")},
        deleted=set(),
    ),
    Case(
        "a-repository-whose-every-tag-is-deleted-loses-every-manifest",
        policy(rule("all", last=0)),
        [
            image("A", ago(10)),
            index("I", ago(20), ["I-amd64"]),
            image("I-amd64", ago(20), platform="linux/amd64"),
            image("SIG", None),
            image("REF", None, kind=Kind.ARTIFACT, subject="A"),
        ],
        {"a": "A", "a-alias": "A", "i": "I", sig("A"): "SIG"},
        {"a": ("deleted", "rank"), sig("A"): ("deleted", "signature of deleted image")},
        deleted={"A", "I", "I-amd64", "SIG", "REF"},
    ),
    Case(
        "dots-in-tag-names-are-literal-only-where-the-pattern-escapes-them",
        policy(rule("all", last=0), protect=[r"v1\.0"]),
        [image("A", ago(10)), image("B", ago(10))],
        {"v1.0": "A", "v1-0": "B"},
        {"v1.0": ("kept", "protected"), "v1-0": ("deleted", "rank")},
        deleted={"B"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_edge_semantics(case: Case) -> None:
    verdicts, deleted = _run(case)
    assert set(verdicts) == set(case.tags)
    for tag, (decision, text) in case.expect.items():
        v = verdicts[tag]
        assert (v.decision, text in v.reason) == (decision, True), f"{tag}: {v.line()}"
    if case.deleted is not None:
        assert deleted == {D(n) for n in case.deleted}
    for v in verdicts.values():
        assert (v.digest in deleted) == (v.decision == "deleted"), v


def test_a_fallback_tag_with_a_suffix_cosign_does_not_use_is_an_ordinary_tag() -> None:
    """`sha256-<hex>.bak` is neither cosign's nor the OCI fallback: a rule may own it."""
    odd = f"{fallback('A')}.bak"
    inv = inventory(
        repo("apps/web", {"a": "A", odd: "X"}, [image("A", ago(1)), image("X", ago(9))])
    )
    p = policy(rule("all", last=1))
    verdicts = {v.tag: v for v in explain(p, inv, NOW, "apps/web")}
    assert verdicts[odd].rule == "all" and verdicts[odd].decision == "deleted"
    assert {e.digest for e in evaluate(p, inv, NOW).deletions} == {D("X")}


# --- attachments stored in another repository (cosign's COSIGN_REPOSITORY) -----------------------


def _two_repositories(*, complete: bool = True) -> tuple[object, ...]:
    """`apps/web` holds the signed images; `sigs` holds their cosign signatures, as cosign
    writes them with COSIGN_REPOSITORY=registry/sigs. One signature's image is gone."""
    web = repo("apps/web", {"v1": "A", "v2": "B"}, [image("A", ago(20)), image("B", ago(1))])
    sigs = repo(
        "sigs",
        {sig("A"): "SA", sig("B"): "SB", sig("GONE"): "SG"},
        [image("SA", None), image("SB", None), image("SG", None)],
    )
    return inventory(web, sigs, complete=complete), web, sigs


@pytest.mark.parametrize("unknown_age", ["keep", "oldest"])
def test_a_signature_whose_image_lives_in_another_repository_is_not_an_orphan(
    unknown_age: str,
) -> None:
    inv, _, _ = _two_repositories()
    p = policy(rule("sigs", repos=["sigs"], last=0), unknown_age=unknown_age)  # type: ignore[arg-type]
    plan = evaluate(p, inv, NOW)
    verdicts = {v.tag: v for v in explain(p, inv, NOW, "sigs")}
    for name in ("A", "B"):
        v = verdicts[sig(name)]
        assert v.decision == "kept" and v.rule is None, v
        assert f"signature of {D(name)[:19]} in repository apps/web" in v.reason, v
    # the signature whose image exists nowhere is an orphan the rule may delete (age unknown:
    # only when unknown_age says oldest)
    orphan = verdicts[sig("GONE")]
    assert "orphan signature" in orphan.reason
    assert (D("SG") in {e.digest for e in plan.deletions}) == (unknown_age == "oldest")
    assert {e.digest for e in plan.deletions} <= {D("SG")}


def test_with_part_of_the_registry_an_orphan_may_have_its_image_elsewhere_so_it_is_kept() -> None:
    inv, _, sigs = _two_repositories(complete=False)
    only_sigs = inventory(sigs, complete=False)  # e.g. plan --repository sigs
    p = policy(rule("sigs", repos=["sigs"], last=0), unknown_age="oldest")
    for partial in (inv, only_sigs):
        plan = evaluate(p, partial, NOW)
        assert not {e.digest for e in plan.deletions} & {D("SA"), D("SB"), D("SG")}
        verdicts = {v.tag: v for v in explain(p, partial, NOW, "sigs")}
        assert "only part of the registry" in verdicts[sig("GONE")].reason


# --- monotonic safety (registry-facts §5.5 #4): more protection or less knowledge never deletes
# more ----------------------------------------------------------------------------------------


def _deleted(p: Policy, inv: Inventory) -> set[tuple[str, str]]:
    return {(e.repository, e.digest) for e in evaluate(p, inv, NOW).deletions}


@COMMON
@given(policies(), inventories(), st.sampled_from(["latest", "v1.0.0", "main-.*", ".*sig", ".*"]))
def test_protecting_more_never_deletes_more(p: Policy, inv: Inventory, extra: str) -> None:
    stricter = replace(p, protect_tags=(*p.protect_tags, pat(extra)))
    assert _deleted(stricter, inv) <= _deleted(p, inv)


@COMMON
@given(policies(), inventories(), st.integers(0, 1000))
def test_forgetting_a_created_date_never_deletes_more(p: Policy, inv: Inventory, pick: int) -> None:
    if p.settings.unknown_age != "keep":
        return
    places = [(ri, ii) for ri, r in enumerate(inv.repositories) for ii in range(len(r.images))]
    ri, ii = places[pick % len(places)]
    repos = list(inv.repositories)
    images = list(repos[ri].images)
    images[ii] = replace(images[ii], created=None)
    repos[ri] = Repository(repos[ri].name, repos[ri].tags, tuple(images))
    assert _deleted(p, replace(inv, repositories=tuple(repos))) <= _deleted(p, inv)


@COMMON
@given(policies(), inventories())
def test_a_partial_inventory_never_deletes_more_than_the_whole(p: Policy, inv: Inventory) -> None:
    whole = replace(inv, complete=True)
    assert _deleted(p, replace(inv, complete=False)) <= _deleted(p, whole)
