"""stderr as people and log collectors see it: log formatting, the progress display, and the
confirmation question of apply and restore."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from retention import progress as progress_mod
from retention.cli.render import escape_lines
from retention.errors import UsageError


class JsonFormatter(logging.Formatter):
    """One JSON object a line (`--log-format json`), with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=True)


class TextFormatter(logging.Formatter):
    """Log lines with registry strings escaped: a message (a warning naming a tag, an HTTP
    error quoting the server) is escaped line by line with `message()` (retention/text.py)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_lines(super().formatMessage(record))


def configure_logging(args: argparse.Namespace) -> None:
    """The root logger writes to stderr in the format and at the level the common flags ask."""
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(levelname)s: %(message)s"))
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


class ProgressDisplay:
    """Progress of the phases of long work on stderr (retention.progress): on a terminal one
    line per phase, redrawn at most 10 times a second; with `--log-format json` a JSON event a
    second per phase and its final one; otherwise nothing. Safe to call from several threads."""

    def __init__(
        self,
        mode: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode  # "off", "tty" or "json"
        self._stream = stream
        self._meter = progress_mod.Meter(clock, interval=1.0 if mode == "json" else 0.1)
        self._lock = threading.Lock()
        self._open = False  # a terminal line is drawn and not yet ended

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.mode == "off":
            return
        with self._lock:
            update = self._meter.report(phase, done, total)
            if update is None:
                return
            stream = self._stream or sys.stderr
            if self.mode == "json":
                stream.write(json.dumps(progress_mod.event(update), sort_keys=True) + "\n")
            else:
                stream.write(
                    f"\r\x1b[K{progress_mod.line(update)}" + ("\n" if update.final else "")
                )
                self._open = not update.final
            stream.flush()

    def close(self) -> None:
        """End a line left open by a phase that did not finish (an error, a stop)."""
        with self._lock:
            if self._open:
                (self._stream or sys.stderr).write("\n")
                self._open = False


def progress_for(args: argparse.Namespace) -> ProgressDisplay:
    """The display the flags and stderr call for: off with --quiet or when stderr is a file."""
    if args.quiet:
        return ProgressDisplay("off")
    if args.log_format == "json":
        return ProgressDisplay("json")
    return ProgressDisplay("tty" if sys.stderr.isatty() else "off")


def stdin_is_tty() -> bool:
    """Whether someone can answer a question (tests stand in for a terminal here)."""
    return sys.stdin.isatty()


def confirm(question: str, *, yes: bool, what: str) -> bool:
    """True to go on. `--yes` skips the question; without a terminal to ask, it is required."""
    if yes:
        return True
    if not stdin_is_tty():
        raise UsageError(
            f"stdin is not a terminal, so there is no one to confirm {what}",
            hint="pass --yes to proceed without confirmation (CI, cron, scripts)",
        )
    print(f"{question} Type 'yes' to continue: ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline().strip().lower()
    except (OSError, ValueError):
        answer = ""
    return answer == "yes"
