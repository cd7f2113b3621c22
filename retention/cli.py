"""The command line: argparse, rendering, progress and exit codes.

The only module that prints, exits or configures logging; nothing imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import enum
import hashlib
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import re2

from retention import __version__
from retention import plan as plan_mod
from retention import progress as progress_mod
from retention.apply import (
    ApplyReport,
    Preflight,
    ProgressEvent,
    apply_plan,
    check_plan,
    policy_keeps,
    untagged_owned,
)
from retention.cache import DigestCache
from retention.doctor import run_checks
from retention.errors import AuthError, InventoryError, PolicyError, RetentionError, ScheduleError
from retention.evaluate import TagVerdict, age_words, evaluate, explain, untagged_digests
from retention.files import atomic_create, atomic_write
from retention.gc import DEFAULT_TIMEOUT_SECONDS, run_gc, untagged_warnings
from retention.inventory import Progress, Shard, take_inventory
from retention.journal import Journal, default_journal_path, read_journal, redact_url
from retention.markdown import render_markdown
from retention.model import Inventory, Repository, outside_grammar
from retention.oci import cosign_subject, format_time, is_digest
from retention.plan import Plan, human_bytes, render_text
from retention.plan import to_json as plan_to_json
from retention.policy.load import compile_pattern, load_policy, load_policy_text, validate_files
from retention.policy.model import Auth, Pattern, Policy, RegistryConfig, Schedule
from retention.registry.client import RegistryClient, RetryPolicy, RunDeadline
from retention.restore import GC_HINT, RestoreOutcome, restore, select
from retention.runlog import HistoryRecord, RunLog, RunOutcome, default_history_path
from retention.schedule import (
    StopFlag,
    acquire_lock,
    lock_path_for,
    next_times,
    run_loop,
    run_now,
)
from retention.starter import UntaggedSeen, check_credentials, starter_policy
from retention.state import digest_cache_dir
from retention.storage import (
    compare_with_api,
    in_flight_warnings,
    take_storage_inventory,
    with_in_flight,
)
from retention.text import message, untrusted

log = logging.getLogger("retention")


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    CHANGES = 2  # plan --detailed-exitcode: deletions present
    PARTIAL = 3  # apply: only part of the plan was applied


Handler = Callable[[argparse.Namespace], int]

FALLBACK_HINT = (
    "look the message up in docs/troubleshooting.md; --verbose shows the HTTP requests "
    "and the traceback"
)


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


class _TextFormatter(logging.Formatter):
    """Log lines with registry strings escaped: a message (a warning naming a tag, an HTTP
    error quoting the server) is escaped line by line with `message()` (retention/text.py)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _lines(super().formatMessage(record))


def _lines(text: str) -> str:
    """`text` with every line escaped by `message()`: our own line breaks stay, no registry
    string can clear the screen, move the cursor or reorder what follows."""
    return "\n".join(message(line) for line in text.split("\n"))


def _configure_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(levelname)s: %(message)s"))
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
    atomic_write(Path(path), text.encode("utf-8"))


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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits 2 on a usage error, which `plan --detailed-exitcode` means "changes"
        return ExitCode.ERROR if exc.code == 2 else int(exc.code or 0)
    _configure_logging(args)
    handler: Handler = args.func
    _start_command()
    try:
        return handler(args)
    except RetentionError as exc:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"error: {_lines(exc.diagnostics())}", file=sys.stderr)
        if exc.hint is None and not isinstance(exc, PolicyError):
            # every error ends with what to do next (policy diagnostics carry their own hints)
            print(f"hint: {FALLBACK_HINT}", file=sys.stderr)
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
# plan, inventory, explain: inventory the registry and evaluate the policy


# When the command being run started (`main`, and each scheduled run): `settings.timeouts.run`
# counts from here. A scheduled run with `run: null` still ends after SCHEDULED_RUN_LIMIT, so it
# never holds the policy's lock forever (docs/decisions.md, "What is trusted").
_command_started = time.monotonic()
_scheduled = False
SCHEDULED_RUN_LIMIT = timedelta(hours=6)


def _start_command(*, scheduled: bool = False) -> None:
    global _command_started, _scheduled
    _command_started = time.monotonic()
    _scheduled = scheduled


def _client_options(policy: Policy) -> dict[str, Any]:
    """The RegistryClient arguments `settings.timeouts` gives, for the command in progress."""
    t = policy.settings.timeouts
    run = t.run if t.run is not None else (SCHEDULED_RUN_LIMIT if _scheduled else None)
    deadline = None
    if run is not None:
        seconds = run.total_seconds()
        deadline = RunDeadline(at=_command_started + seconds, seconds=seconds)
    return {
        "timeout": (t.connect.total_seconds(), t.read.total_seconds()),
        "request_timeout": t.request.total_seconds(),
        "deadline": deadline,
    }


def _load_policy(path: str, args: argparse.Namespace) -> Policy:
    """Load a policy for a command that contacts the registry: unset ${VAR}s are errors; its
    warnings go to stderr unless --quiet."""
    policy, warnings = load_policy(path, env=os.environ, require_env=True)
    if not args.quiet:
        for w in warnings:
            print(w.render(), file=sys.stderr)
    return policy


def _now(as_of: str | None) -> datetime:
    """`--as-of` as an aware UTC time, else the clock.

    Parsed here, not by argparse: argparse exits 2 on a bad value, and 2 means "changes present"
    to a `plan --detailed-exitcode` caller; a bad date is an error (exit 1).
    """
    if as_of is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(as_of.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise RetentionError(
            f"--as-of {as_of!r} is not a date",
            hint="use 2026-01-31 or 2026-01-31T12:00:00Z (UTC unless an offset is given)",
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _repository_pattern(text: str) -> Pattern:
    try:
        return compile_pattern(text)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):  # google-re2 gives RE2's reason as bytes
            reason = reason.decode("utf-8", "replace")
        raise RetentionError(
            f"--repository {text!r} is not a valid RE2 pattern: {reason}",
            hint="it is matched against the whole repository name, e.g. 'apps/.*'",
        ) from exc


class _Progress:
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


def _progress(args: argparse.Namespace) -> _Progress:
    if args.quiet:
        return _Progress("off")
    if args.log_format == "json":
        return _Progress("json")
    return _Progress("tty" if _stderr_is_tty() else "off")


# --shard K/N: N workers (a Kubernetes Indexed Job) each plan and apply their share of the
# repositories, split by a stable hash of the name (retention.inventory.in_shard; docs/sharding.md)

_SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job
_SHARD_HINT = (
    "--shard K/N takes shard K (0 <= K < N) of N; --shard N or --shard auto/N takes K from "
    f"${_SHARD_INDEX_ENV}, which a Kubernetes Indexed Job sets"
)


def _add_shard_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="only this worker's share of the repositories: shard K (0-based) of N, split by a "
        f"hash of the name; N alone or auto/N takes K from ${_SHARD_INDEX_ENV}",
    )


