"""JSON nested too deeply to parse, from each source the registry controls (issue 13, item 5):
a manifest, a config, tags/list, an error body, a token response. Each is a clear error on
stderr (exit 1), never a RecursionError traceback. (A DELETE's answer: test_hostile_apply.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retention.cli import main
from retention.errors import AuthError, ProtocolError, RegistryError
from retention.policy.model import RegistryConfig
from retention.registry import RegistryClient, RetryPolicy
from tests.harness.hostile import HostileRegistry, push_deep_config_image
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.support.applykit import write_policy

RETRY = RetryPolicy(attempts=2, base=0.01, cap=0.02, budget=5.0)


@pytest.fixture
def hostile(registry: RegistryProcess, tmp_path: Path) -> Iterator[HostileRegistry]:
    with HostileRegistry(registry.url, tmp_path / "hostile") as front:
        yield front


def _client(hostile: HostileRegistry) -> RegistryClient:
    return RegistryClient(RegistryConfig(hostile.url), env={}, retry=RETRY, sleep=lambda _s: None)


def _plan(hostile: HostileRegistry, prefix: str, tmp_path: Path) -> tuple[int, str]:
    policy = write_policy(tmp_path / "p.yaml", hostile.url, prefix, last=1)
    return main(["plan", "-p", str(policy), "-o", str(tmp_path / "plan.json"), "--quiet"]), ""


def _clear_error(code: int, err: str, *words: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err and "RecursionError" not in err and "recursion" not in err
    assert err.startswith("error: "), err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize(
    ("scenario", "params", "words"),
    [
        ("deep-json-manifest", {"status": None}, ("not valid JSON", "nested too deeply")),
        ("deep-json-tags", {"status": None}, ("not valid JSON",)),
        ("deep-json-error", {"status": 400}, ("HTTP 400",)),
    ],
    ids=["manifest", "tags-list", "error-body"],
)
def test_plan_reports_deep_json_clearly(
    hostile: HostileRegistry,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scenario: str,
    params: dict[str, int | None],
    words: tuple[str, ...],
) -> None:
    repo = f"{repo_prefix}/app"
    pusher.push_image(repo, ["v1", "v2"])
    extra = {k: v for k, v in params.items() if v is not None}
    hostile.enable(scenario, repo=repo, **extra)
    capsys.readouterr()
    code, _ = _plan(hostile, repo_prefix, tmp_path)
    _clear_error(code, capsys.readouterr().err, *words)


@pytest.mark.parametrize(
    ("scenario", "call", "error"),
    [
        ("deep-json-manifest", "get_manifest", ProtocolError),
        ("deep-json-tags", "list_tags", ProtocolError),
        ("deep-json-error", "get_manifest", RegistryError),
    ],
    ids=["manifest", "tags-list", "error-body"],
)
def test_client_raises_a_registry_error_for_deep_json(
    hostile: HostileRegistry,
    pusher: Pusher,
    unique_repo: str,
    scenario: str,
    call: str,
    error: type[RegistryError],
) -> None:
    pusher.push_image(unique_repo, "v1")
    hostile.enable(scenario, repo=unique_repo)
    with _client(hostile) as client, pytest.raises(error):
        if call == "list_tags":
            client.list_tags(unique_repo)
        else:
            client.get_manifest(unique_repo, "v1")


def test_a_deep_config_is_a_clear_error(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a registry of its own: the image is real, and would fail every later walk of a shared one
    push_deep_config_image(fresh_pusher, f"{repo_prefix}/app", "v1")
    capsys.readouterr()
    with HostileRegistry(fresh_registry.url, tmp_path / "hostile") as hostile:
        code, _ = _plan(hostile, repo_prefix, tmp_path)
    _clear_error(code, capsys.readouterr().err, "nested too deeply")


def test_a_deep_token_response_is_a_clear_error(
    hostile: HostileRegistry,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pusher.push_image(f"{repo_prefix}/app", "v1")
    hostile.enable("deep-json-token")
    with _client(hostile) as client, pytest.raises(AuthError, match="not JSON"):
        client.ping()
    capsys.readouterr()
    code, _ = _plan(hostile, repo_prefix, tmp_path)
    _clear_error(code, capsys.readouterr().err, "token server", "not JSON")
    assert hostile.proxy.count("GET", r"^/token") >= 1
