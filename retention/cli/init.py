"""`retention init`: read the registry's tags and write a commented starter policy
(retention/starter.py). Reads only; deletes nothing."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from retention.cli.exits import ExitCode
from retention.cli.output import refuse_existing, write_new, write_output
from retention.errors import AuthError, UsageError
from retention.evaluate import untagged_digests
from retention.model import outside_grammar
from retention.plan import human_bytes
from retention.policy.load import load_policy_text
from retention.policy.model import Auth, RegistryConfig
from retention.registry.client import RegistryClient
from retention.starter import UntaggedSeen, check_credentials, starter_policy
from retention.storage import take_storage_inventory


def add(sub: Any, common: argparse.ArgumentParser) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_existing(args.output, args.force)
    check_credentials(args.username, args.password_env)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    repositories, tags, url = _read_tags(args.registry, _auth(args), say)
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
        write_new(args.output, text)
    say(
        f"wrote {args.output}; review it, then:\n"
        f"  retention validate {args.output}\n"
        f"  retention plan -p {args.output}"
    )
    return ExitCode.OK


def _auth(args: argparse.Namespace) -> Auth | None:
    """`--username` with the password from `$VAR` of `--password-env`; None without them."""
    if args.username is None:
        return None
    password = os.environ.get(args.password_env)
    if password is None:
        raise UsageError(
            f"environment variable {args.password_env} is not set",
            hint=f"export {args.password_env} with the password of {args.username}, "
            "then run init again",
        )
    return Auth(username=args.username, password=password)


def _read_tags(
    registry: str, auth: Auth | None, say: Callable[[str], None]
) -> tuple[list[str], dict[str, list[str]], str]:
    """The catalog (sorted), each repository's tags, and the registry's URL."""
    with RegistryClient(RegistryConfig(url=registry, auth=auth), env=os.environ) as client:
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
        return repositories, tags, client.url


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
