"""One realistic repository layout for apply tests, pushed through the real registry API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tests.harness.seed import Pushed, Pusher


@dataclass(frozen=True)
class Scene:
    app: str
    other: str
    v1: Pushed  # old; has a tagged OCI referrer (SBOM) and an untagged one
    v2: Pushed  # old; cosign-signed
    v3: Pushed  # old; two tags
    m_old: Pushed  # old multi-arch index
    m_new: Pushed  # newest: kept by `last: 1`
    latest: Pushed  # protected, also tagged v0 (shares its digest), cosign-signed
    v1_sbom: Pushed  # tagged `v1-sbom`: follows v1
    v1_note: Pushed  # untagged: invisible without a referrers API, so never in the plan
    v2_sig: Pushed
    latest_sig: Pushed
    o1: Pushed
    o2: Pushed

    @property
    def deleted(self) -> list[Pushed]:
        return [self.v1, self.v2, self.v3, self.m_old, self.v1_sbom, self.v2_sig, self.o1]

    @property
    def kept(self) -> list[Pushed]:
        return [self.m_new, self.latest, self.latest_sig, self.o2]

    @property
    def unplanned(self) -> list[Pushed]:
        """Pushed, but not in any plan: apply must leave them alone."""
        return [self.v1_note]


def push_scene(pusher: Pusher, prefix: str, now: datetime | None = None) -> Scene:
    now = now or datetime.now(UTC)
    app, other = f"{prefix}/app", f"{prefix}/other"
    day = timedelta(days=1)
    v1 = pusher.push_image(app, "v1", created=now - 10 * day)
    v2 = pusher.push_image(app, "v2", kind="oci", created=now - 9 * day)
    v3 = pusher.push_image(app, ["v3", "v3-alias"], created=now - 8 * day)
    m_old = pusher.push_image(app, "m-old", kind="oci-index", created=now - 7 * day)
    m_new = pusher.push_image(app, "m-new", kind="docker-list", created=now - timedelta(hours=1))
    latest = pusher.push_image(app, ["latest", "v0"], created=now - 20 * day)
    v1_sbom = pusher.push_referrer(app, v1, tag="v1-sbom")
    v1_note = pusher.push_referrer(app, v1, "application/vnd.example.note")
    v2_sig = pusher.push_cosign_signature(app, v2)
    latest_sig = pusher.push_cosign_signature(app, latest)
    o1 = pusher.push_image(other, "o1", created=now - 5 * day)
    o2 = pusher.push_image(other, "o2", created=now - 4 * day)
    return Scene(
        app, other, v1, v2, v3, m_old, m_new, latest, v1_sbom, v1_note, v2_sig, latest_sig, o1, o2
    )
