"""The OCI 1.1 referrers API, where a registry answers it: the inventory finds untagged
referrers of each image (and referrers of referrers), and they follow their subject: deleted
with it, counted in its bytes, kept with it. Served by our own endpoint in front of the real
registry (tests/harness/referrers.py), computed from the manifests really pushed; where the API
does not answer (distribution itself), the walk asks once and goes on as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.referrers import referrers_fault
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, pull_complete
from tests.support.applykit import manifest_exists, write_policy

NOW = datetime.now(UTC).replace(microsecond=0)


def _scene(pusher: Pusher) -> dict[str, Pushed]:
    old = pusher.push_image("ref/app", "old", created=NOW - timedelta(days=9))
    new = pusher.push_image("ref/app", "new", created=NOW - timedelta(hours=1))
    old_sbom = pusher.push_referrer("ref/app", old)
    new_sbom = pusher.push_referrer("ref/app", new)
    return {
        "old": old,
        "new": new,
        "old_sbom": old_sbom,
        "new_sbom": new_sbom,
        "old_sbom_sig": pusher.push_referrer("ref/app", old_sbom, "application/vnd.example.sig"),
        "new_sbom_sig": pusher.push_referrer("ref/app", new_sbom, "application/vnd.example.sig"),
    }


@pytest.fixture
def referred(fresh_pusher: Pusher) -> dict[str, Pushed]:
    """`_scene` in a registry of the test's own."""
    return _scene(fresh_pusher)


def _plan(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    policy = write_policy(tmp_path / "policy.yaml", url, "ref")
    out = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "--format", "json", "-o", str(out)]) == 0
    capsys.readouterr()
    doc: dict[str, object] = json.loads(out.read_text())
    return doc


def _deleted(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    deletions = doc["deletions"]
    assert isinstance(deletions, list)
    return {e["digest"]: e for e in deletions}


def test_untagged_referrers_follow_their_subject_through_the_api(
    fresh_registry: RegistryProcess,
    referred: dict[str, Pushed],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = referred
    with FaultProxy(fresh_registry.url) as proxy:
        proxy.add(referrers_fault(fresh_registry))
        doc = _plan(proxy.url, tmp_path, capsys)
        deleted = _deleted(doc)
        assert set(deleted) == {s["old"].digest, s["old_sbom"].digest, s["old_sbom_sig"].digest}
        summary = doc["summary"]
        assert isinstance(summary, dict)
        doomed = (s["old"], s["old_sbom"], s["old_sbom_sig"])
        # every manifest and blob of the old image and its referrers (shared ones aside)
        shared = {d for p in (s["new"], s["new_sbom"]) for d, _ in p.blob_sizes}
        only_doomed = {d: n for p in doomed for d, n in p.blob_sizes if d not in shared}
        assert summary["bytes_reclaimable"] == sum(only_doomed.values())
        assert deleted[s["old_sbom"].digest]["tags"] == []

        policy = tmp_path / "policy.yaml"
        code = main(["apply", str(tmp_path / "plan.json"), "-p", str(policy), "--yes",
                     "--journal", str(tmp_path / "j.jsonl")])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert proxy.count("GET", "/referrers/") > 0
    fresh_registry.garbage_collect()

    for kept in ("new", "new_sbom", "new_sbom_sig"):
        assert pull_complete(fresh_registry.url, "ref/app", s[kept].digest), kept
    for gone in ("old", "old_sbom", "old_sbom_sig"):
        assert not manifest_exists(fresh_registry.url, "ref/app", s[gone].digest), gone


def test_without_the_api_the_walk_asks_once_and_untagged_referrers_stay_unseen(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    referred: dict[str, Pushed],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = referred
    fresh_pusher.push_image("ref/other", "v1")
    with FaultProxy(fresh_registry.url) as proxy:
        doc = _plan(proxy.url, tmp_path, capsys)
        asked = [r.path for r in proxy.requests if "/referrers/" in r.path]
    assert len(asked) == 1  # one probe per walk, answered 404 by distribution
    # untagged and unlisted anywhere: the walk cannot see them (the tag-schema fallback can,
    # tests/integration/test_real_clients.py), so only the image goes
    assert set(_deleted(doc)) == {s["old"].digest}


@pytest.mark.parametrize(
    ("headers", "body", "says"),
    [
        pytest.param(
            {"Link": '</v2/ref/app/referrers/x?last=y>; rel="next"'},
            b'{"schemaVersion": 2, "manifests": []}',
            "the list is paged",
            id="paged",
        ),
        pytest.param(
            {},
            b'{"schemaVersion": 2, "layers": []}',
            "referrers of ref/app@sha256:",
            id="not-index",
        ),
    ],
)
def test_a_referrers_answer_that_cannot_be_read_whole_fails_the_plan(
    fresh_registry: RegistryProcess,
    referred: dict[str, Pushed],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    headers: dict[str, str],
    body: bytes,
    says: str,
) -> None:
    with FaultProxy(fresh_registry.url) as proxy:
        answer = {"Content-Type": "application/vnd.oci.image.index.v1+json", **headers}
        proxy.add(Fault("status", path="/referrers/", status=200, headers=answer, body=body,
                        times=None))  # fmt: skip
        policy = write_policy(tmp_path / "policy.yaml", proxy.url, "ref")
        code = main(["plan", "-p", str(policy), "-o", str(tmp_path / "plan.json")])
    err = capsys.readouterr().err
    assert code != 0
    assert says in err
    assert "Traceback" not in err
    assert not (tmp_path / "plan.json").exists()
