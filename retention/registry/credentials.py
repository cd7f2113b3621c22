"""Credential sources for a registry, in order: the policy's `registry.auth`, the docker
`config.json` (`credHelpers`, `credsStore`, `auths`), else anonymous.

The only I/O: reading the docker config and running `docker-credential-<name> get`. No HTTP.
Secrets never reach a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from retention.errors import AuthError

# The logger the credential lines have always been written to (`--verbose` shows its name).
logger = logging.getLogger("retention.registry.auth")

HELPER_TIMEOUT = 30.0
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and secret, and where they came from; the secret never appears in a repr.

    `identity_token` marks a secret that is an OAuth2 refresh token (docker `identitytoken`, or a
    helper answering username `<token>`); it is only ever sent to the token realm.
    """

    username: str
    secret: str = field(repr=False)
    source: str
    identity_token: bool = False

    def __repr__(self) -> str:
        return (
            f"Credentials(username={self.username!r}, secret='***', source={self.source!r}, "
            f"identity_token={self.identity_token!r})"
        )

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class AuthEntry:
    """One `auths` entry of a docker config.json."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"AuthEntry(username={self.username!r}, password='***', identity_token='***')"


@dataclass(frozen=True, slots=True)
class DockerConfig:
    """What retention reads of a docker config.json: auths, credsStore, credHelpers."""

    path: str
    auths: tuple[tuple[str, AuthEntry], ...] = ()  # keyed by normalised host
    creds_store: str | None = None
    cred_helpers: tuple[tuple[str, str], ...] = ()  # normalised host → helper name

    def auth_for(self, key: str) -> AuthEntry | None:
        return dict(self.auths).get(key)

    def helper_for(self, key: str) -> str | None:
        return dict(self.cred_helpers).get(key)


def normalise_host_key(key: str) -> str:
    """A docker config key (`host`, `host:port`, `https://host/v1/`) as a lowercase host[:port].

    Docker Hub's keys and hosts (`https://index.docker.io/v1/`, `docker.io`, `registry-1.docker.io`)
    all map to `index.docker.io`.
    """
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    if text.endswith(":443"):
        text = text[:-4]
    if text in _DOCKER_HUB_HOSTS:
        return "index.docker.io"
    return text


def registry_host_key(registry_url: str) -> str:
    """The config.json lookup key for a registry URL."""
    parts = urlsplit(registry_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return normalise_host_key(host)


def _decode_auth(value: str, path: str, key: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise AuthError(f"{path}: auths[{key!r}].auth is not valid base64") from exc
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise AuthError(f"{path}: auths[{key!r}].auth is not base64 of 'user:password'")
    return user, password


def parse_docker_config(text: str, path: str) -> DockerConfig:
    """Parse a docker config.json (pure). Errors name the file and key, never a value."""
    try:
        doc: Any = json.loads(text)
    except ValueError as exc:
        raise AuthError(f"{path}: not valid JSON (line {getattr(exc, 'lineno', '?')})") from exc
    if not isinstance(doc, dict):
        raise AuthError(f"{path}: not a JSON object")
    auths: dict[str, AuthEntry] = {}
    raw_auths = doc.get("auths", {})
    if raw_auths is None:
        raw_auths = {}
    if not isinstance(raw_auths, dict):
        raise AuthError(f"{path}: 'auths' is not an object")
    for raw_key, entry in raw_auths.items():
        if not isinstance(entry, dict):
            continue
        key = normalise_host_key(str(raw_key))
        identity = entry.get("identitytoken")
        user: str | None = None
        password: str | None = None
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            user, password = _decode_auth(encoded, path, str(raw_key))
        elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            user, password = entry["username"], entry["password"]
        if user is None and not (isinstance(identity, str) and identity):
            continue  # docker desktop writes empty entries when a credsStore holds the secret
        auths[key] = AuthEntry(
            username=user,
            password=password,
            identity_token=identity if isinstance(identity, str) and identity else None,
        )
    store = doc.get("credsStore")
    helpers = doc.get("credHelpers", {})
    if helpers is None:
        helpers = {}
    if not isinstance(helpers, dict):
        raise AuthError(f"{path}: 'credHelpers' is not an object")
    return DockerConfig(
        path=path,
        auths=tuple(sorted(auths.items())),
        creds_store=store if isinstance(store, str) and store else None,
        cred_helpers=tuple(
            sorted(
                (normalise_host_key(str(k)), v)
                for k, v in helpers.items()
                if isinstance(v, str) and v
            )
        ),
    )


def docker_config_path(env: Mapping[str, str]) -> Path | None:
    """`$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`; None without either."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".docker" / "config.json"
    return None


