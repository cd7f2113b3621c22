"""Real registry clients for tests: regctl, oras and cosign, built by `make go-tools`.

Each `Client` runs its tool with a HOME (and config folder) of its own under a temporary path,
talks plain HTTP to the 127.0.0.1 registry, and raises `ClientError` with the tool's output
when it fails. `write_oci_layout` builds an OCI image layout on disk (one image, one layer, a
chosen `created`), for `regctl image copy ocidir://...`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.harness.registry import tool_binary
from tests.harness.seed import OCI_CONFIG, OCI_LAYER, descriptor, image_manifest

__all__ = ["Client", "ClientError", "cosign", "oras", "regctl", "write_oci_layout"]

_TIMEOUT = 120


class ClientError(RuntimeError):
    """A client command failed (its output is in the message)."""


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    binary: str
    home: Path
    host: str
    """`127.0.0.1:<port>` of the registry this client talks to."""

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DOCKER_", "REGCTL_", "ORAS_", "COSIGN_", "SIGSTORE_", "TUF_"))
        }
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            DOCKER_CONFIG=str(self.home / ".docker"),
            TUF_ROOT=str(self.home / ".sigstore"),
            COSIGN_PASSWORD="retention-test",
            NO_COLOR="1",
        )
        return env

    def run(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(
            [self.binary, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=cwd or self.home,
            timeout=_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise ClientError(
                f"{self.name} {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return done.stdout

    def ref(self, repo: str, tag_or_digest: str) -> str:
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.host}/{repo}{sep}{tag_or_digest}"


def _client(name: str, binary_name: str, home: Path, host: str) -> Client:
    binary = tool_binary(binary_name)
    if binary is None:
        raise ClientError(f"no {binary_name} binary: run `make go-tools`")
    home.mkdir(parents=True, exist_ok=True)
    return Client(name, binary, home, host)


def regctl(home: Path, host: str) -> Client:
    client = _client("regctl", "regctl", home, host)
    client.run("registry", "set", "--tls", "disabled", host)
    return client


def oras(home: Path, host: str) -> Client:
    return _client("oras", "oras", home, host)


def cosign(home: Path, host: str) -> Client:
    client = _client("cosign", "cosign", home, host)
    if not (home / "cosign.key").exists():
        client.run("generate-key-pair")
    return client


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    folder = layout / "blobs" / "sha256"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def write_oci_layout(
    layout: Path, tag: str, *, created: datetime, content: str, platform: str = "linux/amd64"
) -> str:
    """An OCI image layout at `layout` holding one image tagged `tag`: one gzip layer with a
    file holding `content`, a config with `created`. Adds to index.json if the layout exists.
    Returns the manifest digest."""
    raw_tar = io.BytesIO()
    with tarfile.open(fileobj=raw_tar, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("data.txt")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw_tar.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw_tar.getvalue()).hexdigest()
    os_name, arch = platform.split("/")
    config = json.dumps(
        {
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "architecture": arch,
            "os": os_name,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    layer_digest, layer_size = _blob(layout, layer)
    config_digest, config_size = _blob(layout, config)
    manifest = json.dumps(
        image_manifest(
            descriptor(OCI_CONFIG, config_digest, config_size),
            [descriptor(OCI_LAYER, layer_digest, layer_size)],
        ),
        sort_keys=True,
    ).encode()
    manifest_digest, manifest_size = _blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index_path = layout / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    )
    index.setdefault("manifests", []).append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_path.write_text(json.dumps(index))
    return manifest_digest
