"""The benchmark registry: a realistic mix of images written straight into distribution's
filesystem storage (much faster than pushing 10,000 tags through the API), and a check that the
registry then serves it.

Layout written (distribution 2.x, `docker/registry/v2/` under the storage root):
`blobs/sha256/<2>/<hex>/data`, and per repository `_manifests/revisions/sha256/<hex>/link`,
`_manifests/tags/<tag>/current/link`, `_manifests/tags/<tag>/index/sha256/<hex>/link` and
`_layers/sha256/<hex>/link` (each link file holds the digest).

Never imports `retention`: the benchmark checks the engine against independent code.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from tests.harness.seed import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)

COSIGN_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"

NOW = datetime(2026, 6, 1, tzinfo=UTC)
"""The scenario's "today": created dates are relative to it; plans run with `--as-of` it."""


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, indent=3).encode()  # the indentation docker and buildx use


@dataclass(frozen=True, slots=True)
class Mix:
    """Tags per repository, by kind; the defaults give 50 tags per repository."""

    main: int = 27  # single-platform CI builds of the main branch: main-<sha>
    pr: int = 10  # single-platform pull-request builds: pr-<n>-<sha>
    pr_index: int = 2  # multi-arch pull-request builds (OCI index, 2 children)
    release: int = 2  # single-platform releases v1.<k>.0
    release_index: int = 2  # multi-arch releases (OCI index, 2 children)
    # tags sharing a digest: latest (newest main), stable, prod, edge (main builds), pr-latest
    aliases: int = 5
    signatures: int = 2  # cosign sha256-<hex>.sig: one on a main build, one on a PR build

    @property
    def tags(self) -> int:
        return (
            self.main
            + self.pr
            + self.pr_index
            + self.release
            + self.release_index
            + self.aliases
            + self.signatures
        )


@dataclass(slots=True)
class Repo:
    name: str
    tags: dict[str, str] = field(default_factory=dict)  # tag → manifest digest
    kinds: dict[str, str] = field(default_factory=dict)  # manifest digest → image|index|sig
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)  # index → children
    configs: dict[str, str] = field(default_factory=dict)  # manifest digest → config digest
    signs: dict[str, str] = field(default_factory=dict)  # signature digest → subject digest


