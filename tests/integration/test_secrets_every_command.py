"""Invariant 5 for every command that logs in: plan, inventory, explain, apply in one step,
schedule --once, init and doctor, with --verbose in text and JSON logs, with the right password
and with a wrong one. Neither the password nor its Basic encoding appears on stdout, stderr, in
log records or in the files written. (apply PLAN, restore and doctor with the right password:
test_apply_secrets.py; plan in a subprocess: test_client_secrets_cli.py.)"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from tests.harness.registry import AuthRegistry
from tests.harness.seed import Pusher
from tests.support.applykit import write_policy

COMMANDS = {
    "plan": "plan -p {policy} -o {out}/plan.json --format json",
    "inventory": "inventory -p {policy} --format json -o {out}/inventory.json",
    "explain": "explain -p {policy} {repo}",
    "apply-one-step": "apply -p {policy} --yes --journal {out}/journal.jsonl",
    "schedule-once": "schedule -p {policy} --once --history {out}/history.jsonl",
    "init": "init --registry {url} -o {out}/init.yaml --username {user} --password-env REG_PW",
    "doctor": "doctor -p {policy}",
}


@pytest.mark.parametrize("password_ok", [True, False], ids=["right-password", "wrong-password"])
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_command_ever_shows_the_password(
    auth_registry: AuthRegistry,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    log_format: str,
    password_ok: bool,
) -> None:
    user = auth_registry.username
    password = auth_registry.password if password_ok else f"wrong-{auth_registry.password}"
    monkeypatch.setenv("REGISTRY_USER", user)
    monkeypatch.setenv("REGISTRY_PASSWORD", password)
    monkeypatch.setenv("REG_PW", password)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no docker config of whoever runs this
    repo = f"{repo_prefix}/app"
    now = datetime.now(UTC)
    with Pusher(auth_registry.url, auth=auth_registry.auth) as pusher:
        pusher.push_image(repo, "old", created=now - timedelta(days=9))
        pusher.push_image(repo, "new", created=now - timedelta(days=1))
    policy = write_policy(tmp_path / "p.yaml", auth_registry.url, repo_prefix, auth=True)
    out = tmp_path / "out"
    out.mkdir()
    argv = COMMANDS[command].format(
        policy=policy, out=out, repo=repo, url=auth_registry.url, user=user
    )
    caplog.set_level(logging.DEBUG)

    code = main(["--verbose", "--log-format", log_format, *argv.split()])

    captured = capsys.readouterr()
    assert (code == 0) == password_ok, captured.err[-3000:]
    assert "DEBUG" in captured.err or '"debug"' in captured.err  # verbose really was on
    texts = {
        "stdout": captured.out,
        "stderr": captured.err,
        "logs": caplog.text + "".join(str(r.args) for r in caplog.records),
        **{f.name: f.read_text() for f in out.iterdir()},
    }
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    for where, text in texts.items():
        for secret in (password, basic, "Authorization:"):
            assert secret not in text, f"{secret[:4]}… appears in {where}"
