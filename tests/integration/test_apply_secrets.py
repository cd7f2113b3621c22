"""Invariant 5 against the real registry: credentials never appear in output, logs, journals or
plan files — with --verbose, in text and JSON logs, through apply, restore and doctor."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention import plan as plan_mod
from retention.cli import main
from tests.harness.registry import AuthRegistry
from tests.harness.seed import Pusher, pull_complete
from tests.support.applykit import load, make_plan, manifest_exists, write_policy


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_credentials_never_appear_anywhere(
    auth_registry: AuthRegistry,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    log_format: str,
) -> None:
    user, password = auth_registry.username, auth_registry.password
    env = {"REGISTRY_USER": user, "REGISTRY_PASSWORD": password}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    now = datetime.now(UTC)
    with Pusher(auth_registry.url, auth=auth_registry.auth) as pusher:
        old = pusher.push_image(f"{repo_prefix}/app", "old", created=now - timedelta(days=9))
        pusher.push_cosign_signature(f"{repo_prefix}/app", old)
        pusher.push_image(f"{repo_prefix}/app", "new", created=now - timedelta(days=1))
    policy_path = write_policy(tmp_path / "p.yaml", auth_registry.url, repo_prefix, auth=True)
    plan = make_plan(load(policy_path, env), repo_prefix, env=env)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(plan))
    journal = tmp_path / "journal.jsonl"
    caplog.set_level(logging.DEBUG)
    common = ["-v", "--log-format", log_format]

    assert main([*common, "apply", str(plan_file), "--yes", "--journal", str(journal)]) == 0
    assert not manifest_exists(
        auth_registry.url, f"{repo_prefix}/app", old.digest, auth_registry.auth
    )
    assert main([*common, "restore", str(journal), "-p", str(policy_path), "--yes"]) == 0
    assert pull_complete(auth_registry.url, f"{repo_prefix}/app", "old", auth=auth_registry.auth)
    assert main([*common, "doctor", "-p", str(policy_path)]) == 0

    captured = capsys.readouterr()
    texts = {
        "stdout": captured.out,
        "stderr": captured.err,
        "logs": caplog.text + "".join(str(r.args) for r in caplog.records),
        "journal": journal.read_text(),
        "plan": plan_file.read_text(),
    }
    assert "DEBUG" in texts["stderr"] or '"debug"' in texts["stderr"]  # verbose really was on
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    for where, text in texts.items():
        for secret in (password, basic, "Authorization"):
            assert secret not in text, f"{secret[:4]}… appears in {where}"
