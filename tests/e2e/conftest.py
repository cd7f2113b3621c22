"""E2E fixtures: the small scene the plan, inventory and explain tests share. (Every test's own
cache and state folders come from tests/conftest.py.)"""

from __future__ import annotations

import pytest

from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.support.cliscene import Scene, build


@pytest.fixture(scope="session")
def scene(registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """The `tests.support.cliscene` repositories under the prefix `e2e-cli-scene`, and their
    policy; pushed once per session. Tests only read it (plan, inventory, explain)."""
    with Pusher(registry.url) as pusher:
        return build(pusher, "e2e-cli-scene", registry.url, tmp_path_factory.mktemp("scene"))
