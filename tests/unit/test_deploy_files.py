"""deploy/: the Kubernetes manifests parse and hold the settings we rely on; so do the systemd
units (parsed as INI) and the Dockerfile. Docker, Kubernetes and systemd do not run here."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def cronjob() -> dict[str, Any]:
    (job,) = [d for d in k8s_documents() if d["kind"] == "CronJob"]
    return job


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def test_every_manifest_parses_and_names_its_kind() -> None:
    docs = k8s_documents()
    assert {d["kind"] for d in docs} >= {"CronJob", "PersistentVolumeClaim"}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]


def test_cronjob_never_overlaps_and_never_retries() -> None:
    spec = cronjob()["spec"]
    assert cronjob()["apiVersion"] == "batch/v1"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert pod_spec()["restartPolicy"] == "Never"
    assert pod_spec()["terminationGracePeriodSeconds"] >= 60


def test_cronjob_runs_schedule_once_with_metrics() -> None:
    (container,) = pod_spec()["containers"]
    args = container["args"]
    assert args[:4] == ["schedule", "-p", "/etc/retention/policy.yaml", "--once"]
    assert "--metrics-file" in args
    assert "command" not in container  # the image's ENTRYPOINT is `retention`


def test_cronjob_mounts_policy_read_only_and_credentials_as_docker_config() -> None:
    spec = pod_spec()
    (container,) = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["policy"]["mountPath"] == "/etc/retention" and mounts["policy"]["readOnly"]
    assert mounts["docker-config"]["mountPath"] == "/home/retention/.docker"
    assert mounts["docker-config"]["readOnly"]
    secret = volumes["docker-config"]["secret"]
    assert secret["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
    assert secret["defaultMode"] & 0o040  # group-readable: fsGroup, the files belong to root
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DOCKER_CONFIG"] == "/home/retention/.docker"


def test_cronjob_is_non_root_locked_down_and_resourced() -> None:
    spec = pod_spec()
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert spec["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # with a read-only root filesystem, everything written goes to a mounted volume
    args = container["args"]
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    for flag in ("--metrics-file", "--history", "--lock"):
        value = args[args.index(flag) + 1]
        assert any(value.startswith(w + "/") for w in writable), (flag, value)


def systemd_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: sections, `Key=value`, keys may repeat, `#`/`;` comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate((DEPLOY / "systemd" / name).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{name}:{number}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key and key, f"{name}:{number}: not Key=value: {raw!r}"
        current.setdefault(key, []).append(value)
    return sections


def test_service_is_a_hardened_oneshot_running_schedule_once() -> None:
    unit = systemd_unit("retention.service")
    assert set(unit) == {"Unit", "Service"}
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["Type"] == "oneshot"
    argv = shlex.split(service["ExecStart"])
    assert argv[1:5] == ["schedule", "-p", "/etc/retention/policy.yaml", "--once"]
    assert "--metrics-file" in argv
    assert service["User"] == "retention"
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert service[key] == value, key
    # the metrics file must sit in a writable path under ProtectSystem=strict
    metrics = argv[argv.index("--metrics-file") + 1]
    assert metrics.startswith(service["ReadWritePaths"] + "/")
    assert (
        "StateDirectory" in service and "XDG_STATE_HOME=/var/lib" in unit["Service"]["Environment"]
    )


def test_timer_starts_the_service_and_catches_up_once() -> None:
    unit = systemd_unit("retention.timer")
    timer = {k: v[-1] for k, v in unit["Timer"].items()}
    assert timer["OnCalendar"]
    assert timer["Persistent"] == "true"
    assert timer["Unit"] == "retention.service"
    assert unit["Install"]["WantedBy"] == ["timers.target"]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, rest = stripped.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_wheel_as_non_root_with_retention_as_entrypoint() -> None:
    steps = dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)
    runtime = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    assert any(op == "RUN" and "pip install" in a and ".whl" in a for op, a in runtime)
    (user,) = [a for op, a in runtime if op == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert user.split(":")[0] == str(pod_spec()["securityContext"]["runAsUser"])
    (entrypoint,) = [a for op, a in runtime if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["retention"]
    env = " ".join(a for op, a in runtime if op == "ENV")
    assert "DOCKER_CONFIG=/home/retention/.docker" in env


@pytest.mark.parametrize("name", ["retention.service", "retention.timer"])
def test_unit_files_end_with_a_newline_and_have_no_tabs(name: str) -> None:
    text = (DEPLOY / "systemd" / name).read_text()
    assert text.endswith("\n") and "\t" not in text
