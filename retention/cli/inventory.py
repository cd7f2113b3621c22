"""`retention inventory`: walk the registry and report where the disk went, as text, CSV or the
JSON that `plan --from-inventory` reads."""

from __future__ import annotations

import argparse
import json
from typing import Any

from retention.cli.console import progress_for
from retention.cli.exits import ExitCode
from retention.cli.inputs import read_policy
from retention.cli.options import (
    add_shard_option,
    add_source_option,
    repository_pattern,
    shard_of,
)
from retention.cli.output import check_output, write
from retention.cli.render import inventory_csv, inventory_json, inventory_text
from retention.workflow import inventory_for, inventory_source


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
    add_source_option(p)
    add_shard_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output)
    pattern = repository_pattern(args.repository) if args.repository else None
    shard = shard_of(args)
    policy = read_policy(args.policy, args)
    source = inventory_source(policy, args.inventory_source)
    display = progress_for(args)
    try:
        inventory = inventory_for(
            policy,
            repository=pattern,
            progress=display,
            use_cache=not args.no_cache,
            shard=shard,
            source=source,
        )
    finally:
        display.close()
    if args.format == "json":
        text = json.dumps(inventory_json(inventory), indent=2, sort_keys=True) + "\n"
    elif args.format == "csv":
        text = inventory_csv(inventory)
    else:
        text = inventory_text(inventory)
    write(args.output, text)
    return ExitCode.OK
