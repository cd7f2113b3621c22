"""Shared fixtures: a real registry on 127.0.0.1 and factories that seed it.

Every registry fixture is parametrised over the matrix of `registry_kinds()` (distribution 2.8,
distribution 3.x): a test that uses one runs once per registry, its id ending in the registry's
id. Outside CI a missing registry is left out of the matrix with one line in the header (and
2.8 missing skips, with the install hint); with CI=true every registry is required and a
missing one fails its tests. Tests using a registry fixture get the `registry` marker, so
`pytest -m "not registry"` runs the pure tests alone.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.harness.probes import Capabilities, probe
from tests.harness.registry import (
    ENV_BINARY,
    TOOLS_BIN,
    AuthRegistry,
    CraneRegistry,
    RegistryKind,
    RegistryProcess,
    registry_kinds,
    tool_binary,
)
from tests.harness.seed import Pushed, Pusher

COMPAT_DIR = Path(__file__).resolve().parents[1] / "build" / "compat"
"""Where each registry's probed capabilities are written, for scripts/compat_table.py."""

AUTH_USERS = {"alice": "s3cret-pass", "bob": "hunter2-but-longer"}
"""Users of `auth_registry`; the first is the one its credentials name."""

REGISTRY_FIXTURES = frozenset(
    {
        "registry_kind",
        "registry_binary",
        "capabilities",
        "registry",
        "fresh_registry",
        "auth_registry",
        "pusher",
        "fresh_pusher",
        "push_image",
        "tag_registry",
    }
)

_repo_counter = itertools.count(1)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


_KINDS = registry_kinds()
_MATRIX = [k for k in _KINDS if k.binary is not None or _in_ci() or k is _KINDS[0]]
"""The registries the tests run on: all of them with CI=true (a missing one fails), else the
ones installed (2.8 always: its absence skips with the install hint, as before)."""


CLIENTS = ("regctl", "oras", "cosign")
"""Real clients of tests/integration/test_real_clients.py, built by `make go-tools`."""


def _missing_clients() -> list[str]:
    return [name for name in CLIENTS if tool_binary(name) is None]


def pytest_report_header() -> list[str]:
    lines = [f"registries: {', '.join(k.id for k in _MATRIX)}"]
    lines += [f"registry {k.id} skipped: {k.missing}" for k in _KINDS if k not in _MATRIX]
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [f"registry {k.id}" for k in _KINDS if k not in _MATRIX] + _missing_clients()
    if tool_binary("crane") is None:
        skipped.append("crane (the tag-deleting registry)")
    if skipped:
        terminalreporter.write_line(
            f"not tested here: {', '.join(skipped)} (no Go toolchain? run `make go-tools`)",
            yellow=True,
        )


def _unavailable(message: str) -> NoReturn:
    """A registry or client the test needs is missing: a failure in CI (CI=true), where nothing
    may be skipped; a skip on a laptop without Go or Debian's docker-registry."""
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_clients() -> None:
    """regctl, oras and cosign are built: skip (laptop) or fail (CI=true) when one is not."""
    missing = _missing_clients()
    if not missing:
        return
    _unavailable(f"no {', '.join(missing)} in {TOOLS_BIN}: run `make go-tools` (needs Go)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REGISTRY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.registry)


@pytest.fixture(autouse=True)
def _private_state_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journals, locks, history and the digest cache of every test live in its own tmp_path
    (`xdg-state/`, `xdg-cache/`), never in the user's home, and no two tests share a cache
    (subprocesses inherit this too). The one XDG fixture of the suite."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="session", params=_MATRIX, ids=[k.id for k in _MATRIX])
def registry_kind(request: pytest.FixtureRequest) -> RegistryKind:
    """The registry of the matrix this test runs on; skip (laptop) or fail (CI=true) when its
    binary is missing."""
    kind: RegistryKind = request.param
    if kind.binary is not None:
        return kind
    named = os.environ.get(ENV_BINARY)
    problem = f"{ENV_BINARY}={named!r} is not an executable" if named else kind.missing
    message = (
        f"registry {kind.id}: {problem}. Install docker-registry (`sudo apt-get install "
        f"docker-registry`, or point {ENV_BINARY} at a registry binary) and run `make go-tools`."
    )
    _unavailable(message)


@pytest.fixture(scope="session")
def registry_binary(registry_kind: RegistryKind) -> str:
    """Path of the binary of this test's registry (`registry_kind`)."""
    assert registry_kind.binary is not None
    return registry_kind.binary


@pytest.fixture(scope="session")
def registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    """One registry for the whole session (delete enabled, no auth). Tests share it: name
    repositories with `repo_prefix` / `unique_repo`, and never stop, kill or GC it."""
    root = tmp_path_factory.mktemp("registry")
    with RegistryProcess(registry_binary, root=root) as process:
        yield process


@pytest.fixture(scope="session")
def tag_registry() -> Iterator[CraneRegistry]:
    """go-containerregistry's registry (`crane registry serve`, `make go-tools`), which deletes
    a tag alone on `DELETE /v2/<name>/manifests/<tag>`: the untag tests' delete-tag method. Not
    in the 2.8/3.x matrix (no GC, no auth, manifests in memory). Shared by the session: name
    repositories with `repo_prefix`. Skip (laptop) or fail (CI=true) without the binary."""
    binary = tool_binary("crane")
    if binary is None:
        _unavailable(f"no {TOOLS_BIN / 'crane'}: run `make go-tools` (needs Go)")
    with CraneRegistry(binary) as process:
        yield process


@pytest.fixture(scope="session")
def capabilities(registry_kind: RegistryKind, registry: RegistryProcess) -> Capabilities:
    """What the session registry does (tests/harness/probes.py), probed once per registry and
    written to build/compat/<id>.json with the registry's version."""
    found = probe(registry.url)
    found.write(COMPAT_DIR / f"{registry_kind.id}.json")
    (COMPAT_DIR / f"{registry_kind.id}.version").write_text(registry_kind.version() + "\n")
    return found


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
