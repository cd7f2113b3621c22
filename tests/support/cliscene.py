"""A small scene on the session registry for the CLI tests of plan, inventory and explain.

Three repositories under the test's own prefix, dated relative to a fixed AS_OF so that every
run reads the same ages; a policy that names only those repositories. What the policy does to
each tag is written out by hand in `Scene` (the tests compare the CLI against it).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.harness.seed import Pushed, Pusher

AS_OF = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
AS_OF_TEXT = "2026-06-01T12:00:00Z"
LATER_TEXT = "2026-06-11T12:00:00Z"  # ten days on: main-4 (2 days old at AS_OF) passes 7d

POLICY = """\
version: 1
registry:
  url: {url}
settings:
  concurrency: 4
protect:
  tags: ['latest']
rules:
  - name: unused
    match: {{repositories: ['{prefix}/nothing']}}
    keep: all
  - name: web
    match: {{repositories: ['{prefix}/web']}}
    keep: {{last: 1, newer_than: 7d}}
  - name: multi
    match: {{repositories: ['{prefix}/multi']}}
    keep: {{newer_than: 30d}}
"""


def days(n: int) -> datetime:
    return AS_OF - timedelta(days=n)


@dataclass(frozen=True, slots=True)
class Scene:
    prefix: str
    policy: Path
    main1: Pushed  # rank 1: the most recent
    main2: Pushed  # main-2 and latest, 20 days old, rank 3: kept, it shares `latest`'s digest
    main3: Pushed  # 50 days old, rank 4: deleted
    main4: Pushed  # 2 days old, rank 2: kept by newer_than 7d at AS_OF, deleted at LATER
    epoch: Pushed  # created 1970-01-01: age unknown, kept
    sig1: Pushed  # signature of main-1: kept with it
    sig3: Pushed  # signature of main-3: deleted with it
    index: Pushed  # <prefix>/multi:i, an OCI index 50 days old: deleted with its children
    other: Pushed  # <prefix>/other:x, no rule selects it

    @property
    def web(self) -> str:
        return f"{self.prefix}/web"

    @property
    def select(self) -> list[str]:
        """`--repository` arguments that keep a run inside this scene."""
        return ["--repository", f"{self.prefix}/.*"]

    def deleted_at_as_of(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """By hand from the policy: (repository, digest) -> tags the plan deletes at AS_OF."""
        out = {(p.repo, p.digest): p.tags for p in (self.main3, self.sig3, self.index)}
        out.update({(c.repo, c.digest): () for c in self.index.children})
        return out

    def deleted_later(self) -> dict[tuple[str, str], tuple[str, ...]]:
        return {**self.deleted_at_as_of(), (self.main4.repo, self.main4.digest): self.main4.tags}


def build(pusher: Pusher, prefix: str, url: str, folder: Path) -> Scene:
    web = f"{prefix}/web"
    main1 = pusher.push_image(web, "main-1", created=days(1))
    main2 = pusher.push_image(web, ["main-2", "latest"], created=days(20))
    main3 = pusher.push_image(web, "main-3", created=days(50))
    main4 = pusher.push_image(web, "main-4", created=days(2))
    epoch = pusher.push_image(web, "epoch", created="1970-01-01T00:00:00Z")
    sig1 = pusher.push_cosign_signature(web, main1)
    sig3 = pusher.push_cosign_signature(web, main3)
    index = pusher.push_image(f"{prefix}/multi", "i", kind="oci-index", created=days(50))
    other = pusher.push_image(f"{prefix}/other", "x", created=days(50))
    policy = write_policy(folder / "policy.yaml", url, prefix)
    return Scene(prefix, policy, main1, main2, main3, main4, epoch, sig1, sig3, index, other)


def write_policy(path: Path, url: str, prefix: str) -> Path:
    path.write_text(POLICY.format(url=url, prefix=prefix))
    return path


def closed_port_url() -> str:
    """`http://127.0.0.1:<port>` where nothing listens (the port was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
