"""The command line: argparse, rendering, progress and exit codes.

The only module that prints, exits or configures logging; nothing imports it.
"""

from __future__ import annotations

import argparse
import csv
import enum
import io
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import re2

from retention import __version__
from retention.cache import DigestCache
from retention.errors import InventoryError, PolicyError, RetentionError
from retention.evaluate import TagVerdict, age_words, evaluate, explain
from retention.inventory import Progress, take_inventory
from retention.model import Inventory, Repository
from retention.oci import format_time
from retention.plan import Plan, human_bytes, render_text
from retention.plan import to_json as plan_to_json
from retention.policy.load import compile_pattern, load_policy
from retention.policy.model import Pattern, Policy
from retention.registry.client import RegistryClient

log = logging.getLogger("retention")


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    CHANGES = 2  # plan --detailed-exitcode: deletions present
    PARTIAL = 3  # apply: only part of the plan was applied


Handler = Callable[[argparse.Namespace], int]

EPILOG_HINT = "Docs: README.md and docs/ in the project."
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
# plan, inventory, explain: inventory the registry and evaluate the policy


def _load_policy(path: str) -> Policy:
    """Load a policy for a command that contacts the registry: unset ${VAR}s are errors."""
    policy, warnings = load_policy(path, env=os.environ, require_env=True)
    for w in warnings:
        print(w.render(), file=sys.stderr)
    return policy


def _parse_as_of(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--as-of: {text!r} is not a date (use 2026-01-31 or 2026-01-31T12:00:00Z)"
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _repository_pattern(text: str) -> Pattern:
    try:
        return compile_pattern(text)
    except re2.error as exc:
        raise RetentionError(
            f"--repository {text!r} is not a valid RE2 pattern: {exc}",
            hint="it is matched against the whole repository name, e.g. 'apps/.*'",
        ) from exc


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "retention" / "blobs"


class _TtyProgress:
    """Draws `phase done/total` on stderr when it is a terminal; costs nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        line = f"\r{phase}: {done}/{total}"
        if line != self._last:
            sys.stderr.write(line + ("\n" if done >= total else ""))
            sys.stderr.flush()
            self._last = line


def _progress(args: argparse.Namespace) -> _TtyProgress:
    return _TtyProgress(sys.stderr.isatty() and not args.quiet)


def _take(
    policy: Policy,
    *,
    now: datetime,
    repository: str | None,
    progress: Progress | None,
    use_cache: bool = True,
) -> Inventory:
    select_pattern = _repository_pattern(repository) if repository else None

    def select(name: str) -> bool:
        return select_pattern is None or select_pattern.matches(name)

    cache = DigestCache(_cache_dir()) if use_cache else None
    with RegistryClient(
        policy.registry, concurrency=policy.settings.concurrency, env=os.environ
    ) as client:
        return take_inventory(
            client,
            now=now,
            select=select,
            complete=select_pattern is None,
            concurrency=policy.settings.concurrency,
            cache=cache,
            progress=progress or (lambda phase, done, total: None),
        )


def _make_plan(
    policy: Policy,
    *,
    now: datetime,
    repository: str | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> tuple[Plan, Inventory]:
    """Inventory the registry and evaluate the policy: the one path to a plan."""
    inventory = _take(
        policy, now=now, repository=repository, progress=progress, use_cache=use_cache
    )
    return evaluate(policy, inventory, now), inventory


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
    p.add_argument("--format", choices=("text", "json"), default="text", help="stdout format")
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 2 when the plan deletes something, 0 when it deletes nothing",
    )
    p.add_argument("--as-of", type=_parse_as_of, help="evaluate as if it were this date (UTC)")
    p.add_argument("--repository", metavar="REGEX", help="only repositories matching this RE2")
    p.add_argument("--show-kept", action="store_true", help="list kept images too")
    p.add_argument(
        "--from-inventory", metavar="FILE", help="evaluate a saved inventory; no registry"
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the digest cache")
    p.set_defaults(func=_cmd_plan)


def _read_inventory(path: str) -> Inventory:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InventoryError(
            f"{path}: cannot read the inventory: {exc}",
            hint="save one with `retention inventory -p POLICY --format json -o FILE`",
        ) from exc
    return Inventory.from_json(doc)


def _cmd_plan(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    now = args.as_of or datetime.now(UTC)
    if args.from_inventory:
        inventory = _read_inventory(args.from_inventory)
        plan = evaluate(policy, inventory, now)
    else:
        plan, _ = _make_plan(
            policy,
            now=now,
            repository=args.repository,
            progress=_progress(args),
            use_cache=not args.no_cache,
        )
    if args.output:
        write_output(args.output, plan_to_json(plan))
    if not args.quiet or not args.output:
        if args.format == "json":
            write_output(None, plan_to_json(plan))
        else:
            write_output(None, render_text(plan, show_kept=args.show_kept, now=now))
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
    p.set_defaults(func=_cmd_inventory)


def _repo_bytes(repo: Repository) -> int:
    """Bytes the repository's manifests and blobs take, each blob once."""
    blobs: dict[str, int] = {}
    for image in repo.images:
        blobs[image.digest] = image.manifest_size
        blobs.update((b.digest, b.size) for b in image.blobs)
    return sum(blobs.values())


def _inventory_text(inventory: Inventory) -> str:
    lines = [f"Registry {inventory.registry}, taken {format_time(inventory.taken_at)}", ""]
    repos = sorted(inventory.repositories, key=lambda r: (-_repo_bytes(r), r.name))
    width = max([len(r.name) for r in repos] + [10])
    lines.append(f"{'REPOSITORY':<{width}}  {'TAGS':>6}  {'IMAGES':>6}  {'SIZE':>10}")
    lines.extend(
        f"{r.name:<{width}}  {len(r.tags):>6}  {len(r.images):>6}  "
        f"{human_bytes(_repo_bytes(r)):>10}"
        for r in repos
    )
    for r in repos:
        lines += ["", f"{r.name}:"]
        for t in r.tags:
            image = r.image(t.digest)
            created = format_time(image.created) if image and image.created else "unknown"
            size = human_bytes(image.size) if image else "?"
            lines.append(f"  {t.name:<30} {t.digest[:19]}  {created:<20}  {size:>10}")
    lines.extend(f"warning: {w}" for w in inventory.warnings)
    return "\n".join(lines) + "\n"


def _inventory_csv(inventory: Inventory) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["repository", "tag", "digest", "media_type", "kind", "created", "size"])
    for r in inventory.repositories:
        for t in r.tags:
            image = r.image(t.digest)
            writer.writerow(
                [
                    r.name,
                    t.name,
                    t.digest,
                    image.media_type if image else "",
                    image.kind.value if image else "",
                    format_time(image.created) if image and image.created else "",
                    image.size if image else "",
                ]
            )
    return out.getvalue()


