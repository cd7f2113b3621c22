"""The argparse tree: the top-level parser, the flags every command shares, one subparser per
command module (each has `add(sub, common)`, which sets `func` to its `run(args)`)."""

from __future__ import annotations

import argparse
from typing import Any

from retention import __version__
from retention.cli import (
    apply,
    doctor,
    explain,
    init,
    inventory,
    plan,
    restore,
    schedule,
    show,
    validate,
)

# the order of `retention --help`
_COMMANDS = (validate, plan, inventory, explain, show, init, schedule, apply, restore, doctor)


def common_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The flags every command takes, before or after the subcommand name."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("common options")
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default if suppress else False,
        help="only errors on stderr",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default if suppress else False,
        help="debug logging, HTTP summaries and tracebacks (never secrets)",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default if suppress else "text",
        help="format of log lines on stderr",
    )


def make_parser() -> argparse.ArgumentParser:
    """The whole command line: top-level flags and every subcommand."""
    parser = argparse.ArgumentParser(
        prog="retention",
        description="Policy-driven retention for container registries: validate, plan, apply.",
        epilog="Example: retention plan -p policies/example.yaml -o plan.json",
    )
    parser.add_argument("--version", action="version", version=f"retention {__version__}")
    common_flags(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    common_flags(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add(sub, common)
    return parser
