"""`retention apply` from the command line: confirmation, refusals, summary, exit codes, resume;
and one run in a real subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from retention import cli
from retention import plan as plan_mod
from retention.cli import console
from retention.oci import format_time
from retention.schedule import acquire_lock, lock_path_for
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher
from tests.support.applykit import load, make_plan, manifest_exists, write_policy

ROOT = Path(__file__).resolve().parents[2]


class Planned(NamedTuple):
    """A saved plan that deletes `old` (and keeps a newer image), and the policy it came from."""

    plan_file: Path
    policy_path: Path
    old: Pushed


@pytest.fixture
def planned(registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path) -> Planned:
    now = datetime.now(UTC)
    old = pusher.push_image(f"{repo_prefix}/app", "old", created=now - timedelta(days=9))
    pusher.push_image(f"{repo_prefix}/app", "new", created=now - timedelta(days=1))
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    plan = make_plan(load(policy_path), repo_prefix)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(replace(plan, policy_path=str(policy_path))))
    return Planned(plan_file, policy_path, old)


def _module(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m retention ARGS` from the checkout, without a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "retention", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_a_terminal_apply_needs_yes(
    registry: RegistryProcess, planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file, _, old = planned
    assert cli.main(["apply", str(plan_file), "--journal", str(tmp_path / "j")]) == 1
    err = capsys.readouterr().err
    assert "stdin is not a terminal" in err and "pass --yes" in err
    assert manifest_exists(registry.url, old.repo, old.digest)


@pytest.mark.parametrize(("answer", "code"), [("no\n", 1), ("\n", 1), ("yes\n", 0)])
def test_on_a_terminal_apply_asks_first(
    registry: RegistryProcess,
    planned: Planned,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
) -> None:
    plan_file, _, old = planned
    monkeypatch.setattr(console, "stdin_is_tty", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))

    assert cli.main(["apply", str(plan_file), "--journal", str(tmp_path / "j")]) == code

    err = capsys.readouterr().err
    assert f"apply: delete 1 image(s) in 1 repository(ies) of {registry.url}" in err
    assert f"Delete 1 image(s) from {registry.url}? Type 'yes' to continue:" in err
    if code == 0:
        assert "deleted 1, stale 0, already gone 0, failed 0" in err
        assert not manifest_exists(registry.url, old.repo, old.digest)
    else:
        assert "aborted: nothing was deleted" in err
        assert manifest_exists(registry.url, old.repo, old.digest)


def test_apply_waits_for_no_one_while_a_scheduler_holds_the_policy_lock(
    registry: RegistryProcess, planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file, policy_path, old = planned
    with acquire_lock(lock_path_for(str(policy_path), os.environ), purpose="schedule run"):
        assert cli.main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")]) == 1
    err = capsys.readouterr().err
    assert "schedule run" in err and "Traceback" not in err
    assert manifest_exists(registry.url, old.repo, old.digest)
    # once the lock is free the same command goes through
    assert cli.main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")]) == 0
    assert not manifest_exists(registry.url, old.repo, old.digest)


def test_apply_honours_the_lock_a_scheduler_was_given(
    registry: RegistryProcess, planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file, _, old = planned
    lock = tmp_path / "shared.lock"  # as in `retention schedule --lock PATH`
    argv = ["apply", str(plan_file), "--yes", "--lock", str(lock), "--journal", str(tmp_path / "j")]
    with acquire_lock(lock, purpose="schedule run"):
        assert cli.main(argv) == 1
    assert "schedule run" in capsys.readouterr().err
    assert manifest_exists(registry.url, old.repo, old.digest)


def test_a_rerun_reports_the_earlier_run_and_exits_0(
    registry: RegistryProcess, planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file, _, _ = planned
    args = ["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "deleted 0, stale 0, already gone 0, failed 0; 1 done by an earlier run" in (
        capsys.readouterr().err
    )


def test_a_plan_made_as_of_a_past_date_applies_at_once(
    registry: RegistryProcess, planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plan --as-of` is when the policy is evaluated, not when the inventory was taken: the plan
    is seconds old, so apply does not refuse it as a year old (its age is from generated_at)."""
    _, policy_path, old = planned
    plan_file = tmp_path / "as-of.json"
    # 36 h ago: past the 24 h plan age, and the newer image (a day old) is then only 12 h ahead,
    # within the slack for clock skew (a date further ahead would be an unknown age)
    as_of = (datetime.now(UTC) - timedelta(hours=36)).replace(microsecond=0)
    argv = ["plan", "-p", str(policy_path), "--as-of", format_time(as_of)]
    assert cli.main([*argv, "-o", str(plan_file), "-q"]) == 0
    doc = plan_mod.from_json(plan_file.read_bytes(), "as-of.json")
    assert doc.as_of == as_of
    assert datetime.now(UTC) - doc.generated_at < timedelta(minutes=5)
    assert [e.digest for e in doc.deletions] == [old.digest]
    capsys.readouterr()

    code = cli.main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")])

    err = capsys.readouterr().err
    assert code == 0, err
    assert "ago, longer than the maximum plan age" not in err
    assert not manifest_exists(registry.url, old.repo, old.digest)