@dataclass(slots=True)
class Scenario:
    """What was seeded, and the minimum requests a cold walk of it needs."""

    repos: list[Repo]
    blobs: int = 0
    bytes: int = 0

    @property
    def tags(self) -> int:
        return sum(len(r.tags) for r in self.repos)

    @property
    def index_children(self) -> int:
        """Distinct platform manifests (one GET each by digest)."""
        return len({c for r in self.repos for cs in r.children.values() for c in cs})

    @property
    def configs(self) -> int:
        """Distinct config digests (one blob GET each)."""
        return len({c for r in self.repos for c in r.configs.values()})

    def minimum(self, catalog_page: int) -> dict[str, int]:
        """The minimal cold walk, by request kind."""
        pages = max(1, -(-len(self.repos) // catalog_page))
        return {
            "ping": 1,
            "catalog": pages,
            "tags_list": len(self.repos),
            "manifest_by_tag": self.tags,
            "manifest_by_digest": self.index_children,
            "blob": self.configs,
        }


class Storage:
    """Writes distribution's filesystem layout under `root` (the storage root directory)."""

    def __init__(self, root: Path) -> None:
        self.v2 = root / "docker" / "registry" / "v2"
        self._written: set[str] = set()
        self.bytes = 0

    def blob(self, data: bytes) -> tuple[str, int]:
        digest = sha256(data)
        if digest not in self._written:
            hexpart = digest.removeprefix("sha256:")
            folder = self.v2 / "blobs" / "sha256" / hexpart[:2] / hexpart
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "data").write_bytes(data)
            self._written.add(digest)
            self.bytes += len(data)
        return digest, len(data)

    def _link(self, path: Path, digest: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "link").write_text(digest)

    def link_layer(self, repo: str, digest: str) -> None:
        hexpart = digest.removeprefix("sha256:")
        self._link(self.v2 / "repositories" / repo / "_layers" / "sha256" / hexpart, digest)

    def link_manifest(self, repo: str, digest: str) -> None:
        hexpart = digest.removeprefix("sha256:")
        base = self.v2 / "repositories" / repo / "_manifests"
        self._link(base / "revisions" / "sha256" / hexpart, digest)

    def tag(self, repo: str, tag: str, digest: str) -> None:
        hexpart = digest.removeprefix("sha256:")
        base = self.v2 / "repositories" / repo / "_manifests" / "tags" / tag
        self._link(base / "current", digest)
        self._link(base / "index" / "sha256" / hexpart, digest)


class _Builder:
    def __init__(self, storage: Storage, rng: random.Random) -> None:
        self.storage = storage
        self.rng = rng

    def _blob(self, repo: str, data: bytes) -> tuple[str, int]:
        digest, size = self.storage.blob(data)
        self.storage.link_layer(repo, digest)
        return digest, size

    def _manifest(self, repo: Repo, doc: dict[str, object], kind: str) -> tuple[str, int]:
        raw = _dumps(doc)
        digest, size = self.storage.blob(raw)
        self.storage.link_manifest(repo.name, digest)
        repo.kinds[digest] = kind
        return digest, size

    def layer(self, repo: str, size: int) -> tuple[str, int]:
        return self._blob(repo, self.rng.randbytes(size))

    def image(
        self,
        repo: Repo,
        *,
        created: datetime | None,
        base: list[tuple[str, int]],
        oci: bool,
        arch: str = "amd64",
        label: datetime | None = None,
    ) -> tuple[str, int, str]:
        """A single-platform image: its own layer on top of `base`, its own config."""
        own = self.layer(repo.name, self.rng.randrange(512, 4096))
        layers = [*base, own]
        labels = {"org.opencontainers.image.source": f"https://git.example.com/{repo.name}"}
        if label is not None:
            labels["org.opencontainers.image.created"] = _iso(label)
        stamp = _iso(created) if created is not None else "1970-01-01T00:00:00Z"
        config = {
            "architecture": arch,
            "os": "linux",
            "created": stamp,
            "config": {
                "Env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    f"BUILD_ID={self.rng.getrandbits(64):016x}",
                ],
                "Entrypoint": ["/app/server"],
                "WorkingDir": "/app",
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256(d.encode()) for d, _ in layers]},
            "history": [
                {"created": stamp, "created_by": f"RUN step {i}", "comment": "buildkit"}
                for i in range(len(layers))
            ],
        }
        cfg_digest, cfg_size = self._blob(repo.name, _dumps(config))
        layer_type = OCI_LAYER if oci else DOCKER_LAYER
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                "size": cfg_size,
                "digest": cfg_digest,
            },
            "layers": [{"mediaType": layer_type, "size": s, "digest": d} for d, s in layers],
        }
        digest, size = self._manifest(repo, doc, "image")
        repo.configs[digest] = cfg_digest
        return digest, size, OCI_MANIFEST if oci else DOCKER_MANIFEST

    def index(self, repo: Repo, *, created: datetime, base: list[tuple[str, int]]) -> str:
        entries = []
        children = []
        for arch in ("amd64", "arm64"):
            child, size, media_type = self.image(
                repo, created=created, base=base, oci=True, arch=arch
            )
            children.append(child)
            entries.append(
                {
                    "mediaType": media_type,
                    "size": size,
                    "digest": child,
                    "platform": {"architecture": arch, "os": "linux"},
                }
            )
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        digest, _ = self._manifest(repo, doc, "index")
        repo.children[digest] = tuple(children)
        return digest

    def signature(self, repo: Repo, subject: str) -> str:
        payload = json.dumps(
            {
                "critical": {
                    "identity": {"docker-reference": f"registry.example.com/{repo.name}"},
                    "image": {"docker-manifest-digest": subject},
                    "type": "cosign container image signature",
                },
                "optional": None,
            }
        ).encode()
        layer, layer_size = self._blob(repo.name, payload)
        config = {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer]},
            "config": {},
        }
        cfg_digest, cfg_size = self._blob(repo.name, _dumps(config))
        signature = self.rng.randbytes(70).hex()
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": cfg_size, "digest": cfg_digest},
            "layers": [
                {
                    "mediaType": COSIGN_LAYER,
                    "size": layer_size,
                    "digest": layer,
                    "annotations": {"dev.cosignproject.cosign/signature": signature},
                }
            ],
        }
        digest, _ = self._manifest(repo, doc, "sig")
        repo.configs[digest] = cfg_digest
        repo.signs[digest] = subject
        return digest


def repository_names(count: int) -> list[str]:
    """`team-00/svc-00`, ...: ten services per team."""
    return [f"team-{i // 10:02d}/svc-{i % 10:02d}" for i in range(count)]


