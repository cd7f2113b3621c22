"""The command line: `main(argv)` parses, dispatches to one command module and turns an error
into its message and exit code.

The package is the only code that prints, exits or configures logging; nothing imports it.
Layout: `parser` (the argparse tree and common flags), `options` (shared flags and their values),
`inputs`/`output` (files read and written), `console` (logging, progress, confirmation),
`render` (pure text), `exits`, and one module per command.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from retention.cli.console import configure_logging
from retention.cli.exits import ExitCode
from retention.cli.parser import make_parser
from retention.cli.render import escape_lines
from retention.errors import PolicyError, RetentionError
from retention.workflow import start_command

__all__ = ["ExitCode", "main"]

Handler = Callable[[argparse.Namespace], int]

FALLBACK_HINT = (
    "look the message up in docs/troubleshooting.md; --verbose shows the HTTP requests "
    "and the traceback"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (`ExitCode`, or 130 when interrupted)."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits 2 on a usage error, which `plan --detailed-exitcode` means "changes"
        return ExitCode.ERROR if exc.code == 2 else int(exc.code or 0)
    configure_logging(args)
    handler: Handler = args.func
    start_command()
    try:
        return handler(args)
    except RetentionError as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {escape_lines(exc.diagnostics())}", file=sys.stderr)
        if exc.hint is None and not isinstance(exc, PolicyError):
            # every error ends with what to do next (policy diagnostics carry their own hints)
            print(f"hint: {FALLBACK_HINT}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
