"""E2E fixtures: every CLI run gets its own cache and state folders, never the user's; and the
small scene the plan, inventory and explain tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.support.cliscene import Scene, build


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`plan` caches blobs under $XDG_CACHE_HOME and `apply` journals under $XDG_STATE_HOME: point
    both into this test's folder, so tests neither share a cache nor write to ~."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture(scope="session")
def scene(registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """The `tests.support.cliscene` repositories under the prefix `e2e-cli-scene`, and their
    policy; pushed once per session. Tests only read it (plan, inventory, explain)."""
    with Pusher(registry.url) as pusher:
        return build(pusher, "e2e-cli-scene", registry.url, tmp_path_factory.mktemp("scene"))
