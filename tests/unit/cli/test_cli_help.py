"""Every command's `--help` ends with an example, found from the parser so new commands count."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from retention.cli import main
from retention.cli.parser import make_parser


def _subcommands() -> list[str]:
    parser = make_parser()
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.extend(action.choices)
    return sorted(found)


def test_the_parser_has_subcommands() -> None:
    assert "init" in _subcommands()


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", _subcommands(), ids=str)
def test_help_ends_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([command, "--help"], capsys)
    last_paragraph = text.strip().split("\n\n")[-1]
    assert last_paragraph.startswith("Example: retention "), text


def test_top_level_help_ends_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["--help"], capsys)
    assert text.strip().split("\n\n")[-1].startswith("Example: retention "), text


def test_an_error_without_a_hint_still_ends_with_one(capsys: pytest.CaptureFixture[str]) -> None:
    # an unusable URL is refused before anything is contacted, and its error carries no hint
    assert main(["init", "--registry", "ftp://registry.example.com"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: registry url must be an absolute http(s) URL")
    assert err[-1].startswith("hint: look the message up in docs/troubleshooting.md")


def test_an_error_with_a_hint_keeps_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "policy.yaml"
    existing.write_text("mine\n", encoding="utf-8")
    argv = ["init", "--registry", "http://127.0.0.1:9", "-o", str(existing)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {existing} already exists; not overwriting it",
        "hint: pass --force to replace it, or choose another file with -o",
    ]
