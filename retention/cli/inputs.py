"""The files commands read: a policy (its warnings shown), a saved plan, a saved inventory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from retention import plan as plan_mod
from retention.cli.options import repository_pattern
from retention.errors import InventoryError, RetentionError
from retention.inventory import Shard
from retention.model import Inventory
from retention.plan import Plan
from retention.policy.load import load_policy
from retention.policy.model import Policy


def read_policy(path: str, args: argparse.Namespace) -> Policy:
    """Load a policy for a command that contacts the registry: unset ${VAR}s are errors; its
    warnings go to stderr unless --quiet."""
    policy, warnings = load_policy(path, env=os.environ, require_env=True)
    if not args.quiet:
        for w in warnings:
            print(w.render(), file=sys.stderr)
    return policy


_SAVE_INVENTORY = "save one with `retention inventory -p POLICY --format json -o FILE`"


def read_inventory(path: str) -> Inventory:
    """An inventory saved by `retention inventory --format json`."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InventoryError(
            f"{path}: cannot read the inventory: {exc}", hint=_SAVE_INVENTORY
        ) from exc
    try:
        return Inventory.from_document(doc)
    except InventoryError as exc:  # say which file: a plan passed by mistake is the usual case
        raise InventoryError(f"{path}: {exc.message}", hint=_SAVE_INVENTORY) from exc


def read_plan(path: str) -> tuple[Plan, bytes]:
    """A saved plan, schema-checked: the one loading `apply` and `show` share."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RetentionError(f"cannot read plan {path}: {exc.strerror or exc}") from exc
    return plan_mod.from_json(data, path), data


def narrow(inventory: Inventory, repository: str | None, shard: Shard | None = None) -> Inventory:
    """A saved inventory cut down to `--repository` and `--shard`, marked partial as a live
    narrowed walk is."""
    if repository is None and (shard is None or shard.count == 1):
        return inventory
    pattern = repository_pattern(repository) if repository else None
    return replace(
        inventory,
        repositories=tuple(
            r
            for r in inventory.repositories
            if (pattern is None or pattern.matches(r.name)) and (shard is None or r.name in shard)
        ),
        complete=False,
    )
