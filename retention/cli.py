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


# ---------------------------------------------------------------------------------------------
# init: read the registry's tags and write a commented starter policy (retention.starter)
# Imports are local so this block stays self-contained for merges.


def _add_init(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "init",
        parents=[common],
        help="write a starter policy from the tags in a registry",
        description="Read the registry's catalog and tags, recognise common tag families "
        "(releases, latest, pull-request, branch, nightly and dated builds, git shas, signatures) "
        "and write a commented starter policy that protects releases and `latest` and keeps "
        "recent builds. Reads only; deletes nothing.",
        epilog="Example: retention init --registry http://127.0.0.1:5000 -o policy.yaml",
    )
    p.add_argument("--registry", required=True, metavar="URL", help="the registry's base URL")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the policy to FILE (default: stdout); an existing FILE is kept unless --force",
    )
    p.add_argument("--force", action="store_true", help="replace an existing -o FILE")
    p.add_argument("--username", metavar="USER", help="log in as USER (with --password-env)")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from environment variable VAR; the policy refers to ${VAR}",
    )
    p.set_defaults(func=_cmd_init)


def _refuse_existing(path: str | None, force: bool) -> None:
    if path not in (None, "-") and not force and Path(path).exists():
        raise RetentionError(
            f"{path} already exists; not overwriting it",
            hint="pass --force to replace it, or choose another file with -o",
        )


def _write_new(path: str, text: str) -> None:
    """Write `text` to a file that must not exist yet, atomically: a temp file hard-linked into
    place, so a file created meanwhile is never replaced."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            _refuse_existing(path, force=False)
            raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def _cmd_init(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from retention.errors import AuthError
    from retention.policy.load import load_policy_text
    from retention.policy.model import Auth, RegistryConfig
    from retention.registry.client import RegistryClient
    from retention.starter import check_credentials, starter_policy

    _refuse_existing(args.output, args.force)
    check_credentials(args.username, args.password_env)
    auth = None
    if args.username is not None:
        password = os.environ.get(args.password_env)
        if password is None:
            raise RetentionError(
                f"environment variable {args.password_env} is not set",
                hint=f"export {args.password_env} with the password of {args.username}, "
                "then run init again",
            )
        auth = Auth(username=args.username, password=password)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    with RegistryClient(RegistryConfig(url=args.registry, auth=auth), env=os.environ) as client:
        say(f"reading the catalog of {client.url} (as {client.credential_source}) ...")
        try:
            repositories = sorted(client.catalog())
            with ThreadPoolExecutor(max_workers=8) as pool:
                listed = pool.map(client.list_tags, repositories)
                tags = dict(zip(repositories, listed, strict=True))
        except AuthError as exc:
            # init reads everything: the catalog needs the registry:catalog:* scope
            exc.hint = (
                "pass --username USER --password-env VAR, or `docker login` to the registry, "
                "as a user allowed to list the catalog and pull every repository"
            )
            raise
        url = client.url
    total = sum(len(t) for t in tags.values())
    say(f"read {len(repositories)} repositories and {total} tags")
    if not repositories:
        say("warning: the catalog is empty; the policy only protects `latest` and releases")

    text = starter_policy(
        tags,
        url=url,
        username=args.username,
        password_env=args.password_env,
        written_on=datetime.now(UTC).date().isoformat(),
        filename=args.output if args.output not in (None, "-") else None,
    )
    # The starter is meant to validate as written; check it before anyone relies on that.
    load_policy_text(text, args.output or "<init>", env=os.environ, require_env=False)

    if args.output in (None, "-"):
        write_output(None, text)
        return ExitCode.OK
    if args.force:
        write_output(args.output, text)
    else:
        _write_new(args.output, text)
    say(
        f"wrote {args.output}; review it, then:\n"
        f"  retention validate {args.output}\n"
        f"  retention plan -p {args.output}"
    )
    return ExitCode.OK


_COMMANDS.append(_add_init)
