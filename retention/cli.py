"""The command line: argparse, rendering, progress and exit codes.

The only module that prints, exits or configures logging; nothing imports it.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from retention import __version__
from retention.errors import RetentionError

log = logging.getLogger("retention")


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    CHANGES = 2  # plan --detailed-exitcode: deletions present
    PARTIAL = 3  # apply: only part of the plan was applied


Handler = Callable[[argparse.Namespace], int]

EPILOG_HINT = "Docs: README.md and docs/ in the project."


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=True)


def _configure_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.WARNING
    if args.verbose:
        level = logging.DEBUG
    elif args.quiet:
        level = logging.ERROR
    root.setLevel(level)
    # urllib3 logs full URLs with query strings at DEBUG; our client logs its own HTTP summaries
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
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


def write_output(path: str | None, text: str, stream: TextIO | None = None) -> None:
    """Write `text` to stdout, or atomically to `path` (a temp file renamed into place)."""
    if path is None or path == "-":
        (stream or sys.stdout).write(text)
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retention",
        description="Policy-driven retention for container registries: validate, plan, apply.",
        epilog="Example: retention plan -p policies/example.yaml -o plan.json",
    )
    parser.add_argument("--version", action="version", version=f"retention {__version__}")
    _common(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    handler: Handler = args.func
    try:
        return handler(args)
    except RetentionError as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# Each `_add_<command>(sub, common)` registers one subcommand and sets `func` to its handler.
_COMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = []


# --- validate ---------------------------------------------------------------------------------
# Diagnostics and the summary go to stderr in text form; with `--format json` the diagnostics are
# data and go to stdout as one JSON list, and the summary stays on stderr.


def _add_validate(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "validate",
        parents=[common],
        help="check policy files against the schema and the semantic rules",
        description=(
            "Check every policy file and report every problem as FILE:LINE:COL: $.path: message. "
            "Never contacts a registry. Unset ${VAR} references are warnings here (plan, apply "
            "and schedule need them set). Exit 0 when every file is valid, 1 otherwise."
        ),
        epilog="Example: retention validate policies/*.yaml --strict",
    )
    parser.add_argument("policies", nargs="+", metavar="POLICY", help="policy files to check")
    parser.add_argument(
        "--strict", action="store_true", help="count warnings as errors (exit 1 on a warning)"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one line per problem on stderr; json: a list of problems on stdout",
    )
    parser.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from retention.policy.load import validate_files

    results = validate_files(args.policies, env=os.environ, require_env=False)
    failing = {"error", "warning"} if args.strict else {"error"}
    invalid = [p for p, diags in results.items() if any(d.severity in failing for d in diags)]
    errors = sum(d.severity == "error" for diags in results.values() for d in diags)
    warnings = sum(d.severity == "warning" for diags in results.values() for d in diags)
    shown = [
        d
        for diags in results.values()
        for d in diags
        if not (args.quiet and d.severity not in failing)
    ]
    if args.format == "json":
        doc = [
            {
                "file": d.file,
                "line": d.line,
                "column": d.column,
                "path": d.path,
                "severity": d.severity,
                "message": d.message,
                "hint": d.hint,
            }
            for d in shown
        ]
        write_output(None, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        for d in shown:
            print(d.render(), file=sys.stderr)
    counts = f"{errors} error(s), {warnings} warning(s)"
    if invalid:
        strict = " (--strict: warnings count)" if args.strict and warnings else ""
        print(
            f"{len(invalid)} of {len(results)} file(s) invalid: {counts}{strict}", file=sys.stderr
        )
        return ExitCode.ERROR
    if not args.quiet:
        extra = f", {warnings} warning(s)" if warnings else ""
        print(f"{len(results)} file(s) valid{extra}", file=sys.stderr)
    return ExitCode.OK


_COMMANDS.append(_add_validate)
