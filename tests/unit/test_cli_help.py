"""Every command's `--help` ends with an example, found from the parser so new commands count."""

from __future__ import annotations

import argparse

import pytest

from retention.cli import _parser, main


def _subcommands() -> list[str]:
    parser = _parser()
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.extend(action.choices)
    return sorted(found)


def test_the_parser_has_subcommands() -> None:
    assert "init" in _subcommands()


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", _subcommands(), ids=str)
def test_help_ends_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([command, "--help"], capsys)
    last_paragraph = text.strip().split("\n\n")[-1]
    assert last_paragraph.startswith("Example: retention "), text


def test_top_level_help_ends_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["--help"], capsys)
    assert text.strip().split("\n\n")[-1].startswith("Example: retention "), text
