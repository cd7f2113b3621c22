"""The test harness against the real registry: what it pushes is complete and as asked, its
process control works, and each registry of the matrix does what its capability probe
(tests/harness/probes.py) says, both ways (docs/registries.md). A failing quirk test means the
registry changed, not the harness: revisit the engine's assumptions."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import requests

from tests.harness.probes import Capabilities
from tests.harness.registry import (
    ENV_BINARY,
    AuthRegistry,
    RegistryHarnessError,
    RegistryKind,
    RegistryProcess,
    find_registry_binary,
    live_processes,
)
from tests.harness.seed import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_DIGEST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Kind,
    Pushed,
    Pusher,
    PushError,
    cosign_tag,
    list_tags,
    make_layer,
    pull_complete,
    resolve,
)

PushImage = Callable[..., Pushed]
ZERO_DIGEST = "sha256:" + "0" * 64
KINDS: list[Kind] = ["docker", "oci", "oci-index", "docker-list"]
MEDIA_TYPES = {
    "docker": DOCKER_MANIFEST,
    "oci": OCI_MANIFEST,
    "oci-index": OCI_INDEX,
    "docker-list": DOCKER_LIST,
}


def _get_json(url: str) -> dict[str, object]:
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    doc: dict[str, object] = resp.json()
    return doc


def _config(registry: RegistryProcess, pushed: Pushed) -> dict[str, object]:
    return _get_json(f"{registry.url}/v2/{pushed.repo}/blobs/{pushed.config_digest}")


def _manifest_status(
    registry: RegistryProcess, repo: str, ref: str, accept: str | None
) -> requests.Response:
    headers = {} if accept is None else {"Accept": accept}
    return requests.get(f"{registry.url}/v2/{repo}/manifests/{ref}", headers=headers, timeout=10)


def _blob_status(registry: RegistryProcess, repo: str, digest: str) -> int:
    return requests.head(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=10).status_code


# -- what the pusher pushes ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_pushes_and_pulls_completely(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str, kind: Kind
) -> None:
    pushed = pusher.push_image(unique_repo, "v1", kind=kind)

    assert resolve(registry.url, unique_repo, "v1") == pushed.digest
    assert pull_complete(registry.url, unique_repo, "v1")
    body, content_type = pusher.get_manifest(unique_repo, "v1")
    assert body == pushed.manifest
    assert content_type == pushed.media_type == MEDIA_TYPES[kind]
    assert list_tags(registry.url, unique_repo) == ["v1"]
    assert 500 < pushed.size < 4000  # small: a few hundred bytes per blob


@pytest.mark.parametrize("kind", ["oci-index", "docker-list"])
def test_index_children_are_untagged_platform_images_with_own_configs(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str, kind: Kind
) -> None:
    amd_created = datetime(2024, 1, 1, tzinfo=UTC)
    arm_created = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    index = pusher.push_image(
        unique_repo,
        "multi",
        kind=kind,
        created=amd_created,
        platform_created={"linux/arm64": arm_created},
    )

    assert [child.platform for child in index.children] == ["linux/amd64", "linux/arm64"]
    assert len({child.config_digest for child in index.children}) == 2
    doc = json.loads(index.manifest)
    assert [m["digest"] for m in doc["manifests"]] == [c.digest for c in index.children]
    for arch, created in [("amd64", "2024-01-01T00:00:00Z"), ("arm64", "2024-06-01T12:30:00Z")]:
        child = index.child(f"linux/{arch}")
        assert not child.tags
        assert pusher.resolve(unique_repo, child.digest) == child.digest
        config = _config(registry, child)
        assert config["created"] == child.created == created
        assert config["architecture"] == arch
    assert list_tags(registry.url, unique_repo) == ["multi"]
    assert index.digests() >= {index.digest, *index.child("linux/arm64").digests()}


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        pytest.param(None, None, id="missing"),
        pytest.param("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", id="epoch"),
        pytest.param("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", id="year-one"),
        pytest.param("not a date", "not a date", id="garbage"),
        pytest.param(
            datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC), "2023-05-06T07:08:09Z", id="datetime"
        ),
    ],
)
def test_config_created_is_written_as_asked(
    registry: RegistryProcess,
    push_image: PushImage,
    unique_repo: str,
    created: datetime | str | None,
    expected: str | None,
) -> None:
    pushed = push_image(unique_repo, "v1", kind="oci", created=created)

    config = _config(registry, pushed)
    assert config.get("created") == pushed.created == expected
    assert ("created" in config) is (expected is not None)


def test_created_label_and_annotation(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str
) -> None:
    stamp = datetime(2022, 2, 2, tzinfo=UTC)
    labelled = pusher.push_image(unique_repo, "label", created=None, created_label=stamp)
    annotated = pusher.push_image(
        unique_repo,
        "annotated",
        kind="oci",
        created="1970-01-01T00:00:00Z",
        created_annotation="2021-01-01T00:00:00Z",
    )
    index = pusher.push_image(
        unique_repo, "index", kind="oci-index", created_annotation="2020-01-01T00:00:00Z"
    )
    assert json.loads(index.manifest)["annotations"] == {
        "org.opencontainers.image.created": "2020-01-01T00:00:00Z"
    }

    config = _config(registry, labelled)
    assert config["config"] == {
        "Labels": {"org.opencontainers.image.created": "2022-02-02T00:00:00Z"}
    }
    annotations = json.loads(annotated.manifest)["annotations"]
    assert annotations == {"org.opencontainers.image.created": "2021-01-01T00:00:00Z"}
    fetched, _ = pusher.get_manifest(unique_repo, "index")
    assert json.loads(fetched)["annotations"]["org.opencontainers.image.created"] == (
        "2020-01-01T00:00:00Z"
    )
    with pytest.raises(ValueError, match="no annotations"):
        pusher.push_image(unique_repo, "x", kind="docker", created_annotation=stamp)
    with pytest.raises(ValueError, match="aware datetime"):
        pusher.push_image(unique_repo, "x", created=datetime(2020, 1, 1))


def test_several_tags_share_one_digest(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str
) -> None:
    pushed = pusher.push_image(unique_repo, ["a", "b", "c"])
    retagged = pusher.tag(unique_repo, "d", pushed)
    digest = pusher.tag(unique_repo, "e", pushed.digest)

    assert retagged.tags == ("a", "b", "c", "d")
    assert digest == pushed.digest
    assert {t: resolve(registry.url, unique_repo, t) for t in "abcde"} == dict.fromkeys(
        "abcde", pushed.digest
    )
    assert list_tags(registry.url, unique_repo) == ["a", "b", "c", "d", "e"]


def test_layers_shared_between_images_and_repositories(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str
) -> None:
    base = make_layer("shared base layer")
    one = pusher.push_image(f"{repo_prefix}/one", "v1", layers=[base, "app one"])
    two = pusher.push_image(f"{repo_prefix}/one", "v2", kind="oci", layers=[base, b"app two"])
    mark = registry.log_mark()
    other = pusher.push_image(
        f"{repo_prefix}/other", "v1", layers=[base], mount_from=f"{repo_prefix}/one"
    )

    assert base.digest in one.layer_digests
    assert base.digest in two.layer_digests
    assert other.layer_digests == (base.digest,)
    assert one.layer_digests[1] != two.layer_digests[1]
    mounts = [
        e for e in registry.wait_for_requests(mark, 3) if "mount=" in e.path and e.status == 201
    ]
    assert mounts, "the shared layer was mounted, not uploaded again"
    for image in (one, two, other):
        assert pull_complete(registry.url, image.repo, image.digest)


def test_content_is_distinct_by_default_and_deterministic_with_a_seed(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str
) -> None:
    when = datetime(2024, 3, 3, tzinfo=UTC)
    first = pusher.push_image(f"{repo_prefix}/a", "v1", created=when)
    second = pusher.push_image(f"{repo_prefix}/a", "v2", created=when)
    assert first.digest != second.digest

    seeded = [
        pusher.push_image(f"{repo_prefix}/b", "v1", created=when, seed=42),
        pusher.push_image(f"{repo_prefix}/c", "v1", created=when, seed=42),
    ]
    assert seeded[0].digest == seeded[1].digest
    with Pusher(registry.url, seed="s") as p1, Pusher(registry.url, seed="s") as p2:
        run1 = [p1.push_image(f"{repo_prefix}/d", f"v{i}", created=when).digest for i in range(2)]
        run2 = [p2.push_image(f"{repo_prefix}/e", f"v{i}", created=when).digest for i in range(2)]
    assert run1 == run2
    assert run1[0] != run1[1]


def test_cosign_signature_follows_the_tag_convention(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str
) -> None:
    image = pusher.push_image(unique_repo, "v1")
    signature = pusher.push_cosign_signature(unique_repo, image)
    attestation = pusher.push_cosign_signature(unique_repo, image.digest, suffix="att")

    hex_part = image.digest.removeprefix("sha256:")
    assert signature.tags == (f"sha256-{hex_part}.sig",) == (cosign_tag(image.digest),)
    assert attestation.tag == f"sha256-{hex_part}.att"
    assert resolve(registry.url, unique_repo, signature.tag) == signature.digest
    assert pull_complete(registry.url, unique_repo, signature.tag)
    layer = json.loads(signature.manifest)["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert _config(registry, signature)["created"] == "0001-01-01T00:00:00Z"
    assert sorted(list_tags(registry.url, unique_repo)) == sorted(
        ["v1", signature.tag, attestation.tag]
    )


def test_referrer_names_its_subject_and_is_untagged(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str
) -> None:
    image = pusher.push_image(unique_repo, "v1", kind="oci-index")
    referrer = pusher.push_referrer(unique_repo, image, artifact_type="application/spdx+json")

    fetched, content_type = pusher.get_manifest(unique_repo, referrer.digest)
    doc = json.loads(fetched)
    assert content_type == OCI_MANIFEST
    assert doc["artifactType"] == "application/spdx+json"
    assert doc["subject"] == {
        "mediaType": OCI_INDEX,
        "digest": image.digest,
        "size": len(image.manifest),
    }
    assert doc["config"]["digest"] == EMPTY_DIGEST
    assert referrer.subject == image.digest
    assert pull_complete(registry.url, unique_repo, referrer.digest)
    assert list_tags(registry.url, unique_repo) == ["v1"]
    # Quirk: distribution has no referrers API (404), so the engine must find referrers
    # through the `subject` of manifests it reads (registry-facts 2).
    resp = requests.get(f"{registry.url}/v2/{unique_repo}/referrers/{image.digest}", timeout=10)
    assert resp.status_code == 404


def test_the_capability_probe_answers_what_the_engine_branches_on(
    capabilities: Capabilities,
) -> None:
    # Each registry of the matrix is distribution: no referrers API, catalog paging. The
    # probe itself must see a difference between the two sides of each capability.
    assert capabilities.referrers_api is False
    assert capabilities.catalog_paging is True
    assert set(capabilities.blob_as_manifest) == {"HEAD", "GET", "DELETE"}
    assert all(status != 200 for status in capabilities.blob_as_manifest.values())


# -- quirks, by capability -----------------------------------------------------------------------


def test_oci_index_with_a_narrow_accept(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str, capabilities: Capabilities
) -> None:
    index = pusher.push_image(unique_repo, "v1", kind="oci-index")

    narrow = _manifest_status(registry, unique_repo, "v1", OCI_MANIFEST)
    assert narrow.status_code == capabilities.narrow_accept_index
    if narrow.status_code == 404:  # 2.8: not "tag gone": the Accept was too narrow
        assert narrow.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert "accept header does not support OCI indexes" in narrow.text
    else:  # 3.x answers the index whatever the Accept
        assert narrow.status_code == 200
        assert narrow.headers["Docker-Content-Digest"] == index.digest
    full = _manifest_status(registry, unique_repo, "v1", MANIFEST_ACCEPT)
    assert full.status_code == 200
    assert full.headers["Docker-Content-Digest"] == index.digest


def test_narrow_accept_answers_another_document(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, capabilities: Capabilities
) -> None:
    docker_list = pusher.push_image(f"{repo_prefix}/list", "v1", kind="docker-list")
    oci = pusher.push_image(f"{repo_prefix}/oci", "v1", kind="oci")
    docker = pusher.push_image(f"{repo_prefix}/docker", "v1", kind="docker")

    # A Docker list asked for as a plain manifest answers its linux/amd64 child.
    child = _manifest_status(registry, docker_list.repo, "v1", DOCKER_MANIFEST)
    assert child.headers["Docker-Content-Digest"] == docker_list.child("linux/amd64").digest
    converted = _manifest_status(registry, docker.repo, "v1", None)
    assert converted.status_code == 200
    if capabilities.schema1_without_accept:  # 2.8
        # An OCI manifest without the OCI Accept: 404, as for the index.
        assert _manifest_status(registry, oci.repo, "v1", DOCKER_MANIFEST).status_code == 404
        # A schema2 manifest without Accept is converted to signed schema1: another digest.
        assert converted.headers["Content-Type"] == (
            "application/vnd.docker.distribution.manifest.v1+prettyjws"
        )
        assert converted.headers["Docker-Content-Digest"] != docker.digest
    else:  # 3.x: no schema 1, no conversion: the document stored
        assert converted.headers["Content-Type"] == DOCKER_MANIFEST
        assert converted.headers["Docker-Content-Digest"] == docker.digest


def test_delete_by_digest_removes_every_tag_of_that_digest(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str, capabilities: Capabilities
) -> None:
    doomed = pusher.push_image(unique_repo, ["a", "b", "z"])
    kept = pusher.push_image(unique_repo, "c")

    by_tag = requests.delete(f"{registry.url}/v2/{unique_repo}/manifests/z", timeout=10)
    if capabilities.tag_delete:  # 3.x: the tag alone goes, the digest stays with its others
        assert by_tag.status_code == 202
        assert resolve(registry.url, unique_repo, "z") is None
        assert resolve(registry.url, unique_repo, "a") == doomed.digest
    else:  # 2.8: the reference must be a digest
        assert by_tag.status_code == 400
        assert by_tag.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert resolve(registry.url, unique_repo, "z") == doomed.digest

    assert pusher.delete_manifest(unique_repo, doomed.digest) == 202
    assert resolve(registry.url, unique_repo, "a") is None
    assert resolve(registry.url, unique_repo, "b") is None
    assert resolve(registry.url, unique_repo, "z") is None
    assert resolve(registry.url, unique_repo, "c") == kept.digest
    assert list_tags(registry.url, unique_repo) == ["c"]
    assert pull_complete(registry.url, unique_repo, "c")
    assert pusher.delete_manifest(unique_repo, doomed.digest) == 404  # already gone

    assert pusher.delete_manifest(unique_repo, kept.digest) == 202
    raw = _get_json(f"{registry.url}/v2/{unique_repo}/tags/list")
    assert raw["name"] == unique_repo
    assert raw["tags"] in (None, [])  # 2.8: null; 3.x: []


def test_tag_list_and_catalog_paging(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, capabilities: Capabilities
) -> None:
    tags = [f"t{i}" for i in range(5)]
    fresh_pusher.push_image("quirk/one", tags)
    fresh_pusher.push_image("quirk/two", "v1")

    resp = requests.get(f"{fresh_registry.url}/v2/quirk/one/tags/list?n=2", timeout=10)
    if capabilities.tags_paging:  # 3.x pages the tag list too
        assert resp.json()["tags"] == ["t0", "t1"]
        assert resp.headers["Link"] == '</v2/quirk/one/tags/list?last=t1&n=2>; rel="next"'
    else:  # 2.8 ignores n: all five, no Link
        assert sorted(resp.json()["tags"]) == tags
        assert "Link" not in resp.headers
    catalog = requests.get(f"{fresh_registry.url}/v2/_catalog?n=1", timeout=10)
    assert catalog.json() == {"repositories": ["quirk/one"]}
    # The Link target is relative: resolve it against the request URL.
    assert catalog.headers["Link"] == '</v2/_catalog?last=quirk%2Fone&n=1>; rel="next"'


def test_delete_probe_distinguishes_enabled_from_disabled(
    registry: RegistryProcess, registry_binary: str, tmp_path: os.PathLike[str]
) -> None:
    probe = f"/v2/any/repo/manifests/{ZERO_DIGEST}"
    assert requests.delete(registry.url + probe, timeout=10).status_code == 404
    root = os.path.join(tmp_path, "no-delete")
    with RegistryProcess(registry_binary, root=root, delete_enabled=False) as disabled:
        resp = requests.delete(disabled.url + probe, timeout=10)
        assert resp.status_code == 405
        assert resp.json()["errors"][0]["code"] == "UNSUPPORTED"


# -- garbage collection --------------------------------------------------------------------------


def test_garbage_collect_after_delete_frees_storage_and_keeps_the_rest(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher
) -> None:
    shared = make_layer("shared between kept and deleted")
    kept = fresh_pusher.push_image("gc/app", "keep", layers=[shared, "kept only"])
    kept_index = fresh_pusher.push_image("gc/app", "multi", kind="oci-index")
    doomed = fresh_pusher.push_image(
        "gc/app", "gone", kind="oci", layers=[shared, os.urandom(4096)]
    )
    port, before = fresh_registry.port, fresh_registry.storage_bytes()

    assert fresh_pusher.delete_manifest("gc/app", doomed.digest) == 202
    output = fresh_registry.garbage_collect()

    assert re.search(r"\d+ blobs marked, 3 blobs and 0 manifests eligible for deletion", output)
    after = fresh_registry.storage_bytes()
    assert after < before
    freed = {doomed.digest, doomed.config_digest, doomed.layer_digests[1]}
    assert freed <= {line.split()[-1] for line in output.splitlines() if "eligible" in line}
    assert fresh_registry.running
    assert fresh_registry.port == port
    for image in (kept, kept_index):
        assert pull_complete(fresh_registry.url, "gc/app", image.digest)
    assert _blob_status(fresh_registry, "gc/app", shared.digest) == 200
    assert _blob_status(fresh_registry, "gc/app", doomed.layer_digests[1]) == 404


def test_garbage_collect_delete_untagged_and_the_children_of_a_tagged_index(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, registry_kind: RegistryKind
) -> None:
    # Why the engine never relies on --delete-untagged on 2.x (distribution #3178); 3.x
    # keeps the platform manifests of a tagged index.
    index = fresh_pusher.push_image("gc/multi", "v1", kind="oci-index")
    assert pull_complete(fresh_registry.url, "gc/multi", "v1")

    fresh_registry.garbage_collect(delete_untagged=True)

    assert resolve(fresh_registry.url, "gc/multi", "v1") == index.digest
    children = [fresh_pusher.resolve("gc/multi", c.digest) for c in index.children]
    if registry_kind.gc_untagged_drops_index_children:
        assert children == [None, None]
        assert not pull_complete(fresh_registry.url, "gc/multi", "v1")
    else:
        assert children == [c.digest for c in index.children]
        assert pull_complete(fresh_registry.url, "gc/multi", "v1")


def test_garbage_collect_of_an_empty_registry_is_a_no_op(
    fresh_registry: RegistryProcess,
) -> None:
    assert "nothing to collect" in fresh_registry.garbage_collect()
    assert fresh_registry.running


# -- authentication ------------------------------------------------------------------------------


def test_htpasswd_registry_needs_credentials(auth_registry: AuthRegistry) -> None:
    url = f"{auth_registry.url}/v2/"
    anonymous = requests.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="retention-test"'
    assert requests.get(url, auth=(auth_registry.username, "wrong"), timeout=10).status_code == 401
    assert requests.get(url, auth=auth_registry.auth, timeout=10).status_code == 200
    assert requests.get(url, auth=("bob", "hunter2-but-longer"), timeout=10).status_code == 200
    assert auth_registry.password not in repr(auth_registry)


def test_pusher_with_basic_auth(auth_registry: AuthRegistry, unique_repo: str) -> None:
    with Pusher(auth_registry.url, auth=auth_registry.auth) as authed:
        pushed = authed.push_image(unique_repo, "v1", kind="oci-index")
        assert authed.resolve(unique_repo, "v1") == pushed.digest
    assert pull_complete(auth_registry.url, unique_repo, "v1", auth=auth_registry.auth)
    with pytest.raises(PushError, match="401"):
        resolve(auth_registry.url, unique_repo, "v1")
    with Pusher(auth_registry.url) as anonymous, pytest.raises(PushError, match="401"):
        anonymous.push_image(unique_repo, "v2")


# -- process control -----------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_restart_and_stop_keep_storage_and_port(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher
) -> None:
    pushed = fresh_pusher.push_image("proc/app", "v1")
    port, pid = fresh_registry.port, fresh_registry.pid
    assert pid is not None
    assert fresh_registry.url == f"http://127.0.0.1:{port}"

    fresh_registry.kill()
    assert not fresh_registry.running
    assert not _alive(pid)
    fresh_registry.start()
    assert fresh_registry.port == port
    assert fresh_pusher.pull_complete("proc/app", "v1")

    fresh_registry.restart()
    assert fresh_registry.pid != pid
    assert resolve(fresh_registry.url, "proc/app", "v1") == pushed.digest

    last_pid = fresh_registry.pid
    assert last_pid in live_processes()
    fresh_registry.stop()
    assert last_pid not in live_processes()
    assert not _alive(last_pid)
    assert fresh_registry.storage_bytes() > 0


def test_readonly_restart_refuses_writes_but_serves_reads(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher
) -> None:
    pushed = fresh_pusher.push_image("ro/app", "v1")
    fresh_registry.restart(readonly=True)
    try:
        delete = requests.delete(
            f"{fresh_registry.url}/v2/ro/app/manifests/{pushed.digest}", timeout=10
        )
        assert delete.status_code == 405
        with pytest.raises(PushError, match="405"):
            fresh_pusher.push_image("ro/app", "v2")
        assert fresh_pusher.pull_complete("ro/app", "v1")
    finally:
        fresh_registry.restart(readonly=False)
    assert fresh_pusher.delete_manifest("ro/app", pushed.digest) == 202


def test_config_is_loopback_only_and_extra_config_merges(
    registry_binary: str, tmp_path: os.PathLike[str]
) -> None:
    extra = {"http": {"headers": {"X-Harness": ["yes"]}}, "log": {"level": "debug"}}
    with RegistryProcess(
        registry_binary, root=os.path.join(tmp_path, "a"), extra_config=extra
    ) as reg:
        config = reg.config()
        assert config["http"]["addr"] == f"127.0.0.1:{reg.port}"
        assert config["log"] == {
            "level": "debug",
            "formatter": "text",
            "accesslog": {"disabled": False},
        }
        assert config["storage"]["delete"] == {"enabled": True}
        resp = requests.get(f"{reg.url}/v2/", timeout=10)
        assert resp.headers["X-Harness"] == "yes"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        pid = reg.pid
    assert pid is not None
    assert not _alive(pid)

    public = RegistryProcess(
        registry_binary,
        root=os.path.join(tmp_path, "b"),
        extra_config={"http": {"addr": "0.0.0.0:5000"}},
    )
    with pytest.raises(ValueError, match=re.escape("127.0.0.1")):
        public.start()
    public.close()


def test_start_failure_reports_the_log_tail(
    registry_binary: str, tmp_path: os.PathLike[str]
) -> None:
    # Two storage drivers: the registry refuses the config and exits.
    broken = RegistryProcess(
        registry_binary,
        root=os.path.join(tmp_path, "broken"),
        extra_config={"storage": {"inmemory": {}}},
        start_timeout=5,
    )
    with pytest.raises(RegistryHarnessError, match=r"(?s)exited with code.*log tail"):
        broken.start()
    assert not broken.running
    broken.close()


def test_access_log_counts_requests(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str
) -> None:
    pushed = pusher.push_image(unique_repo, "v1")
    mark = registry.log_mark()
    for _ in range(3):
        pusher.resolve(unique_repo, "v1")
    pusher.pull_complete(unique_repo, pushed.digest)

    entries = registry.wait_for_requests(mark, 6)
    heads = [e for e in entries if e.method == "HEAD"]
    gets = [e for e in entries if e.method == "GET"]
    assert len(heads) == 3
    assert {e.path for e in heads} == {f"/v2/{unique_repo}/manifests/v1"}
    assert {e.status for e in entries} == {200}
    assert len(gets) == 3  # manifest, config, one layer
    assert heads[0].user_agent == "retention-test-harness"


def test_find_registry_binary_honours_the_environment(
    registry_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_BINARY, registry_binary)
    assert find_registry_binary() == os.path.realpath(registry_binary)
    monkeypatch.setenv(ENV_BINARY, "/nonexistent/registry")
    assert find_registry_binary() is None
