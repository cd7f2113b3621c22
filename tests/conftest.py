"""Shared fixtures: a real `docker-registry` on 127.0.0.1 and factories that seed it.

The registry binary is required: outside CI a missing binary skips the tests that need it (with
the install hint); with CI=true it fails them. Tests using a registry fixture get the `registry`
marker, so `pytest -m "not registry"` runs the pure tests alone.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.registry import (
    ENV_BINARY,
    AuthRegistry,
    RegistryProcess,
    find_registry_binary,
)
from tests.harness.seed import Pushed, Pusher

AUTH_USERS = {"alice": "s3cret-pass", "bob": "hunter2-but-longer"}
"""Users of `auth_registry`; the first is the one its credentials name."""

REGISTRY_FIXTURES = frozenset(
    {
        "registry_binary",
        "registry",
        "fresh_registry",
        "auth_registry",
        "pusher",
        "fresh_pusher",
        "push_image",
    }
)

_repo_counter = itertools.count(1)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REGISTRY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.registry)


@pytest.fixture(autouse=True)
def _private_state_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journals, locks, history and the digest cache of every test live in its own tmp_path,
    never in the user's home (subprocesses inherit this too)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def registry_binary() -> str:
    """Path of the registry binary; skip (laptop) or fail (CI=true) when there is none."""
    found = find_registry_binary()
    if found is not None:
        return found
    named = os.environ.get(ENV_BINARY)
    problem = (
        f"{ENV_BINARY}={named!r} is not an executable"
        if named
        else "no docker-registry (or registry) binary on PATH"
    )
    message = (
        f"{problem}: the integration tests need distribution's registry. Install it with "
        f"`sudo apt-get install docker-registry`, or point {ENV_BINARY} at a registry binary."
    )
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    """One registry for the whole session (delete enabled, no auth). Tests share it: name
    repositories with `repo_prefix` / `unique_repo`, and never stop, kill or GC it."""
    root = tmp_path_factory.mktemp("registry")
    with RegistryProcess(registry_binary, root=root) as process:
        yield process


@pytest.fixture
def fresh_registry(registry_binary: str, tmp_path: Path) -> Iterator[RegistryProcess]:
    """A registry of this test's own: empty catalog; free to stop, kill, restart and GC."""
    with RegistryProcess(registry_binary, root=tmp_path / "registry") as process:
        yield process


@pytest.fixture(scope="session")
def auth_registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthRegistry]:
    """A session registry behind htpasswd (bcrypt) basic auth; users are `AUTH_USERS`."""
    root = tmp_path_factory.mktemp("auth-registry")
    with RegistryProcess(registry_binary, root=root, auth="htpasswd", users=AUTH_USERS) as process:
        username, password = next(iter(AUTH_USERS.items()))
        yield AuthRegistry(registry=process, username=username, password=password)


@pytest.fixture
def repo_prefix(request: pytest.FixtureRequest) -> str:
    """A repository-name prefix unique to this test, e.g. `t12-test-delete-by-digest`."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") or "test"
    return f"t{next(_repo_counter)}-{slug}"


@pytest.fixture
def unique_repo(repo_prefix: str) -> str:
    """One repository name unique to this test: `<repo_prefix>/app`."""
    return f"{repo_prefix}/app"


@pytest.fixture
def pusher(registry: RegistryProcess) -> Iterator[Pusher]:
    """A `Pusher` bound to the session `registry` (random content)."""
    with Pusher(registry.url) as bound:
        yield bound


@pytest.fixture
def fresh_pusher(fresh_registry: RegistryProcess) -> Iterator[Pusher]:
    """A `Pusher` bound to this test's `fresh_registry`."""
    with Pusher(fresh_registry.url) as bound:
        yield bound


@pytest.fixture
def push_image(pusher: Pusher) -> Callable[..., Pushed]:
    """`push_image(repo, tags, *, kind=..., created=..., layers=..., ...) -> Pushed` on the
    session registry; see `Pusher.push_image`."""
    return pusher.push_image
