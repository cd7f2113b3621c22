"""The --delete-untagged detection and the warnings it raises for indexes and referrers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retention.gc import GcResult, deletes_untagged, untagged_warnings
from retention.model import Image, Inventory, Kind, Repository, Tag
from retention.oci import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

GC = ["docker-registry", "garbage-collect", "/etc/docker/registry/config.yml"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (GC, False),
        ([*GC, "--delete-untagged"], True),
        ([*GC, "-m"], True),
        ([*GC, "--delete-untagged=true"], True),
        ([*GC, "--delete-untagged=false"], False),
        ([*GC, "-m=false"], False),
        ([*GC, "-dm"], True),
        ([*GC, "--dry-run"], False),
        ([*GC, "-d"], False),
        (["sh", "-c", "registry garbage-collect -m /etc/docker/registry/config.yml"], True),
        (["/usr/local/bin/gc-readonly.sh", "--mode", "safe"], False),
        (["ssh", "-mhost", "x"], False),  # not a cluster of garbage-collect's short flags
    ],
    ids=[
        "plain",
        "long",
        "short",
        "long-true",
        "long-false",
        "short-false",
        "cluster",
        "dry-run",
        "short-dry-run",
        "inside-sh-c",
        "wrapper",
        "other-program-flag",
    ],
)
def test_deletes_untagged(command: list[str], expected: bool) -> None:
    assert deletes_untagged(command) is expected


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def image(n: int, kind: Kind, media_type: str, subject: str | None = None) -> Image:
    return Image(
        digest=digest(n),
        media_type=media_type,
        kind=kind,
        manifest_size=100,
        size=1000,
        created=datetime(2024, 1, 1, tzinfo=UTC),
        subject=subject,
    )


def inventory(*repos: Repository) -> Inventory:
    return Inventory("http://127.0.0.1:5000", datetime(2024, 1, 2, tzinfo=UTC), repos)


PLAIN = Repository("apps/plain", (Tag("v1", digest(1)),), (image(1, Kind.IMAGE, DOCKER_MANIFEST),))
MULTI = Repository(
    "apps/multi",
    (Tag("v1", digest(10)),),
    (
        image(10, Kind.INDEX, OCI_INDEX),
        image(11, Kind.IMAGE, OCI_MANIFEST),
        image(12, Kind.IMAGE, OCI_MANIFEST),
    ),
)
SIGNED = Repository(
    "apps/signed",
    (Tag("v1", digest(20)),),
    (
        image(20, Kind.IMAGE, OCI_MANIFEST),
        image(21, Kind.ARTIFACT, OCI_MANIFEST, subject=digest(20)),
    ),
)


def test_no_warning_without_delete_untagged() -> None:
    assert untagged_warnings(GC, inventory(PLAIN, MULTI, SIGNED)) == []


def test_no_warning_when_nothing_is_at_risk() -> None:
    assert untagged_warnings([*GC, "-m"], inventory(PLAIN)) == []


def test_indexes_with_delete_untagged_warn_naming_one() -> None:
    (warning,) = untagged_warnings([*GC, "-m"], inventory(PLAIN, MULTI))
    assert "1 multi-platform index(es)" in warning
    assert f"apps/multi@{digest(10)}" in warning
    assert "distribution 2.x" in warning and "#3178" in warning


def test_untagged_referrers_with_delete_untagged_warn() -> None:
    warnings = untagged_warnings([*GC, "--delete-untagged"], inventory(MULTI, SIGNED))
    assert len(warnings) == 2
    assert f"apps/signed@{digest(21)}" in warnings[1]


def test_gc_result_properties() -> None:
    ok = GcResult(("gc",), 0, "", bytes_before=1000, bytes_after=400)
    assert ok.ok and ok.bytes_freed == 600
    assert not GcResult(("gc",), 2, "").ok
    assert not GcResult(("gc",), None, "", error="timed out").ok
    assert GcResult(("gc",), 0, "", bytes_before=1000).bytes_freed is None
