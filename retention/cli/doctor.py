"""`retention doctor`: one line per check (reachability, credentials, catalog, deletion, clock);
the lines are its result and go to stdout."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from typing import Any

from retention.cli.exits import ExitCode
from retention.cli.inputs import read_policy
from retention.cli.output import write_output
from retention.cli.render import doctor_text
from retention.doctor import run_checks
from retention.registry.client import RegistryClient, RetryPolicy
from retention.workflow import client_options


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "doctor",
        parents=[common],
        help="check reachability, credentials, catalog access, deletion and clock",
        description=(
            "One line per check, ok/warn/fail: the registry is reachable; its API version "
            "header; which credential source is used and whether it works; whether the catalog "
            "is allowed; whether deletion is enabled (a DELETE of the all-zero digest: 404 "
            "means enabled, 405 disabled; never a real digest); with settings.untag, whether the "
            "credentials may push (a blob upload started and cancelled; nothing pushed); the "
            "clock skew against the registry's Date header. Exit 1 when any check fails."
        ),
        epilog="Example: retention doctor -p policies/example.yaml",
    )
    parser.add_argument("-p", "--policy", metavar="POLICY", required=True, help="the policy")
    parser.add_argument(
        "--repository",
        metavar="REPO",
        help="probe deletion in this repository (default: the first in the catalog)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    policy = read_policy(args.policy, args)
    # A diagnosis should answer quickly: two attempts, not the long patience of a deletion run.
    quick = RetryPolicy(attempts=2, base=0.2, cap=1.0, budget=5.0)
    with RegistryClient(
        policy.registry, env=os.environ, retry=quick, **client_options(policy)
    ) as client:
        checks = run_checks(
            client,
            now=datetime.now(UTC),
            repository=args.repository,
            push=policy.settings.untag,  # untag's throw-away method pushes
        )
    write_output(None, doctor_text(checks))
    return ExitCode.ERROR if any(c.status == "fail" for c in checks) else ExitCode.OK
