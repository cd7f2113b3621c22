"""Every `--help` output, byte for byte, against tests/data/help/<command>.txt.

Regenerate with `UPDATE_GOLDEN=1 python -m pytest tests/unit/cli/test_cli_help_goldens.py`, then
review the diff: a change here is a change users read.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from retention.cli import main
from retention.cli.parser import make_parser

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "help"


def _subcommands() -> list[str]:
    return sorted(
        name
        for action in make_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    )


@pytest.mark.parametrize("command", ["retention", *_subcommands()], ids=str)
def test_help_matches_its_golden(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse wraps to $COLUMNS (shutil.get_terminal_size): fixed, so it wraps the same anywhere
    monkeypatch.setenv("COLUMNS", "100")
    argv = ["--help"] if command == "retention" else [command, "--help"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    path = GOLDEN / f"{command}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_every_golden_is_a_command() -> None:
    names = {p.stem for p in GOLDEN.glob("*.txt")}
    assert names == {"retention", *_subcommands()}