def _shard(args: argparse.Namespace) -> Shard | None:
    """`--shard K/N`, `--shard N` or `--shard auto/N` as a Shard; None without the option."""
    text: str | None = getattr(args, "shard", None)
    if text is None:
        return None
    index_text, slash, count_text = text.strip().rpartition("/")
    if not slash or index_text == "auto":
        index_text = os.environ.get(_SHARD_INDEX_ENV, "")
        if not index_text:
            raise RetentionError(
                f"--shard {text}: ${_SHARD_INDEX_ENV} is not set, so this worker's index is "
                "unknown",
                hint=_SHARD_HINT,
            )
    if not (index_text.isdigit() and count_text.isdigit()):
        raise RetentionError(f"--shard {text}: not K/N, N or auto/N", hint=_SHARD_HINT)
    try:
        return Shard(int(index_text), int(count_text))
    except InventoryError as exc:
        raise RetentionError(f"--shard {text}: {exc.message}", hint=_SHARD_HINT) from exc


def _add_source_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inventory-source",
        choices=("api", "storage"),
        help="where the inventory comes from: the registry's API, or its storage "
        "(registry.storage.filesystem; the default when the policy sets it)",
    )


def _source(policy: Policy, requested: str | None) -> str:
    """`--inventory-source`, else storage when the policy names it, else the API."""
    if requested == "storage" and policy.registry.storage_path is None:
        raise RetentionError(
            "--inventory-source storage: the policy has no registry.storage.filesystem",
            hint="add registry: {storage: {filesystem: /var/lib/registry}} to the policy "
            "(the registry's storage rootdirectory), see docs/registries.md",
        )
    if requested is not None:
        return requested
    return "storage" if policy.registry.storage_path is not None else "api"


def _take(
    policy: Policy,
    *,
    repository: str | None,
    progress: Progress | None,
    use_cache: bool = True,
    shard: Shard | None = None,
    repositories: Sequence[str] | None = None,
    source: str = "api",
) -> Inventory:
    """Walk the registry (`repository`, `shard` narrow it); `repositories` walks just those,
    without the catalog."""
    select_pattern = _repository_pattern(repository) if repository else None

    def select(name: str) -> bool:
        if shard is not None and name not in shard:
            return False
        return select_pattern is None or select_pattern.matches(name)

    if source == "storage":
        assert policy.registry.storage_path is not None  # _source checked it
        wanted = None if repositories is None else set(repositories)
        return take_storage_inventory(
            policy.registry.storage_path,
            registry=policy.registry.url,
            now=datetime.now(UTC),  # when the inventory is taken: the wall clock, never --as-of
            select=lambda name: select(name) and (wanted is None or name in wanted),
            complete=repositories is None
            and select_pattern is None
            and (shard is None or shard.count == 1),
            concurrency=policy.settings.concurrency,
            progress=progress or (lambda phase, done, total: None),
        )
    cache = DigestCache(digest_cache_dir(os.environ)) if use_cache else None
    with (
        cache or contextlib.nullcontext(),
        RegistryClient(
            policy.registry,
            concurrency=policy.settings.concurrency,
            env=os.environ,
            **_client_options(policy),
        ) as client,
    ):
        try:
            return take_inventory(
                client,
                now=datetime.now(UTC),  # when the inventory is taken: the wall clock, never --as-of
                select=select,
                complete=repositories is None
                and select_pattern is None
                and (shard is None or shard.count == 1),
                concurrency=policy.settings.concurrency,
                cache=cache,
                progress=progress or (lambda phase, done, total: None),
                repositories=repositories,
            )
        finally:
            if isinstance(progress, _Progress):
                progress.close()


def _make_plan(
    policy: Policy,
    *,
    now: datetime,
    repository: str | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    shard: Shard | None = None,
    source: str | None = None,
) -> tuple[Plan, Inventory]:
    """Inventory the registry and evaluate the policy: the one path to a plan.

    A storage inventory is first checked against the API (one tags/list per repository): a
    storage that is not the URL's registry is an error before anything is planned.
    """
    chosen = _source(policy, source)
    inventory = _take(
        policy,
        repository=repository,
        progress=progress,
        use_cache=use_cache,
        shard=shard,
        source=chosen,
    )
    if chosen == "storage":
        inventory = _same_registry(policy, inventory)
    return evaluate(policy, inventory, now), inventory


def _same_registry(policy: Policy, inventory: Inventory) -> Inventory:
    """A storage inventory checked against the API (one tags/list per repository): raises when
    the storage is not the URL's registry; pushes in flight are noted as warnings."""
    assert policy.registry.storage_path is not None
    with RegistryClient(
        policy.registry,
        concurrency=policy.settings.concurrency,
        env=os.environ,
        **_client_options(policy),
    ) as client:
        seen = compare_with_api(
            client,
            inventory,
            policy.registry.storage_path,
            concurrency=policy.settings.concurrency,
        )
    inventory = with_in_flight(inventory, seen)
    flying = in_flight_warnings(seen)
    for warning in flying:
        log.warning("%s", warning)
    if flying:
        inventory = replace(inventory, warnings=(*inventory.warnings, *flying))
    return inventory