HelperRunner = Callable[[str, str, Mapping[str, str]], "subprocess.CompletedProcess[bytes]"]


def run_credential_helper(
    name: str, server: str, env: Mapping[str, str]
) -> subprocess.CompletedProcess[bytes]:
    """Run `docker-credential-<name> get` with the server on stdin: argument list, no shell."""
    program = f"docker-credential-{name}"
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise AuthError(
            f"credential helper {program} is not on PATH",
            hint="install it, or remove it from credsStore/credHelpers in the docker config",
        )
    try:
        return subprocess.run(  # fixed argv, no shell
            [found, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AuthError(
            f"credential helper {program} did not answer in {HELPER_TIMEOUT:g}s"
        ) from exc
    except OSError as exc:
        raise AuthError(f"credential helper {program} could not be run: {exc.strerror}") from exc


def _from_helper(
    name: str, server: str, env: Mapping[str, str], run: HelperRunner
) -> Credentials | None:
    program = f"docker-credential-{name}"
    done = run(name, server, env)
    if done.returncode != 0:
        # The helper protocol says "credentials not found" on stdout; anything else is a failure.
        # Helper output is never quoted: it might hold a secret.
        if b"credentials not found" in done.stdout.lower():
            return None
        raise AuthError(f"credential helper {program} failed (exit {done.returncode})")
    try:
        doc: Any = json.loads(done.stdout)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError(f"credential helper {program} answered something that is not JSON") from exc
    if not isinstance(doc, dict):
        raise AuthError(f"credential helper {program} answered something that is not an object")
    user, secret = doc.get("Username"), doc.get("Secret")
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    source = f"credential-helper:{name}"
    if user == "<token>":
        return Credentials(username=user, secret=secret, source=source, identity_token=True)
    return Credentials(username=user, secret=secret, source=source)


def resolve_credentials(
    registry_url: str,
    policy_auth: tuple[str, str] | None,
    env: Mapping[str, str],
    *,
    run: HelperRunner = run_credential_helper,
) -> Credentials | None:
    """Credentials for the registry, in order: the policy's `registry.auth` (username, password);
    the docker config's `credHelpers` entry for the host, else its `credsStore`, else its `auths`
    entry; else None (anonymous). A helper that has nothing for the host falls through to `auths`.
    """
    if policy_auth is not None:
        return Credentials(policy_auth[0], policy_auth[1], source="policy")
    path = docker_config_path(env)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"cannot read docker config {path}: {exc.__class__.__name__}") from exc
    docker = parse_docker_config(text, str(path))
    key = registry_host_key(registry_url)
    server = DOCKER_HUB_KEY if key == "index.docker.io" else key
    helper = docker.helper_for(key) or docker.creds_store
    if helper is not None:
        found = _from_helper(helper, server, env, run)
        if found is not None:
            logger.debug("credentials for %s from credential helper %s", key, helper)
            return found
    entry = docker.auth_for(key)
    if entry is None:
        return None
    logger.debug("credentials for %s from %s", key, path)
    if entry.username is not None and entry.password is not None:
        return Credentials(entry.username, entry.password, source="docker-config")
    assert entry.identity_token is not None
    return Credentials("<token>", entry.identity_token, "docker-config", identity_token=True)
