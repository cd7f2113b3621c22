"""`retention schedule`: plan and apply on the policy's cron schedule (retention/schedule.py), or
once (--once) for CronJobs and systemd timers; each run is retention.workflow.scheduled_run.

The signal handlers live here: SIGTERM/SIGINT set the loop's stop flag, and the run in flight
finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.cli.exits import ExitCode
from retention.cli.inputs import read_policy
from retention.cli.options import instant, positive_float, positive_int
from retention.cli.output import write_output
from retention.cli.render import run_summary
from retention.errors import ScheduleError
from retention.gc import DEFAULT_TIMEOUT_SECONDS
from retention.policy.load import load_policy
from retention.policy.model import Policy, Schedule
from retention.runlog import HistoryRecord, RunLog, RunOutcome, default_history_path
from retention.schedule import StopFlag, lock_path_for, next_times, run_loop, run_now
from retention.workflow import scheduled_run

log = logging.getLogger("retention")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
        type=positive_int,
        metavar="N",
        help="print the next N run times (ISO 8601, in the policy's time zone) and exit",
    )
    parser.add_argument(
        "--after",
        type=instant,
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
        type=positive_float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"kill the gc command after this long (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.set_defaults(func=run)


def _schedule_of(policy: Policy) -> Schedule:
    """The policy's `schedule:` section; an error without one."""
    if policy.schedule is None:
        raise ScheduleError(
            f"{policy.path}: the policy has no schedule: section",
            hint='add `schedule: {cron: "30 3 * * *", timezone: UTC}`, or run '
            "`retention schedule --once` from cron, a systemd timer or a Kubernetes CronJob",
        )
    return policy.schedule


def run(args: argparse.Namespace) -> int:
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

    policy = read_policy(args.policy, args)
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
        return scheduled_run(policy, stop=stop, gc_timeout=args.gc_timeout)

    def on_record(record: HistoryRecord) -> None:
        record_run(record)
        if not args.quiet:
            print(run_summary(record), file=sys.stderr)

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