def _add_plan(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "plan",
        parents=[common],
        help="inventory the registry and show what the policy would delete",
        description="Inventory the registry, evaluate the policy, and print the deletion plan. "
        "Nothing is deleted.",
        epilog="Example: retention plan -p policies/example.yaml -o plan.json",
    )
    p.add_argument("-p", "--policy", required=True, help="the policy file")
    p.add_argument("-o", "--output", help="write the plan (JSON) to this file, for apply")
    p.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="stdout format; markdown: for a merge-request comment or a CI step summary",
    )
    p.add_argument(
        "--markdown-output",
        metavar="FILE",
        help="also write the plan as Markdown to this file (beside the JSON of -o)",
    )
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 2 when the plan deletes something, 0 when it deletes nothing",
    )
    p.add_argument(
        "--as-of", metavar="DATE", help="evaluate as if it were this date (UTC), e.g. 2026-01-31"
    )
    p.add_argument("--repository", metavar="REGEX", help="only repositories matching this RE2")
    p.add_argument("--show-kept", action="store_true", help="list kept images too")
    p.add_argument(
        "--from-inventory", metavar="FILE", help="evaluate a saved inventory; no registry"
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the digest cache")
    _add_source_option(p)
    _add_shard_option(p)
    p.set_defaults(func=_cmd_plan)


_SAVE_INVENTORY = "save one with `retention inventory -p POLICY --format json -o FILE`"


def _read_inventory(path: str) -> Inventory:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InventoryError(
            f"{path}: cannot read the inventory: {exc}", hint=_SAVE_INVENTORY
        ) from exc
    try:
        return Inventory.from_json(doc)
    except InventoryError as exc:  # say which file: a plan passed by mistake is the usual case
        raise InventoryError(f"{path}: {exc.message}", hint=_SAVE_INVENTORY) from exc


def _check_output(path: str | None, flag: str = "-o") -> None:
    """Fail before the registry walk, not after it, when `-o` cannot be written."""
    if path is None or path == "-":
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise RetentionError(
            f"{flag} {path}: the folder {folder} does not exist", hint="create it, or pick another"
        )


def _markdown(plan: Plan, now: datetime) -> str:
    rendered = render_markdown(plan, now=now)
    if rendered.omitted:
        log.info("the Markdown plan leaves out %d of its deletions", rendered.omitted)
    return rendered.text


def _plan_now(plan: Plan) -> datetime:
    """The `now` a saved plan was evaluated at, which its ages are counted from: `evaluated_at`
    where the plan records it (`--as-of`), else `generated_at`."""
    return plan.as_of


def _read_plan(path: str) -> tuple[Plan, bytes]:
    """A saved plan, schema-checked: the one loading `apply` and `show` share."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RetentionError(f"cannot read plan {path}: {exc.strerror or exc}") from exc
    return plan_mod.from_json(data, path), data


def _write(path: str | None, text: str) -> None:
    """`write_output`, with a file system error reported as an error, not a traceback."""
    try:
        write_output(path, text)
    except OSError as exc:
        raise RetentionError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _narrow(inventory: Inventory, repository: str | None, shard: Shard | None = None) -> Inventory:
    """A saved inventory cut down to `--repository` and `--shard`, marked partial as a live
    narrowed walk is."""
    if repository is None and (shard is None or shard.count == 1):
        return inventory
    pattern = _repository_pattern(repository) if repository else None
    return replace(
        inventory,
        repositories=tuple(
            r
            for r in inventory.repositories
            if (pattern is None or pattern.matches(r.name)) and (shard is None or r.name in shard)
        ),
        complete=False,
    )


def _cmd_plan(args: argparse.Namespace) -> int:
    now = _now(args.as_of)
    _check_output(args.output)
    _check_output(args.markdown_output, "--markdown-output")
    if args.repository:
        _repository_pattern(args.repository)  # a bad pattern is an error before anything else
    shard = _shard(args)
    policy = _load_policy(args.policy, args)
    if args.from_inventory:
        inventory = _narrow(_read_inventory(args.from_inventory), args.repository, shard)
        # the walk logged these when it ran; a saved inventory would otherwise hide them
        for warning in inventory.warnings:
            log.warning("%s", warning)
        plan = evaluate(policy, inventory, now)
    else:
        plan, _ = _make_plan(
            policy,
            now=now,
            repository=args.repository,
            progress=_progress(args),
            use_cache=not args.no_cache,
            shard=shard,
            source=args.inventory_source,
        )
    if args.output:
        _write(args.output, plan_to_json(plan))
    if args.markdown_output:
        _write(args.markdown_output, _markdown(plan, now))
    text_shown = False
    if not args.quiet or not args.output:
        if args.format == "json":
            _write(None, plan_to_json(plan))
        elif args.format == "markdown":
            _write(None, _markdown(plan, now))
            text_shown = True
        else:
            _write(None, render_text(plan, show_kept=args.show_kept, now=now))
            text_shown = True
    if not text_shown:  # the text plan ends with its warnings: do not repeat them
        for warning in plan.warnings:
            log.warning("%s", warning)
    if args.detailed_exitcode and plan.deletions:
        return ExitCode.CHANGES
    return ExitCode.OK


def _add_inventory(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inventory",
        parents=[common],
        help="list repositories, tags, digests, created dates and sizes",
        description="Walk the registry and report where the disk went: repositories by size, "
        "then every tag with its digest, created date and size.",
        epilog="Example: retention inventory -p policy.yaml --format csv -o inventory.csv",
    )
    p.add_argument("-p", "--policy", required=True, help="the policy file (registry, auth)")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--repository", metavar="REGEX", help="only repositories matching this RE2")
    p.add_argument("--no-cache", action="store_true", help="do not use the digest cache")
    _add_source_option(p)
    _add_shard_option(p)
    p.set_defaults(func=_cmd_inventory)


def _repo_bytes(repo: Repository) -> int:
    """Bytes the repository's manifests and blobs take, each blob once."""
    blobs: dict[str, int] = {}
    for image in repo.images:
        blobs[image.digest] = image.manifest_size
        blobs.update((b.digest, b.size) for b in image.blobs)
    return sum(blobs.values())


def _inventory_text(inventory: Inventory) -> str:
    taken = format_time(inventory.taken_at)
    lines = [f"Registry {untrusted(inventory.registry)}, taken {taken}", ""]
    repos = sorted(inventory.repositories, key=lambda r: (-_repo_bytes(r), r.name))
    names = {r.name: untrusted(r.name) for r in repos}  # escaped at the edge (retention/text.py)
    width = max([len(n) for n in names.values()] + [10])
    lines.append(f"{'REPOSITORY':<{width}}  {'TAGS':>6}  {'IMAGES':>6}  {'SIZE':>10}")
    lines.extend(
        f"{names[r.name]:<{width}}  {len(r.tags):>6}  {len(r.images):>6}  "
        f"{human_bytes(_repo_bytes(r)):>10}"
        for r in repos
    )
    for r in repos:
        lines += ["", f"{names[r.name]}:"]
        tags = {t.name: untrusted(t.name) for t in r.tags}
        # columns as wide as this repository's longest tag: cosign tags are 75 characters
        tag_width = max([len(t) for t in tags.values()] + [3])
        lines.append(f"  {'TAG':<{tag_width}}  {'DIGEST':<19}  {'CREATED':<20}  {'SIZE':>10}")
        for t in r.tags:
            image = r.image(t.digest)
            created = format_time(image.created) if image and image.created else "unknown"
            size = human_bytes(image.size) if image else "?"
            lines.append(
                f"  {tags[t.name]:<{tag_width}}  {untrusted(t.digest[:19])}  {created:<20}  "
                f"{size:>10}".rstrip()
            )
        untagged = sorted(untagged_digests(r))
        if untagged:
            lines.append(
                f"  {'UNTAGGED':<{tag_width}}  {'DIGEST':<19}  {'CREATED':<20}  {'SIZE':>10}  "
                "PUSHED"
            )
        for digest in untagged:
            image = r.image(digest)
            if image is None:
                continue
            created = format_time(image.created) if image.created else "unknown"
            pushed = format_time(image.pushed_at) if image.pushed_at else "unknown"
            lines.append(
                f"  {'(untagged)':<{tag_width}}  {untrusted(digest[:19])}  {created:<20}  "
                f"{human_bytes(image.size):>10}  {pushed}"
            )
    lines.extend(f"warning: {message(w)}" for w in inventory.warnings)
    return "\n".join(lines) + "\n"


def _inventory_csv(inventory: Inventory) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # a storage inventory adds its untagged manifests, and two columns to say which they are
    storage = inventory.source == "storage"
    extra = ["untagged", "pushed_at"] if storage else []
    writer.writerow(
        ["repository", "tag", "digest", "media_type", "kind", "created", "size", *extra]
    )
    for r in inventory.repositories:
        for t in r.tags:
            image = r.image(t.digest)
            pushed = format_time(image.pushed_at) if image and image.pushed_at else ""
            writer.writerow(
                [
                    untrusted(r.name),
                    untrusted(t.name),
                    untrusted(t.digest),
                    untrusted(image.media_type) if image else "",
                    image.kind.value if image else "",
                    format_time(image.created) if image and image.created else "",
                    image.size if image else "",
                    *(["false", pushed] if storage else []),
                ]
            )
        if not storage:
            continue
        for digest in sorted(untagged_digests(r)):
            image = r.image(digest)
            if image is None:
                continue
            writer.writerow(
                [
                    r.name,
                    "",
                    digest,
                    image.media_type,
                    image.kind.value,
                    format_time(image.created) if image.created else "",
                    image.size,
                    "true",
                    format_time(image.pushed_at) if image.pushed_at else "",
                ]
            )
    return out.getvalue()


def _inventory_json(inventory: Inventory) -> dict[str, Any]:
    """The saved inventory; a storage inventory marks each image `untagged` (model.py writes
    its push time)."""
    doc = inventory.to_json()
    if inventory.source != "storage":
        return doc
    for r, saved in zip(inventory.repositories, doc["repositories"], strict=True):
        untagged = untagged_digests(r)
        for image, entry in zip(r.images, saved["images"], strict=True):
            entry.setdefault("untagged", image.digest in untagged)  # pushed_at: model.py
    return doc


def _cmd_inventory(args: argparse.Namespace) -> int:
    _check_output(args.output)
    if args.repository:
        _repository_pattern(args.repository)
    shard = _shard(args)
    policy = _load_policy(args.policy, args)
    inventory = _take(
        policy,
        repository=args.repository,
        progress=_progress(args),
        use_cache=not args.no_cache,
        shard=shard,
        source=_source(policy, args.inventory_source),
    )
    if args.format == "json":
        text = json.dumps(_inventory_json(inventory), indent=2, sort_keys=True) + "\n"
    elif args.format == "csv":
        text = _inventory_csv(inventory)
    else:
        text = _inventory_text(inventory)
    _write(args.output, text)
    return ExitCode.OK


def _add_explain(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explain",
        parents=[common],
        help="why each tag of a repository is kept or deleted",
        description="For each tag: the owning rule, its rank among that rule's images, its age, "
        "and the decisive reason. With REPO@DIGEST, the same for one manifest, untagged ones "
        "too (with its push time and the tags it used to carry).",
        epilog="Example: retention explain -p policy.yaml apps/web:pr-123-abc1234 (or "
        "apps/web@sha256:..., for a manifest no tag points at)",
    )
    p.add_argument("-p", "--policy", required=True, help="the policy file")
    p.add_argument(
        "target",
        metavar="REPO[:TAG|@DIGEST]",
        help="a repository, one of its tags, or one of its manifests (untagged ones too)",
    )
    p.add_argument(
        "--as-of", metavar="DATE", help="evaluate as if it were this date (UTC), e.g. 2026-01-31"
    )
    p.add_argument(
        "--from-inventory", metavar="FILE", help="explain from a saved inventory; no registry"
    )
    _add_source_option(p)
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    now = _now(args.as_of)
    policy = _load_policy(args.policy, args)
    repository, tag, digest = _explain_target(args.target, policy.registry.url)
    if args.from_inventory:
        inventory = _read_inventory(args.from_inventory)
    else:
        inventory = _take(
            policy,
            repository=re2.escape(repository),
            progress=_progress(args),
            source=_source(policy, args.inventory_source),
        )
    verdicts = explain(policy, inventory, now, repository, tag, digest)
    _write(None, _explanation_text(verdicts))
    return ExitCode.OK


def _explain_target(target: str, registry_url: str) -> tuple[str, str | None, str | None]:
    """`REPO[:TAG|@DIGEST]` -> (repository, tag, digest). A reference pasted with the policy's
    registry host in front (`127.0.0.1:5000/apps/web:v1`) works too: a colon followed by a `/`
    is a port."""
    digest: str | None = None
    if "@" in target:
        target, _, digest = target.rpartition("@")
        if not is_digest(digest):
            raise RetentionError(
                f"{untrusted(digest)!r}: not a digest (expected sha256:<64 hex digits>)",
                hint="copy the digest from `retention inventory` or the plan",
            )
        name = target
    else:
        name, colon, tag = target.rpartition(":")
        if not colon or "/" in tag:
            name, tag = target, ""
    host = urlsplit(registry_url).netloc
    if host and name.startswith(host + "/"):
        name = name[len(host) + 1 :]
    if digest is not None:
        return name, None, digest
    return name, tag or None, None


def _explanation_text(verdicts: list[TagVerdict]) -> str:
    lines = []
    for v in verdicts:
        if v.age is None:
            age = "age unknown"
        elif v.age < timedelta(0):  # within a day ahead: clock skew, shown as such
            age = f"created {age_words(-v.age)} in the future"
        else:
            age = age_words(v.age)
        rule = f"rule {v.rule}" if v.rule else "no rule"
        rank = f", rank {v.rank}" if v.rank is not None else ""
        if v.untagged:
            ref = f"{untrusted(v.repository)}@{untrusted(v.digest)}"
            lines.append(f"{ref}  {age}  ({rule}{rank}, untagged)")
            pushed = format_time(v.pushed_at) if v.pushed_at is not None else "unknown"
            lines.append(f"    pushed: {pushed}")
            for former, until in v.former_tags:
                lines.append(f"    was: `{untrusted(former)}` until {format_time(until)}")
            if v.protected:
                lines.append("    protected: its digest is in protect.digests")
        else:
            ref = f"{untrusted(v.repository)}:{untrusted(v.tag)}  {untrusted(v.digest[:19])}"
            lines.append(f"{ref}  {age}  ({rule}{rank})")
        lines.append(f"    {message(v.line())}")
    return "\n".join(lines) + "\n"


_COMMANDS.extend([_add_plan, _add_inventory, _add_explain])


# --- show: a saved plan rendered as `plan` printed it ---------------------------------------


def _add_show(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "show",
        parents=[common],
        help="render a saved plan: what apply will be asked to do",
        description="Check a saved plan as `apply` does (the same errors), then print it as "
        "`plan` did: text, markdown (for a merge-request comment or a CI step summary) or the "
        "normalised JSON. Contacts no registry.",
        epilog='Example: retention show plan.json --format markdown >> "$GITHUB_STEP_SUMMARY"',
    )
    p.add_argument("plan", metavar="PLAN.json", help="a plan from `retention plan -o`")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--show-kept", action="store_true", help="list kept images too (text)")
    p.set_defaults(func=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    plan, _data = _read_plan(args.plan)
    now = _plan_now(plan)
    if args.format == "json":
        _write(None, plan_to_json(plan))
    elif args.format == "markdown":
        _write(None, _markdown(plan, now))
    else:
        _write(None, render_text(plan, show_kept=args.show_kept, now=now))
    return ExitCode.OK


_COMMANDS.append(_add_show)


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
    p.add_argument(
        "--storage",
        metavar="PATH",
        help="the registry's storage root (registry.storage.filesystem): count its untagged "
        "manifests and propose a rule for them (keep 3, newer than 7 days); read-only",
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
    try:
        atomic_create(Path(path), text.encode("utf-8"))
    except FileExistsError:
        _refuse_existing(path, force=False)
        raise


def _cmd_init(args: argparse.Namespace) -> int:

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
            # names outside the grammar are left out of the starter, with one warning each
            left_alone: list[str] = []
            repositories = sorted(
                client.catalog(
                    lambda name: left_alone.append(outside_grammar("repository", name, "catalog"))
                )
            )

            def list_tags(repo: str) -> list[str]:
                where = f"tags/list of {repo}"
                return client.list_tags(
                    repo, lambda tag: left_alone.append(outside_grammar("tag", tag, where))
                )

            with ThreadPoolExecutor(max_workers=8) as pool:
                listed = pool.map(list_tags, repositories)
                tags = dict(zip(repositories, listed, strict=True))
            for warning in sorted(left_alone):
                say(f"warning: {warning}")
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
    untagged = None
    if args.storage is not None:
        untagged = _untagged_seen(args.storage, url, say)

    text = starter_policy(
        tags,
        url=url,
        username=args.username,
        password_env=args.password_env,
        written_on=datetime.now(UTC).date().isoformat(),
        filename=args.output if args.output not in (None, "-") else None,
        untagged=untagged,
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


def _untagged_seen(storage: str, url: str, say: Callable[[str], None]) -> UntaggedSeen:
    """Count the untagged manifests of the storage at `storage` (read-only) for the starter."""
    say(f"reading the storage at {storage} ...")
    inventory = take_storage_inventory(storage, registry=url, now=datetime.now(UTC))
    manifests = repos = size = 0
    for repo in inventory.repositories:
        found = untagged_digests(repo)
        manifests += len(found)
        repos += 1 if found else 0
        size += sum(image.size for image in repo.images if image.digest in found)
    say(f"found {manifests} untagged manifests in {repos} repositories ({human_bytes(size)})")
    return UntaggedSeen(storage=storage, manifests=manifests, repositories=repos, size=size)


_COMMANDS.append(_add_init)


# --- schedule ---------------------------------------------------------------------------------
# plan + apply on the policy's cron schedule (retention.schedule), or once (--once) for CronJobs
# and systemd timers; then the optional gc step (retention.gc). The signal handlers live here:
# SIGTERM/SIGINT set the loop's stop flag, and the run in flight finishes.


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _instant(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2024-10-27T01:00:00+02:00)"
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _add_schedule(sub: Any, common: argparse.ArgumentParser) -> None:

    parser = sub.add_parser(
        "schedule",
        parents=[common],
        help="plan and apply on the policy's cron schedule, or once",
        description=(
            "Plan and apply at every tick of the policy's schedule (cron, timezone), holding a "
            "per-policy lock, appending each run to a JSON-lines history and, with "
            "--metrics-file, writing Prometheus metrics. --once runs now and exits (CronJobs, "
            "systemd timers; no schedule: section needed). SIGTERM/SIGINT let the run in flight "
            "finish, then exit 0. See docs/scheduling.md."
        ),
        epilog=(
            "Example: retention schedule -p /etc/retention/policy.yaml --once "
            "--metrics-file /var/lib/node_exporter/retention.prom"
        ),
    )
    parser.add_argument("-p", "--policy", required=True, help="the policy file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run once, now, and exit")
    mode.add_argument(
        "--next",
        type=_positive_int,
        metavar="N",
        help="print the next N run times (ISO 8601, in the policy's time zone) and exit",
    )
    parser.add_argument(
        "--after",
        type=_instant,
        metavar="TIME",
        help="with --next: the times after TIME instead of after now",
    )
    parser.add_argument(
        "--lock",
        metavar="PATH",
        help="lock file (default: $XDG_STATE_HOME/retention/locks/<policy>-<hash>.lock)",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        help="run history, JSON lines (default: $XDG_STATE_HOME/retention/history.jsonl)",
    )
    parser.add_argument(
        "--metrics-file", metavar="PATH", help="write Prometheus text-format metrics here"
    )
    parser.add_argument(
        "--gc-timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"kill the gc command after this long (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.set_defaults(func=_cmd_schedule)


def _schedule_of(policy: Policy) -> Schedule:
    if policy.schedule is None:
        raise ScheduleError(
            f"{policy.path}: the policy has no schedule: section",
            hint='add `schedule: {cron: "30 3 * * *", timezone: UTC}`, or run '
            "`retention schedule --once` from cron, a systemd timer or a Kubernetes CronJob",
        )
    return policy.schedule


def _cmd_schedule(args: argparse.Namespace) -> int:

    if args.after is not None and args.next is None:
        raise ScheduleError("--after goes with --next", hint="retention schedule -p P --next 5")
    if args.next is not None:
        # Listing times needs no registry and no secrets: unset ${VAR}s are only warnings here.
        policy, _ = load_policy(args.policy, env=os.environ, require_env=False)
        listed = _schedule_of(policy)
        start = args.after or datetime.now(UTC)
        times = next_times(listed.cron, listed.timezone, start, args.next)
        write_output(None, "".join(f"{t.isoformat()}\n" for t in times))
        return ExitCode.OK

    policy = _load_policy(args.policy, args)
    schedule = None if args.once else _schedule_of(policy)
    lock = Path(args.lock) if args.lock else lock_path_for(args.policy, os.environ)
    history = Path(args.history) if args.history else default_history_path(os.environ)
    record_run = RunLog(
        policy=args.policy,
        history=history,
        metrics=Path(args.metrics_file) if args.metrics_file else None,
    )
    stop = StopFlag()

    def run_once() -> RunOutcome:
        return _scheduled_run(policy, stop=stop, gc_timeout=args.gc_timeout)

    def on_record(record: HistoryRecord) -> None:
        record_run(record)
        if not args.quiet:
            print(_run_summary(record), file=sys.stderr)

    def now() -> datetime:
        return datetime.now(UTC)

    with _stop_on_signals(stop):
        if schedule is None:
            record = run_now(
                run_once, policy=args.policy, now=now, lock_path=lock, on_record=on_record
            )
            return {"ok": ExitCode.OK, "partial": ExitCode.PARTIAL}.get(
                record.status, ExitCode.ERROR
            )
        log.info(
            "schedule %r in %s for %s; lock %s; history %s",
            schedule.cron,
            schedule.timezone,
            args.policy,
            lock,
            history,
        )
        run_loop(
            run_once,
            cron=schedule.cron,
            timezone=schedule.timezone,
            policy=args.policy,
            now=now,
            sleep=time.sleep,
            stop=stop,
            lock_path=lock,
            on_record=on_record,
        )
    return ExitCode.OK


@contextlib.contextmanager
def _stop_on_signals(stop: StopFlag) -> Iterator[None]:
    """SIGTERM/SIGINT set `stop`; a second one gets the default action (exit at once).

    The handler only sets a flag: logging or printing from a signal handler can re-enter a
    buffered stream the main thread is writing to.
    """

    def handler(signum: int, frame: object) -> None:
        stop.set(signal.Signals(signum).name)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if stop.reason:
            print(f"{stop.reason}: stopped after the run in flight", file=sys.stderr)


def _scheduled_run(policy: Policy, *, stop: StopFlag, gc_timeout: float) -> RunOutcome:
    """One scheduled run: plan, apply with the policy's limits, then gc if something went.
    It ends by its deadline (`settings.timeouts.run`, else SCHEDULED_RUN_LIMIT)."""
    _start_command(scheduled=True)

    now = datetime.now(UTC)
    plan, inventory = _make_plan(policy, now=now)
    warnings = list(plan.warnings)
    if policy.gc is not None:
        warnings += untagged_warnings(policy.gc.command, inventory)
    for warning in warnings:
        log.warning("%s", warning)
    outcome = RunOutcome(
        repositories=plan.summary.repositories,
        tags=plan.summary.tags,
        images=plan.summary.images,
        tags_planned=plan.summary.tags_deleted,
        images_planned=plan.summary.images_deleted,
        bytes_reclaimable=plan.summary.bytes_reclaimable,
        warnings=tuple(warnings),
    )
    if plan.deletions:
        report = _apply_scheduled(policy, plan, now=now, stop=stop)
        error = report.error.diagnostics() if report.error else None
        if stop.is_set() and error is not None:
            # Stopped on request, not broken: the entries not attempted make the run partial,
            # and the next run plans them again.
            warnings.append(f"{stop.reason}: stopped between deletions; the next run goes on")
            error = None
        outcome = dataclasses.replace(
            outcome,
            deleted=report.count("deleted") + report.count("resumed"),
            stale=report.count("stale"),
            gone=report.count("gone"),
            failed=report.count("failed"),
            bytes_deleted=report.bytes_reclaimable,
            warnings=tuple(warnings),
            error=error,
        )
    if policy.gc is None or outcome.deleted == 0:
        return outcome
    if stop.is_set():
        log.warning("%s: garbage collection not started; run it by hand", stop.reason)
        return dataclasses.replace(
            outcome, warnings=(*outcome.warnings, "stopped before garbage collection")
        )
    gc = run_gc(policy.gc.command, storage_path=policy.gc.storage_path, timeout=gc_timeout)
    return dataclasses.replace(
        outcome,
        gc_command=gc.command,
        gc_exit_code=gc.exit_code,
        gc_output=gc.output,
        gc_bytes_freed=gc.bytes_freed,
        gc_error=gc.error,
    )


def _plan_sha256(plan: Plan) -> str:
    """A one-step plan's journal key, as a saved plan's is the sha256 of its file."""
    return hashlib.sha256(plan_to_json(plan).encode("utf-8")).hexdigest()


def _policy_check(
    policy: Policy, plan: Plan
) -> tuple[dict[tuple[str, str], str], frozenset[tuple[str, str]]]:
    """Invariant 8: the plan's deletions the policy keeps now, each with its reason; and the
    untagged manifests its untagged rules own now (apply accepts only those untagged entries).

    The policy is evaluated again at the wall clock on a fresh inventory of the repositories the
    plan deletes in (tags and manifests by tag are fetched again; index children and configs come
    from the digest cache). A plan made from the storage is checked on the storage (read again,
    those repositories only, and compared with the API as `plan` does): only it sees untagged
    manifests. A partial inventory cannot tell an orphan attachment from one whose
    subject lives in another repository, so when that alone keeps something a whole-registry plan
    deletes, the whole registry is walked; if that walk fails, the partial answer stands (it
    keeps more). Any other failure raises before the first DELETE.
    """
    now = datetime.now(UTC)
    repositories = sorted({e.repository for e in plan.deletions})
    if not repositories:
        return {}, frozenset()
    source = (
        "storage"
        if plan.inventory_source == "storage" and policy.registry.storage_path is not None
        else "api"
    )

    def fresh(names: Sequence[str] | None) -> tuple[Plan, Inventory]:
        inventory = _take(policy, repository=None, progress=None, repositories=names, source=source)
        if source == "storage":
            inventory = _same_registry(policy, inventory)
        return evaluate(policy, inventory, now), inventory

    again, inventory = fresh(repositories)
    keeps = policy_keeps(plan, again)
    if keeps and plan.summary.complete and _subjects_outside(inventory, keeps):
        log.info("the policy keeps attachments whose subject may be elsewhere: walking it all")
        try:
            again, _ = fresh(None)
        except InventoryError as exc:
            log.warning("%s; the partial inventory's answer stands", exc.diagnostics())
        else:
            keeps = policy_keeps(plan, again)
    return keeps, untagged_owned(again)


def _subjects_outside(inventory: Inventory, keys: Iterable[tuple[str, str]]) -> bool:
    """Whether an image among `keys` is an attachment whose subject the inventory lacks."""
    held = {i.digest for r in inventory.repositories for i in r.images}
    images = {(r.name, i.digest): i for r in inventory.repositories for i in r.images}
    tags = {(r.name, t.digest): t.name for r in inventory.repositories for t in r.tags}
    for key in keys:
        image = images.get(key)
        subject = image.subject if image is not None else None
        if subject is None and key in tags:
            subject = cosign_subject(tags[key])
        if subject is not None and subject not in held:
            return True
    return False


def _execute_plan(
    plan: Plan,
    plan_sha256: str,
    policy: Policy,
    *,
    journal_path: Path,
    verify_kept: bool,
    check_policy: bool,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ApplyReport:
    """The one way a plan is executed: by `apply` and by every scheduled run.

    `check_policy` re-evaluates the policy first (`_policy_check`); a plan this process has just
    made from a fresh inventory with the same policy (`apply -p`, scheduled runs) skips it.
    """
    # a plan made by this process has just been evaluated: its own untagged entries are the
    # policy's now
    keeps, untagged = _policy_check(policy, plan) if check_policy else ({}, untagged_owned(plan))
    with (
        RegistryClient(
            policy.registry,
            concurrency=policy.settings.concurrency,
            env=os.environ,
            **_client_options(policy),
        ) as client,
        Journal(journal_path, registry=client.url).open(
            plan_sha256=plan_sha256, policy_path=policy.path
        ) as journal,
    ):
        return apply_plan(
            plan,
            client,
            journal,
            concurrency=policy.settings.concurrency,
            progress=progress,
            verify_kept=verify_kept,
            should_stop=should_stop,
            policy_keeps=keeps,
            policy_untagged=untagged,
        )


def _apply_scheduled(policy: Policy, plan: Plan, *, now: datetime, stop: StopFlag) -> ApplyReport:
    """Apply a plan just made, with the policy's limits and a journal, as `apply -p` does."""
    preflight = check_plan(plan, registry_url=policy.registry.url, now=now, policy=policy)
    for warning in preflight.warnings:
        log.warning("%s", warning)
    digest = _plan_sha256(plan)
    return _execute_plan(
        plan,
        digest,
        policy,
        journal_path=default_journal_path(policy.registry.url, digest, os.environ),
        verify_kept=False,  # the plan is seconds old: made by this run from a fresh inventory
        check_policy=False,  # ... with this policy, at this time
        should_stop=stop.is_set,
    )


def _run_summary(record: HistoryRecord) -> str:
    o = record.outcome
    text = f"run {record.status} ({record.duration_seconds:.1f} s)"
    if o is not None:
        text += (
            f": planned {o.images_planned} of {o.images} image(s), deleted {o.deleted} "
            f"({human_bytes(o.bytes_deleted)}), {o.stale} stale, {o.gone} already gone, "
            f"{o.failed} failed"
        )
        if o.gc_command is not None:
            freed = "" if o.gc_bytes_freed is None else f", freed {human_bytes(o.gc_bytes_freed)}"
            text += f"; gc exit {o.gc_exit_code}{freed}"
    if record.missed_ticks:
        text += f"; skipped {len(record.missed_ticks)} tick(s) it overran"
    if record.error and record.status != "skipped":  # a skipped --once run raises LockHeld
        text += f"\nerror: {_lines(record.error)}"
    return text


_COMMANDS.append(_add_schedule)


# --- apply, restore, doctor -------------------------------------------------------------------
# Summaries, progress and outcomes go to stderr (apply produces no data); doctor's check lines are
# its result and go to stdout. Confirmation: a TTY is asked, anything else needs --yes.

_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _duration_arg(text: str) -> timedelta:
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 24h, 90m or 7d")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def _confirm(question: str, *, yes: bool, what: str) -> bool:
    """True to go on. `--yes` skips the question; without a terminal to ask, it is required."""
    if yes:
        return True
    if not _stdin_is_tty():
        raise RetentionError(
            f"stdin is not a terminal, so there is no one to confirm {what}",
            hint="pass --yes to proceed without confirmation (CI, cron, scripts)",
        )
    print(f"{question} Type 'yes' to continue: ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline().strip().lower()
    except (OSError, ValueError):
        answer = ""
    return answer == "yes"


def _short_ref(repository: str, digest: str) -> str:
    return f"{repository}@{digest[:19]}"


def _add_apply(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "apply",
        parents=[common],
        help="re-verify and delete exactly what a plan lists",
        description=(
            "Refuses, before the first DELETE, a plan for another registry or format, one older "
            "than --max-plan-age, one over max_deletions (the stricter of the plan's and the "
            "policy's) and an inconsistent one. Re-lists the tags of each repository, re-resolves "
            "every tag the plan lists, deletes only digests proven to be manifests, indexes before "
            "their platform manifests. Writes a journal so a re-run resumes and `retention "
            "restore` can undo. Asks for confirmation on a terminal; --yes otherwise. Exit 0 when "
            "everything planned is gone, 3 when only part of the plan was applied, 1 on error."
        ),
        epilog=(
            "Example: retention apply plan.json   |   retention apply -p policy.yaml --yes "
            "(plan and apply in one step)"
        ),
    )
    parser.add_argument(
        "plan", nargs="?", metavar="PLAN.json", help="a plan from `retention plan -o`"
    )
    parser.add_argument(
        "-p",
        "--policy",
        metavar="POLICY",
        help="credentials and settings from this policy (default: the policy the plan names); "
        "without PLAN.json: plan and apply in one step (needs --yes)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--journal",
        metavar="PATH",
        help="journal file (default: $XDG_STATE_HOME/retention/journal/"
        "<host>_<port>-<plan sha256 prefix>.jsonl)",
    )
    parser.add_argument(
        "--lock",
        metavar="PATH",
        help="the lock file shared with `retention schedule --lock PATH` (default: the policy's "
        "lock under $XDG_STATE_HOME/retention/locks/)",
    )
    parser.add_argument(
        "--max-plan-age",
        type=_duration_arg,
        default=timedelta(hours=24),
        metavar="DURATION",
        help="refuse a plan older than this (default 24h; units s m h d w)",
    )
    parser.add_argument(
        "--verify-kept-tags",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also re-resolve every tag the plan keeps (one request each), so that a kept tag "
        "moved onto a planned image since the plan (a rollback) keeps it; default: on for a "
        "saved plan, off for a one-step -p run whose plan is seconds old",
    )
    _add_shard_option(parser)
    parser.set_defaults(func=_cmd_apply)


def _cmd_apply(args: argparse.Namespace) -> int:

    now = datetime.now(UTC)
    shard = _shard(args)
    if shard is not None and args.plan is not None:
        raise RetentionError(
            "--shard applies to planning: a saved plan already holds only its shard",
            hint="retention plan -p POLICY --shard K/N -o plan.json, then retention apply "
            "plan.json; or retention apply -p POLICY --yes --shard K/N",
        )
    if args.plan is None:
        if args.policy is None:
            raise RetentionError(
                "apply needs a plan file, or -p POLICY with --yes to plan and apply in one step",
                hint="retention plan -p POLICY -o plan.json, review it, then retention apply "
                "plan.json",
            )
        if not args.yes:
            raise RetentionError(
                "planning and applying in one step deletes without review, so it needs --yes",
                hint="to review first: retention plan -p POLICY -o plan.json, then retention "
                "apply plan.json",
            )
        policy = _load_policy(args.policy, args)
        plan, _inventory = _make_plan(
            policy, now=now, repository=None, progress=_progress(args), shard=shard
        )
        if not args.quiet:
            sys.stderr.write(render_text(plan, now=now))
        plan_sha256 = _plan_sha256(plan)
    else:
        plan, data = _read_plan(args.plan)
        plan_sha256 = hashlib.sha256(data).hexdigest()
        policy_path = args.policy or plan.policy_path
        if args.policy is None and not Path(policy_path).is_file():
            raise RetentionError(
                f"the plan names policy {policy_path}, which is not a file here",
                hint="pass -p POLICY: apply takes credentials and settings from it",
            )
        policy = _load_policy(policy_path, args)
        if policy.sha256 != plan.policy_sha256:
            log.warning(
                "policy %s changed since the plan was made (sha256 %s, the plan says %s): "
                "apply uses its credentials, settings and protect patterns",
                policy.path,
                policy.sha256[:12],
                plan.policy_sha256[:12],
            )
    preflight = check_plan(
        plan,
        registry_url=policy.registry.url,
        now=now,
        max_plan_age=args.max_plan_age,
        policy=policy,
    )
    for warning in preflight.warnings:
        log.warning("%s", warning)
    if not plan.deletions:
        if not args.quiet:
            print("the plan deletes nothing", file=sys.stderr)
        return ExitCode.OK
    # A saved plan may be hours old: a kept tag moved onto a planned image since (a rollback)
    # must keep it, which costs one request per kept tag. A one-step plan is seconds old.
    verify_kept = args.verify_kept_tags if args.verify_kept_tags is not None else bool(args.plan)
    # The lock `retention schedule` takes: a scheduler and a manual apply never overlap. Shards
    # touch disjoint repositories: each has its own lock, so N workers on one host run at once.
    lock = Path(args.lock) if args.lock else lock_path_for(policy.path, os.environ)
    if shard is not None and not args.lock:
        lock = lock.with_name(f"{lock.stem}-shard-{shard.index}-of-{shard.count}.lock")
    with acquire_lock(lock, purpose="apply"):
        return _run_apply(args, plan, plan_sha256, policy, preflight, verify_kept=verify_kept)


def _run_apply(
    args: argparse.Namespace,
    plan: Plan,
    plan_sha256: str,
    policy: Policy,
    preflight: Preflight,
    *,
    verify_kept: bool,
) -> int:

    journal_path = (
        Path(args.journal)
        if args.journal
        else default_journal_path(policy.registry.url, plan_sha256, os.environ)
    )
    if not args.quiet:
        print(
            f"apply: delete {preflight.images} image(s) in {preflight.repositories} "
            f"repository(ies) of {plan.registry}, freeing up to "
            f"{human_bytes(preflight.bytes_reclaimable)} once garbage collection runs "
            f"(limit {preflight.limit.allowed}: {preflight.limit.source})\n"
            f"journal: {journal_path}",
            file=sys.stderr,
        )
    if not args.yes and not args.quiet and _stdin_is_tty():
        # someone is about to answer: show them what they are agreeing to
        sys.stderr.write(_plan_summary(plan))
    question = f"Delete {preflight.images} image(s) from {plan.registry}?"
    if not _confirm(question, yes=args.yes, what="the deletion"):
        print("aborted: nothing was deleted", file=sys.stderr)
        return ExitCode.ERROR
    sink = _progress(args)

    def progress(event: ProgressEvent) -> None:
        sink("deletions", event.done, event.total)

    try:
        report = _execute_plan(
            plan,
            plan_sha256,
            policy,
            journal_path=journal_path,
            verify_kept=verify_kept,
            # a one-step plan was evaluated seconds ago, by this process, with this policy
            check_policy=args.plan is not None,
            progress=progress,
        )
    finally:
        sink.close()
    _print_apply_report(report, journal_path, args.quiet)
    if report.error is not None:
        print(f"error: {_lines(report.error.diagnostics())}", file=sys.stderr)
        if report.count("deleted") == 0:
            return ExitCode.ERROR
    return ExitCode.OK if report.complete else ExitCode.PARTIAL


def _plan_summary(plan: Plan) -> str:
    """Per repository what the plan deletes, and the text plan's closing line."""
    counts: dict[str, list[int]] = {}
    for e in plan.deletions:
        c = counts.setdefault(e.repository, [0, 0, 0])
        c[0] += 1
        c[1] += len(e.tags)
        c[2] += e.size
    lines = [
        f"  {untrusted(repo)}: {images} image(s) ({tags} tag(s)), {human_bytes(size)}"
        for repo, (images, tags, size) in sorted(counts.items())
    ]
    closing = render_text(replace(plan, warnings=()), now=_plan_now(plan)).rstrip().splitlines()
    return "\n".join(["the plan deletes:", *lines, closing[-1], ""])


def _print_apply_report(report: Any, journal_path: Path, quiet: bool) -> None:
    for kind in ("stale", "kept", "failed"):
        for o in report.of_kind(kind):
            # the plan file's names and the registry's answers: escaped at the edge
            tags = ",".join(untrusted(t) for t in o.entry.tags)
            ref = untrusted(_short_ref(o.entry.repository, o.entry.digest))
            print(f"{kind}: {ref} {tags}: {message(o.reason)}", file=sys.stderr)
    if quiet and report.complete:
        return
    earlier = report.count("resumed")
    repaired = sum(1 for o in report.outcomes if o.repaired)
    extra = f"; {earlier} done by an earlier run" if earlier else ""
    extra += f"; {repaired} dangling tag(s) repaired" if repaired else ""
    kept = report.count("kept")
    extra += f"; {kept} skipped: the policy keeps them now" if kept else ""
    print(
        f"deleted {report.count('deleted')}, stale {report.count('stale')}, already gone "
        f"{report.count('gone')}, failed {report.count('failed')}{extra}\n"
        f"frees up to {human_bytes(report.bytes_reclaimable)} (the plan's figure) once garbage "
        f"collection runs\njournal: {journal_path}",
        file=sys.stderr,
    )
    if not report.complete:
        print(
            "only part of the plan was applied: run the same command again to finish it "
            "(stale entries, and entries the policy keeps, need a new plan)",
            file=sys.stderr,
        )


_COMMANDS.append(_add_apply)


def _add_restore(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "restore",
        parents=[common],
        help="re-upload the manifests an apply deleted, from its journal",
        description=(
            "Re-uploads the manifests an apply deleted (platform manifests before their index, "
            "subjects before their artifacts) and points their tags at them again; a tag pushed "
            "since is left alone. Works only until garbage collection runs: it re-uploads "
            "manifests, not the layers they reference. Exit 0 when everything was restored, 3 "
            "when only part, 1 when nothing."
        ),
        epilog="Example: retention restore ~/.local/state/retention/journal/FILE.jsonl --tag v1",
    )
    parser.add_argument("journal", metavar="JOURNAL", help="the journal an apply wrote")
    parser.add_argument("-p", "--policy", metavar="POLICY", help="credentials from this policy")
    parser.add_argument("--repository", metavar="REPO", help="only this repository")
    parser.add_argument(
        "--tag",
        metavar="TAG",
        help="only the image this tag named (with its platform manifests and artifacts)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(func=_cmd_restore)


def _cmd_restore(args: argparse.Namespace) -> int:

    state = read_journal(args.journal)
    registry = state.registry
    if registry is None:
        if not args.quiet:
            print(f"{args.journal}: the journal records no deletion", file=sys.stderr)
        return ExitCode.OK
    policy_path = args.policy or state.policy_path
    config = RegistryConfig(url=registry)
    options: dict[str, Any] = {}  # without a policy: the client's default timeouts
    if policy_path is not None and (args.policy or Path(policy_path).is_file()):
        policy = _load_policy(policy_path, args)
        if redact_url(policy.registry.url) != redact_url(registry):
            raise RetentionError(
                f"policy {policy_path} is for {redact_url(policy.registry.url)}, but the journal "
                f"is for {registry}",
                hint="pass -p with a policy for the journal's registry",
            )
        config = policy.registry
        options = _client_options(policy)
    items = select(state, repository=args.repository, tag=args.tag)
    if not items:
        what = " ".join(
            p
            for p in (
                f"repository {args.repository}" if args.repository else "",
                f"tag {args.tag}" if args.tag else "",
            )
            if p
        )
        raise RetentionError(
            f"the journal records no deleted manifest{' for ' + what if what else ''}",
            hint="check the names with: grep '\"intent\"' JOURNAL",
        )
    tags = sum(len(i.tags) for i in items)
    if not args.quiet:
        print(
            f"restore: {len(items)} manifest(s) and {tags} tag(s) to {registry}\nnote: {GC_HINT}",
            file=sys.stderr,
        )
    if not _confirm(f"Restore {len(items)} manifest(s)?", yes=args.yes, what="the restore"):
        print("aborted: nothing was restored", file=sys.stderr)
        return ExitCode.ERROR

    def progress(outcome: RestoreOutcome) -> None:
        ref = untrusted(_short_ref(*outcome.key))  # the journal's names, the registry's words
        if outcome.kind == "failed":
            print(f"failed: {ref}: {message(outcome.reason or '')}", file=sys.stderr)
        for tag, why in outcome.tags_skipped:
            where = f"{untrusted(outcome.key[0])}:{untrusted(tag)}"
            print(f"tag not restored: {where}: {message(why)}", file=sys.stderr)

    with RegistryClient(config, env=os.environ, **options) as client:
        report = restore(client, items, progress=progress)
    restored = report.count("restored")
    if not args.quiet or not report.complete:
        repointed = sum(len(o.tags_restored) for o in report.outcomes)
        print(
            f"restored {restored} manifest(s), {repointed} tag(s); failed {report.count('failed')}",
            file=sys.stderr,
        )
    if report.gc_ran:
        print(
            "garbage collection already ran since the apply: the blobs of some manifests are "
            "gone, and those cannot be restored (push the images again)",
            file=sys.stderr,
        )
    if report.complete:
        return ExitCode.OK
    return ExitCode.PARTIAL if restored else ExitCode.ERROR


_COMMANDS.append(_add_restore)


def _add_doctor(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "doctor",
        parents=[common],
        help="check reachability, credentials, catalog access, deletion and clock",
        description=(
            "One line per check, ok/warn/fail: the registry is reachable; its API version "
            "header; which credential source is used and whether it works; whether the catalog "
            "is allowed; whether deletion is enabled (a DELETE of the all-zero digest: 404 "
            "means enabled, 405 disabled; never a real digest); the clock skew against the "
            "registry's Date header. Exit 1 when any check fails."
        ),
        epilog="Example: retention doctor -p policies/example.yaml",
    )
    parser.add_argument("-p", "--policy", metavar="POLICY", required=True, help="the policy")
    parser.add_argument(
        "--repository",
        metavar="REPO",
        help="probe deletion in this repository (default: the first in the catalog)",
    )
    parser.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:

    policy = _load_policy(args.policy, args)
    # A diagnosis should answer quickly: two attempts, not the long patience of a deletion run.
    quick = RetryPolicy(attempts=2, base=0.2, cap=1.0, budget=5.0)
    with RegistryClient(
        policy.registry, env=os.environ, retry=quick, **_client_options(policy)
    ) as client:
        checks = run_checks(client, now=datetime.now(UTC), repository=args.repository)
    lines = []
    for check in checks:
        # a check's message quotes the server (a header, an error body): escaped at the edge
        lines.append(f"{check.status:<4}  {check.name}: {message(check.message)}")
        if check.hint and check.status != "ok":
            lines.append(f"      hint: {message(check.hint)}")
    write_output(None, "\n".join(lines) + "\n")
    return ExitCode.ERROR if any(c.status == "fail" for c in checks) else ExitCode.OK


_COMMANDS.append(_add_doctor)
