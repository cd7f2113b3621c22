"""`python -m retention plan` as a real process: streams and exit codes as a shell sees them,
and `--verbose` against a basic-auth registry never printing the password (invariant 5)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness.registry import AuthRegistry, RegistryProcess
from tests.harness.seed import Pusher
from tests.support.cliscene import AS_OF_TEXT, Scene

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    base |= {
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),  # no credentials of the machine's user
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "retention", *args],
        cwd=ROOT,
        env=base | env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plan_in_a_subprocess(scene: Scene, registry: RegistryProcess, tmp_path: Path) -> None:
    args = ["plan", "-p", str(scene.policy), "--as-of", AS_OF_TEXT, *scene.select]
    done = _run([*args, "--detailed-exitcode"], tmp_path)
    assert done.returncode == 2, done.stderr  # deletions present
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Plan for {registry.url} as of {AS_OF_TEXT}")
    assert lines[-1].startswith("Plan: 5 images (3 tags) to delete in 2 repositories, ~")

    done = _run([*args, "--format", "json", "-o", str(tmp_path / "plan.json")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (tmp_path / "plan.json").read_text()  # data on stdout, as in the file
    assert json.loads(done.stdout)["summary"]["images_deleted"] == 5
    assert "WARNING: 1 repository is matched by no rule" in done.stderr

    done = _run(["plan", "-p", str(scene.policy), "--repository", "(["], tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("error: --repository '([' is not a valid RE2 pattern")
    assert "Traceback" not in done.stderr


def test_verbose_plan_with_basic_auth_never_prints_the_password(
    auth_registry: AuthRegistry, repo_prefix: str, tmp_path: Path
) -> None:
    with Pusher(auth_registry.url, auth=auth_registry.auth) as pusher:
        pusher.push_image(f"{repo_prefix}/app", ["a", "b"])
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "registry:\n"
        f"  url: {auth_registry.url}\n"
        "  auth: {username: '${REGISTRY_USER}', password: '${REGISTRY_PASSWORD}'}\n"
        "rules:\n"
        f"  - {{name: app, match: {{repositories: ['{repo_prefix}/.*']}}, keep: {{last: 1}}}}\n"
    )
    user, password = auth_registry.username, auth_registry.password
    args = ["--verbose", "plan", "-p", str(policy), "--repository", f"{repo_prefix}/.*"]
    secrets = [password, base64.b64encode(f"{user}:{password}".encode()).decode()]

    done = _run(args, tmp_path, REGISTRY_USER=user, REGISTRY_PASSWORD=password)
    assert done.returncode == 0, done.stderr
    assert "No changes." in done.stdout  # one image, kept by `last: 1`
    assert "DEBUG" in done.stderr  # verbose is really on: HTTP summaries are logged
    for secret in secrets:
        assert secret not in done.stdout + done.stderr

    # a wrong password: the error and --verbose's traceback name neither password
    wrong = "not-" + password
    done = _run(args, tmp_path, REGISTRY_USER=user, REGISTRY_PASSWORD=wrong)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "error: " in done.stderr
    assert "the registry rejected the credentials from policy" in done.stderr
    assert "hint: check the username and password" in done.stderr  # not the catalog scope
    for secret in [*secrets, wrong, base64.b64encode(f"{user}:{wrong}".encode()).decode()]:
        assert secret not in done.stdout + done.stderr
