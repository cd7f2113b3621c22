"""Invariants of `evaluate` over random inventories and policies (DESIGN §2, §4, §6)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention import oci
from retention.evaluate import TagVerdict, dated, evaluate, explain
from retention.model import Image, Inventory, Kind, Repository, Tag
from retention.plan import Plan, from_json, to_document, to_json
from retention.policy.model import Policy
from tests.unit.evalkit import NOW, D, image, inventory, policy, rule, sig

POOL = [f"m{i}" for i in range(9)]
BLOBS = [f"b{i}" for i in range(6)]
REPOS = ["apps/web", "apps/api", "lib"]
PLAIN_TAGS = ["latest", "v1.0.0", "v1.1.0-rc1", "main-a", "main-b", "pr-1", "pr-2", "dev", "x"]


@dataclass(frozen=True)
class Spec:
    """One manifest of the pool; repositories hold subsets, so digests recur across them."""

    name: str
    kind: Kind
    created: int | None  # hours before NOW (negative: in the future)
    blobs: tuple[tuple[str, int], ...]
    children: tuple[str, ...]
    subject: str | None


@st.composite
def specs(draw: st.DrawFn) -> list[Spec]:
    out = []
    hours = st.integers(-48, 24 * 120)
    for name in POOL:
        kind = draw(st.sampled_from([Kind.IMAGE, Kind.IMAGE, Kind.INDEX, Kind.ARTIFACT]))
        created = None if draw(st.integers(0, 4)) == 3 else draw(hours)  # unknown age: 1 in 5
        blobs = tuple(
            draw(
                st.lists(
                    st.tuples(st.sampled_from(BLOBS), st.just(0)),
                    max_size=3,
                    unique_by=lambda b: b[0],
                )
            )
        )
        children: tuple[str, ...] = ()
        subject = None
        others = [p for p in POOL if p != name]
        if kind is Kind.INDEX:
            children = tuple(draw(st.lists(st.sampled_from(others), max_size=3, unique=True)))
        elif kind is Kind.ARTIFACT:
            subject = draw(st.none() | st.sampled_from([*others, "gone"]))
        out.append(Spec(name, kind, created, blobs, children, subject))
    return out


def _image(spec: Spec) -> Image:
    blob_sizes = tuple((b, 100 + int(b[1:]) * 1000) for b, _ in spec.blobs)
    created = NOW - timedelta(hours=spec.created) if spec.created is not None else None
    if spec.kind is Kind.INDEX:
        return image(
            spec.name,
            created,
            kind=Kind.INDEX,
            children=spec.children,
            manifest_size=300 + int(spec.name[1:]),
        )
    return image(
        spec.name,
        created,
        kind=spec.kind,
        subject=spec.subject,
        blobs=blob_sizes,
        platform="linux/amd64" if spec.name in ("m1", "m2") else None,
        manifest_size=500 + int(spec.name[1:]),
    )


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    pool = {s.name: _image(s) for s in draw(specs())}
    repos = []
    for name in draw(st.lists(st.sampled_from(REPOS), min_size=1, max_size=3, unique=True)):
        members = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True))
        tags: dict[str, str] = {}
        for _ in range(draw(st.integers(1, 10))):
            which = draw(st.integers(0, 9))
            if which < 6:
                tag = draw(st.sampled_from(PLAIN_TAGS))
            elif which < 9:  # a cosign tag, mostly of a member, sometimes of an absent image
                subject = draw(st.sampled_from([*members, *members, "gone"]))
                suffix = draw(st.sampled_from(["sig", "att", "sbom", ""]))
                # "": the OCI 1.1 referrers tag-schema fallback `sha256-<hex>`, no suffix
                tag = sig(subject, suffix) if suffix else sig(subject).removesuffix(".sig")
            else:
                tag = sig(draw(st.sampled_from(POOL)))
            # now and then a tag whose manifest is missing from the inventory
            missing = draw(st.integers(0, 15)) == 7
            tags[tag] = "missing" if missing else draw(st.sampled_from(members))
        repos.append(
            Repository(
                name=name,
                tags=tuple(sorted((Tag(t, D(i)) for t, i in tags.items()), key=lambda t: t.name)),
                images=tuple(sorted((pool[m] for m in members), key=lambda i: i.digest)),
            )
        )
    return inventory(*repos, complete=draw(st.booleans()))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    protect = draw(
        st.lists(
            st.sampled_from(["latest", r"v\d+\.\d+\.\d+", r".*\.sig", "x"]), max_size=2, unique=True
        )
    )
    tag_patterns = [(), (), ("main-.*",), ("pr-.*", "dev"), ("v.*",), (".*sig",)]
    rules = []
    for i in range(draw(st.sampled_from([1, 1, 2, 2, 3, 0]))):
        keep = draw(st.sampled_from(["last", "newer", "both", "all"]))
        rules.append(
            rule(
                f"r{i}",
                repos=draw(st.sampled_from([(), (), ("apps/.*",), ("lib",)])),
                tags=draw(st.sampled_from(tag_patterns)),
                exclude_tags=draw(st.sampled_from([(), (), ("x",), ("latest",)])),
                keep_all=keep == "all",
                last=draw(st.integers(0, 3)) if keep in ("last", "both") else None,
                newer_than=draw(st.sampled_from(["1d", "10d", "30d"]))
                if keep in ("newer", "both")
                else None,
            )
        )
    if draw(st.booleans()):  # a final catch-all that deletes, so that deletions are common
        rules.append(rule("rest", last=draw(st.integers(0, 2))))
    return policy(*rules, protect=protect, unknown_age=draw(st.sampled_from(["keep", "oldest"])))


@dataclass
class Result:
    policy: Policy
    inventory: Inventory
    plan: Plan
    verdicts: dict[str, list[TagVerdict]]
    deleted: set[tuple[str, str]]

    def is_deleted(self, repo: str, digest: str) -> bool:
        return (repo, digest) in self.deleted


def run(p: Policy, inv: Inventory) -> Result:
    plan = evaluate(p, inv, NOW)
    verdicts = {r.name: explain(p, inv, NOW, r.name) for r in inv.repositories}
    return Result(p, inv, plan, verdicts, {(e.repository, e.digest) for e in plan.deletions})


def attachment_subject(tag: Tag, repo: Repository) -> str | None:
    """The subject a tag follows, per DESIGN §2 (cosign name first, then manifest subject)."""
    img = repo.image(tag.digest)
    if img is None:
        return None
    cosign = oci.cosign_subject(tag.name)
    if cosign is not None and cosign != img.digest and repo.image(cosign) is not None:
        return cosign
    if img.subject is not None and img.subject != img.digest and repo.image(img.subject):
        return img.subject
    return None


# RETENTION_HYPOTHESIS_EXAMPLES=2000 for a longer hunt; the default keeps the unit suite quick
EXAMPLES = int(os.environ.get("RETENTION_HYPOTHESIS_EXAMPLES", "120"))
COMMON = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@COMMON
@given(policies(), inventories())
def test_no_kept_tag_loses_its_digest(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    for repo, verdicts in r.verdicts.items():
        for v in verdicts:
            assert r.is_deleted(repo, v.digest) == (v.decision == "deleted"), v
            if v.protected:
                assert v.decision == "kept"


@COMMON
@given(policies(), inventories())
def test_every_manifest_is_either_kept_or_deleted_once(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    listed = [(e.repository, e.digest) for e in r.plan.deletions + r.plan.kept]
    assert sorted(listed) == sorted((repo.name, i.digest) for repo in inv for i in repo.images)
    for e in r.plan.deletions:
        assert e.media_type in oci.MANIFEST_TYPES and oci.is_digest(e.digest)


@COMMON
@given(policies(), inventories())
def test_a_tag_no_rule_selects_is_kept(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    for repo in inv:
        verdicts = {v.tag: v for v in r.verdicts[repo.name]}
        for tag in repo.tags:
            if attachment_subject(tag, repo) is not None:
                continue
            selected = any(
                x.match.selects_repository(repo.name) and x.match.selects_tag(tag.name)
                for x in p.rules
            )
            if p.is_protected(tag.name) or not selected:
                assert verdicts[tag.name].decision == "kept"
                assert verdicts[tag.name].rule is None


@COMMON
@given(policies(), inventories())
def test_deletion_needs_a_rule_or_a_deleted_owner(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    for repo in inv:
        for v in r.verdicts[repo.name]:
            if v.decision == "deleted":
                assert v.rule is not None or " of deleted image " in v.reason, v
    for e in r.plan.deletions:
        if not e.tags:
            repo = next(x for x in inv if x.name == e.repository)
            img = repo.image(e.digest)
            assert img is not None
            grounds = [i.digest for i in repo.images if e.digest in i.children]
            if img.subject is not None:
                grounds.append(img.subject)
            assert any(r.is_deleted(repo.name, g) for g in grounds), e


@COMMON
@given(policies(), inventories())
def test_unknown_age_is_never_old_unless_oldest(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    if p.settings.unknown_age == "oldest":
        return
    for verdicts in r.verdicts.values():
        for v in verdicts:
            if v.rule is not None and v.created is None:
                assert v.decision == "kept", v
                assert v.rank is None


@COMMON
@given(policies(), inventories())
def test_what_kept_manifests_reference_is_kept(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    for repo in inv:
        for img in repo.images:
            if r.is_deleted(repo.name, img.digest):
                continue
            for child in img.children:
                if repo.image(child) is not None:
                    assert not r.is_deleted(repo.name, child), "platform of kept index deleted"
            if img.subject is not None and repo.image(img.subject) is not None:
                assert not r.is_deleted(repo.name, img.subject), "subject of kept artifact deleted"
        for tag in repo.tags:
            subject = oci.cosign_subject(tag.name)
            if (
                subject
                and repo.image(subject)
                and repo.image(tag.digest)
                and not r.is_deleted(repo.name, tag.digest)
            ):
                assert not r.is_deleted(repo.name, subject), "subject of kept signature deleted"


@COMMON
@given(policies(), inventories())
def test_platforms_of_a_deleted_index_go_with_it(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    for repo in inv:
        tagged = {t.digest for t in repo.tags}
        kept = [i for i in repo.images if not r.is_deleted(repo.name, i.digest)]
        kept_digests = {i.digest for i in kept}
        for index in repo.images:
            if index.kind is not Kind.INDEX or not r.is_deleted(repo.name, index.digest):
                continue
            for child in index.children:
                img = repo.image(child)
                if img is None or child in tagged:
                    continue
                referenced = any(child in k.children or k.subject == child for k in kept) or any(
                    oci.cosign_subject(t.name) == child and t.digest in kept_digests
                    for t in repo.tags
                )
                follows_kept = (
                    img.subject is not None
                    and repo.image(img.subject) is not None
                    and not r.is_deleted(repo.name, img.subject)
                )
                if not referenced and not follows_kept:
                    assert r.is_deleted(repo.name, child), f"platform {child} of deleted index kept"


@COMMON
@given(policies(), inventories())
def test_attachments_follow_their_subject(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    for repo in inv:
        verdicts = {v.tag: v for v in r.verdicts[repo.name]}
        for tag in repo.tags:
            subject = attachment_subject(tag, repo)
            if subject is not None:
                assert (verdicts[tag.name].decision == "deleted") == r.is_deleted(
                    repo.name, subject
                ), tag
                assert verdicts[tag.name].rule is None and verdicts[tag.name].rank is None
        tagged = {t.digest for t in repo.tags}
        for img in repo.images:
            if (
                img.digest not in tagged
                and img.subject is not None
                and img.subject != img.digest
                and repo.image(img.subject) is not None
            ):
                assert r.is_deleted(repo.name, img.digest) == r.is_deleted(repo.name, img.subject)


@COMMON
@given(policies(), inventories())
def test_last_counts_images_not_tags(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    by_name = {x.name: x for x in p.rules}
    for verdicts in r.verdicts.values():
        ranks: dict[str, dict[str, int]] = {}
        for v in verdicts:
            if v.rule is not None and v.rank is not None:
                ranks.setdefault(v.rule, {})
                assert ranks[v.rule].setdefault(v.digest, v.rank) == v.rank, "one rank per image"
                last = by_name[v.rule].keep.last
                if last is not None and v.rank <= last:
                    assert v.decision == "kept", v
        for per_digest in ranks.values():
            assert sorted(per_digest.values()) == list(range(1, len(per_digest) + 1))


@COMMON
@given(policies(), inventories())
def test_ranks_follow_created_newest_first(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    for verdicts in r.verdicts.values():
        ranked: dict[str, list[TagVerdict]] = {}
        for v in verdicts:
            if v.rule is not None and v.rank is not None:
                ranked.setdefault(v.rule, []).append(v)
        for vs in ranked.values():
            vs.sort(key=lambda v: v.rank or 0)
            # a created past now + FUTURE_SLACK is an unknown age, like a missing one
            ages = [dated(v.created, NOW) for v in vs]
            known = [a for a in ages if a is not None]
            assert known == sorted(known, reverse=True)
            # unknown ages (oldest mode) come after every known one
            seen_unknown = False
            for age in ages:
                seen_unknown = seen_unknown or age is None
                assert not (seen_unknown and age is not None)


def _shuffled(inv: Inventory, seed: int) -> Inventory:
    rnd = random.Random(seed)

    def shuffle(items: Iterable[object]) -> tuple[object, ...]:
        out = list(items)
        rnd.shuffle(out)
        return tuple(out)

    repos = [
        Repository(name=r.name, tags=shuffle(r.tags), images=shuffle(r.images))  # type: ignore[arg-type]
        for r in inv.repositories
    ]
    return Inventory(inv.registry, inv.taken_at, shuffle(repos), inv.complete)  # type: ignore[arg-type]


@COMMON
@given(policies(), inventories(), st.integers(0, 2**32))
def test_deterministic_and_independent_of_input_order(p: Policy, inv: Inventory, seed: int) -> None:
    text = to_json(evaluate(p, inv, NOW))
    assert to_json(evaluate(p, inv, NOW)) == text
    shuffled = _shuffled(inv, seed)
    assert to_json(evaluate(p, shuffled, NOW)) == text
    for repo in inv:
        assert explain(p, shuffled, NOW, repo.name) == explain(p, inv, NOW, repo.name)


@COMMON
@given(policies(), inventories())
def test_plan_file_round_trips_and_matches_the_standard_encoder(p: Policy, inv: Inventory) -> None:
    plan = evaluate(p, inv, NOW)
    text = to_json(plan)
    assert (
        text == json.dumps(to_document(plan), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    )
    assert to_json(from_json(text, "plan.json")) == text


@COMMON
@given(policies(), inventories())
def test_bytes_reclaimable_counts_each_unused_blob_once(p: Policy, inv: Inventory) -> None:
    r = run(p, inv)
    in_use: set[str] = set()
    sizes: dict[str, int] = {}
    for repo in inv:
        for img in repo.images:
            refs = {img.digest: img.manifest_size} | {b.digest: b.size for b in img.blobs}
            if r.is_deleted(repo.name, img.digest):
                sizes.update(refs)
            else:
                in_use.update(refs)
    expected = sum(size for digest, size in sizes.items() if digest not in in_use)
    s = r.plan.summary
    assert s.bytes_reclaimable == expected
    assert s.images_deleted == len(r.plan.deletions)
    assert s.tags_deleted == sum(len(e.tags) for e in r.plan.deletions)
    assert s.tags_deleted == sum(
        1 for vs in r.verdicts.values() for v in vs if v.decision == "deleted"
    )
    assert s.complete == inv.complete
