"""Capability probes: what a registry does, found by asking it, never by its product name.

`probe(url)` pushes a few throw-away images into repositories under `probe-<n>/` and answers
`Capabilities`: whether DELETE by tag removes a tag alone, whether the OCI 1.1 referrers API
answers, whether the catalog and the tag list page with `n`, and what `/manifests/<blob digest>`
answers to HEAD, GET and DELETE. Tests branch on these; the compatibility table in
docs/registries.md prints them (scripts/compat_table.py).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from tests.harness.seed import OCI_INDEX, OCI_MANIFEST, Pusher, resolve

__all__ = ["Capabilities", "probe"]

_probe_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Capabilities:
    tag_delete: bool
    """DELETE /v2/<name>/manifests/<tag> removes that tag alone (202); else 400 or 405."""
    referrers_api: bool
    """GET /v2/<name>/referrers/<digest> answers 200 with an OCI image index."""
    catalog_paging: bool
    """/v2/_catalog?n=1 answers one repository and a Link to the next page."""
    tags_paging: bool
    """/v2/<name>/tags/list?n=2 answers two tags and a Link to the next page."""
    narrow_accept_index: int
    """Status of GET on an OCI index with only the OCI image manifest type in Accept."""
    schema1_without_accept: bool
    """A schema 2 manifest fetched with no Accept is converted to signed schema 1."""
    blob_as_manifest: dict[str, int]
    """Status of HEAD, GET and DELETE /v2/<name>/manifests/<layer digest>."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")


def probe(url: str) -> Capabilities:
    """Probe the registry at `url` (no auth); leaves a few small repositories `probe-<n>/*`,
    whose images all pull completely."""
    base = f"probe-{next(_probe_counter)}"
    session = requests.Session()
    with Pusher(url) as pusher:
        # tag deletion: two tags on one digest; DELETE one by name
        both = pusher.push_image(f"{base}/tags", ["a", "b"])
        by_tag = session.delete(f"{url}/v2/{base}/tags/manifests/a", timeout=10)
        tag_delete = (
            by_tag.status_code == 202
            and resolve(url, f"{base}/tags", "a") is None
            and resolve(url, f"{base}/tags", "b") == both.digest
        )

        # referrers: a subject and one referrer of it
        subject = pusher.push_image(f"{base}/refs", "v1", kind="oci")
        pusher.push_referrer(f"{base}/refs", subject, artifact_type="application/example")
        refs = session.get(f"{url}/v2/{base}/refs/referrers/{subject.digest}", timeout=10)
        referrers_api = refs.status_code == 200 and _is_index(refs)

        # paging: five tags, and at least two repositories in the catalog
        pusher.push_image(f"{base}/many", [f"t{i}" for i in range(5)])
        tags = session.get(f"{url}/v2/{base}/many/tags/list?n=2", timeout=10)
        tags_paging = len(tags.json().get("tags") or []) == 2 and "Link" in tags.headers
        catalog = session.get(f"{url}/v2/_catalog?n=1", timeout=10)
        catalog_paging = (
            catalog.status_code == 200
            and len(catalog.json().get("repositories") or []) == 1
            and "Link" in catalog.headers
        )

        # Accept negotiation
        index = pusher.push_image(f"{base}/index", "v1", kind="oci-index")
        narrow = session.get(
            f"{url}/v2/{base}/index/manifests/{index.digest}",
            headers={"Accept": OCI_MANIFEST},
            timeout=10,
        )
        docker = pusher.push_image(f"{base}/docker", "v1", kind="docker")
        plain = session.get(f"{url}/v2/{base}/docker/manifests/v1", timeout=10)
        schema1 = "v1+prettyjws" in plain.headers.get("Content-Type", "") and (
            plain.headers.get("Docker-Content-Digest") != docker.digest
        )

        # a layer digest asked for as a manifest (its own repository: DELETE may unlink it)
        blob = pusher.push_image(f"{base}/blob", "v1")
        where = f"{url}/v2/{base}/blob/manifests/{blob.layer_digests[0]}"
        blob_as_manifest = {
            "HEAD": session.head(where, timeout=10).status_code,
            "GET": session.get(where, timeout=10).status_code,
            "DELETE": session.delete(where, timeout=10).status_code,
        }
        # 2.8 unlinks the layer on that DELETE: the image no longer pulls, so it goes too
        # (tests that check every kept image of the session registry must not meet it)
        pusher.delete_manifest(f"{base}/blob", blob.digest)
    session.close()
    return Capabilities(
        tag_delete=tag_delete,
        referrers_api=referrers_api,
        catalog_paging=catalog_paging,
        tags_paging=tags_paging,
        narrow_accept_index=narrow.status_code,
        schema1_without_accept=schema1,
        blob_as_manifest=blob_as_manifest,
    )


def _is_index(resp: requests.Response) -> bool:
    try:
        doc = resp.json()
    except ValueError:
        return False
    return (
        isinstance(doc, dict)
        and doc.get("mediaType", OCI_INDEX) == OCI_INDEX
        and (isinstance(doc.get("manifests"), list))
    )