def _cmd_inventory(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    inventory = _take(
        policy,
        now=datetime.now(UTC),
        repository=args.repository,
        progress=_progress(args),
        use_cache=not args.no_cache,
    )
    if args.format == "json":
        text = json.dumps(inventory.to_json(), indent=2, sort_keys=True) + "\n"
    elif args.format == "csv":
        text = _inventory_csv(inventory)
    else:
        text = _inventory_text(inventory)
    write_output(args.output, text)
    return ExitCode.OK


def _add_explain(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explain",
        parents=[common],
        help="why each tag of a repository is kept or deleted",
        description="For each tag: the owning rule, its rank among that rule's images, its age, "
        "and the decisive reason.",
        epilog="Example: retention explain -p policy.yaml apps/web:pr-123-abc1234",
    )
    p.add_argument("-p", "--policy", required=True, help="the policy file")
    p.add_argument("target", metavar="REPO[:TAG]", help="a repository, or one of its tags")
    p.add_argument("--as-of", type=_parse_as_of, help="evaluate as if it were this date (UTC)")
    p.add_argument(
        "--from-inventory", metavar="FILE", help="explain from a saved inventory; no registry"
    )
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    policy = _load_policy(args.policy)
    now = args.as_of or datetime.now(UTC)
    repository, _, tag = args.target.partition(":")
    if args.from_inventory:
        inventory = _read_inventory(args.from_inventory)
    else:
        inventory = _take(
            policy, now=now, repository=re2.escape(repository), progress=_progress(args)
        )
    verdicts = explain(policy, inventory, now, repository, tag or None)
    write_output(None, _explanation_text(verdicts))
    return ExitCode.OK


def _explanation_text(verdicts: list[TagVerdict]) -> str:
    lines = []
    for v in verdicts:
        age = age_words(v.age) if v.age is not None else "age unknown"
        rule = f"rule {v.rule}" if v.rule else "no rule"
        rank = f", rank {v.rank}" if v.rank is not None else ""
        lines.append(f"{v.repository}:{v.tag}  {v.digest[:19]}  {age}  ({rule}{rank})")
        lines.append(f"    {v.line()}")
    return "\n".join(lines) + "\n"


_COMMANDS.extend([_add_plan, _add_inventory, _add_explain])


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
