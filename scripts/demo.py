"""`make demo`: a plan against a throw-away local registry, seeded with realistic images.

Starts Debian's docker-registry on 127.0.0.1 (port 5000 when free, as policies/example.yaml
expects), pushes a few repositories of releases, CI builds of various ages, a multi-arch image
and a signature, runs `retention plan -p policies/example.yaml`, prints the plan and stops the
registry. `--keep-running` leaves it up so you can try `explain`, `apply` and `init` against it.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retention.cli import main as retention  # noqa: E402
from tests.harness.registry import RegistryProcess  # noqa: E402
from tests.harness.seed import Pusher  # noqa: E402

EXAMPLE = ROOT / "policies" / "example.yaml"
EXAMPLE_URL = "http://127.0.0.1:5000"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:7]


def seed(url: str, now: datetime) -> None:
    """Three repositories the way CI leaves them: releases, main builds, PR builds, latest."""
    with Pusher(url, seed="demo") as push:
        for repo in ("apps/web", "apps/api"):
            for i, days in enumerate((200, 120, 60)):
                push.push_image(repo, f"v1.{i}.0", created=now - timedelta(days=days))
            for i in range(12):
                tags = [f"main-{_sha(repo + str(i))}"]
                if i == 11:
                    tags.append("latest")
                push.push_image(repo, tags, created=now - timedelta(days=40 - 3 * i))
            for pr in range(101, 109):
                push.push_image(
                    repo, f"pr-{pr}-{_sha(repo + str(pr))}", created=now - timedelta(days=pr - 100)
                )
        base = push.push_image(
            "base/python", ["3.11", "v3.11.7"], kind="oci-index", created=now - timedelta(days=90)
        )
        push.push_cosign_signature("base/python", base)
        for i in range(6):
            push.push_image(
                "base/python",
                f"nightly-{(now - timedelta(days=i * 5)):%Y%m%d}",
                kind="oci-index",
                created=now - timedelta(days=i * 5),
            )


def run(keep_running: bool) -> int:
    port = 5000 if _port_free(5000) else None
    with RegistryProcess(port=port) as registry:
        now = datetime.now(UTC)
        print(f"demo registry on {registry.url}; seeding it ...", file=sys.stderr)
        seed(registry.url, now)
        policy = EXAMPLE
        if registry.url != EXAMPLE_URL:
            tmp = Path(tempfile.mkdtemp(prefix="retention-demo-")) / "example.yaml"
            tmp.write_text(EXAMPLE.read_text().replace(EXAMPLE_URL, registry.url))
            policy = tmp
        print(f"$ retention plan -p {policy}\n", file=sys.stderr)
        code = retention(["plan", "-p", str(policy)])
        if keep_running:
            print(
                f"\nThe registry stays up at {registry.url} until you press Ctrl-C. Try:\n"
                f"  .venv/bin/retention explain -p {policy} apps/web\n"
                f"  .venv/bin/retention init --registry {registry.url} -o my-policy.yaml\n",
                file=sys.stderr,
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return code


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through RegistryProcess.__exit__, which stops the registry


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-running", action="store_true", help="leave the registry up")
    sys.exit(run(parser.parse_args().keep_running))
