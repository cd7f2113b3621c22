"""Seeds a real registry through its HTTP API: tiny Docker/OCI images, indexes, cosign
signatures and OCI 1.1 referrers; and verifies them (resolve, list tags, pull every blob).

Talks to the registry with `requests` only; never imports `retention`, so the engine is checked
against an independent client.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, overload
from urllib.parse import urljoin

import requests
from requests.auth import AuthBase

from tests.harness.loopback import Closing

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "EMPTY_DIGEST",
    "MANIFEST_ACCEPT",
    "NOW",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "Auth",
    "Created",
    "Kind",
    "Layer",
    "PushError",
    "Pushed",
    "Pusher",
    "cosign_tag",
    "descriptor",
    "image_manifest",
    "list_tags",
    "make_layer",
    "pull_complete",
    "resolve",
    "sha256_digest",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_JSON).hexdigest()

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST})

MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])
"""The full Accept set: anything narrower makes distribution 2.8 convert or refuse (DESIGN §7)."""

CREATED_KEY = "org.opencontainers.image.created"

_COSIGN_LAYER_TYPES = {
    "sig": "application/vnd.dev.cosign.simplesigning.v1+json",
    "att": "application/vnd.dsse.envelope.v1+json",
    "sbom": "text/spdx+json",
}

Kind = Literal["docker", "oci", "oci-index", "docker-list"]
Auth = tuple[str, str] | AuthBase | None
"""Basic-auth pair, any `requests` auth object (e.g. a bearer-token flow), or anonymous."""


class _Default(enum.Enum):
    NOW = "now"


NOW = _Default.NOW
"""Default for `created`: the time of the push."""

Created = datetime | str | None | Literal[_Default.NOW]
"""A config `created` value: an aware datetime, a raw string written as is (e.g.
"1970-01-01T00:00:00Z" or garbage), None to leave the field out, or NOW."""

_TIMEOUT = 30.0
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class PushError(RuntimeError):
    """The registry refused a request of the harness; the message holds status and body."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    """An OCI content descriptor (image-spec descriptor.md): media type, digest, size."""
    return {"mediaType": media_type, "digest": digest, "size": size}


def image_manifest(
    config: dict[str, Any], layers: list[dict[str, Any]], media_type: str = OCI_MANIFEST
) -> dict[str, Any]:
    """An image manifest document (schema version 2) of `config` and `layers` descriptors."""
    return {"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers}


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _timestamp(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"pass an aware datetime (tzinfo=UTC), not naive {value!r}")
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _created_value(created: Created) -> str | None:
    if created is NOW:
        return _timestamp(datetime.now(UTC))
    if created is None:
        return None
    return _timestamp(created)


def cosign_tag(digest: str, suffix: str = "sig") -> str:
    """`sha256-<hex>.<suffix>`: cosign's tag for a signature/attestation/SBOM of `digest`."""
    return f"{digest.replace(':', '-')}.{suffix}"


# -- layers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layer:
    """A layer blob as stored (gzipped tar) and the digest of its uncompressed tar."""

    data: bytes
    diff_id: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


def make_layer(content: bytes | str, name: str = "data.bin") -> Layer:
    """A deterministic tar.gz layer holding one file: same content, same digest, anywhere."""
    raw = content.encode() if isinstance(content, str) else content
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(raw)
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(raw))
    tar_bytes = buf.getvalue()
    return Layer(data=gzip.compress(tar_bytes, mtime=0), diff_id=sha256_digest(tar_bytes))


# -- what was pushed --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pushed:
    """A manifest the harness pushed, with everything a test needs to check it afterwards."""

    repo: str
    tags: tuple[str, ...]
    digest: str
    media_type: str
    manifest: bytes
    config_digest: str | None
    layer_digests: tuple[str, ...]
    children: tuple[Pushed, ...] = ()
    blob_sizes: tuple[tuple[str, int], ...] = ()
    """(digest, size) of every blob this image consists of, each once, sorted: its manifest,
    child manifests, configs and layers (not the subject of an artifact)."""
    platform: str | None = None
    created: str | None = None
    """The config's `created` as written (None when left out); for an index, None."""
    subject: str | None = None
    artifact_type: str | None = None

    @property
    def tag(self) -> str:
        """The first tag; raises when the manifest was pushed by digest only."""
        if not self.tags:
            raise ValueError(f"{self.repo}@{self.digest} has no tag")
        return self.tags[0]

    @property
    def size(self) -> int:
        """Bytes of all blobs of this image, each counted once (manifests included)."""
        return sum(size for _, size in self.blob_sizes)

    @property
    def ref(self) -> str:
        return f"{self.repo}@{self.digest}"

    def digests(self) -> frozenset[str]:
        """Every manifest and blob digest of this image, children included."""
        return frozenset(digest for digest, _ in self.blob_sizes)

    def child(self, platform: str) -> Pushed:
        """The platform manifest of an index, by "os/arch"."""
        for child in self.children:
            if child.platform == platform:
                return child
        raise KeyError(f"{self.ref} has no platform {platform!r}")


