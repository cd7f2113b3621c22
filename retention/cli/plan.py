"""`retention plan`: inventory the registry (or read a saved inventory), evaluate the policy and
show the deletion plan; nothing is deleted."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from retention.cli.console import progress_for
from retention.cli.exits import ExitCode
from retention.cli.inputs import narrow, read_inventory, read_policy
from retention.cli.options import (
    add_shard_option,
    add_source_option,
    evaluation_time,
    repository_pattern,
    shard_of,
)
from retention.cli.output import check_output, write
from retention.cli.render import markdown
from retention.evaluate import evaluate
from retention.plan import render_text
from retention.plan import to_json as plan_to_json
from retention.workflow import make_plan

log = logging.getLogger("retention")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
        help="exit 2 when the plan deletes or untags something, 0 when it changes nothing",
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
    add_source_option(p)
    add_shard_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    now = evaluation_time(args.as_of)
    check_output(args.output)
    check_output(args.markdown_output, "--markdown-output")
    # a bad pattern is an error before anything else
    pattern = repository_pattern(args.repository) if args.repository else None
    shard = shard_of(args)
    policy = read_policy(args.policy, args)
    if args.from_inventory:
        inventory = narrow(read_inventory(args.from_inventory), args.repository, shard)
        # the walk logged these when it ran; a saved inventory would otherwise hide them
        for warning in inventory.warnings:
            log.warning("%s", warning)
        plan = evaluate(policy, inventory, now)
    else:
        display = progress_for(args)
        try:
            plan, _ = make_plan(
                policy,
                now=now,
                repository=pattern,
                progress=display,
                use_cache=not args.no_cache,
                shard=shard,
                source=args.inventory_source,
            )
        finally:
            display.close()
    if args.output:
        write(args.output, plan_to_json(plan))
    if args.markdown_output:
        write(args.markdown_output, markdown(plan, now))
    text_shown = False
    if not args.quiet or not args.output:
        if args.format == "json":
            write(None, plan_to_json(plan))
        elif args.format == "markdown":
            write(None, markdown(plan, now))
            text_shown = True
        else:
            write(None, render_text(plan, show_kept=args.show_kept, now=now))
            text_shown = True
    if not text_shown:  # the text plan ends with its warnings: do not repeat them
        for warning in plan.warnings:
            log.warning("%s", warning)
    if args.detailed_exitcode and (plan.deletions or plan.untags):
        return ExitCode.CHANGES
    return ExitCode.OK
