"""Which journal entries `restore` re-uploads, and in which order (pure: no registry)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention import oci
from retention.journal import IntentRecord, JournalState, OutcomeRecord
from retention.restore import select
from tests.support.plans import image_raw, index_raw

AT = datetime(2026, 11, 27, tzinfo=UTC)
KID_A, KID_B = image_raw("a"), image_raw("b")
INDEX = index_raw([KID_A, KID_B])
IMAGE = image_raw("img")
SIG = image_raw("sig")
SBOM = image_raw("sbom", subject=(oci.sha256_digest(IMAGE), len(IMAGE)))
OTHER = image_raw("other")


def _intent(
    raw: bytes, tags: tuple[str, ...] = (), parent: bytes | None = None, repo: str = "app"
) -> IntentRecord:
    return IntentRecord(
        registry="http://r",
        repository=repo,
        digest=oci.sha256_digest(raw),
        media_type=oci.parse_manifest(raw, None, oci.sha256_digest(raw)).media_type,
        size=1,
        tags=tags,
        parent=oci.sha256_digest(parent) if parent else None,
        raw=raw,
        at=AT,
    )


SIG_TAG = f"sha256-{oci.sha256_digest(IMAGE)[7:]}.sig"
# the order apply deletes in: index first, subject first
RECORDS = (
    _intent(INDEX, ("multi",)),
    _intent(KID_A, parent=INDEX),
    _intent(KID_B, parent=INDEX),
    _intent(IMAGE, ("v1",)),
    _intent(SIG, (SIG_TAG,)),
    _intent(SBOM),
    _intent(OTHER, ("o1",), repo="lib"),
    OutcomeRecord("done", "app", oci.sha256_digest(INDEX), None, AT),
)
STATE = JournalState(path=Path("j"), records=RECORDS)


def _names(items: tuple[IntentRecord, ...]) -> list[str]:
    names = {
        oci.sha256_digest(raw): name
        for name, raw in [("index", INDEX), ("a", KID_A), ("b", KID_B), ("img", IMAGE),
                          ("sig", SIG), ("sbom", SBOM), ("other", OTHER)]
    }  # fmt: skip
    return [names[i.digest] for i in items]


def test_children_before_their_index_and_subjects_before_their_artifacts() -> None:
    order = _names(select(STATE))
    assert sorted(order) == sorted(["index", "a", "b", "img", "sig", "sbom", "other"])
    assert order.index("a") < order.index("index") and order.index("b") < order.index("index")
    assert order.index("img") < order.index("sig") and order.index("img") < order.index("sbom")


@pytest.mark.parametrize(
    ("repository", "tag", "expected"),
    [
        (None, "multi", {"index", "a", "b"}),
        (None, "v1", {"img", "sig", "sbom"}),
        (None, SIG_TAG, {"img", "sig", "sbom"}),  # an artifact brings its subject back
        ("lib", None, {"other"}),
        ("lib", "multi", set()),
        (None, "nope", set()),
    ],
    ids=["index-tag", "image-tag", "signature-tag", "repository", "tag-in-other-repo", "unknown"],
)
def test_narrowing(repository: str | None, tag: str | None, expected: set[str]) -> None:
    assert set(_names(select(STATE, repository=repository, tag=tag))) == expected
