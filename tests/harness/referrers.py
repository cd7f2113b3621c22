"""An OCI 1.1 referrers endpoint in front of a real registry that has none (distribution).

`referrers_fault(registry)` is a `FaultProxy` "respond" fault for GET /v2/<name>/referrers/
<digest>: it lists the repository's manifests from the registry's storage folder, fetches each
from the registry itself, and answers the OCI image index of those whose `subject` is that
digest (OCI distribution-spec "Listing Referrers": 200, an empty index when there are none).
Everything else goes to the registry unchanged. No real registry here serves the API (zot is
not available to this build: docs/registries.md), so this is how the engine's use of it is
tested against manifests really pushed.
"""

from __future__ import annotations

import json
import re

import requests

from tests.harness.faultproxy import Exchange, Fault, RecordedRequest, Upstream
from tests.harness.registry import RegistryProcess
from tests.harness.seed import MANIFEST_ACCEPT, OCI_INDEX

__all__ = ["referrers_fault"]

_PATH = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>sha256:[0-9a-f]{64})(\?.*)?$")


def _manifest_digests(registry: RegistryProcess, repo: str) -> list[str]:
    revisions = (
        registry.storage_dir / "docker/registry/v2/repositories" / repo / "_manifests/revisions"
    )
    if not revisions.is_dir():
        return []
    return sorted(
        f"{algo.name}:{entry.name}"
        for algo in revisions.iterdir()
        for entry in algo.iterdir()
        if (entry / "link").exists()
    )


def referrers_fault(registry: RegistryProcess) -> Fault:
    """The "respond" fault answering the referrers API from `registry`'s own manifests."""

    def answer(request: RecordedRequest, upstream: Upstream) -> Exchange:
        match = _PATH.match(request.path)
        if match is None:
            return upstream()
        repo, subject = match["name"], match["digest"]
        found = []
        for digest in _manifest_digests(registry, repo):
            resp = requests.get(
                f"{registry.url}/v2/{repo}/manifests/{digest}",
                headers={"Accept": MANIFEST_ACCEPT},
                timeout=10,
            )
            if resp.status_code != 200:
                continue  # deleted: the revision link stays until GC
            doc = resp.json()
            if (doc.get("subject") or {}).get("digest") != subject:
                continue
            descriptor = {
                "mediaType": doc.get("mediaType") or resp.headers["Content-Type"],
                "digest": digest,
                "size": len(resp.content),
            }
            artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
            if artifact_type:
                descriptor["artifactType"] = artifact_type
            if doc.get("annotations"):
                descriptor["annotations"] = doc["annotations"]
            found.append(descriptor)
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found})
        return Exchange(
            200,
            (("Content-Type", OCI_INDEX), ("Content-Length", str(len(body)))),
            body.encode(),
        )

    return Fault("respond", path=r"^/v2/.+/referrers/", method="GET", times=None, handler=answer)
