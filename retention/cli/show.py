"""`retention show`: a saved plan, checked as `apply` checks it, rendered as `plan` rendered it;
contacts no registry."""

from __future__ import annotations

import argparse
from typing import Any

from retention.cli.exits import ExitCode
from retention.cli.inputs import read_plan
from retention.cli.output import write
from retention.cli.render import markdown
from retention.plan import render_text
from retention.plan import to_json as plan_to_json


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan, _data = read_plan(args.plan)
    now = plan.as_of  # what its ages were counted from: `evaluated_at`, else `generated_at`
    if args.format == "json":
        write(None, plan_to_json(plan))
    elif args.format == "markdown":
        write(None, markdown(plan, now))
    else:
        write(None, render_text(plan, show_kept=args.show_kept, now=now))
    return ExitCode.OK
