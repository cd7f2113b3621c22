"""`retention explain`: why each tag (or one manifest) of a repository is kept or deleted."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

import re2

from retention.cli.console import progress_for
from retention.cli.exits import ExitCode
from retention.cli.inputs import read_inventory, read_policy
from retention.cli.options import add_source_option, evaluation_time, repository_pattern
from retention.cli.output import write
from retention.cli.render import explanation_text
from retention.errors import UsageError
from retention.evaluate import explain
from retention.oci import is_digest
from retention.text import untrusted
from retention.workflow import inventory_for, inventory_source


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
    add_source_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    now = evaluation_time(args.as_of)
    policy = read_policy(args.policy, args)
    repository, tag, digest = parse_target(args.target, policy.registry.url)
    if args.from_inventory:
        inventory = read_inventory(args.from_inventory)
    else:
        source = inventory_source(policy, args.inventory_source)
        display = progress_for(args)
        try:
            inventory = inventory_for(
                policy,
                repository=repository_pattern(re2.escape(repository)) if repository else None,
                progress=display,
                source=source,
            )
        finally:
            display.close()
    verdicts = explain(policy, inventory, now, repository, tag, digest)
    write(None, explanation_text(verdicts))
    return ExitCode.OK


def parse_target(target: str, registry_url: str) -> tuple[str, str | None, str | None]:
    """`REPO[:TAG|@DIGEST]` -> (repository, tag, digest). A reference pasted with the policy's
    registry host in front (`127.0.0.1:5000/apps/web:v1`) works too: a colon followed by a `/`
    is a port."""
    digest: str | None = None
    if "@" in target:
        target, _, digest = target.rpartition("@")
        if not is_digest(digest):
            raise UsageError(
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
