"""Invariant 5 through the real command line: with `--verbose` (HTTP summaries on), a plan
against an authenticated registry never shows the password or its Basic encoding — not on
stdout, not on stderr, not in the plan file, not in the error of a refused login."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.registry import AuthRegistry
from tests.harness.seed import Pusher

POLICY = """\
version: 1
registry:
  url: {url}
  auth:
    username: ${{REG_USER}}
    password: ${{REG_PASS}}
rules:
  - name: old-builds
    match:
      tags: ['build-.*']
    keep:
      last: 1
"""


def _run(
    args: list[str], tmp_path: Path, user: str, password: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),  # no docker config.json of the person running tests
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "REG_USER": user,
        "REG_PASS": password,
    }
    return subprocess.run(
        [sys.executable, "-m", "retention", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture
def policy(auth_registry: AuthRegistry, tmp_path: Path, repo_prefix: str) -> Path:
    with Pusher(auth_registry.url, auth=auth_registry.auth) as pusher:
        for tag in ("build-1", "build-2", "build-3"):
            pusher.push_image(f"{repo_prefix}/app", tag)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(url=auth_registry.url))
    return path


def _secrets(user: str, password: str) -> list[str]:
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def test_verbose_plan_never_shows_the_password(
    auth_registry: AuthRegistry, policy: Path, tmp_path: Path
) -> None:
    user, password = auth_registry.auth
    plan = tmp_path / "plan.json"
    done = _run(
        ["--verbose", "plan", "-p", str(policy), "-o", str(plan)], tmp_path, *auth_registry.auth
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"DEBUG: GET {auth_registry.url}/v2/_catalog 200" in done.stderr  # summaries on
    assert plan.exists()
    for secret in _secrets(user, password):
        assert secret not in done.stdout
        assert secret not in done.stderr
        assert secret not in plan.read_text()


def test_refused_login_error_never_shows_the_password(
    auth_registry: AuthRegistry, policy: Path, tmp_path: Path
) -> None:
    user = auth_registry.username
    wrong = "wrong-" + auth_registry.password
    done = _run(["--verbose", "plan", "-p", str(policy)], tmp_path, user, wrong)
    assert done.returncode == 1
    assert "rejected the credentials" in done.stderr
    for secret in _secrets(user, wrong):
        assert secret not in done.stdout
        assert secret not in done.stderr
