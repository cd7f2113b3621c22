"""Content pushed by real clients (regctl, oras, cosign; tests/harness/clients.py), then plan,
explain, apply and garbage collection through the CLI, on every registry of the matrix.

Each scene has an old image (9 days) and a new one (1 hour) in one repository, with what the
client attaches to each; the policy keeps the last one. Afterwards the new image and everything
attached to it pull completely (every blob downloads); the old image and its artifacts are gone,
and after GC so are the blobs only they used (docs/registries.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from retention.cli import main
from tests.harness.clients import Client, cosign, oras, regctl, write_oci_layout
from tests.harness.registry import RegistryProcess
from tests.harness.seed import list_tags, pull_complete
from tests.support.applykit import write_policy

NOW = datetime.now(UTC).replace(microsecond=0)
OLD, NEW = NOW - timedelta(days=9), NOW - timedelta(hours=1)


@dataclass
class Scene:
    registry: RegistryProcess
    tmp: Path
    repo: str
    old: str
    new: str

    def exists(self, digest: str, repo: str | None = None) -> bool:
        resp = requests.head(
            f"{self.registry.url}/v2/{repo or self.repo}/manifests/{digest}",
            headers={"Accept": ACCEPT},
            timeout=10,
        )
        return resp.status_code == 200

    def blob(self, digest: str, repo: str | None = None) -> int:
        url = f"{self.registry.url}/v2/{repo or self.repo}/blobs/{digest}"
        return requests.head(url, timeout=10).status_code


@pytest.fixture(autouse=True)
def _clients_built(real_clients: None) -> None:
    """Skip (laptop) or fail (CI=true) without regctl, oras and cosign (tests/conftest.py)."""


ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def _copy_images(rc: Client, s: Path, repo: str) -> tuple[str, str]:
    """The old and the new image: an OCI layout built here, copied in by `regctl image copy`."""
    layout = s / "layout"
    old = write_oci_layout(layout, "old", created=OLD, content=f"old {repo}")
    new = write_oci_layout(layout, "new", created=NEW, content=f"new {repo}")
    for tag in ("old", "new"):
        rc.run("image", "copy", f"ocidir://{layout}:{tag}", rc.ref(repo, tag))
    return old, new


def _scene(registry: RegistryProcess, tmp_path: Path, repo: str = "rc/app") -> Scene:
    rc = regctl(tmp_path / "regctl-home", registry.host)
    old, new = _copy_images(rc, tmp_path, repo)
    return Scene(registry, tmp_path, repo, old, new)


def _layers(registry: RegistryProcess, repo: str, digest: str) -> list[str]:
    resp = requests.get(
        f"{registry.url}/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT}, timeout=10
    )
    resp.raise_for_status()
    doc = resp.json()
    return [layer["digest"] for layer in doc.get("layers", [])]


def _referrer_digests(s: Scene, subject: str) -> list[str]:
    """The manifests listed by the referrers tag-schema fallback index of `subject`."""
    tag = subject.replace(":", "-")
    resp = requests.get(
        f"{s.registry.url}/v2/{s.repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10
    )
    assert resp.status_code == 200, f"no fallback tag {tag}: {resp.status_code}"
    return [m["digest"] for m in resp.json()["manifests"]]


def _plan_explain_apply_gc(
    s: Scene, capsys: pytest.CaptureFixture[str], prefix: str = "rc"
) -> tuple[dict[str, object], str]:
    """plan (json), explain of the repository, apply of the plan, then GC; returns the plan
    document and explain's output."""
    policy = write_policy(s.tmp / "policy.yaml", s.registry.url, prefix)
    plan_file = s.tmp / "plan.json"
    assert main(["plan", "-p", str(policy), "--format", "json", "-o", str(plan_file)]) == 0
    capsys.readouterr()
    doc = json.loads(plan_file.read_text())
    assert main(["explain", "-p", str(policy), s.repo]) == 0
    explained = capsys.readouterr().out
    code = main(["apply", str(plan_file), "-p", str(policy), "--yes", "--journal",
                 str(s.tmp / "journal.jsonl")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    s.registry.garbage_collect()
    return doc, explained


def _deleted(doc: dict[str, object]) -> set[str]:
    deletions = doc["deletions"]
    assert isinstance(deletions, list)
    return {e["digest"] for e in deletions}


def _assert_whole(s: Scene, refs: Iterable[str], repo: str | None = None) -> None:
    for ref in refs:
        assert pull_complete(s.registry.url, repo or s.repo, ref), ref


def _assert_gone(s: Scene, digests: Iterable[str], repo: str | None = None) -> None:
    for digest in digests:
        assert not s.exists(digest, repo), digest


def test_regctl_artifact_put_with_subject_follows_its_subject(
    fresh_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _scene(fresh_registry, tmp_path)
    rc = regctl(tmp_path / "regctl-home", fresh_registry.host)
    (tmp_path / "sbom.json").write_text('{"spdxVersion": "SPDX-2.3"}')
    for tag in ("old", "new"):
        sbom = str(tmp_path / "sbom.json")
        rc.run("artifact", "put", "--subject", rc.ref(s.repo, tag),
               "--artifact-type", "application/spdx+json",
               "--file", sbom, "--file-media-type", "application/spdx+json")  # fmt: skip
    (old_ref,) = _referrer_digests(s, s.old)
    (new_ref,) = _referrer_digests(s, s.new)
    old_layers = _layers(fresh_registry, s.repo, s.old)

    doc, explained = _plan_explain_apply_gc(s, capsys)

    assert {s.old, old_ref} <= _deleted(doc)
    assert not {s.new, new_ref} & _deleted(doc)
    assert f"{s.repo}:old" in explained and f"{s.repo}:new" in explained
    _assert_whole(s, ["new", new_ref, s.new.replace(":", "-")])
    _assert_gone(s, [s.old, old_ref])
    assert s.old.replace(":", "-") not in list_tags(fresh_registry.url, s.repo)
    assert [s.blob(d) for d in old_layers] == [404] * len(old_layers)


def test_regctl_index_with_an_attestation_manifest_goes_and_stays_whole(
    fresh_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = regctl(tmp_path / "regctl-home", fresh_registry.host)
    layout = tmp_path / "layout"
    digests: dict[str, str] = {}
    for age, created in (("old", OLD), ("new", NEW)):
        for what in ("amd64", "arm64", "att"):
            platform = "linux/arm64" if what == "arm64" else "linux/amd64"
            name = f"{age}-{what}"
            digests[name] = write_oci_layout(
                layout, name, created=created, content=name, platform=platform
            )
            rc.run("image", "copy", f"ocidir://{layout}:{name}", rc.ref("src/parts", name))
        target = rc.ref("mp/multi", age)
        rc.run("index", "create", target, "--ref", rc.ref("src/parts", f"{age}-amd64"),
               "--platform", "linux/amd64")  # fmt: skip
        rc.run("index", "add", target, "--ref", rc.ref("src/parts", f"{age}-arm64"))
        rc.run("index", "add", target, "--ref", rc.ref("src/parts", f"{age}-att"),
               "--desc-platform", "unknown/unknown")  # fmt: skip
    s = Scene(fresh_registry, tmp_path, "mp/multi", "", "")
    index = {
        age: requests.get(
            f"{fresh_registry.url}/v2/mp/multi/manifests/{age}",
            headers={"Accept": ACCEPT},
            timeout=10,
        )
        for age in ("old", "new")
    }
    platforms = {
        age: {
            json.dumps(m["platform"], sort_keys=True): m["digest"]
            for m in index[age].json()["manifests"]
        }
        for age in index
    }
    assert all(len(p) == 3 for p in platforms.values())
    assert '{"architecture": "unknown", "os": "unknown"}' in platforms["old"]
    old_index = index["old"].headers["Docker-Content-Digest"]
    new_index = index["new"].headers["Docker-Content-Digest"]
    s.repo, s.old, s.new = "mp/multi", old_index, new_index

    doc, _ = _plan_explain_apply_gc(s, capsys, prefix="mp")

    deleted = _deleted(doc)
    assert {old_index, *platforms["old"].values()} <= deleted
    assert not {new_index, *platforms["new"].values()} & deleted
    _assert_whole(s, ["new", *platforms["new"].values()])
    _assert_gone(s, [old_index, *platforms["old"].values()])
    # the parts repository is kept whole (keep-recent covers only mp/)
    _assert_whole(s, [digests[k] for k in digests], repo="src/parts")


def test_oras_attach_and_push_with_an_artifact_type(
    fresh_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _scene(fresh_registry, tmp_path)
    o = oras(tmp_path / "oras-home", fresh_registry.host)
    (tmp_path / "sig.json").write_text('{"signed": true}')
    for tag in ("old", "new"):
        o.run("attach", "--plain-http", "--artifact-type", "application/vnd.example.sig",
              o.ref(s.repo, tag), "sig.json:application/json", cwd=tmp_path)  # fmt: skip
    o.run("push", "--plain-http", "--artifact-type", "application/vnd.example.thing",
          o.ref("rc/things", "v1"), "sig.json:application/json", cwd=tmp_path)  # fmt: skip
    (old_ref,) = _referrer_digests(s, s.old)
    (new_ref,) = _referrer_digests(s, s.new)

    doc, explained = _plan_explain_apply_gc(s, capsys)

    assert {s.old, old_ref} <= _deleted(doc)
    assert not {s.new, new_ref} & _deleted(doc)
    assert "old" in explained
    _assert_whole(s, ["new", new_ref])
    _assert_gone(s, [s.old, old_ref])
    _assert_whole(s, ["v1"], repo="rc/things")  # an artifact alone in its repository: kept


def test_cosign_signatures_follow_their_images(
    fresh_registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _scene(fresh_registry, tmp_path)
    c = cosign(tmp_path / "cosign-home", fresh_registry.host)
    key = str(tmp_path / "cosign-home" / "cosign.key")
    for digest in (s.old, s.new):
        c.run("sign", "--key", key, "--tlog-upload=false", "--allow-insecure-registry",
              "--allow-http-registry", "-y", c.ref(s.repo, digest))  # fmt: skip
    old_sig, new_sig = (d.replace(":", "-") + ".sig" for d in (s.old, s.new))
    assert {old_sig, new_sig} <= set(list_tags(fresh_registry.url, s.repo))

    doc, explained = _plan_explain_apply_gc(s, capsys)

    assert s.old in _deleted(doc) and s.new not in _deleted(doc)
    assert "signature" in explained
    tags = set(list_tags(fresh_registry.url, s.repo))
    assert old_sig not in tags and {new_sig, "new"} <= tags
    _assert_whole(s, ["new", new_sig])
    _assert_gone(s, [s.old])
    c.run("verify", "--key", str(tmp_path / "cosign-home" / "cosign.pub"),
          "--insecure-ignore-tlog=true", "--allow-insecure-registry", "--allow-http-registry",
          c.ref(s.repo, "new"))  # fmt: skip
