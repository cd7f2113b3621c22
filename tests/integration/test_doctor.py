"""`retention doctor` against real registries: one ok/warn/fail line per check."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from retention.doctor import run_checks
from retention.policy.model import RegistryConfig
from retention.registry.client import RegistryClient
from tests.harness.registry import AuthRegistry, RegistryProcess
from tests.harness.seed import Pusher
from tests.support.applykit import write_policy


def _lines(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    out = capsys.readouterr().out
    return {
        line.split(":", 1)[0].split(None, 1)[1]: line.split(None, 1)[0]
        for line in out.splitlines()
        if not line.startswith(" ")
    }


def test_a_healthy_registry_passes_every_check(
    registry: RegistryProcess,
    pusher: Pusher,
    unique_repo: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pusher.push_image(unique_repo, "v1")
    policy = write_policy(tmp_path / "p.yaml", registry.url, "x")
    mark = registry.log_mark()

    code = main(["doctor", "-p", str(policy), "--repository", unique_repo])

    assert code == 0
    assert _lines(capsys) == {
        "reachable": "ok",
        "api version": "ok",
        "credentials": "ok",
        "catalog": "ok",
        "deletion": "ok",
        "clock": "ok",
    }
    deletes = [e for e in registry.wait_for_requests(mark, 1) if e.method == "DELETE"]
    assert [(e.path, e.status) for e in deletes] == [
        (f"/v2/{unique_repo}/manifests/sha256:{'0' * 64}", 404)
    ]
    assert pusher.pull_complete(unique_repo, "v1")


def test_deletion_disabled_fails_with_the_fix(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fresh_pusher.push_image("team/app", "v1")
    fresh_registry.restart(delete_enabled=False)
    policy = write_policy(tmp_path / "p.yaml", fresh_registry.url, "team")

    assert main(["doctor", "-p", str(policy)]) == 1

    out = capsys.readouterr().out
    assert "fail  deletion: disabled (DELETE of the all-zero digest in team/app: 405" in out
    assert "hint: set storage.delete.enabled: true" in out
    assert fresh_pusher.pull_complete("team/app", "v1")


def test_rejected_credentials_fail_and_never_show(
    auth_registry: AuthRegistry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = write_policy(tmp_path / "p.yaml", auth_registry.url, "x", auth=True)
    monkeypatch.setenv("REGISTRY_USER", auth_registry.username)
    monkeypatch.setenv("REGISTRY_PASSWORD", "wrong-password-123")

    assert main(["doctor", "-p", str(policy)]) == 1

    captured = capsys.readouterr()
    assert "fail  credentials: policy: rejected" in captured.out
    assert "wrong-password-123" not in captured.out + captured.err

    monkeypatch.setenv("REGISTRY_PASSWORD", auth_registry.password)
    code = main(["doctor", "-p", str(policy), "--repository", "x/none"])
    lines = _lines(capsys)
    assert (code, lines["credentials"], lines["deletion"]) == (0, "ok", "ok")


def test_unreachable_registry_fails_the_first_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = write_policy(tmp_path / "p.yaml", f"http://127.0.0.1:{port}", "x")
    assert main(["doctor", "-p", str(policy)]) == 1
    assert _lines(capsys) == {"reachable": "fail"}


@pytest.mark.parametrize(
    ("offset", "status"), [(timedelta(minutes=1), "ok"), (timedelta(minutes=9), "warn")]
)
def test_clock_skew_against_the_registry_date(
    registry: RegistryProcess, offset: timedelta, status: str
) -> None:
    with RegistryClient(RegistryConfig(url=registry.url), env={}) as client:
        checks = run_checks(client, now=datetime.now(UTC) + offset, repository="x/none")
    (clock,) = [c for c in checks if c.name == "clock"]
    assert clock.status == status
    assert "differs from the registry's by" in clock.message