def test_refusals_say_what_to_do(
    registry: RegistryProcess, planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file, policy_path, old = planned
    plan = plan_mod.from_json(plan_file.read_bytes(), "plan.json")
    aged = tmp_path / "aged.json"
    aged.write_text(
        plan_mod.to_json(replace(plan, generated_at=plan.generated_at - timedelta(hours=30)))
    )
    assert cli.main(["apply", str(aged), "--yes"]) == 1
    err = capsys.readouterr().err
    assert "the plan was made 1d6h ago, longer than the maximum plan age 1d" in err
    assert "hint: make a new plan, or pass --max-plan-age" in err
    assert cli.main(["apply", str(aged), "--yes", "--max-plan-age", "2d", "--journal",
                     str(tmp_path / "j")]) == 0  # fmt: skip
    assert not manifest_exists(registry.url, old.repo, old.digest)

    orphan = tmp_path / "orphan.json"
    orphan.write_text(plan_mod.to_json(replace(plan, policy_path=str(tmp_path / "gone.yaml"))))
    assert cli.main(["apply", str(orphan), "--yes"]) == 1
    err = capsys.readouterr().err
    assert "which is not a file here" in err and "pass -p POLICY" in err

    assert cli.main(["apply", "--yes"]) == 1
    assert "apply needs a plan file, or -p POLICY" in capsys.readouterr().err
    assert cli.main(["apply", "-p", str(policy_path)]) == 1
    assert "needs --yes" in capsys.readouterr().err
    assert cli.main(["apply", str(plan_file), "--max-plan-age", "soon"]) == 1
    assert "not a duration like 24h" in capsys.readouterr().err


def test_a_changed_policy_is_warned_about(
    registry: RegistryProcess, planned: Planned, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file, policy_path, _ = planned
    policy_path.write_text(policy_path.read_text() + "# edited after the plan\n")
    assert cli.main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")]) == 0
    assert f"policy {policy_path} changed since the plan was made" in capsys.readouterr().err


def test_apply_in_a_real_subprocess(
    registry: RegistryProcess, planned: Planned, tmp_path: Path
) -> None:
    plan_file, _, old = planned
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    done = _module(["apply", str(plan_file)], env)
    assert done.returncode == 1 and "pass --yes" in done.stderr  # no terminal, no --yes
    done = _module(["apply", str(plan_file), "--yes"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # apply writes no data, only its summary on stderr
    journals = list((tmp_path / "state" / "retention" / "journal").glob("127.0.0.1_*-*.jsonl"))
    assert len(journals) == 1 and f"journal: {journals[0]}" in done.stderr
    assert not manifest_exists(registry.url, old.repo, old.digest)


def test_plan_and_apply_in_one_step(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    old = fresh_pusher.push_image(
        "team/app", "old", kind="oci-index", created=now - timedelta(days=9)
    )
    new = fresh_pusher.push_image("team/app", "new", created=now - timedelta(days=1))
    other = fresh_pusher.push_image("misc/tool", "v1", created=now - timedelta(days=99))
    policy_path = write_policy(tmp_path / "p.yaml", fresh_registry.url, "team")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    assert cli.main(["apply", "-p", str(policy_path), "--yes"]) == 0

    err = capsys.readouterr().err
    assert "Plan: 3 images (1 tag) to delete in 1 repository" in err  # what is about to go
    assert "deleted 3, stale 0, already gone 0, failed 0" in err
    assert not manifest_exists(fresh_registry.url, "team/app", old.digest)
    for image in (new, other):
        assert fresh_pusher.pull_complete(image.repo, image.tag)
    (journal,) = (tmp_path / "state" / "retention" / "journal").glob("*.jsonl")
    assert f"journal: {journal}" in err
    # a second run plans again, finds nothing to delete, and touches nothing
    assert cli.main(["apply", "-p", str(policy_path), "--yes"]) == 0
    assert "the plan deletes nothing" in capsys.readouterr().err
