"""Golden tests: every bad policy in tests/data/policies/invalid/ gives exactly its `.expected`
text, and never a traceback, a hang or a policy.

`NAME.yaml` beside `NAME.expected`; cases too large to commit are generated (see GENERATED).
Regenerate with `UPDATE_GOLDEN=1 python -m pytest tests/unit/policy/test_policy_invalid_corpus.py`,
then review every changed golden by hand (`git diff tests/data`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from retention.cli import main
from retention.policy.load import MAX_BYTES, check_policy_text

CORPUS = Path(__file__).resolve().parents[2] / "data" / "policies" / "invalid"
# The environment the goldens are checked in: the usual credentials set, anything else unset,
# and `require_env=True` as in plan/apply/schedule.
ENV = {"REGISTRY_USER": "ci", "REGISTRY_PASSWORD": "s3cret-value"}

GENERATED: dict[str, Callable[[], bytes]] = {
    # 10 MB: refused by size before any parsing
    "too-large": lambda: b"version: 1\n" + b"# padding padding padding padding\n" * 308_405,
}


def _cases() -> list[str]:
    return sorted({p.stem for p in CORPUS.glob("*.yaml")} | set(GENERATED))


def _input(name: str) -> bytes:
    if name in GENERATED:
        return GENERATED[name]()
    return (CORPUS / f"{name}.yaml").read_bytes()


def _render(name: str) -> str:
    policy, diagnostics = check_policy_text(_input(name), f"{name}.yaml", env=ENV, require_env=True)
    assert policy is None, f"{name}.yaml was accepted"
    return "".join(d.render() + "\n" for d in diagnostics)


@pytest.mark.parametrize("name", _cases())
def test_invalid_policy_gives_exactly_the_golden_output(name: str) -> None:
    actual = _render(name)
    golden = CORPUS / f"{name}.expected"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(actual, encoding="utf-8")
    assert actual == golden.read_text(encoding="utf-8")


def test_every_input_has_a_golden_and_the_corpus_is_large() -> None:
    inputs = set(_cases())
    goldens = {p.stem for p in CORPUS.glob("*.expected")}
    assert inputs == goldens, (
        f"without golden: {inputs - goldens}; without input: {goldens - inputs}"
    )
    assert len(goldens) >= 40


def test_the_generated_file_is_really_over_the_limit() -> None:
    assert len(GENERATED["too-large"]()) > 10 * 1024 * 1024 > MAX_BYTES


def test_validate_reports_every_corpus_file_in_one_run_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REGISTRY_USER", "REGISTRY_PASSWORD", "REGISTRY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    files = sorted(str(p) for p in CORPUS.glob("*.yaml"))
    # --strict: env-unset.yaml only warns in validate (its unset variable is a plan-time error)
    assert main(["validate", "--strict", *files]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for path in files:
        assert f"{path}:" in err or f"{path}: $" in err, f"nothing reported for {path}"
    assert f"\n{len(files)} of {len(files)} file(s) invalid: " in err
