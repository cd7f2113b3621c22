"""deploy/ci/: the GitHub Actions and GitLab CI examples parse as YAML, every `retention` command
and flag they run exists in that command's `--help`, and docs/workflow.md shows them verbatim."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from retention.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "ci").glob("*.yml"))
SCRIPT_KEYS = {"run", "script", "before_script", "after_script"}


def _scripts(node: Any, key: str | None = None) -> Iterator[str]:
    """Every shell text under a `run:` (GitHub) or `script:` (GitLab) key."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _scripts(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from _scripts(item, key)
    elif isinstance(node, str) and key in SCRIPT_KEYS:
        yield node


def _commands(path: Path) -> list[list[str]]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [c for script in _scripts(doc) for c in _commands_in(script)]


def _commands_in(script: str) -> list[list[str]]:
    """Each `retention ...` invocation as its words, up to the next shell operator."""
    found: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
        for i, word in enumerate(words):
            if word == "retention":
                command = []
                for w in words[i + 1 :]:
                    if re.fullmatch(r"[;&|<>]+", w):
                        break
                    command.append(w)
                found.append(command)
    return found


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main([command, "--help"]) == 0
    return capsys.readouterr().out


def test_there_is_an_example_for_each_ci() -> None:
    assert [p.name for p in EXAMPLES] == ["github-actions.yml", "gitlab-ci.yml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_retention_command_and_flag_exists(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = _commands(path)
    assert {c[0] for c in commands} >= {"validate", "plan", "show", "apply"}
    plan = next(c for c in commands if c[0] == "plan")
    assert "--markdown-output" in plan and "-o" in plan
    for words in commands:
        text = _help(words[0], capsys)
        for word in words[1:]:
            if word.startswith("-"):
                flag = word.split("=", 1)[0]
                pattern = rf"(^|[\s,\[]){re.escape(flag)}(?=[\s,=\]]|$)"
                assert re.search(pattern, text, re.MULTILINE), (words, flag)


def test_the_github_example_writes_the_markdown_plan_to_the_step_summary() -> None:
    text = (ROOT / "deploy" / "ci" / "github-actions.yml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    runs = "\n".join(s["run"] for s in doc["jobs"]["plan"]["steps"] if "run" in s)
    assert 'cat plan.md >> "$GITHUB_STEP_SUMMARY"' in runs
    assert "--body-file plan.md" in runs


def test_the_gitlab_example_posts_the_markdown_plan_as_a_note() -> None:
    doc = yaml.safe_load((ROOT / "deploy" / "ci" / "gitlab-ci.yml").read_text(encoding="utf-8"))
    after = "\n".join(doc["plan:mr"]["after_script"])
    assert '"body@plan.md"' in after and "/merge_requests/$CI_MERGE_REQUEST_IID/notes" in after
    assert "plan.md" in doc[".plan"]["artifacts"]["paths"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_docs_show_the_example_verbatim(path: Path) -> None:
    docs = (ROOT / "docs" / "workflow.md").read_text(encoding="utf-8")
    assert f"```yaml\n{path.read_text(encoding='utf-8')}```\n" in docs


def test_the_command_finder_sees_through_shell_syntax() -> None:
    script = (
        'x=1; retention plan -p "$P" \\\n  --format markdown > out || code=$? # retention x\n'
        'echo "retention plan for it"; cat retention-journal.jsonl\n'
        "retention show plan.json|head\n"
    )
    assert _commands_in(script) == [
        ["plan", "-p", "$P", "--format", "markdown"],
        ["show", "plan.json"],
    ]
