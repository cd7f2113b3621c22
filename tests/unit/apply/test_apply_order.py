"""Apply's ordering and skip logic, with a tiny in-memory stand-in (no HTTP behaviour here).

Everything about real registry answers is in tests/integration/test_apply*.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from retention import oci
from retention.apply import ApplyReport, ProgressEvent, apply_plan
from retention.errors import DeleteDisabledError, RegistryError
from retention.journal import Journal, read_journal
from retention.plan import Entry, Plan
from tests.support.orderfake import Fetched, OrderFake
from tests.support.plans import entry, image_raw, index_raw, make_plan


def _apply(plan: Plan, fake: OrderFake, path: Path, concurrency: int = 4) -> ApplyReport:
    with Journal(path, registry=fake.url).open(plan_sha256="ab" * 32, policy_path="p") as journal:
        return apply_plan(plan, fake, journal, concurrency=concurrency)


def _multi(fake: OrderFake, tag: str, seed: str) -> tuple[Entry, list[Entry]]:
    kids = [image_raw(f"{seed}-amd64"), image_raw(f"{seed}-arm64")]
    for raw in kids:
        fake.add("app", raw)
    raw = index_raw(kids)
    fake.add("app", raw, tag)
    index = entry("app", raw, tags=[tag])
    return index, [entry("app", k, parent=index.digest) for k in kids]


def test_an_index_is_deleted_before_its_platform_manifests(tmp_path: Path) -> None:
    fake = OrderFake()
    index, kids = _multi(fake, "old", "x")
    report = _apply(make_plan([index, *kids]), fake, tmp_path / "j")
    assert report.complete and report.count("deleted") == 3
    assert fake.deleted[0] == ("app", index.digest)


def test_a_new_tag_on_a_planned_index_keeps_the_index_and_its_platform_manifests(
    tmp_path: Path,
) -> None:
    fake = OrderFake()
    index, kids = _multi(fake, "old", "x")
    fake.tags["app"]["hotfix"] = index.digest  # pushed after the plan was made
    report = _apply(make_plan([index, *kids]), fake, tmp_path / "j")
    assert fake.deleted == []
    assert {o.kind for o in report.outcomes} == {"stale"}
    assert report.outcomes[0].reason is not None
    reasons = {o.entry.digest: o.reason for o in report.outcomes}
    assert reasons[index.digest] == "new tag hotfix points at it"
    assert all(reasons[k.digest] == "new tag hotfix is an index that references it" for k in kids)


def test_a_new_index_referencing_a_planned_platform_manifest_keeps_it(tmp_path: Path) -> None:
    fake = OrderFake()
    index, kids = _multi(fake, "old", "x")
    fake.add("app", index_raw([image_raw("x-amd64")]), "new")  # re-uses the amd64 manifest
    report = _apply(make_plan([index, *kids]), fake, tmp_path / "j")
    kinds = {o.entry.digest: o.kind for o in report.outcomes}
    assert kinds == {index.digest: "deleted", kids[0].digest: "stale", kids[1].digest: "deleted"}
    assert ("app", kids[0].digest) not in fake.deleted


def test_a_moved_tag_is_stale_and_nothing_is_deleted_for_it(tmp_path: Path) -> None:
    fake = OrderFake()
    old = image_raw("old")
    fake.add("app", old, "v1", "v1-alias")
    plan = make_plan([entry("app", old, tags=["v1", "v1-alias"])])
    newer = fake.add("app", image_raw("new"), "v1-alias")  # re-pushed between plan and apply
    report = _apply(plan, fake, tmp_path / "j")
    assert report.outcomes[0].kind == "stale"
    assert report.outcomes[0].reason == f"tag v1-alias moved to {newer}"
    assert fake.count("DELETE") == 0


def test_artifacts_wait_for_their_subject_and_follow_it(tmp_path: Path) -> None:
    fake = OrderFake()
    subject = image_raw("s")
    sd = fake.add("app", subject, "v1")
    sig = image_raw("sig")
    fake.add("app", sig, f"sha256-{sd[7:]}.sig")
    referrer = image_raw("sbom", subject=(sd, len(subject)))
    fake.add("app", referrer)
    plan = make_plan(
        [
            entry("app", subject, tags=["v1"]),
            entry("app", sig, tags=[f"sha256-{sd[7:]}.sig"]),
            entry("app", referrer),
        ]
    )
    report = _apply(plan, fake, tmp_path / "j")
    assert report.complete
    assert fake.deleted[0] == ("app", sd)

    # the same again, but the subject's tag moved: both artifacts are kept with it
    fake2 = OrderFake()
    fake2.add("app", subject, "v1")
    fake2.add("app", sig, f"sha256-{sd[7:]}.sig")
    fake2.add("app", referrer)
    fake2.add("app", image_raw("s2"), "v1")
    report = _apply(plan, fake2, tmp_path / "j2")
    assert [o.kind for o in report.outcomes] == ["stale", "stale", "stale"]
    assert fake2.count("DELETE") == 0


def test_requests_per_entry(tmp_path: Path) -> None:
    """1 tags/list per repository, 1 request per listed tag (1 per untagged entry), 1 DELETE and
    1 HEAD of the digest confirming it."""
    fake = OrderFake()
    index, kids = _multi(fake, "old", "x")
    two = image_raw("two-tags")
    fake.add("app", two, "a", "b")
    fake.add("app", image_raw("kept"), "latest")
    plan = make_plan(
        [index, *kids, entry("app", two, tags=["a", "b"])],
        [entry("app", image_raw("kept"), tags=["latest"])],
    )
    _apply(plan, fake, tmp_path / "j")
    assert fake.count("tags") == 1
    # index tag, 2 children, 2 tags; then one confirming HEAD per DELETE
    assert fake.count("GET") + fake.count("HEAD") == 1 + 2 + 2 + 4
    assert fake.count("DELETE") == 4
    assert ("HEAD", "app", "latest") not in fake.calls and (
        "GET",
        "app",
        "latest",
    ) not in fake.calls


def test_deletion_disabled_stops_the_run_at_the_first_answer(tmp_path: Path) -> None:
    fake = OrderFake()
    raws = [image_raw(f"i{i}") for i in range(5)]
    for i, raw in enumerate(raws):
        fake.add("app", raw, f"t{i}")
    fake.delete_disabled = True
    report = _apply(
        make_plan([entry("app", r, tags=[f"t{i}"]) for i, r in enumerate(raws)]),
        fake,
        tmp_path / "j",
        concurrency=1,
    )
    assert isinstance(report.error, DeleteDisabledError)
    assert fake.count("DELETE") == 1
    assert report.count("failed") == 5 and not report.complete


def test_a_rerun_skips_what_the_journal_says_is_done(tmp_path: Path) -> None:
    fake = OrderFake()
    raws = [image_raw(f"i{i}") for i in range(4)]
    for i, raw in enumerate(raws):
        fake.add("app", raw, f"t{i}")
    plan = make_plan([entry("app", r, tags=[f"t{i}"]) for i, r in enumerate(raws)])
    seen: list[ProgressEvent] = []

    def stop_after_two(event: ProgressEvent) -> None:
        seen.append(event)
        if len(seen) == 2:
            fake.delete_disabled = True  # the registry goes read-only mid-run

    with Journal(tmp_path / "j", registry=fake.url).open(plan_sha256="x", policy_path="p") as j:
        first = apply_plan(plan, fake, j, concurrency=1, progress=stop_after_two)
    assert first.count("deleted") == 2 and first.error is not None
    fake.delete_disabled = False
    fake.calls.clear()
    second = _apply(plan, fake, tmp_path / "j")
    assert second.complete
    assert (second.count("resumed"), second.count("deleted")) == (2, 2)
    assert fake.count("DELETE") == 2 and fake.count("GET") == 2
    done = read_journal(tmp_path / "j").finished()
    assert len(done) == 4


# -- hypothesis: whatever is stale, nothing is deleted before or without what it depends on ------


@st.composite
def _forests(draw: st.DrawFn) -> tuple[OrderFake, Plan, set[str]]:
    fake = OrderFake()
    deletions: list[Entry] = []
    depends: dict[str, str] = {}  # digest -> the digest it needs deleted first
    moved: set[str] = set()
    for i in range(draw(st.integers(1, 5))):
        shape = draw(st.sampled_from(["image", "index", "signed", "referred"]))
        tag = f"t{i}"
        if shape == "index":
            kids = [image_raw(f"{i}-{k}") for k in range(draw(st.integers(1, 3)))]
            for k in kids:
                fake.add("app", k)
            raw = index_raw(kids)
            top = entry("app", raw, tags=[tag])
            deletions += [entry("app", k, parent=top.digest) for k in kids]
            depends.update({oci.sha256_digest(k): top.digest for k in kids})
        else:
            raw = image_raw(str(i))
            top = entry("app", raw, tags=[tag])
        fake.add("app", raw, tag)
        deletions.append(top)
        if shape == "signed":
            sig = image_raw(f"sig{i}")
            name = f"sha256-{top.digest[7:]}.sig"
            fake.add("app", sig, name)
            deletions.append(entry("app", sig, tags=[name]))
            depends[oci.sha256_digest(sig)] = top.digest
        if shape == "referred":
            ref = image_raw(f"ref{i}", subject=(top.digest, len(raw)))
            fake.add("app", ref)
            deletions.append(entry("app", ref))
            depends[oci.sha256_digest(ref)] = top.digest
        if draw(st.booleans()):
            moved.add(top.digest)
    plan = make_plan(deletions)
    for digest in moved:  # after the plan: a new tag points at it
        fake.tags["app"][f"new-{digest[7:15]}"] = digest
    return fake, plan, {f"{d}>{n}" for d, n in depends.items()} | {f"moved:{d}" for d in moved}


@settings(max_examples=60, deadline=None)
@given(_forests(), st.integers(1, 4))
def test_dependencies_hold_whatever_goes_stale(
    case: tuple[OrderFake, Plan, set[str]], concurrency: int
) -> None:
    fake, plan, facts = case
    with tempfile.TemporaryDirectory() as tmp:
        report = _apply(plan, fake, Path(tmp) / "j", concurrency=concurrency)
    order = [d for _, d in fake.deleted]
    moved = {f.split(":", 1)[1] for f in facts if f.startswith("moved:")}
    edges = [tuple(f.split(">")) for f in facts if ">" in f]
    assert not moved & set(order)
    for later, first in edges:
        if later in order:
            assert first in order and order.index(first) < order.index(later)
        if first in moved:
            assert later not in order
    kinds = {o.entry.digest: o.kind for o in report.outcomes}
    assert all(kinds[d] == "deleted" for d in order)
    assert len(report.outcomes) == len(plan.deletions)


def test_should_stop_lets_deletes_in_flight_finish_and_starts_nothing_new(tmp_path: Path) -> None:
    fake = OrderFake()
    raws = [image_raw(f"i{i}") for i in range(5)]
    for i, raw in enumerate(raws):
        fake.add("app", raw, f"t{i}")
    plan = make_plan([entry("app", r, tags=[f"t{i}"]) for i, r in enumerate(raws)])
    deleted: list[ProgressEvent] = []
    with Journal(tmp_path / "j", registry=fake.url).open(plan_sha256="x", policy_path="p") as j:
        report = apply_plan(
            plan,
            fake,
            j,
            concurrency=1,
            progress=deleted.append,
            should_stop=lambda: len(deleted) >= 2,
        )
    assert (report.count("deleted"), report.count("failed"), fake.count("DELETE")) == (2, 3, 2)
    assert report.error is not None and "asked to stop" in report.error.message
    assert all(o.reason and o.reason.startswith("not attempted") for o in report.of_kind("failed"))
    again = _apply(plan, fake, tmp_path / "j")
    assert again.complete and again.count("resumed") == 2


def test_a_kept_tag_moved_onto_a_planned_digest_needs_verify_kept(tmp_path: Path) -> None:
    """The documented gap of the request budget, and the opt-in that closes it."""
    for verify_kept, expected in ((False, "deleted"), (True, "stale")):
        fake = OrderFake()
        old = image_raw("old")
        fake.add("app", old, "v1")
        fake.add("app", image_raw("current"), "latest")
        plan = make_plan(
            [entry("app", old, tags=["v1"])], [entry("app", image_raw("current"), tags=["latest"])]
        )
        fake.tags["app"]["latest"] = oci.sha256_digest(old)  # rollback after the plan
        with Journal(tmp_path / f"j{verify_kept}", registry=fake.url).open(
            plan_sha256="x", policy_path="p"
        ) as j:
            report = apply_plan(plan, fake, j, verify_kept=verify_kept)
        assert report.outcomes[0].kind == expected
        if verify_kept:
            assert report.outcomes[0].reason == "kept tag latest points at it"
            assert fake.count("GET") == 1 + 0  # latest resolved; v1's entry never verified


def test_a_new_tag_that_cannot_be_read_keeps_every_entry_of_its_repository(
    tmp_path: Path,
) -> None:
    class Unreadable(OrderFake):
        def get_manifest(self, repo: str, reference: str) -> Fetched | None:
            if reference == "mystery":
                raise RegistryError("manifest app@mystery: HTTP 400", status=400)
            return super().get_manifest(repo, reference)

    fake = Unreadable()
    old, lib = image_raw("old"), image_raw("lib")
    fake.add("app", old, "v1")
    fake.add("app", image_raw("whatever"), "mystery")  # pushed after the plan
    fake.add("lib", lib, "l1")
    plan = make_plan([entry("app", old, tags=["v1"]), entry("lib", lib, tags=["l1"])])
    report = _apply(plan, fake, tmp_path / "j")
    kinds = {o.entry.repository: (o.kind, o.reason) for o in report.outcomes}
    assert kinds["app"] == (
        "failed",
        "could not resolve new tag app:mystery: manifest app@mystery: HTTP 400 [400]",
    )
    assert kinds["lib"] == ("deleted", None)
    assert fake.deleted == [("lib", oci.sha256_digest(lib))]
