"""`retention init` against the real registry: it reads the tags, writes a starter policy that
`validate` accepts and `plan` runs at once, and never overwrites a file unasked."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from tests.harness.registry import AuthRegistry, RegistryProcess
from tests.harness.seed import Pusher

NOW = datetime.now(UTC)


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:7]


def _seed(push: Pusher) -> dict[str, set[str]]:
    """Tag families the way CI leaves them; returns the tags a starter policy must delete."""
    doomed: dict[str, set[str]] = {"apps/web": set()}
    for i, days in enumerate((200, 120)):
        push.push_image("apps/web", f"v1.{i}.0", created=NOW - timedelta(days=days))
    # 12 main builds, 7..40 days old: last 10 and newer than 30d keep all but the two oldest
    for i in range(12):
        tags = [f"main-{_sha(str(i))}"] + (["latest"] if i == 11 else [])
        push.push_image("apps/web", tags, created=NOW - timedelta(days=40 - 3 * i))
        if i < 2:
            doomed["apps/web"].add(tags[0])
    # 8 PR builds, 20..55 days old: last 5 keeps the 5 newest, the 3 oldest go
    for n in range(8):
        tag = f"pr-{100 + n}-{_sha('pr' + str(n))}"
        push.push_image("apps/web", tag, created=NOW - timedelta(days=20 + 5 * n))
        if n >= 5:
            doomed["apps/web"].add(tag)
    base = push.push_image(
        "base/python", ["3.11", "v3.11.7"], kind="oci-index", created=NOW - timedelta(days=300)
    )
    push.push_cosign_signature("base/python", base)
    for i in range(3):
        when = NOW - timedelta(days=2 * i)
        push.push_image("base/python", f"nightly-{when:%Y%m%d}", kind="oci-index", created=when)
    return doomed


def test_init_writes_a_policy_that_validates_and_plans(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doomed = _seed(fresh_pusher)
    policy = tmp_path / "policy.yaml"

    assert main(["init", "--registry", fresh_registry.url, "-o", str(policy)]) == 0
    text = policy.read_text(encoding="utf-8")
    assert "It read 2 repositories and 29 tags" in text
    assert "# pull-request builds: 8 tags in 1 repository" in text
    assert "# branch builds (<branch>-<git sha>): 12 tags in 1 repository" in text
    assert "sha256-<digest>.sig/.att/.sbom, 1 tag) need no rule" in text
    err = capsys.readouterr().err
    assert f"retention plan -p {policy}" in err

    assert main(["validate", str(policy)]) == 0
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "--format", "json"]) == 0
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    deleted: dict[str, set[str]] = {}
    for entry in plan["deletions"]:
        deleted.setdefault(entry["repository"], set()).update(entry["tags"])
    assert deleted == doomed
    assert plan["registry"].rstrip("/") == fresh_registry.url.rstrip("/")


def test_init_never_overwrites_without_force(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fresh_pusher.push_image("apps/web", ["v1.0.0", "pr-1"])
    policy = tmp_path / "policy.yaml"
    policy.write_text("mine\n", encoding="utf-8")

    assert main(["init", "--registry", fresh_registry.url, "-o", str(policy)]) == 1
    assert policy.read_text(encoding="utf-8") == "mine\n"
    err = capsys.readouterr().err
    assert "already exists; not overwriting it" in err
    assert "hint: pass --force" in err

    assert main(["init", "--registry", fresh_registry.url, "-o", str(policy), "--force"]) == 0
    assert "- name: pull-requests" in policy.read_text(encoding="utf-8")


def test_init_without_output_prints_the_policy(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh_pusher.push_image("apps/api", ["latest", "main-abcdef1"])
    assert main(["init", "--registry", fresh_registry.url, "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# Starter retention policy for")
    assert "- name: branch-builds" in captured.out
    assert captured.err == ""


def test_init_with_credentials_writes_a_reference_never_the_password(
    auth_registry: AuthRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Pusher(auth_registry.url, auth=auth_registry.auth) as push:
        push.push_image("init/app", ["v2.0.0", "pr-7-abcdef1"])
    monkeypatch.setenv("INIT_TEST_PASSWORD", auth_registry.password)
    policy = tmp_path / "policy.yaml"
    argv = ["init", "--registry", auth_registry.url, "-o", str(policy)]
    creds = ["--username", auth_registry.username, "--password-env", "INIT_TEST_PASSWORD"]

    assert main(argv + creds) == 0
    text = policy.read_text(encoding="utf-8")
    assert "${INIT_TEST_PASSWORD}" in text
    assert auth_registry.password not in text
    assert auth_registry.password not in capsys.readouterr().err
    assert main(["plan", "-p", str(policy)]) == 0


def test_init_names_an_unset_password_variable(
    auth_registry: AuthRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("INIT_TEST_UNSET", raising=False)
    argv = ["init", "--registry", auth_registry.url, "-o", str(tmp_path / "p.yaml")]
    argv += ["--username", auth_registry.username, "--password-env", "INIT_TEST_UNSET"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "environment variable INIT_TEST_UNSET is not set" in err
    assert "hint: export INIT_TEST_UNSET" in err
    assert not (tmp_path / "p.yaml").exists()


def test_init_without_credentials_on_an_auth_registry_says_how_to_log_in(
    auth_registry: AuthRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    assert main(["init", "--registry", auth_registry.url, "-o", str(tmp_path / "p.yaml")]) == 1
    err = capsys.readouterr().err
    assert "401" in err
    assert "hint:" in err
    assert not (tmp_path / "p.yaml").exists()


def _age_revisions(storage: Path, days: float) -> None:
    """Make every manifest revision look pushed `days` ago (the link's mtime is the push time):
    what waiting would do, without waiting."""
    when = (NOW - timedelta(days=days)).timestamp()
    for link in (storage / "docker/registry/v2/repositories").glob(
        "**/_manifests/revisions/sha256/*/link"
    ):
        os.utime(link, (when, when))


def test_init_with_storage_proposes_an_untagged_rule_with_its_counts(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `latest` pushed 6 times: 5 earlier versions are left untagged, 10..30 days old
    pushed = [
        fresh_pusher.push_image("apps/web", "latest", created=NOW - timedelta(days=days))
        for days in (30, 25, 20, 15, 10, 1)
    ]
    fresh_pusher.push_image("apps/web", "v1.0.0", created=NOW - timedelta(days=40))
    policy = tmp_path / "policy.yaml"
    storage = str(fresh_registry.storage_dir)
    argv = ["init", "--registry", fresh_registry.url, "--storage", storage, "-o", str(policy)]
    assert main(argv) == 0
    text = policy.read_text(encoding="utf-8")
    assert f"    filesystem: {json.dumps(storage)}" in text
    assert (
        "untagged manifests (earlier pushes of re-pushed tags, pushes by digest): 5 untagged "
        "manifests in 1 repository" in text
    )
    assert "    match: {untagged: true}\n    keep: {last: 3, newer_than: 7d}" in text
    assert "found 5 untagged manifests in 1 repositories" in capsys.readouterr().err
    assert main(["validate", str(policy)]) == 0

    plan_file = tmp_path / "plan.json"
    plan_argv = ["plan", "-p", str(policy), "-o", str(plan_file), "--format", "json"]
    # just pushed: every untagged manifest is within the in-flight hour, and kept
    assert main(plan_argv) == 0
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    assert plan["inventory_source"] == "storage"
    assert [e for e in plan["deletions"] if not e["tags"]] == []
    young = [e for e in plan["kept"] if e["digest"] == pushed[0].digest]
    assert "before the inventory was taken, kept" in young[0]["reason"]

    # a day later (push times aged on disk): keep 3, so the 2 oldest earlier `latest` go
    _age_revisions(fresh_registry.storage_dir, 1)
    assert main(plan_argv) == 0
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    gone = {e["digest"]: e for e in plan["deletions"] if not e["tags"]}
    assert set(gone) == {pushed[0].digest, pushed[1].digest}
    for entry in gone.values():
        assert entry["rule"] == "untagged"
        assert "untagged (was `latest` until " in entry["reason"]
