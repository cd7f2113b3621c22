"""Every command given bad input — no such file, a directory, garbage, a registry that does not
answer, a usage mistake — exits 1 with one clear `error:` line and never a traceback.

A usage mistake must exit 1 too, not argparse's 2: `plan --detailed-exitcode` means "changes
present" by 2, and a CI job must never read a typo as a plan with deletions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention import cli
from retention import plan as plan_mod
from retention.journal import Journal
from retention.policy.load import load_policy
from retention.registry import client as client_mod
from tests.support.plans import entry, image_raw, make_plan

UNREACHABLE = "http://127.0.0.1:1"  # nothing listens on port 1
POLICY_TEXT = (
    f"version: 1\nregistry:\n  url: {UNREACHABLE}\n"
    "rules:\n  - name: r\n    match: {}\n    keep: {last: 1}\n"
)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable registry fails after a few quick retries instead of the real backoff."""
    fast = client_mod.RetryPolicy(attempts=2, base=0.01, cap=0.02, budget=0.5)
    monkeypatch.setattr(client_mod, "RetryPolicy", lambda: fast)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "dir").mkdir()
    policy = tmp_path / "unreachable.yaml"
    policy.write_text(POLICY_TEXT)
    (tmp_path / "garbage.json").write_text("{not json\nstill not json\n")
    (tmp_path / "array.json").write_text("[]")
    (tmp_path / "empty.json").write_text("{}")
    plan = make_plan(
        [entry("app", image_raw("old"), tags=["old"])],
        registry=UNREACHABLE,
        generated_at=datetime.now(UTC).replace(microsecond=0),
    )
    loaded, _ = load_policy(str(policy), env={}, require_env=True)
    plan = replace(plan, policy_path=str(policy), policy_sha256=loaded.sha256)
    (tmp_path / "plan.json").write_text(plan_mod.to_json(plan))
    with Journal(tmp_path / "journal.jsonl", registry=UNREACHABLE).open(
        plan_sha256="ab" * 32, policy_path=str(policy)
    ) as journal:
        raw = image_raw("gone")
        journal.intent(
            repository="app",
            digest=entry("app", raw).digest,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=10,
            tags=["gone"],
            parent=None,
            raw=raw,
        )
        journal.outcome("done", repository="app", digest=entry("app", raw).digest)
    return {
        "missing": tmp_path / "missing.yaml",
        "dir": tmp_path / "dir",
        "unreachable": policy,
        "garbage": tmp_path / "garbage.json",
        "array": tmp_path / "array.json",
        "empty": tmp_path / "empty.json",
        "plan": tmp_path / "plan.json",
        "journal": tmp_path / "journal.jsonl",
    }


CASES = {
    # (argv with {names} of files, text the error line must contain)
    "plan-missing-policy": ("plan -p {missing}", "cannot read the file"),
    "plan-policy-is-a-directory": ("plan -p {dir}", "Is a directory"),
    "plan-unreachable": ("plan -p {unreachable}", "connection error"),
    "plan-garbage-inventory": (
        "plan -p {unreachable} --from-inventory {garbage}",
        "cannot read the inventory",
    ),
    "plan-inventory-is-an-array": (
        "plan -p {unreachable} --from-inventory {array}",
        "inventory file is malformed",
    ),
    "inventory-missing-policy": ("inventory -p {missing}", "cannot read the file"),
    "inventory-unreachable": ("inventory -p {unreachable}", "connection error"),
    "explain-policy-is-a-directory": ("explain -p {dir} app", "Is a directory"),
    "explain-unreachable": ("explain -p {unreachable} app:v1", "connection error"),
    "schedule-missing-policy": ("schedule -p {missing} --once", "cannot read the file"),
    "schedule-policy-is-a-directory": ("schedule -p {dir} --once", "Is a directory"),
    "apply-missing-plan": ("apply {missing} --yes", "cannot read plan"),
    "apply-plan-is-a-directory": ("apply {dir} --yes", "cannot read plan"),
    "apply-garbage-plan": ("apply {garbage} --yes", "not valid JSON"),
    "apply-plan-is-an-array": ("apply {array} --yes", "a plan is a JSON object"),
    "apply-empty-plan": ("apply {empty} --yes", "is a required property"),
    "apply-plan-with-policy-dir": ("apply {plan} -p {dir} --yes", "Is a directory"),
    "apply-one-step-missing-policy": ("apply -p {missing} --yes", "cannot read the file"),
    "apply-one-step-unreachable": ("apply -p {unreachable} --yes", "connection error"),
    "apply-plan-for-an-unreachable-registry": (
        "apply {plan} --yes --journal {dir}/j.jsonl",
        "connection error",
    ),
    "restore-missing-journal": ("restore {missing} --yes", "does not exist"),
    "restore-journal-is-a-directory": ("restore {dir} --yes", "cannot read journal"),
    "restore-garbage-journal": ("restore {garbage} --yes", "not a JSON record"),
    "restore-unreachable": ("restore {journal} --yes", "connection error"),
    "doctor-missing-policy": ("doctor -p {missing}", "cannot read the file"),
    "doctor-policy-is-a-directory": ("doctor -p {dir}", "Is a directory"),
    "init-unreachable": (f"init --registry {UNREACHABLE}", "connection error"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("verbosity", ["", "--quiet"], ids=["default", "quiet"])
def test_bad_input_is_one_error_and_exit_1(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], case: str, verbosity: str
) -> None:
    template, expected = CASES[case]
    argv = [*template.format(**files).split(), *([verbosity] if verbosity else [])]

    code = cli.main(argv)

    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "Traceback" not in err + out
    # one line says what went wrong: `error: ...`, or restore's per-manifest `failed: ...`
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(errors) == 1 or (not errors and len(failed) == 1), err
    assert expected in err, err


def test_doctor_of_an_unreachable_registry_fails_its_first_check(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["doctor", "-p", str(files["unreachable"])]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "connection error" in out + err


@pytest.mark.parametrize(
    "argv",
    [
        "plan -p {unreachable} --detailed-exitcode --as-of yesterday",
        "plan --detailed-exitcode",
        "plan -p {unreachable} --detailed-exitcode --no-such-flag",
        "apply {plan} --max-plan-age soon",
        "schedule -p {unreachable} --next many",
        "no-such-command",
    ],
    ids=["bad-as-of", "missing-policy-flag", "unknown-flag", "bad-duration", "bad-count", "cmd"],
)
def test_a_usage_mistake_exits_1_never_the_changes_code(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: str
) -> None:
    assert cli.main(argv.format(**files).split()) == cli.ExitCode.ERROR
    err = capsys.readouterr().err
    assert "error:" in err  # argparse adds its usage line; --as-of is checked by plan itself
    assert "Traceback" not in err


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["plan", "--help"], ["--version"]):
        assert cli.main(argv) == 0
    assert "retention" in capsys.readouterr().out
