"""`retention apply`: re-verify and delete exactly what a plan lists (a saved plan, or one made
now with `-p POLICY --yes`), under the policy's lock, with a journal.

Summaries, progress and outcomes go to stderr: apply produces no data. Confirmation: a terminal
is asked, anything else needs --yes.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retention.apply import Preflight, ProgressEvent, check_plan
from retention.cli import console
from retention.cli.exits import ExitCode
from retention.cli.inputs import read_plan, read_policy
from retention.cli.options import add_shard_option, duration_arg, shard_of
from retention.cli.render import apply_report_lines, escape_lines, plan_summary
from retention.errors import UsageError
from retention.inventory import Shard
from retention.journal import default_journal_path
from retention.plan import Plan, human_bytes, render_text
from retention.policy.model import Policy
from retention.schedule import acquire_lock, lock_path_for
from retention.workflow import execute_plan, make_plan, sha256_of

log = logging.getLogger("retention")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
        type=duration_arg,
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
    add_shard_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    shard = shard_of(args)
    if shard is not None and args.plan is not None:
        raise UsageError(
            "--shard applies to planning: a saved plan already holds only its shard",
            hint="retention plan -p POLICY --shard K/N -o plan.json, then retention apply "
            "plan.json; or retention apply -p POLICY --yes --shard K/N",
        )
    if args.plan is None:
        plan, plan_sha256, policy = _one_step(args, now, shard)
    else:
        plan, plan_sha256, policy = _saved_plan(args)
    preflight = check_plan(
        plan,
        registry_url=policy.registry.url,
        now=now,
        max_plan_age=args.max_plan_age,
        policy=policy,
    )
    for warning in preflight.warnings:
        log.warning("%s", warning)
    if not plan.deletions and not plan.untags:
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


def _one_step(
    args: argparse.Namespace, now: datetime, shard: Shard | None
) -> tuple[Plan, str, Policy]:
    """`apply -p POLICY --yes`: plan now (shown on stderr), its sha256 and the policy."""
    if args.policy is None:
        raise UsageError(
            "apply needs a plan file, or -p POLICY with --yes to plan and apply in one step",
            hint="retention plan -p POLICY -o plan.json, review it, then retention apply plan.json",
        )
    if not args.yes:
        raise UsageError(
            "planning and applying in one step deletes without review, so it needs --yes",
            hint="to review first: retention plan -p POLICY -o plan.json, then retention "
            "apply plan.json",
        )
    policy = read_policy(args.policy, args)
    display = console.progress_for(args)
    try:
        plan, _inventory = make_plan(
            policy, now=now, repository=None, progress=display, shard=shard
        )
    finally:
        display.close()
    if not args.quiet:
        sys.stderr.write(render_text(plan, now=now))
    return plan, sha256_of(plan), policy


def _saved_plan(args: argparse.Namespace) -> tuple[Plan, str, Policy]:
    """`apply PLAN.json`: the plan, the sha256 of its file and the policy (-p, else the one the
    plan names)."""
    plan, data = read_plan(args.plan)
    policy_path = args.policy or plan.policy_path
    if args.policy is None and not Path(policy_path).is_file():
        raise UsageError(
            f"the plan names policy {policy_path}, which is not a file here",
            hint="pass -p POLICY: apply takes credentials and settings from it",
        )
    policy = read_policy(policy_path, args)
    if policy.sha256 != plan.policy_sha256:
        log.warning(
            "policy %s changed since the plan was made (sha256 %s, the plan says %s): "
            "apply uses its credentials, settings and protect patterns",
            policy.path,
            policy.sha256[:12],
            plan.policy_sha256[:12],
        )
    return plan, hashlib.sha256(data).hexdigest(), policy


def _run_apply(
    args: argparse.Namespace,
    plan: Plan,
    plan_sha256: str,
    policy: Policy,
    preflight: Preflight,
    *,
    verify_kept: bool,
) -> int:
    """Under the lock: say what will go, ask, execute the plan, report."""
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
            + _untag_line(plan)
            + f"journal: {journal_path}",
            file=sys.stderr,
        )
    if not args.yes and not args.quiet and console.stdin_is_tty():
        # someone is about to answer: show them what they are agreeing to
        sys.stderr.write(plan_summary(plan))
    untags = f" and untag {len(plan.untags)} tag(s)" if plan.untags else ""
    question = f"Delete {preflight.images} image(s){untags} from {plan.registry}?"
    if not console.confirm(question, yes=args.yes, what="the deletion"):
        print("aborted: nothing was deleted", file=sys.stderr)
        return ExitCode.ERROR
    sink = console.progress_for(args)

    def progress(event: ProgressEvent) -> None:
        sink("deletions", event.done, event.total)

    try:
        report = execute_plan(
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
    for line in apply_report_lines(report, journal_path, args.quiet):
        print(line, file=sys.stderr)
    if report.error is not None:
        print(f"error: {escape_lines(report.error.diagnostics())}", file=sys.stderr)
        if report.count("deleted") == 0 and report.untag_count("untagged") == 0:
            return ExitCode.ERROR
    return ExitCode.OK if report.complete else ExitCode.PARTIAL


def _untag_line(plan: Plan) -> str:
    """The untags apply will do, with the method of each repository (docs/decisions.md, "Untag:
    registry side"): a throw-away manifest is pushed, so the credentials need `push` there."""
    if not plan.untags:
        return ""
    methods = dict(plan.untag_methods)
    pushing = sorted(
        {u.repository for u in plan.untags if methods.get(u.repository) != "delete-tag"}
    )
    push = f"; pushes a throw-away manifest in {len(pushing)} repository(ies)" if pushing else ""
    return f"untag: remove {len(plan.untags)} tag(s) alone, their images stay{push}\n"