def seed(
    storage_root: Path, *, repositories: int = 200, mix: Mix | None = None, seed: int = 7
) -> Scenario:
    """Write the scenario into `storage_root` (the registry must not be running yet, or must be
    restarted before it serves the new content: 2.8 caches nothing by default, but be safe)."""
    mix = mix or Mix()
    rng = random.Random(seed)
    storage = Storage(storage_root)
    build = _Builder(storage, rng)
    repos: list[Repo] = []
    for number, name in enumerate(repository_names(repositories)):
        repo = Repo(name)
        base = [build.layer(name, rng.randrange(2048, 8192)) for _ in range(3)]

        def put(tag: str, digest: str, repo: Repo = repo) -> None:
            storage.tag(repo.name, tag, digest)
            repo.tags[tag] = digest

        main: list[str] = []
        for i in range(mix.main):
            # newest first: roughly one main build a day, a few hours of jitter
            created = NOW - timedelta(days=i, hours=rng.randrange(0, 20))
            zero = number % 10 == 3 and i == mix.main - 1  # a reproducible build: 1970
            digest, _, _ = build.image(
                repo,
                created=None if zero else created,
                base=base,
                oci=i % 2 == 1,
                label=created if zero else None,
            )
            put(f"main-{rng.getrandbits(28):07x}", digest)
            main.append(digest)
        prs: list[str] = []
        total = mix.pr + mix.pr_index
        index_at = {(k + 1) * total // max(1, mix.pr_index) - 1 for k in range(mix.pr_index)}
        for i in range(total):
            created = NOW - timedelta(days=2 * i, hours=rng.randrange(0, 20))
            if i in index_at:
                digest = build.index(repo, created=created, base=base)
            else:
                digest, _, _ = build.image(repo, created=created, base=base, oci=i % 2 == 0)
            put(f"pr-{1000 - i}-{rng.getrandbits(28):07x}", digest)
            prs.append(digest)
        for k in range(mix.release + mix.release_index):
            created = NOW - timedelta(days=90 * (k + 1))
            if k < mix.release_index:
                digest = build.index(repo, created=created, base=base)
            else:
                digest, _, _ = build.image(repo, created=created, base=base, oci=False)
            put(f"v1.{mix.release + mix.release_index - k}.0", digest)
        aliases = [("latest", main[0]), ("stable", main[3]), ("prod", main[5])]
        aliases += [("edge", main[1]), ("pr-latest", prs[0])]
        for tag, digest in aliases[: mix.aliases]:
            put(tag, digest)
        for subject in [main[2], prs[1]][: mix.signatures]:
            sig = build.signature(repo, subject)
            put(f"sha256-{subject.removeprefix('sha256:')}.sig", sig)
        if len(repo.tags) != mix.tags:
            raise AssertionError(f"{name}: {len(repo.tags)} tags, expected {mix.tags}")
        repos.append(repo)
    return Scenario(repos=repos, blobs=len(storage._written), bytes=storage.bytes)


# -- checking that the registry serves what was written ------------------------------------------


def pull(session: requests.Session, url: str, repo: str, reference: str) -> int:
    """Pull `repo:reference` completely (manifest, children, config, layers), checking every
    digest; returns the number of blobs and manifests fetched. Raises AssertionError."""
    resp = session.get(
        f"{url}/v2/{repo}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=30,
    )
    if resp.status_code != 200:
        raise AssertionError(f"{repo}:{reference}: manifest answered {resp.status_code}")
    digest = sha256(resp.content)
    if resp.headers.get("Docker-Content-Digest") != digest:
        raise AssertionError(f"{repo}:{reference}: Docker-Content-Digest is not {digest}")
    doc = resp.json()
    if resp.headers.get("Content-Type") != doc.get("mediaType"):
        raise AssertionError(f"{repo}:{reference}: Content-Type {resp.headers['Content-Type']}")
    fetched = 1
    for child in doc.get("manifests", []):
        fetched += pull(session, url, repo, child["digest"])
    blobs: Iterable[dict[str, object]] = [doc["config"], *doc["layers"]] if "config" in doc else []
    for blob in blobs:
        got = session.get(f"{url}/v2/{repo}/blobs/{blob['digest']}", timeout=30)
        if got.status_code != 200 or sha256(got.content) != blob["digest"]:
            raise AssertionError(f"{repo}: blob {blob['digest']} answered {got.status_code}")
        if len(got.content) != blob["size"]:
            raise AssertionError(f"{repo}: blob {blob['digest']} has the wrong size")
        fetched += 1
    return fetched


def verify_sample(url: str, scenario: Scenario, *, samples: int = 12, seed: int = 1) -> int:
    """Pull a sample of tags of every kind through the API and compare tags/list with what was
    seeded for the sampled repositories; returns the number of objects fetched."""
    rng = random.Random(seed)
    fetched = 0
    with requests.Session() as session:
        for repo in rng.sample(scenario.repos, min(samples, len(scenario.repos))):
            resp = session.get(f"{url}/v2/{repo.name}/tags/list", timeout=30)
            listed = sorted(resp.json()["tags"] or [])
            if listed != sorted(repo.tags):
                raise AssertionError(f"{repo.name}: tags/list differs from the seed")
            by_kind: dict[str, str] = {}
            for tag, digest in sorted(repo.tags.items()):
                by_kind.setdefault(repo.kinds[digest], tag)
            for tag in by_kind.values():
                fetched += pull(session, url, repo.name, tag)
    return fetched
