"""`retention restore`: re-upload the manifests an apply deleted, from its journal, and point
their tags at them again (retention/restore.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from retention.cli.console import confirm
from retention.cli.exits import ExitCode
from retention.cli.inputs import read_policy
from retention.cli.render import short_ref
from retention.errors import UsageError
from retention.journal import JournalState, read_journal
from retention.policy.model import RegistryConfig
from retention.registry.client import RegistryClient
from retention.restore import (
    GC_HINT,
    RestoreOutcome,
    UntagRestoreOutcome,
    restore,
    restore_untags,
    select,
    select_untags,
)
from retention.text import message, untrusted
from retention.urls import registry_key
from retention.workflow import client_options


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "restore",
        parents=[common],
        help="re-upload the manifests an apply deleted, from its journal",
        description=(
            "Re-uploads the manifests an apply deleted (platform manifests before their index, "
            "subjects before their artifacts) and points their tags at them again, and points "
            "each tag an apply untagged at its image again; a tag pushed since is left alone. "
            "Works only until garbage collection runs: it re-uploads "
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state = read_journal(args.journal)
    registry = state.registry
    if registry is None:
        if not args.quiet:
            print(f"{args.journal}: the journal records no deletion", file=sys.stderr)
        return ExitCode.OK
    config, options = _client_for(args, state, registry)
    items = select(state, repository=args.repository, tag=args.tag)
    untags = select_untags(state, repository=args.repository, tag=args.tag)
    if not items and not untags:
        what = " ".join(
            p
            for p in (
                f"repository {args.repository}" if args.repository else "",
                f"tag {args.tag}" if args.tag else "",
            )
            if p
        )
        raise UsageError(
            f"the journal records no deleted manifest or untagged tag"
            f"{' for ' + what if what else ''}",
            hint="check the names with: grep -E '\"(intent|untag)\"' JOURNAL",
        )
    tags = sum(len(i.tags) for i in items)
    if not args.quiet:
        also = f", and re-point {len(untags)} untagged tag(s)" if untags else ""
        print(
            f"restore: {len(items)} manifest(s) and {tags} tag(s) to {registry}{also}\n"
            f"note: {GC_HINT}",
            file=sys.stderr,
        )
    question = f"Restore {len(items)} manifest(s)" + (
        f" and {len(untags)} tag(s)?" if untags else "?"
    )
    if not confirm(question + "?", yes=args.yes, what="the restore"):
        print("aborted: nothing was restored", file=sys.stderr)
        return ExitCode.ERROR

    def progress(outcome: RestoreOutcome) -> None:
        ref = untrusted(short_ref(*outcome.key))  # the journal's names, the registry's words
        if outcome.kind == "failed":
            print(f"failed: {ref}: {message(outcome.reason or '')}", file=sys.stderr)
        for tag, why in outcome.tags_skipped:
            where = f"{untrusted(outcome.key[0])}:{untrusted(tag)}"
            print(f"tag not restored: {where}: {message(why)}", file=sys.stderr)

    with RegistryClient(config, env=os.environ, **options) as client:
        report = restore(client, items, progress=progress)
        retagged = restore_untags(client, untags, progress=_untag_progress)
    restored = report.count("restored") + sum(1 for o in retagged if o.kind == "restored")
    complete = report.complete and all(o.kind == "restored" for o in retagged)
    if not args.quiet or not complete:
        repointed = sum(len(o.tags_restored) for o in report.outcomes)
        failed = report.count("failed") + sum(1 for o in retagged if o.kind == "failed")
        untagged = (
            f", {sum(1 for o in retagged if o.kind == 'restored')} untagged tag(s)"
            if untags
            else ""
        )
        print(
            f"restored {report.count('restored')} manifest(s), {repointed} tag(s){untagged}; "
            f"failed {failed}",
            file=sys.stderr,
        )
    if report.gc_ran or any(o.blob_unknown for o in retagged):
        print(
            "garbage collection already ran since the apply: the blobs of some manifests are "
            "gone, and those cannot be restored (push the images again)",
            file=sys.stderr,
        )
    if complete:
        return ExitCode.OK
    return ExitCode.PARTIAL if restored else ExitCode.ERROR


def _untag_progress(outcome: UntagRestoreOutcome) -> None:
    if outcome.kind == "failed":
        where = f"{untrusted(outcome.key[0])}:{untrusted(outcome.key[1])}"
        print(
            f"untagged tag not restored: {where}: {message(outcome.reason or '')}", file=sys.stderr
        )


def _client_for(
    args: argparse.Namespace, state: JournalState, registry: str
) -> tuple[RegistryConfig, dict[str, Any]]:
    """The journal's registry with the credentials and timeouts of a policy (`-p`, else the one
    the journal names when it is a file here); without one, no credentials and default
    timeouts."""
    policy_path = args.policy or state.policy_path
    if policy_path is None or not (args.policy or Path(policy_path).is_file()):
        return RegistryConfig(url=registry), {}
    policy = read_policy(policy_path, args)
    if registry_key(policy.registry.url) != registry_key(registry):
        raise UsageError(
            f"policy {policy_path} is for {registry_key(policy.registry.url)}, but the journal "
            f"is for {registry}",
            hint="pass -p with a policy for the journal's registry",
        )
    return policy.registry, client_options(policy)
