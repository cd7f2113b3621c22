"""`plan --format markdown`, `--markdown-output`, `retention show` and apply's summary before it
asks, through `main(argv)` on the session registry."""

from __future__ import annotations

import io
import json
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention import cli
from retention import plan as plan_mod
from retention.cli import console
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.support.applykit import load, make_plan, write_policy
from tests.support.cliscene import AS_OF_TEXT, Scene


def _plan(scene: Scene, *extra: str) -> list[str]:
    return ["plan", "-p", str(scene.policy), "--as-of", AS_OF_TEXT, *scene.select, *extra]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _without_generated_at(markdown: str) -> str:
    return re.sub(r"(?m)^\| generated at \| [^|]* \|$", "| generated at | - |", markdown)


def test_one_plan_run_writes_json_and_markdown_and_show_renders_them_as_plan_did(
    scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file, md_file = tmp_path / "plan.json", tmp_path / "plan.md"
    code, text, _ = _run(
        _plan(scene, "-o", str(plan_file), "--markdown-output", str(md_file)), capsys
    )
    assert code == 0
    markdown = md_file.read_text(encoding="utf-8")
    assert markdown.startswith("### retention plan: ")
    assert f"<details><summary>{scene.web}: 2 images (2 tags)" in markdown
    assert not list(tmp_path.glob(".plan*"))  # no temp file left behind

    # show: the text plan exactly as plan printed it, and the Markdown exactly as written
    assert _run(["show", str(plan_file)], capsys) == (0, text, "")
    assert _run(["show", str(plan_file), "--format", "markdown"], capsys) == (0, markdown, "")
    # a second plan run takes its own inventory: only its wall-clock `generated at` may differ
    code, again, _ = _run(_plan(scene, "--format", "markdown"), capsys)
    assert (code, _without_generated_at(again)) == (0, _without_generated_at(markdown))
    # json: the file normalised (it is already: the same bytes)
    code, out, _ = _run(["show", str(plan_file), "--format", "json"], capsys)
    assert (code, out) == (0, plan_file.read_text(encoding="utf-8"))


def test_show_normalises_a_reformatted_plan(
    scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file = tmp_path / "plan.json"
    assert cli.main(_plan(scene, "-o", str(plan_file), "--quiet")) == 0
    original = plan_file.read_text(encoding="utf-8")
    doc = json.loads(original)
    doc["deletions"].reverse()
    squashed = tmp_path / "squashed.json"
    squashed.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    assert _run(["show", str(squashed), "--format", "json"], capsys) == (0, original, "")


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"format_version": 2}', '{"format_version": 1}', "[]"],
    ids=["not-json", "another-version", "missing-fields", "not-an-object"],
)
def test_show_refuses_a_bad_plan_with_the_errors_of_apply(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text(content, encoding="utf-8")
    code, out, err = _run(["show", str(bad)], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {bad}: ")
    assert _run(["apply", str(bad), "--yes"], capsys) == (1, "", err)


def test_show_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    code, _, err = _run(["show", str(missing)], capsys)
    assert code == 1
    assert err.splitlines()[0] == f"error: cannot read plan {missing}: No such file or directory"
    assert _run(["apply", str(missing), "--yes"], capsys)[2] == err


def test_a_missing_markdown_folder_is_an_error_before_the_walk(
    scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "plan.md"
    code, out, err = _run(_plan(scene, "--markdown-output", str(target)), capsys)
    assert (code, out) == (1, "")
    assert f"--markdown-output {target}: the folder {target.parent} does not exist" in err


def test_on_a_terminal_apply_shows_the_plan_summary_before_asking(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    pusher.push_image(f"{repo_prefix}/app", "old", created=now - timedelta(days=9))
    pusher.push_image(f"{repo_prefix}/app", "new", created=now - timedelta(days=1))
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    plan = make_plan(load(policy_path), repo_prefix)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(replace(plan, policy_path=str(policy_path))))
    monkeypatch.setattr(console, "stdin_is_tty", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("no\n"))

    assert cli.main(["apply", str(plan_file), "--journal", str(tmp_path / "j")]) == 1

    err = capsys.readouterr().err
    summary = err.index("the plan deletes:\n")
    assert err.index(f"  {repo_prefix}/app: 1 image(s) (1 tag(s)), ") > summary
    assert err.index("Plan: 1 image (1 tag) to delete in 1 repository") > summary
    assert err.index("Type 'yes' to continue:") > err.index("Plan: 1 image")
    assert "aborted: nothing was deleted" in err
