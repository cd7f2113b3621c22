"""`retention validate`: check policy files, every problem located; contacts no registry.

Diagnostics and the summary go to stderr in text form; with `--format json` the diagnostics are
data and go to stdout as one JSON list, and the summary stays on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from retention.cli.exits import ExitCode
from retention.cli.output import write_output
from retention.policy.load import validate_files


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
