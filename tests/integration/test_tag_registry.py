"""What the untag methods stand on, asked of the real registries (docs/registries.md, "Untag"):
go-containerregistry's registry deletes a tag alone; a DELETE of a tag that does not exist tells
a registry that deletes tags (404) from one that does not (400), without touching a real tag;
distribution 2.8 takes the throw-away manifest (empty config, no layers) and removes only its
tag when it is deleted by digest."""

from __future__ import annotations

import hashlib
import json

import requests

from tests.harness.probes import Capabilities
from tests.harness.registry import CraneRegistry, RegistryProcess
from tests.harness.seed import OCI_MANIFEST, Pusher, list_tags, pull_complete, resolve

EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest()


def test_crane_deletes_a_tag_alone(tag_registry: CraneRegistry, repo_prefix: str) -> None:
    repo = f"{repo_prefix}/app"
    with Pusher(tag_registry.url) as pusher:
        image = pusher.push_image(repo, ["doomed", "kept"])
    answer = requests.delete(f"{tag_registry.url}/v2/{repo}/manifests/doomed", timeout=10)
    assert answer.status_code == 202
    assert resolve(tag_registry.url, repo, "doomed") is None
    assert list_tags(tag_registry.url, repo) == ["kept"]
    assert resolve(tag_registry.url, repo, "kept") == image.digest
    assert pull_complete(tag_registry.url, repo, "kept")


def test_crane_keeps_tags_of_a_digest_it_deletes(
    tag_registry: CraneRegistry, repo_prefix: str
) -> None:
    """Why the throw-away method cannot work there: a DELETE by digest leaves the tags."""
    repo = f"{repo_prefix}/app"
    with Pusher(tag_registry.url) as pusher:
        image = pusher.push_image(repo, ["a"])
        assert pusher.delete_manifest(repo, image.digest) == 202
    assert list_tags(tag_registry.url, repo) == ["a"]


def test_unknown_tag_delete_tells_the_method(
    tag_registry: CraneRegistry,
    registry: RegistryProcess,
    capabilities: Capabilities,
    repo_prefix: str,
) -> None:
    """The probe retention sends (a random tag that is in no repository): 404 where tags are
    deleted (crane, 3.x), 400 DIGEST_INVALID where only digests are (2.8)."""
    repo = f"{repo_prefix}/app"
    for url in (tag_registry.url, registry.url):
        with Pusher(url) as pusher:
            pusher.push_image(repo, "keep")
    crane = requests.delete(f"{tag_registry.url}/v2/{repo}/manifests/no-such-tag-1f", timeout=10)
    assert crane.status_code == 404
    matrix = requests.delete(f"{registry.url}/v2/{repo}/manifests/no-such-tag-1f", timeout=10)
    if capabilities.tag_delete:
        assert matrix.status_code == 404
    else:
        assert matrix.status_code == 400
        assert matrix.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert list_tags(registry.url, repo) == ["keep"]
    assert list_tags(tag_registry.url, repo) == ["keep"]


def test_throw_away_manifest_takes_only_its_tag_away(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str
) -> None:
    """An OCI image manifest with the empty config and no layers is accepted, re-points the
    tag, and its DELETE by digest removes that tag alone."""
    image = pusher.push_image(unique_repo, ["doomed", "kept"])
    pusher.push_blob(unique_repo, EMPTY_CONFIG)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": EMPTY_CONFIG_DIGEST,
                "size": 2,
            },
            "layers": [],
            "annotations": {"test": "throw-away"},
        }
    ).encode()
    throw_away = pusher.push_manifest(unique_repo, "doomed", body, OCI_MANIFEST)
    assert resolve(registry.url, unique_repo, "doomed") == throw_away
    assert pusher.delete_manifest(unique_repo, throw_away) == 202
    assert list_tags(registry.url, unique_repo) == ["kept"]
    assert resolve(registry.url, unique_repo, "kept") == image.digest
    assert pull_complete(registry.url, unique_repo, "kept")