def _blob_sizes(*parts: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    sizes: dict[str, int] = {}
    for part in parts:
        sizes.update(part)
    return tuple(sorted(sizes.items()))


# -- HTTP helpers -----------------------------------------------------------------------------


def _new_session(auth: Auth) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    session.headers["User-Agent"] = "retention-test-harness"
    return session


@contextmanager
def _session(auth: Auth) -> Iterator[requests.Session]:
    session = _new_session(auth)
    try:
        yield session
    finally:
        session.close()


def _fail(resp: requests.Response, what: str) -> PushError:
    body = resp.text[:500]
    return PushError(
        f"{what}: {resp.request.method} {resp.url} answered {resp.status_code}: {body}"
    )


def _resolve(session: requests.Session, base_url: str, repo: str, ref: str) -> str | None:
    resp = session.head(
        f"{base_url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=_TIMEOUT,
    )
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise _fail(resp, f"resolve {repo}:{ref}")
    digest = resp.headers.get("Docker-Content-Digest")
    if digest is None or not _DIGEST.match(digest):
        raise _fail(resp, f"resolve {repo}:{ref}: no valid Docker-Content-Digest")
    return digest


def _list_tags(session: requests.Session, base_url: str, repo: str) -> list[str]:
    resp = session.get(f"{base_url}/v2/{repo}/tags/list", timeout=_TIMEOUT)
    if resp.status_code == 404:
        return []
    if resp.status_code != 200:
        raise _fail(resp, f"list tags of {repo}")
    tags = resp.json().get("tags") or []  # 2.8 answers {"tags": null} once all are deleted
    return sorted(str(t) for t in tags)


def _blob_ok(session: requests.Session, base_url: str, repo: str, desc: Mapping[str, Any]) -> bool:
    digest = str(desc.get("digest", ""))
    resp = session.get(f"{base_url}/v2/{repo}/blobs/{digest}", timeout=_TIMEOUT)
    if resp.status_code != 200:
        return False
    data = resp.content
    return sha256_digest(data) == digest and len(data) == desc.get("size", len(data))


def _pull(
    session: requests.Session,
    base_url: str,
    repo: str,
    ref: str,
    expect_size: int | None,
    seen: set[tuple[str, int | None]] | None = None,
) -> bool:
    # each (digest, size) is checked once: an index that lists a child many times (or nested
    # indexes that do, tests/integration/test_inventory_graph.py) is not walked once per path
    seen = set() if seen is None else seen
    if (ref, expect_size) in seen:
        return True
    seen.add((ref, expect_size))
    resp = session.get(
        f"{base_url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=_TIMEOUT,
    )
    if resp.status_code != 200:
        return False
    body = resp.content
    digest = sha256_digest(body)
    if resp.headers.get("Docker-Content-Digest", digest) != digest:
        return False
    if ref.startswith("sha256:") and ref != digest:
        return False
    if expect_size is not None and expect_size != len(body):
        return False
    doc = json.loads(body)
    media_type = doc.get("mediaType") or resp.headers.get("Content-Type", "")
    if media_type in INDEX_TYPES:
        return all(
            _pull(session, base_url, repo, str(child["digest"]), child.get("size"), seen)
            for child in doc.get("manifests", [])
        )
    blobs = [doc["config"], *doc.get("layers", [])]
    return all(_blob_ok(session, base_url, repo, desc) for desc in blobs)


def resolve(base_url: str, repo: str, tag: str, *, auth: Auth = None) -> str | None:
    """Digest `repo:tag` resolves to (HEAD, full Accept set), or None when it answers 404."""
    with _session(auth) as session:
        return _resolve(session, base_url, repo, tag)


def list_tags(base_url: str, repo: str, *, auth: Auth = None) -> list[str]:
    """Tags of `repo`, sorted ([] for an unknown repository or `{"tags": null}`)."""
    with _session(auth) as session:
        return _list_tags(session, base_url, repo)


def pull_complete(base_url: str, repo: str, ref: str, *, auth: Auth = None) -> bool:
    """True when the manifest `ref` and every blob it references (recursively through
    indexes) can be fetched and each hashes to its digest, with the sizes its descriptor says."""
    with _session(auth) as session:
        return _pull(session, base_url, repo, ref, None)


# -- the pusher -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Image:
    """A single-platform image built in memory, before it is pushed."""

    manifest: bytes
    media_type: str
    config: bytes
    layers: tuple[Layer, ...]
    platform: str
    created: str | None

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


class Pusher(Closing):
    """Pushes tiny images through the registry API (one `requests.Session`; close it).

    Content is random unless `seed` is given: a seeded Pusher (or a `seed=` per call) builds the
    same bytes every time, so equal seeds and equal `created` values give equal digests.
    """

    def __init__(self, base_url: str, *, auth: Auth = None, seed: int | str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self._rng = random.Random(seed)
        self._session = _new_session(auth)

    def close(self) -> None:
        self._session.close()

    # -- low level ------------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self._session.head(f"{self.base_url}/v2/{repo}/blobs/{digest}", timeout=_TIMEOUT)
        if resp.status_code in (200, 404):
            return resp.status_code == 200
        raise _fail(resp, f"HEAD blob {digest} in {repo}")

    def push_blob(self, repo: str, data: bytes, *, mount_from: str | None = None) -> str:
        """Upload one blob monolithically (POST, then PUT ?digest=); skipped when `repo` has it.
        `mount_from` first asks for a cross-repository mount (201), falling back to upload."""
        digest = sha256_digest(data)
        uploads = f"{self.base_url}/v2/{repo}/blobs/uploads/"
        if mount_from is not None:
            resp = self._session.post(
                uploads, params={"mount": digest, "from": mount_from}, timeout=_TIMEOUT
            )
            if resp.status_code == 201:
                return digest
        else:
            if self.blob_exists(repo, digest):
                return digest
            resp = self._session.post(uploads, timeout=_TIMEOUT)
        if resp.status_code != 202:
            raise _fail(resp, f"start upload to {repo}")
        location = urljoin(uploads, resp.headers["Location"])
        resp = self._session.put(
            location,
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=_TIMEOUT,
        )
        if resp.status_code != 201:
            raise _fail(resp, f"finish upload of {digest} to {repo}")
        return digest

    def push_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or its digest; returns the digest, checked against the
        registry's `Docker-Content-Digest`."""
        digest = sha256_digest(body)
        resp = self._session.put(
            f"{self.base_url}/v2/{repo}/manifests/{ref}",
            data=body,
            headers={"Content-Type": media_type},
            timeout=_TIMEOUT,
        )
        if resp.status_code != 201:
            raise _fail(resp, f"push manifest {repo}:{ref}")
        answered = resp.headers.get("Docker-Content-Digest")
        if answered is not None and answered != digest:
            raise PushError(f"registry says {answered} for manifest {digest} ({repo}:{ref})")
        return digest

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        """Raw manifest bytes and Content-Type, asked for with the full Accept set."""
        resp = self._session.get(
            f"{self.base_url}/v2/{repo}/manifests/{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=_TIMEOUT,
        )
        if resp.status_code != 200:
            raise _fail(resp, f"get manifest {repo}:{ref}")
        return resp.content, resp.headers.get("Content-Type", "")

    def delete_manifest(self, repo: str, digest: str) -> int:
        """DELETE /v2/<repo>/manifests/<digest>; returns the status (202 done, 404 gone)."""
        if not _DIGEST.match(digest):
            raise ValueError(f"refusing to DELETE a non-digest reference {digest!r}")
        resp = self._session.delete(
            f"{self.base_url}/v2/{repo}/manifests/{digest}", timeout=_TIMEOUT
        )
        return resp.status_code

    # -- verification, through this pusher's session --------------------------------------------

    def resolve(self, repo: str, tag: str) -> str | None:
        return _resolve(self._session, self.base_url, repo, tag)

    def list_tags(self, repo: str) -> list[str]:
        return _list_tags(self._session, self.base_url, repo)

    def pull_complete(self, repo: str, ref: str) -> bool:
        return _pull(self._session, self.base_url, repo, ref, None)

    # -- building -------------------------------------------------------------------------------

    def _layers(
        self, rng: random.Random, layers: int | Sequence[bytes | str | Layer], layer_size: int
    ) -> tuple[Layer, ...]:
        if isinstance(layers, int):
            return tuple(make_layer(rng.randbytes(layer_size)) for _ in range(layers))
        return tuple(item if isinstance(item, Layer) else make_layer(item) for item in layers)

    def _build_image(
        self,
        *,
        oci: bool,
        platform: str,
        created: Created,
        layers: tuple[Layer, ...],
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
    ) -> _Image:
        os_name, _, arch = platform.partition("/")
        arch, _, variant = arch.partition("/")
        created_text = _created_value(created)
        config: dict[str, Any] = {
            "architecture": arch,
            "os": os_name,
            "config": {"Labels": dict(labels)} if labels else {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [
                {"created_by": f"retention-test layer {i}"}
                | ({"created": created_text} if created_text is not None else {})
                for i in range(len(layers))
            ],
        }
        if variant:
            config["variant"] = variant
        if created_text is not None:
            config["created"] = created_text
        config_bytes = _json(config)
        media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
        layer_type = OCI_LAYER if oci else DOCKER_LAYER
        manifest = image_manifest(
            descriptor(
                OCI_CONFIG if oci else DOCKER_CONFIG, sha256_digest(config_bytes), len(config_bytes)
            ),
            [descriptor(layer_type, layer.digest, layer.size) for layer in layers],
            media_type,
        )
        if annotations:
            manifest["annotations"] = dict(annotations)
        return _Image(
            manifest=_json(manifest),
            media_type=media_type,
            config=config_bytes,
            layers=layers,
            platform=platform,
            created=created_text,
        )

    def _upload_image(
        self, repo: str, image: _Image, tags: Sequence[str], mount_from: str | None
    ) -> Pushed:
        for layer in image.layers:
            self.push_blob(repo, layer.data, mount_from=mount_from)
        config_digest = self.push_blob(repo, image.config, mount_from=mount_from)
        digest = self._put_tags(repo, image.manifest, image.media_type, tags)
        return Pushed(
            repo=repo,
            tags=tuple(tags),
            digest=digest,
            media_type=image.media_type,
            manifest=image.manifest,
            config_digest=config_digest,
            layer_digests=tuple(layer.digest for layer in image.layers),
            blob_sizes=_blob_sizes(
                [(digest, len(image.manifest)), (config_digest, len(image.config))],
                [(layer.digest, layer.size) for layer in image.layers],
            ),
            platform=image.platform,
            created=image.created,
        )

    def _put_tags(self, repo: str, body: bytes, media_type: str, tags: Sequence[str]) -> str:
        if not tags:
            return self.push_manifest(repo, sha256_digest(body), body, media_type)
        digests = {self.push_manifest(repo, tag, body, media_type) for tag in tags}
        (digest,) = digests
        return digest

    # -- high level ------------------------------------------------------------------------------

    def push_image(
        self,
        repo: str,
        tags: str | Sequence[str] | None = None,
        *,
        kind: Kind = "docker",
        created: Created = NOW,
        layers: int | Sequence[bytes | str | Layer] = 1,
        layer_size: int = 256,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        created_label: datetime | str | None = None,
        created_annotation: datetime | str | None = None,
        platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
        platform_created: Mapping[str, Created] | None = None,
        mount_from: str | None = None,
        seed: int | str | None = None,
    ) -> Pushed:
        """Build and push one image; tag it with each of `tags` (None: by digest only).

        kind: "docker" (schema2 + Docker config), "oci" (OCI manifest + config), both for the
        first of `platforms`; "oci-index" / "docker-list" (one image per platform, children
        pushed by digest, only the index tagged). `created` goes into each config
        (`platform_created` overrides it per platform). `layers` is a count of random layers of
        `layer_size` bytes, or explicit contents/`Layer`s (equal contents give equal blobs:
        that is how images share layers). `created_label` and `created_annotation` set
        `org.opencontainers.image.created` as a config label or a manifest annotation (OCI kinds
        only; on an index, on the index).
        """
        tag_list = [tags] if isinstance(tags, str) else list(tags or [])
        rng = random.Random(seed) if seed is not None else self._rng
        label_map = dict(labels or {})
        if created_label is not None:
            label_map[CREATED_KEY] = _timestamp(created_label)
        annotation_map = dict(annotations or {})
        if created_annotation is not None:
            annotation_map[CREATED_KEY] = _timestamp(created_annotation)
        if annotation_map and kind in ("docker", "docker-list"):
            raise ValueError(f"kind={kind!r} has no annotations; use labels/created_label")

        if kind in ("docker", "oci"):
            image = self._build_image(
                oci=kind == "oci",
                platform=platforms[0] if platforms else "linux/amd64",
                created=created,
                layers=self._layers(rng, layers, layer_size),
                labels=label_map,
                annotations=annotation_map,
            )
            return self._upload_image(repo, image, tag_list, mount_from)
        if kind not in ("oci-index", "docker-list"):
            raise ValueError(f"unknown kind {kind!r}")

        oci = kind == "oci-index"
        overrides = dict(platform_created or {})
        unknown = set(overrides) - set(platforms)
        if unknown:
            raise ValueError(f"platform_created names platforms not pushed: {sorted(unknown)}")
        children = []
        for platform in platforms:
            image = self._build_image(
                oci=oci,
                platform=platform,
                created=overrides.get(platform, created),
                layers=self._layers(rng, layers, layer_size),
                labels=label_map,
                annotations={},
            )
            children.append(self._upload_image(repo, image, [], mount_from))
        return self._push_index(repo, tag_list, children, oci=oci, annotations=annotation_map)

    def _push_index(
        self,
        repo: str,
        tags: Sequence[str],
        children: Sequence[Pushed],
        *,
        oci: bool,
        annotations: Mapping[str, str],
    ) -> Pushed:
        media_type = OCI_INDEX if oci else DOCKER_LIST
        entries = []
        for child in children:
            os_name, _, arch = (child.platform or "linux/amd64").partition("/")
            arch, _, variant = arch.partition("/")
            platform: dict[str, str] = {"architecture": arch, "os": os_name}
            if variant:
                platform["variant"] = variant
            entries.append(
                {
                    "mediaType": child.media_type,
                    "digest": child.digest,
                    "size": len(child.manifest),
                    "platform": platform,
                }
            )
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
        if annotations:
            index["annotations"] = dict(annotations)
        body = _json(index)
        digest = self._put_tags(repo, body, media_type, tags)
        return Pushed(
            repo=repo,
            tags=tuple(tags),
            digest=digest,
            media_type=media_type,
            manifest=body,
            config_digest=None,
            layer_digests=(),
            children=tuple(children),
            blob_sizes=_blob_sizes(
                [(digest, len(body))], *(list(child.blob_sizes) for child in children)
            ),
        )

    @overload
    def tag(self, repo: str, tag: str, target: Pushed) -> Pushed: ...
    @overload
    def tag(self, repo: str, tag: str, target: str) -> str: ...

    def tag(self, repo: str, tag: str, target: Pushed | str) -> Pushed | str:
        """Re-PUT an existing manifest (a `Pushed` or a digest in `repo`) under another tag.
        Returns the `Pushed` with the tag added, or the digest."""
        if isinstance(target, str):
            body, media_type = self.get_manifest(repo, target)
            return self.push_manifest(repo, tag, body, media_type)
        self.push_manifest(repo, tag, target.manifest, target.media_type)
        if repo != target.repo:
            return dataclasses.replace(target, repo=repo, tags=(tag,))
        return dataclasses.replace(target, tags=(*target.tags, tag))

    def _subject(self, repo: str, subject: Pushed | str) -> tuple[str, str, int]:
        if isinstance(subject, Pushed):
            return subject.digest, subject.media_type, len(subject.manifest)
        body, media_type = self.get_manifest(repo, subject)
        return sha256_digest(body), media_type, len(body)

    def push_cosign_signature(
        self,
        repo: str,
        subject: Pushed | str,
        suffix: str = "sig",
        *,
        seed: int | str | None = None,
    ) -> Pushed:
        """A cosign-style artifact tagged `sha256-<hex>.<suffix>` (sig, att, sbom): an OCI
        manifest whose config is cosign's (created 0001-01-01) and whose layer is the payload."""
        rng = random.Random(seed) if seed is not None else self._rng
        digest, _, _ = self._subject(repo, subject)
        if suffix == "sig":
            payload = _json(
                {
                    "critical": {
                        "identity": {"docker-reference": repo},
                        "image": {"docker-manifest-digest": digest},
                        "type": "cosign container image signature",
                    },
                    "optional": None,
                }
            )
        else:
            payload = _json({"_type": "retention-test", "subject": digest, "suffix": suffix})
        layer_type = _COSIGN_LAYER_TYPES.get(suffix, "application/octet-stream")
        zero = "0001-01-01T00:00:00Z"
        config = _json(
            {
                "architecture": "",
                "created": zero,
                "history": [{"created": zero}],
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload)]},
                "config": {},
            }
        )
        signature = base64.b64encode(rng.randbytes(64)).decode()
        layer = descriptor(layer_type, sha256_digest(payload), len(payload))
        layer["annotations"] = {"dev.cosignproject.cosign/signature": signature}
        manifest = _json(
            image_manifest(descriptor(OCI_CONFIG, sha256_digest(config), len(config)), [layer])
        )
        self.push_blob(repo, payload)
        config_digest = self.push_blob(repo, config)
        tag = cosign_tag(digest, suffix)
        pushed_digest = self.push_manifest(repo, tag, manifest, OCI_MANIFEST)
        return Pushed(
            repo=repo,
            tags=(tag,),
            digest=pushed_digest,
            media_type=OCI_MANIFEST,
            manifest=manifest,
            config_digest=config_digest,
            layer_digests=(sha256_digest(payload),),
            blob_sizes=_blob_sizes(
                [
                    (pushed_digest, len(manifest)),
                    (config_digest, len(config)),
                    (sha256_digest(payload), len(payload)),
                ]
            ),
            created=zero,
        )

    def push_referrer(
        self,
        repo: str,
        subject: Pushed | str,
        artifact_type: str = "application/vnd.example.sbom.v1+json",
        *,
        tag: str | None = None,
        content: bytes | None = None,
        created: Created = NOW,
        annotations: Mapping[str, str] | None = None,
        seed: int | str | None = None,
    ) -> Pushed:
        """An OCI 1.1 artifact manifest with `subject` (empty config, one layer of `content`),
        pushed by digest unless `tag` is given. `created` goes into its
        `org.opencontainers.image.created` annotation, as ORAS writes it."""
        rng = random.Random(seed) if seed is not None else self._rng
        subject_digest, subject_type, subject_size = self._subject(repo, subject)
        data = content if content is not None else rng.randbytes(128)
        annotation_map = dict(annotations or {})
        created_text = _created_value(created)
        if created_text is not None:
            annotation_map.setdefault(CREATED_KEY, created_text)
        manifest_doc = image_manifest(
            descriptor(OCI_EMPTY, EMPTY_DIGEST, len(EMPTY_JSON)),
            [descriptor("application/octet-stream", sha256_digest(data), len(data))],
        )
        manifest_doc["artifactType"] = artifact_type
        manifest_doc["subject"] = descriptor(subject_type, subject_digest, subject_size)
        if annotation_map:
            manifest_doc["annotations"] = annotation_map
        manifest = _json(manifest_doc)
        self.push_blob(repo, EMPTY_JSON)
        self.push_blob(repo, data)
        tags = [tag] if tag is not None else []
        digest = self._put_tags(repo, manifest, OCI_MANIFEST, tags)
        return Pushed(
            repo=repo,
            tags=tuple(tags),
            digest=digest,
            media_type=OCI_MANIFEST,
            manifest=manifest,
            config_digest=EMPTY_DIGEST,
            layer_digests=(sha256_digest(data),),
            blob_sizes=_blob_sizes(
                [
                    (digest, len(manifest)),
                    (EMPTY_DIGEST, len(EMPTY_JSON)),
                    (sha256_digest(data), len(data)),
                ]
            ),
            subject=subject_digest,
            artifact_type=artifact_type,
        )
